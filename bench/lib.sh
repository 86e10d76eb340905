# bench/lib.sh: what the side-by-side benchmarks share (sourced by run.sh, sss-compat.sh and
# toolforge.sh, inside their private mount namespace): the work directory, the throwaway
# slapd, the key files, SSSD started with a config of the caller's, and the measurements.
# Needs: $rel (target/release). Sets: W, pids (stopped on exit), port, B.

# bench_enter SCRIPT [ARG...]: refuses to run without root or without the release binaries
# every benchmark uses (and those named in $BENCH_NEEDS), then runs SCRIPT again inside a
# private mount namespace; returns only there.
bench_enter() {
  local script=$1 b; shift
  [ "$(id -u)" = 0 ] || { echo "$script needs root (mount namespaces)" >&2; exit 2; }
  for b in toolforge-nssd libnss_toolforge.so toolforge-nss-fixture toolforge-nss-nssbench ${BENCH_NEEDS:-}; do
    [ -e "$rel/$b" ] || { echo "missing $rel/$b: run cargo build --release --workspace" >&2; exit 2; }
  done
  if [ -z "${TF_BENCH_IN_NS:-}" ]; then
    exec unshare --mount --propagation private env TF_BENCH_IN_NS=1 "$script" "$@"
  fi
}

# bench_workdir NAME: a fresh work directory (removed on exit, with everything started),
# and tmpfs over /run so that no daemon of the machine is seen or touched.
bench_workdir() {
  W=$(mktemp -d "/tmp/$1.XXXXXX"); chmod 755 "$W"
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.2; rm -rf "$W"' EXIT
  mount -t tmpfs tmpfs /run
  B=$rel/toolforge-nss-nssbench
}

# bench_slapd FIRST_PORT LDIF [SIZELIMIT] [MORE_INDEXED]: slapd on the first free loopback
# port from FIRST_PORT, loaded with LDIF; SIZELIMIT is its `sizelimit` (default unlimited),
# MORE_INDEXED attributes (",member") are indexed besides uid, uidNumber, gidNumber, memberUid, cn.
bench_slapd() {
  local first=$1 ldif=$2 limit=${3:-unlimited} more=${4:-} p
  port=""
  for p in $(seq "$first" $((first + 100))); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { port=$p; break; }; done
  mkdir -p "$W/ldap"
  cat > "$W/slapd.conf" <<EOC
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $W/slapd.pid
sizelimit $limit
database mdb
maxsize 2147483648
suffix "dc=wikimedia,dc=org"
directory $W/ldap
index objectClass eq
index uid,uidNumber,gidNumber,memberUid$more,cn eq
EOC
  slapadd -q -f "$W/slapd.conf" -l "$ldif"
  slapd -f "$W/slapd.conf" -h "ldap://127.0.0.1:$port/"
  for _ in $(seq 100); do ldapsearch -x -H "ldap://127.0.0.1:$port" -b dc=wikimedia,dc=org -s base >/dev/null 2>&1 && break; sleep 0.1; done
  pids+=("$(cat "$W/slapd.pid")")
}

# bench_keys: key files from the fixture's names ($W/names): warm users, a cold slice per
# provider (`cold N`, so no provider warms another's cache), missing keys, groups.
bench_keys() {
  grep 'dev ' "$W/names/users.txt" > "$W/devs.txt"
  sed -n '10001,12000p;' "$W/devs.txt" > "$W/warm.txt"; [ -s "$W/warm.txt" ] || head -2000 "$W/devs.txt" > "$W/warm.txt"
  for k in $(seq 1000); do echo "nosuch$k $((900000 + k))"; done > "$W/nokeys.txt"
  awk '$3 < 1000' "$W/names/groups.txt" > "$W/groups.txt"
}
cold() { sed -n "$(( $1 * 1000 + 1 )),$(( $1 * 1000 + 1000 ))p" "$W/devs.txt" > "$W/cold$1.txt"; echo "$W/cold$1.txt"; }

