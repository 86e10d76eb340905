#!/usr/bin/env bash
# bench/toolforge.sh: on a Toolforge-shaped RFC 2307bis directory (35,000 users: 30,000
# developers with uids up to and past 100,000, 5,000 tool accounts with uid = gid in
# 50000-59999 that are also members of other tools' groups, a 10,000-member project-tools,
# one maintainer of 300 tools, 300 project groups; the whole tree as base; slapd limited to
# 2,048 entries per plain search, paged unlimited, as Wikimedia's replicas):
#   1. cold `getent group project-tools` and cold `id busymaintainer`, for toolforge-nss,
#      SSSD (ldap_schema = rfc2307bis) and nslcd (member DNs) when installed, with ratios;
#   2. the daemon's RSS with all of it cached (every user by name and uid, every group,
#      every user's initgroups list), and where it goes.
#
# Needs root for mount namespaces; never touches the host's configuration (private mount
# namespace, tmpfs over /run and SSSD's state, bind-mounted nsswitch.conf / nslcd.conf).
# Build first: cargo build --release --workspace
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rel=$top/target/release
# shellcheck source=bench/lib.sh
. "$top/bench/lib.sh"
BENCH_NEEDS=toolforge-nssctl bench_enter "$0" "$@"

bench_workdir tf-tfbench

# --- the directory, limited as Wikimedia's replicas (2,048 entries per plain search)
"$rel/toolforge-nss-fixture" toolforge --names "$W/names" > "$W/data.ldif"
bench_slapd 34300 "$W/data.ldif" "size.soft=2048 size.hard=2048 size.prtotal=unlimited" ",member"
echo "directory: $(grep -c . "$W/names/users.txt") users, $(grep -c . "$W/names/groups.txt") groups on ldap://127.0.0.1:$port" >&2

providers="toolforge"
# --- toolforge-nss, configured as deploy/daemonset.yaml
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
# One process asks for thousands of distinct names in seconds here: no per-uid miss budget
# (it would answer part of them UNAVAIL, which is what it is for, not what is measured).
miss_queries_per_uid_per_sec = 0
[cache]
user_ttl_secs = 3600
group_ttl_secs = 3600
# Persisted every 5 s (60 s by default): the RSS below includes what saving costs.
persist_interval_secs = ${TF_PERSIST_SECS:-5}
${TF_EXTRA_CACHE_CONFIG:-}
EOC
env ${TF_DAEMON_ENV:-} ${TF_DAEMON_WRAP:-} "$rel/toolforge-nssd" --config "$W/tf/config.toml" 2> "$W/tf/log" & tfpid=$!; pids+=($tfpid)
for i in $(seq 100); do [ -S "$W/tf/run/socket" ] && break; sleep 0.05; done
# --- SSSD, as Toolforge runs it
if [ -n "${TF_ONLY:-}" ]; then echo "TF_ONLY: toolforge-nss alone" >&2
elif bench_sssd 300 "ldap_schema = rfc2307bis
ldap_page_size = 2000
ldap_referrals = false
ldap_id_use_start_tls = false
enumerate = false
cache_credentials = false
entry_cache_user_timeout = 3600
entry_cache_group_timeout = 300"; then providers="$providers sss"
fi
# --- nslcd with member DNs (rfc2307bis) and nested groups
if [ -n "${TF_ONLY:-}" ]; then :
elif bench_nslcd "$(printf "uid nslcd\ngid nslcd\nuri ldap://127.0.0.1:%s/\nbase dc=wikimedia,dc=org\npagesize 2000\nnss_nested_groups yes\nmap group member member\n" "$port")"; then
  providers="$providers ldap"
fi
sleep 1

ms() { # ms CMD...: runs CMD, prints "<milliseconds> <output lines>"
  local t0 t1 out
  t0=$(date +%s%N); out=$("$@" 2>/dev/null | wc -l); t1=$(date +%s%N)
  echo "$(( (t1 - t0) / 1000000 )) $out"
}
export -f ms
for p in $providers; do
  printf "passwd: %s\ngroup: %s\n" "$p" "$p" > "$W/nsswitch.$p"
  env_tf=""; [ "$p" = toolforge ] && env_tf="TOOLFORGE_NSS_DIR=$W/tf/run LD_LIBRARY_PATH=$W/tf/lib TOOLFORGE_NSS_TIMEOUT_MS=60000"
  unshare --mount bash -c "mount --bind $W/nsswitch.$p /etc/nsswitch.conf; ${env_tf:+export $env_tf}
    echo \"$p group_cold \$(ms getent group project-tools) members \$(getent group project-tools | tr ',' '\n' | wc -l)\"
    echo \"$p id_cold \$(ms id busymaintainer) groups \$(id -G busymaintainer | wc -w)\""
