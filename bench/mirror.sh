#!/usr/bin/env bash
# bench/mirror.sh: mirror mode (issue 13) on the Toolforge-shaped RFC 2307bis directory of
# bench/toolforge.sh (35,000 users, 5,000 tools and their groups, a 10,000-member
# project-tools, one maintainer of 300 tools; slapd limited to 2,048 entries per plain search,
# paged unlimited, as Wikimedia's replicas) served with the syncprov overlay:
#   1. initial load: daemon start to `mirror_state: complete` (and the load alone, from its log);
#   2. the daemon's RSS with the complete mirror;
#   3. the first lookup of users on the node (never looked up before: answered by the module
#      from the published mirror) beside the same lookups warm, p50/p99 (nssbench);
#   4. change-to-visible latency: a user's gecos changed with ldapmodify, then `getent passwd`
#      until it shows, p50/p99 over TF_CHANGES (default 50) changes;
#   5. directory searches the node made while answering the lookups above (slapd's stats log).
# Not measured here: SSSD's `enumerate = true` on the same directory (not run: see the README).
#
# TF_DAEMON_WRAP runs the daemon under a wrapper (`heaptrack -o /tmp/x`: its RSS lines are then
# the wrapper's), TF_DAEMON_ENV sets its environment, TF_HOLD=SECONDS keeps everything up at the
# end (printing the daemon's pid, e.g. to kill -9 it for heaptrack's live set at that moment).
#
# Needs root for mount namespaces; never touches the host's configuration.
# Build first: cargo build --release --workspace
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rel=$top/target/release
# shellcheck source=bench/lib.sh
. "$top/bench/lib.sh"
BENCH_NEEDS=toolforge-nssctl bench_enter "$0" "$@"

bench_workdir tf-mirrorbench
CTL="$rel/toolforge-nssctl --admin-socket $W/tf/admin/admin.socket"

# --- the directory, with syncprov
"$rel/toolforge-nss-fixture" toolforge --names "$W/names" > "$W/data.ldif"
port=""
for p in $(seq 34400 34500); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { port=$p; break; }; done
mkdir -p "$W/ldap"
cat > "$W/slapd.conf" <<EOC
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov
pidfile $W/slapd.pid
sizelimit size.soft=2048 size.hard=2048 size.prtotal=unlimited
database mdb
maxsize 2147483648
suffix "dc=wikimedia,dc=org"
rootdn "cn=admin,dc=wikimedia,dc=org"
rootpw bench-only-password
directory $W/ldap
index objectClass eq
index uid,uidNumber,gidNumber,memberUid,member,cn eq
index entryUUID,entryCSN eq
overlay syncprov
syncprov-checkpoint 100 1
syncprov-sessionlog 1000
EOC
slapadd -q -f "$W/slapd.conf" -l "$W/data.ldif"
slapd -d 256 -f "$W/slapd.conf" -h "ldap://127.0.0.1:$port/" 2> "$W/slapd.log" &
pids+=($!)
for i in $(seq 100); do ldapsearch -x -H "ldap://127.0.0.1:$port" -b dc=wikimedia,dc=org -s base >/dev/null 2>&1 && break; sleep 0.1; done
nu=$(grep -c . "$W/names/users.txt"); ng=$(grep -c . "$W/names/groups.txt")
echo "directory: $nu users, $ng groups on ldap://127.0.0.1:$port (syncprov)"

# --- toolforge-nss in mirror mode, configured as deploy/daemonset.yaml
mkdir -p "$W/tf/lib"
cp "$rel/libnss_toolforge.so" "$W/tf/lib/libnss_toolforge.so.2"
cat > "$W/tf/config.toml" <<EOC
[ldap]
uri = ["ldap://127.0.0.1:$port"]
base = "dc=wikimedia,dc=org"
schema = "rfc2307bis"
page_size = 2000
[daemon]
runtime_dir = "$W/tf/run"
cache_dir = "$W/tf/cache"
admin_dir = "$W/tf/admin"
[cache]
user_ttl_secs = 3600
group_ttl_secs = 300
${TF_EXTRA_CACHE_CONFIG:-}
[mirror]
enabled = true
mode = "auto"
EOC
t0=$(date +%s%N)
RUST_LOG=${RUST_LOG:-info} env ${TF_DAEMON_ENV:-} ${TF_DAEMON_WRAP:-} "$rel/toolforge-nssd" --config "$W/tf/config.toml" 2> "$W/tf/log" & tfpid=$!; pids+=($tfpid)
until $CTL status 2>/dev/null | grep -q "^mirror_state: complete"; do
  kill -0 $tfpid || { cat "$W/tf/log"; exit 1; }
  sleep 0.05
