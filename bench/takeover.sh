#!/usr/bin/env bash
# bench/takeover.sh [cargo-profile-flag]: what a long-running process sees while the daemon is
# restarted or replaced (issue 14). Runs the takeover tests (tests/it/takeover.rs), in which a
# client loops over 100 cached users (warm: as fast as it can) and users never looked up (cold:
# one every 2 ms) through glibc and the module, and prints, per case, lookups, failures and the
# worst latency of each kind, and how long cold lookups kept failing.
#
# Needs root (mount namespaces, as the tests do). Release build by default; pass "" for debug.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
profile=${1---release}
[ "$(id -u)" = 0 ] || { echo "bench/takeover.sh needs root (mount namespaces)" >&2; exit 2; }
cd "$top"
# shellcheck disable=SC2086
cargo build $profile --workspace >&2
# shellcheck disable=SC2086
out=$(cargo test $profile -p toolforge-nss-tests --test it -- takeover:: --nocapture --test-threads 1 2>&1) || {
  echo "$out" | tail -40 >&2; exit 1; }
echo "$out" | grep -o 'takeover-figures .*' | sed 's/^takeover-figures //' | awk '
BEGIN { printf "%-28s %10s %7s %9s %8s %7s %9s %13s\n", "case", "warm", "failed", "worst_ms", "cold", "failed", "worst_ms", "cold_fail_ms" }
{
  for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  printf "%-28s %10s %7s %9s %8s %7s %9s %13s\n", v["case"], v["warm_lookups"], v["warm_failed"], v["warm_worst_ms"], v["cold_lookups"], v["cold_failed"], v["cold_worst_ms"], v["cold_failures_for_ms"]
}'
