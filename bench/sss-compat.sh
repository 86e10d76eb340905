#!/usr/bin/env bash
# bench/sss-compat.sh [DEVELOPERS]: an unchanged image's client, libnss_sss.so.2, against
# toolforge-nssd's SSSD-compatible socket ([daemon] sss_compat_dir) beside the same client
# against SSSD itself with its memory cache off (memcache_timeout = 0: pods do not mount
# /var/lib/sss/mc, so this is how they use SSSD today), and libnss_toolforge.so.2 for
# reference; one throwaway slapd, the same keys, one run. Prints one line per provider and
# scenario, then a table of p50 latencies and the ratios SSSD / toolforge-nssd (via sss).
#
# Needs root (mount namespaces). The host's configuration is never touched: everything runs
# in a private mount namespace with tmpfs over /run and SSSD's state directories; each
# provider's lookups run in a namespace of their own where /etc/nsswitch.conf and
# /var/lib/sss/pipes are bind mounts. Build first:
#   cargo build --release --workspace
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rel=$top/target/release
# shellcheck source=bench/lib.sh
. "$top/bench/lib.sh"
bench_enter "$0" "$@"

devs=${1:-20000}
bench_workdir tf-sss-bench

# --- the directory
"$rel/toolforge-nss-fixture" rfc2307 "$devs" --tools 3000 --projects 200 --names "$W/names" > "$W/data.ldif"
bench_slapd 34300 "$W/data.ldif"
echo "directory: $(grep -c . "$W/names/users.txt") users, $(grep -c . "$W/names/groups.txt") groups on ldap://127.0.0.1:$port" >&2
bench_keys

# --- toolforge-nssd, answering both its own protocol and SSSD's
mkdir -p "$W/tf/lib" "$W/tf/mc"
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
sss_compat_dir = "$W/tf/pipes"
[cache]
persist_interval_secs = 0
EOC
"$rel/toolforge-nssd" --config "$W/tf/config.toml" 2> "$W/tf/log" & pids+=($!)
for i in $(seq 100); do [ -S "$W/tf/pipes/nss" ] && break; sleep 0.05; done
providers="tf-sss toolforge"
# --- SSSD, memory cache off
if bench_sssd 0 "ldap_schema = rfc2307
ldap_id_use_start_tls = false
enumerate = false
cache_credentials = false
entry_cache_timeout = 300"; then sleep 0.5; providers="tf-sss sssd toolforge"; fi
sleep 1

export -f scenarios; export B W
i=0
for p in $providers; do
  i=$((i + 1)); c=$(cold $i)
  case $p in
    tf-sss) src=sss; mounts="mount --bind $W/tf/pipes /var/lib/sss/pipes; mount --bind $W/tf/mc /var/lib/sss/mc" envs="" ;;
    sssd) src=sss; mounts="true" envs="" ;;
    toolforge) src=toolforge; mounts="true" envs="TOOLFORGE_NSS_DIR=$W/tf/run LD_LIBRARY_PATH=$W/tf/lib" ;;
  esac
  printf "passwd: %s\ngroup: %s\n" "$src" "$src" > "$W/nsswitch.$p"
  unshare --mount bash -c "mount --bind $W/nsswitch.$p /etc/nsswitch.conf; $mounts; env $envs bash -c 'scenarios $c'" | sed "s/^/$p /"
done | tee "$W/results.txt"
# (by pid: other daemons of the same names may run on this machine)
sp=$(cat /run/sssd.pid 2>/dev/null || true)
{ ps -o rss=,comm= -p "${pids[1]}"; [ -n "$sp" ] && ps -o rss=,comm= -p "$sp" --ppid "$sp"; } |
  awk '{print "rss_kb", $2, $1}' | tee -a "$W/results.txt"

echo
awk '
  $1 == "rss_kb" { rss[$2] = $3; next }
  { prov = $1; scen = $2 " " substr($3, 4)
    for (i = 4; i <= NF; i++) if ($i ~ /^p50_ns=/) { split($i, a, "="); p50[prov, scen] = a[2] }
    if (!(scen in seen)) { seen[scen] = 1; order[n++] = scen }
    if (!(prov in pseen)) { pseen[prov] = 1; provs[m++] = prov } }
  END {
    printf "%-18s", "p50 (us)"; for (j = 0; j < m; j++) printf "%12s", provs[j]
    if (pseen["sssd"]) printf "%16s", "sssd/tf-sss"; printf "\n"
    for (i = 0; i < n; i++) { s = order[i]; printf "%-18s", s
      for (j = 0; j < m; j++) printf "%12.2f", p50[provs[j], s] / 1000
      t = p50["tf-sss", s]
      if (pseen["sssd"]) printf "%16s", (t > 0 ? sprintf("%.1fx", p50["sssd", s] / t) : "-")
      printf "\n" }
    printf "%-18s%12.1f", "rss (MB)", rss["toolforge-nssd"] / 1024
    if (pseen["sssd"]) printf "%12.1f", (rss["sssd"] + rss["sssd_nss"] + rss["sssd_be"]) / 1024
    printf "\n"
  }' "$W/results.txt"