# bench_sssd MEMCACHE_TIMEOUT DOMAIN_LINES [NSS_LINES]: SSSD against the slapd, with tmpfs over
# its state directories; DOMAIN_LINES are appended to its [domain/wm] section, NSS_LINES to its
# [nss] section. Fails (and says why) when SSSD is not installed or does not start.
bench_sssd() {
  if ! command -v sssd >/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/libnss_sss.so.2 ]; then
    echo "skipping SSSD (apt-get install sssd-ldap libnss-sss)" >&2; return 1
  fi
  local d
  for d in /var/lib/sss/db /var/lib/sss/pipes /var/lib/sss/mc; do mkdir -p "$d"; mount -t tmpfs tmpfs "$d"; done
  mkdir -p /var/lib/sss/pipes/private /run/sssd
  cat > "$W/sssd.conf" <<EOC
[sssd]
services = nss
domains = wm
[nss]
memcache_timeout = $1
${3:-}
[domain/wm]
id_provider = ldap
auth_provider = none
ldap_uri = ldap://127.0.0.1:$port
ldap_search_base = dc=wikimedia,dc=org
$2
EOC
  chmod 600 "$W/sssd.conf"
  sssd -c "$W/sssd.conf" -D 2> "$W/sssd.log" || { echo "sssd did not start: $(cat "$W/sssd.log")" >&2; return 1; }
  # Stopped on exit with the rest (it daemonizes; its monitor stops its responders).
  for _ in $(seq 50); do [ -s /run/sssd.pid ] && break; sleep 0.1; done
  pids+=("$(cat /run/sssd.pid 2>/dev/null)")
}

# bench_nslcd CONF_TEXT: nslcd with that config bind-mounted over /etc/nslcd.conf, stopped on
# exit with the rest. Fails (and says why) when it is not installed.
bench_nslcd() {
  if ! command -v nslcd >/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/libnss_ldap.so.2 ]; then
    echo "skipping nslcd (apt-get install nslcd libnss-ldapd)" >&2; return 1
  fi
  printf "%s\n" "$1" > "$W/nslcd.conf"
  chmod 640 "$W/nslcd.conf"; chgrp nslcd "$W/nslcd.conf"
  mount --bind "$W/nslcd.conf" /etc/nslcd.conf
  mkdir -p /run/nslcd; chown nslcd:nslcd /run/nslcd
  nslcd || return 1
  for _ in $(seq 50); do [ -s /run/nslcd/nslcd.pid ] && break; sleep 0.1; done
  pids+=("$(cat /run/nslcd/nslcd.pid 2>/dev/null)")
}

# scenarios COLDFILE: every measurement of one provider, warm-up first (run inside the
# provider's namespace; the key stride is prime: COUNT lookups over COUNT keys touch every
# key once). "miss" is a repeated miss: the missing keys were asked once in the warm-up.
scenarios() {
  "$B" pwnam "$1" 1000 | sed 's/^/cold /'
  "$B" pwnam "$W/warm.txt" 2000 >/dev/null; "$B" pwuid "$W/warm.txt" 2000 >/dev/null
  "$B" grnam "$W/groups.txt" "$(grep -c . "$W/groups.txt")" >/dev/null; "$B" initgroups "$W/warm.txt" 2000 >/dev/null
  "$B" pwnam "$W/nokeys.txt" 1000 >/dev/null
  # Warm means published: give a caching daemon a second to publish what the warm-up cached
  # (toolforge-nssd paces its publications), so that no provider is measured mid-update.
  sleep 1
  "$B" pwnam "$W/warm.txt" 20000 | sed 's/^/warm /'
  "$B" pwuid "$W/warm.txt" 20000 | sed 's/^/warm /'
  "$B" grnam "$W/groups.txt" 2000 | sed 's/^/warm /'
  "$B" initgroups "$W/warm.txt" 2000 | sed 's/^/warm /'
  "$B" pwnam "$W/warm.txt" 40000 2 | sed 's/^/warm2t /'
  "$B" pwnam "$W/nokeys.txt" 20000 | sed 's/^/miss /'
}
