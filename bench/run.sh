#!/usr/bin/env bash
# bench/run.sh [DEVELOPERS]: toolforge-nss side by side with SSSD, nslcd and nscd (those that
# are installed: apt-get install sssd-ldap libnss-sss nslcd libnss-ldapd nscd), on one
# throwaway slapd holding the same generated directory, with the same keys, in one run.
# Prints one line per provider and scenario, then a table of p50 latencies and ratios.
#
# Needs root for mount namespaces. It never touches the host's configuration: it runs in a
# private mount namespace with tmpfs over /run and SSSD's state directories, and its own
# nsswitch.conf, sssd.conf and nslcd.conf bind-mounted in. Build first:
#   cargo build --release --workspace
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rel=$top/target/release
# shellcheck source=bench/lib.sh
. "$top/bench/lib.sh"
bench_enter "$0" "$@"

devs=${1:-20000}
bench_workdir tf-bench

# --- the directory
"$rel/toolforge-nss-fixture" rfc2307 "$devs" --tools 3000 --projects 200 --names "$W/names" > "$W/data.ldif"
bench_slapd 34100 "$W/data.ldif"
echo "directory: $(grep -c . "$W/names/users.txt") users, $(grep -c . "$W/names/groups.txt") groups on ldap://127.0.0.1:$port" >&2
bench_keys

providers="toolforge"
# --- toolforge-nss
mkdir -p "$W/tf/lib"
cp "$rel/libnss_toolforge.so" "$W/tf/lib/libnss_toolforge.so.2"
cat > "$W/tf/config.toml" <<EOC
[ldap]
uri = ["ldap://127.0.0.1:$port"]
base = "dc=wikimedia,dc=org"
[daemon]
runtime_dir = "$W/tf/run"
cache_dir = "$W/tf/cache"
admin_dir = "$W/tf/admin"
# One process asks for thousands of distinct names in seconds here: no per-uid miss budget
# (it would answer part of them UNAVAIL, which is what it is for, not what is measured).
miss_queries_per_uid_per_sec = 0
[cache]
persist_interval_secs = 0
EOC
"$rel/toolforge-nssd" --config "$W/tf/config.toml" 2> "$W/tf/log" & pids+=($!)
for i in $(seq 100); do [ -S "$W/tf/run/socket" ] && break; sleep 0.05; done
# --- SSSD (its memory-mapped cache on, as deployed)
if bench_sssd 300 "ldap_schema = rfc2307
enumerate = false
cache_credentials = false
entry_cache_timeout = 300"; then providers="$providers sss"; fi
# --- nslcd, and nscd in front of it
if bench_nslcd "$(printf "uid nslcd\ngid nslcd\nuri ldap://127.0.0.1:%s/\nbase dc=wikimedia,dc=org\n" "$port")"; then
  providers="$providers ldap"
  command -v nscd >/dev/null && providers="$providers nscd"
fi
sleep 1

export -f scenarios; export B W
i=0
for p in $providers; do
  i=$((i + 1)); c=$(cold $i)
  src=$p; [ "$p" = nscd ] && src=ldap
  printf "passwd: %s\ngroup: %s\n" "$src" "$src" > "$W/nsswitch.$p"
  if [ "$p" = nscd ]; then
    # a private nscd caching "ldap", in its own namespace so that no other run sees it
    unshare --mount bash -c "mount -t tmpfs tmpfs /run/nscd 2>/dev/null || { mkdir -p /run/nscd; mount -t tmpfs tmpfs /run/nscd; }
      mount -t tmpfs tmpfs /var/cache/nscd; mount --bind $W/nsswitch.$p /etc/nsswitch.conf
      nscd; sleep 0.5; scenarios $c; nscd -K 2>/dev/null || kill \$(cat /run/nscd/nscd.pid)"
  else
    env_tf=""; [ "$p" = toolforge ] && env_tf="TOOLFORGE_NSS_DIR=$W/tf/run LD_LIBRARY_PATH=$W/tf/lib"
    unshare --mount bash -c "mount --bind $W/nsswitch.$p /etc/nsswitch.conf; env $env_tf bash -c 'scenarios $c'"
  fi | sed "s/^/$p /"
done | tee "$W/results.txt"
ps -o rss=,comm= -C sssd,sssd_nss,sssd_be,nslcd,toolforge-nssd | awk '{print "rss_kb", $2, $1}' | tee -a "$W/results.txt"

# --- table: p50 in microseconds, and each anchor's p50 over toolforge's
echo
awk '
  $1 == "rss_kb" { rss[$2] = $3; next }
  { prov = $1; scen = $2 " " substr($3, 4)
    for (i = 4; i <= NF; i++) if ($i ~ /^p50_ns=/) { split($i, a, "="); p50[prov, scen] = a[2] }
    if (!(scen in seen)) { seen[scen] = 1; order[n++] = scen }
    if (!(prov in pseen)) { pseen[prov] = 1; provs[m++] = prov } }
  END {
    printf "%-18s", "p50 (us)"; for (j = 0; j < m; j++) printf "%12s", provs[j]; for (j = 1; j < m; j++) printf "%14s", provs[j] "/tf"; printf "\n"
    for (i = 0; i < n; i++) { s = order[i]; printf "%-18s", s
      for (j = 0; j < m; j++) printf "%12.2f", p50[provs[j], s] / 1000
      for (j = 1; j < m; j++) { t = p50["toolforge", s]; printf "%14s", (t > 0 ? sprintf("%.1fx", p50[provs[j], s] / t) : "-") }
      printf "\n" }
    printf "%-18s", "rss (MB)"; printf "%12.1f", rss["toolforge-nssd"] / 1024
    printf "%12s", "sssd " sprintf("%.0f", (rss["sssd"] + rss["sssd_nss"] + rss["sssd_be"]) / 1024); printf "%12s\n", "nslcd " sprintf("%.0f", rss["nslcd"] / 1024)
  }' "$W/results.txt"

# --- where the time goes: the module's own exports called directly (no glibc dispatch), and
# the stat(2) of /etc/nsswitch.conf that glibc (2.33 and later) makes before every NSS call,
# which every NSS module pays and nscd (asked by glibc before NSS) does not.
case " $providers " in *" toolforge "*)
  echo
  echo "toolforge module alone (dlopen, exports called directly) and glibc's per-call floor:"
  unshare --mount bash -c "mount --bind $W/nsswitch.toolforge /etc/nsswitch.conf
    export TOOLFORGE_NSS_DIR=$W/tf/run LD_LIBRARY_PATH=$W/tf/lib
    for op in module-pwnam module-pwuid; do \"$B\" \$op $W/warm.txt 20000; done
    \"$B\" module-grnam $W/groups.txt 2000
    \"$B\" module-pwnam $W/nokeys.txt 20000 | sed 's/^/miss: /'
    \"$B\" module-pwnam $W/warm.txt 40000 2 | sed 's/^/2 threads: /'
    \"$B\" nsswitch-stat $W/warm.txt 20000 | sed 's/^/glibc floor: /'"
esac
