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
#   5. directory searches the node made while answering the lookups above (slapd's stats log);
#   6. directory operations per hour for one node under a mix of lookups (below), mirror mode
#      against lookup mode (a second daemon, `[mirror] enabled = false`, otherwise the same
#      config), each over TF_MIX_SECS (default 180) seconds and extrapolated to an hour. The
#      counter is slapd's stats log (`-d 256`: one line per operation request it received):
#      every operation on a connection that did not bind as the directory's administrator
#      (the bench's own ldapmodify of the changes does), by type; root DSE reads (the sync
#      connection's heartbeat) counted apart;
#   7. SSSD with `enumerate = true` (ldap_schema = rfc2307bis, as Toolforge) on the same
#      directory: seconds from its start until `getent passwd` through libnss_sss lists every
#      user (checked every 5 s; given up after TF_SSSD_WAIT, default 600 s, and said so),
#      beside the daemon's initial load (1.), then a single `getent passwd USER` through it as
#      the control (TF_SSSD_ENUMERATE=false runs the same without enumeration). TF_SKIP_SSSD=1
#      skips it; TF_SKIP_MIX=1 skips 6.
#
# The mix, one round every 10 s (a busy node: processes of users and tools seen there for the
# first time, `id` of them, tools' groups, typos, and the tools that run all the time):
#   getpwnam + initgroups of TF_MIX_NEW (default 20) users never looked up on the node before,
#   getgrnam of TF_MIX_GROUPS (default 5) groups never looked up before, getpwnam of
#   TF_MIX_MISSES (default 10) names that do not exist (new each round), getpwnam of 200 warm
#   users (the same every round, looked up once before the window), and one directory change
#   (a user's gecos). Lookup mode's refreshes of the warm users (200 per user_ttl_secs = 3600)
#   fall outside a few minutes' window and are not in its extrapolation.
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

# --- 6. directory operations per hour under the mix, mirror mode and lookup mode
mixsecs=${TF_MIX_SECS:-180}
new_n=${TF_MIX_NEW:-20}; grp_n=${TF_MIX_GROUPS:-5}; miss_n=${TF_MIX_MISSES:-10}
rounds=$(( mixsecs / 10 ))
shuf --random-source=<(yes) "$W/names/users.txt" | awk '{print $1, $2}' > "$W/mix-users.txt"
shuf --random-source=<(yes) "$W/names/groups.txt" | awk '{print $1, $2}' > "$W/mix-groups.txt"
head -200 "$W/mix-users.txt" > "$W/mix-warm.txt"
change_dn=$(ldapsearch -x -LLL -H "ldap://127.0.0.1:$port" -b dc=wikimedia,dc=org "(uid=$(awk 'NR==300 {print $1}' "$W/names/users.txt"))" dn | sed -n 's/^dn: //p' | head -1)
cat > "$W/mix.sh" <<'EOS'
# mix.sh RUNDIR ROUNDS NEW GROUPS MISSES: the rounds of the mix, in a private mount namespace.
set -u
mount --bind "$W/nsswitch.conf" /etc/nsswitch.conf
export TOOLFORGE_NSS_DIR=$1 LD_LIBRARY_PATH=$W/tf/lib
"$B" pwnam "$W/mix-warm.txt" 200 >/dev/null
"$B" initgroups "$W/mix-warm.txt" 200 >/dev/null
sleep 2
wc -l < "$W/slapd.log" > "$W/mix-startline"
date +%s%N > "$W/mix-start"
for r in $(seq 0 $(( $2 - 1 ))); do
  t0=$(date +%s)
  sed -n "$(( 201 + r * $3 )),$(( 200 + (r + 1) * $3 ))p" "$W/mix-users.txt" > "$W/mix-new.txt"
  sed -n "$(( 1 + r * $4 )),$(( (r + 1) * $4 ))p" "$W/mix-groups.txt" > "$W/mix-grp.txt"
  for i in $(seq "$5"); do echo "nosuch-r$r-$i 999999"; done > "$W/mix-miss.txt"
  "$B" pwnam "$W/mix-new.txt" "$3" >/dev/null
  "$B" initgroups "$W/mix-new.txt" "$3" >/dev/null
  "$B" grnam "$W/mix-grp.txt" "$4" >/dev/null
  "$B" pwnam "$W/mix-miss.txt" "$5" >/dev/null
  "$B" pwnam "$W/mix-warm.txt" 200 >/dev/null
  printf 'dn: %s\nchangetype: modify\nreplace: gecos\ngecos: mix round %s\n' "$CHANGE_DN" "$r" |
    ldapmodify -x -H "ldap://127.0.0.1:$PORT" -D cn=admin,dc=wikimedia,dc=org -w bench-only-password >/dev/null
  left=$(( t0 + 10 - $(date +%s) ))
  [ "$left" -gt 0 ] && sleep "$left"