done | tee "$W/cold.txt"
echo
awk '{ t[$1, $2] = $3; n[$1, $2] = $6; if (!($1 in seen)) { seen[$1] = 1; p[m++] = $1 } }
  END { for (s = 0; s < 2; s++) { sc = s ? "id_cold" : "group_cold"
          printf "%-11s", sc; for (j = 0; j < m; j++) printf "%12s", p[j] " " t[p[j], sc] "ms"
          for (j = 1; j < m; j++) printf "%14s", p[j] "/tf " (t["toolforge", sc] > 0 ? sprintf("%.1fx", t[p[j], sc] / t["toolforge", sc]) : "-")
          printf "   (answers:"; for (j = 0; j < m; j++) printf " %s=%s", p[j], n[p[j], sc]; printf ")\n" } }' "$W/cold.txt"

# --- the RFC 2307bis cases (tests/src/toolforge.rs): every provider's answers, side by side
echo
for p in $providers; do
  env_tf=""; [ "$p" = toolforge ] && env_tf="TOOLFORGE_NSS_DIR=$W/tf/run LD_LIBRARY_PATH=$W/tf/lib TOOLFORGE_NSS_TIMEOUT_MS=60000"
  unshare --mount bash -c "mount --bind $W/nsswitch.$p /etc/nsswitch.conf; ${env_tf:+export $env_tf}
    for u in \${TF_CASE_USERS:-nestfourth nestthird nestfirst legacyperson twinned}; do
      echo \"$p id \$u: \$(id \$u 2>&1 | sed 's/^uid=[0-9]*//')\"; done
    for g in \${TF_CASE_GROUPS:-project-spelling project-nest-top project-nest-mid project-nest-low project-nest-deep twingroup}; do
      echo \"$p group \$g: \$(getent group \$g || echo '(none)')\"; done"
done | tee "$W/cases.txt"

# --- fill toolforge-nss's cache with everything, then its RSS
echo
awk '{print $1, $2}' "$W/names/users.txt" > "$W/users.txt"
awk '{print $1, $2}' "$W/names/groups.txt" > "$W/groups.txt"
nu=$(grep -c . "$W/users.txt"); ng=$(grep -c . "$W/groups.txt")
split -n l/4 "$W/users.txt" "$W/users.part."
t0=$(date +%s)
# one thread per key file (nssbench's prime stride then visits every key), four files at once
unshare --mount bash -c "mount --bind $W/nsswitch.toolforge /etc/nsswitch.conf
  export TOOLFORGE_NSS_DIR=$W/tf/run LD_LIBRARY_PATH=$W/tf/lib TOOLFORGE_NSS_TIMEOUT_MS=60000
  for op in pwnam pwuid initgroups; do
    for f in $W/users.part.*; do \"$B\" \$op \$f \$(grep -c . \$f) >/dev/null & done; wait
  done
  \"$B\" grnam $W/groups.txt $ng >/dev/null; \"$B\" grgid $W/groups.txt $ng >/dev/null"
echo "filled in $(( $(date +%s) - t0 )) s: $nu users by name and uid, $ng groups by name and gid, $nu initgroups lists"
sleep 7  # the last publication, and the allocator trim after it
"$rel/toolforge-nssctl" --admin-socket "$W/tf/admin/admin.socket" status 2>/dev/null | grep -Ei "entries|bytes|cache" || true
grep -E "VmRSS|VmHWM|RssAnon|RssFile" /proc/$tfpid/status | tr -s ' ' | sed 's/^/toolforge-nssd /'
echo "cache.map: $(stat -c %s "$W/tf/run/cache.map" 2>/dev/null || echo 0) bytes"
if [ -n "${TF_HOLD:-}" ]; then echo "holding $TF_HOLD s (pid $tfpid)"; sleep "$TF_HOLD"; fi