done
t1=$(date +%s%N)
echo "initial load: $(( (t1 - t0) / 1000000 )) ms from daemon start to a complete mirror ($(grep -o 'mirror loaded.*' "$W/tf/log" | head -1))"
$CTL status | grep -E "^mirror_" || true
sleep 7  # the first publication of the whole mirror, the allocator trim after it
grep -E "VmRSS|VmHWM" /proc/$tfpid/status | tr -s ' ' | sed 's/^/toolforge-nssd (complete mirror) /'
echo "cache.map: $(stat -c %s "$W/tf/run/cache.map" 2>/dev/null || echo 0) bytes"
searches_before=$(grep -c " SRCH base=" "$W/slapd.log" || true)

# --- first lookups (never asked before on this node) and the same lookups warm
printf "passwd: files toolforge\ngroup: files toolforge\n" > "$W/nsswitch.conf"
awk 'NR <= 2000 {print $1, $2}' "$W/names/users.txt" > "$W/first.txt"
awk -v n="$nu" 'NR > n - 2000 {print $1, $2}' "$W/names/users.txt" > "$W/ids.txt"
unshare --mount bash -c "mount --bind $W/nsswitch.conf /etc/nsswitch.conf
  export TOOLFORGE_NSS_DIR=$W/tf/run LD_LIBRARY_PATH=$W/tf/lib
  echo \"first  \$(\"$B\" pwnam $W/first.txt 2000 1)\"
  echo \"warm   \$(\"$B\" pwnam $W/first.txt 2000 1)\"
  echo \"first  \$(\"$B\" initgroups $W/ids.txt 2000 1)\"
  echo \"warm   \$(\"$B\" initgroups $W/ids.txt 2000 1)\"
  echo \"misses \$(sed 's/^/nosuch-/' $W/first.txt > $W/miss.txt; \"$B\" pwnam $W/miss.txt 2000 1)\""
searches_after=$(grep -c " SRCH base=" "$W/slapd.log" || true)
echo "directory searches during those 10,000 lookups: $(( searches_after - searches_before )) (root DSE heartbeats of the idle sync connection included)"

# --- change-to-visible latency
n=${TF_CHANGES:-50}
user=$(awk 'NR==100 {print $1}' "$W/names/users.txt")
dn=$(ldapsearch -x -LLL -H "ldap://127.0.0.1:$port" -b dc=wikimedia,dc=org "(uid=$user)" dn | sed -n 's/^dn: //p' | head -1)
unshare --mount bash -c "mount --bind $W/nsswitch.conf /etc/nsswitch.conf
  export TOOLFORGE_NSS_DIR=$W/tf/run LD_LIBRARY_PATH=$W/tf/lib
  for i in \$(seq $n); do
    printf 'dn: %s\nchangetype: modify\nreplace: gecos\ngecos: bench change %s\n' '$dn' \$i |
      ldapmodify -x -H ldap://127.0.0.1:$port -D cn=admin,dc=wikimedia,dc=org -w bench-only-password >/dev/null
    t0=\$(date +%s%N)
    until getent passwd $user | grep -q \"bench change \$i:\"; do :; done
    echo \$(( (\$(date +%s%N) - t0) / 1000 ))
  done" | sort -n > "$W/latency.txt"
awk '{ a[NR] = $1 } END { printf "change to visible (getent, %d changes): p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", NR, a[int(NR * 0.5 + 0.5)] / 1000, a[int(NR * 0.99 + 0.5)] / 1000, a[NR] / 1000 }' "$W/latency.txt"
grep -E "VmRSS|VmHWM" /proc/$tfpid/status | tr -s ' ' | sed 's/^/toolforge-nssd (after the changes) /'
sleep 7  # the last publication done and trimmed after
grep -E "VmRSS" /proc/$tfpid/status | tr -s ' ' | sed 's/^/toolforge-nssd (after the changes, settled) /'
if [ -n "${TF_HOLD:-}" ]; then echo "holding $TF_HOLD s (daemon pid $(pgrep -n -x toolforge-nssd -P "$tfpid" || echo "$tfpid"))"; sleep "$TF_HOLD"; fi
[ -n "${TF_SHOW_LOG:-}" ] && grep -E "$TF_SHOW_LOG" "$W/tf/log" | tail -20 || true
