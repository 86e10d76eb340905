#!/usr/bin/env bash
# bench/flood.sh [SECONDS] [THREADS]: issue 10's flood, with counts. One uid (65534) runs
# THREADS threads (default 300) looking up distinct names that do not exist for SECONDS
# (default 20) against a stock slapd; meanwhile and after, root makes 200 cold lookups of real
# users. Three runs: the pool alone (no per-uid budget) on one server, on two servers, and with
# the default budget (50 queries/s, burst 200). Prints, per run, the flood's lookups and
# answers, root's lookups (failed, p50/p99/max), and the directory's side: searches,
# connections opened, server failures, timeouts, queue timeouts, misses refused for budget.
# Needs root (the flooding child switches to uid 65534). Build first:
#   cargo build --release --workspace
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rel=$top/target/release
[ "$(id -u)" = 0 ] || { echo "bench/flood.sh needs root (the flood runs as uid 65534)" >&2; exit 2; }
for b in toolforge-nssd toolforge-nss-flood; do
  [ -e "$rel/$b" ] || { echo "missing $rel/$b: run cargo build --release --workspace" >&2; exit 2; }
done
secs=${1:-20}
threads=${2:-300}
for run in "--servers 1 --budget 0" "--servers 2 --budget 0" "--servers 1 --budget 50"; do
  echo "== $run"
  # shellcheck disable=SC2086
  "$rel/toolforge-nss-flood" --seconds "$secs" --threads "$threads" $run
done
