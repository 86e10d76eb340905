#!/usr/bin/env bash
# bench/mapfile.sh: figures of the shared cache data and the module's gid handling, from
# optimised builds of the tests that check them with generous margins:
#  - the whole directory (40,000 users, 5,000 groups, every table) built and written in
#    place into cache.map (issue 11 item 3: "well under a second");
#  - de-duplication of a 65,536-gid initgroups answer (issue 11 item 6: "under 10 ms").
# Pinned memory with 500 idle processes is measured by tests/it/tenancy.rs (it prints it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -q -p toolforge-nssd --lib \
  publish::tests::the_whole_directory_reaches_the_shared_data_in_well_under_a_second \
  -- --nocapture 2>&1 | grep -E 'whole directory|test result'
cargo test --release -q -p nss-toolforge --lib \
  exports::tests::group_de_duplication_keeps_order_and_is_fast_on_65536_gids \
  -- --nocapture 2>&1 | grep -E '65536|test result'