done
date +%s%N > "$W/mix-end"
EOS
# ops_since LINE: the operations slapd received after log line LINE, on connections that did
# not bind as the administrator: "TOTAL SEARCHES ROOTDSE BINDS OTHER".
ops_since() {
  tail -n +"$(( $1 + 1 ))" "$W/slapd.log" | awk '
    match($0, /conn=[0-9]+ op=[0-9]+ /) {
      split(substr($0, RSTART, RLENGTH), a, " "); c = a[1]; rest = substr($0, RSTART + RLENGTH)
      if (rest ~ /^BIND dn="cn=admin,dc=wikimedia,dc=org"/) admin[c] = 1
      if (rest ~ /^(SRCH base=|BIND dn=.* method=|UNBIND|ABANDON|EXT oid=|MOD dn=|ADD dn=|DEL dn=|MODRDN dn=|CMP dn=)/) { n++; conn[n] = c; line[n] = rest }
    }
    END {
      for (i = 1; i <= n; i++) {
        if (conn[i] in admin) continue
        t++
        if (line[i] ~ /^SRCH base=""/) root++
        else if (line[i] ~ /^SRCH/) s++
        else if (line[i] ~ /^BIND/) b++
        else o++
      }
      printf "%d %d %d %d %d\n", t, s, root, b, o
    }'
}
run_mix() { # run_mix LABEL RUNDIR: operations after the warm-up only
  local ops secs
  W=$W B=$B CHANGE_DN=$change_dn PORT=$port unshare --mount bash "$W/mix.sh" "$2" "$rounds" "$new_n" "$grp_n" "$miss_n"
  ops=$(ops_since "$(cat "$W/mix-startline")")
  secs=$(awk -v a="$(cat "$W/mix-start")" -v b="$(cat "$W/mix-end")" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  echo "$1 $secs $ops"
}
if [ -n "${TF_SKIP_MIX:-}" ]; then
  echo "mix: skipped (TF_SKIP_MIX)"
  kill $tfpid; wait $tfpid 2>/dev/null || true
else
echo "mix: $rounds rounds of 10 s: $new_n new users (getpwnam + initgroups), $grp_n new groups, $miss_n missing names, 200 warm users, 1 change"
run_mix "mirror" "$W/tf/run" > "$W/mix-mirror.txt"
kill $tfpid; wait $tfpid 2>/dev/null || true
# Lookup mode: the same config with the mirror off, a fresh cache.
mkdir -p "$W/tf2"
sed -e "s|$W/tf/run|$W/tf2/run|; s|$W/tf/cache|$W/tf2/cache|; s|$W/tf/admin|$W/tf2/admin|; s|^enabled = true|enabled = false|" "$W/tf/config.toml" > "$W/tf2/config.toml"
RUST_LOG=${RUST_LOG:-info} ${TF_DAEMON_WRAP:-} "$rel/toolforge-nssd" --config "$W/tf2/config.toml" 2> "$W/tf2/log" & tf2pid=$!; pids+=($tf2pid)
for i in $(seq 100); do [ -S "$W/tf2/run/socket" ] && break; sleep 0.05; done
run_mix "lookup" "$W/tf2/run" > "$W/mix-lookup.txt"
kill $tf2pid; wait $tf2pid 2>/dev/null || true
for f in mirror lookup; do
  read -r label secs total searches root binds other < "$W/mix-$f.txt"
  awk -v l="$label" -v s="$secs" -v t="$total" -v q="$searches" -v r="$root" -v b="$binds" -v o="$other" 'BEGIN {
    printf "directory operations, %s mode: %d in %.0f s (entry searches %d, root DSE reads %d, binds %d, other %d) = %.0f per hour (entry searches %.0f per hour)\n",
      l, t, s, q, r, b, o, t * 3600 / s, q * 3600 / s }'
done
fi

# --- 7. SSSD enumerate = true: how long until getent passwd lists every user
if [ -n "${TF_SKIP_SSSD:-}" ]; then
  echo "SSSD enumeration: skipped (TF_SKIP_SSSD)"
else
  wait_max=${TF_SSSD_WAIT:-600}
  # Its logs (restarts of its back end) in the work directory, not the host's /var/log.
  mkdir -p /var/log/sssd; mount -t tmpfs tmpfs /var/log/sssd
  sline=$(wc -l < "$W/slapd.log")
  s0=$(date +%s%N)
  if bench_sssd 300 "ldap_schema = rfc2307bis
ldap_page_size = 2000
ldap_referrals = false
enumerate = ${TF_SSSD_ENUMERATE:-true}
cache_credentials = false" "enum_cache_timeout = 5"; then
    printf "passwd: sss\ngroup: sss\n" > "$W/nsswitch.sss"
    got=0; done_at=""
    while :; do
      el=$(( ($(date +%s%N) - s0) / 1000000000 ))
      got=$(unshare --mount bash -c "mount --bind $W/nsswitch.sss /etc/nsswitch.conf; getent passwd | wc -l")
      if [ "$got" -ge "$nu" ]; then done_at=$(( ($(date +%s%N) - s0) / 1000000 )); break; fi
      [ "$el" -ge "$wait_max" ] && break
      sleep 5
    done
    if [ -n "$done_at" ]; then
      echo "SSSD enumerate = ${TF_SSSD_ENUMERATE:-true}: getent passwd lists all $got users $done_at ms after SSSD started (checked every 5 s)"
    else
      echo "SSSD enumerate = ${TF_SSSD_ENUMERATE:-true}: gave up after $wait_max s: getent passwd listed $got of $nu users"
    fi
    # The control: a single lookup through the same SSSD (its socket and cache work).
    one=$(awk 'NR==1 {print $1}' "$W/names/users.txt")
    echo "SSSD getent passwd $one: $(unshare --mount bash -c "mount --bind $W/nsswitch.sss /etc/nsswitch.conf; getent passwd $one" || echo "not found")"
    # What SSSD got from the directory meanwhile, and whether its back end was restarted.
    tail -n +"$(( sline + 1 ))" "$W/slapd.log" | awk '/SEARCH RESULT/ { n++; if (match($0, /nentries=[0-9]+/)) e += substr($0, RSTART + 9, RLENGTH - 9) }
      END { printf "SSSD meanwhile: %d searches answered, %d entries sent to it\n", n, e }'
    echo "SSSD back end restarts (its monitor's log): $(grep -ciE "terminated|restart|exited" /var/log/sssd/sssd.log 2>/dev/null || echo 0)"
    grep -hiE "watchdog|terminated|restart|exited" /var/log/sssd/*.log 2>/dev/null | head -5 | sed 's/^/  sssd log: /' || true
  fi
fi
