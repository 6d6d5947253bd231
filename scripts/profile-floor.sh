#!/usr/bin/env bash
# Where the server's core goes per call: `mpi-bench floor` (the echo floor, then
# FindLocations without the audit log, then the echo with a durable append per call, then
# FindLocations; server pinned to core 0, client to core 1) under `perf record`, then the samples of each phase grouped by component in
# microseconds per call
# (scripts/perf-components.py). Needs `perf` and `python3`; builds the benchmark with debug
# line tables into target/profiling (the release profile otherwise), so stacks name inlined
# functions. Writes its files into OUT.
#
#   scripts/profile-floor.sh [PERSONS] [SECONDS] [OUT]      defaults 100000, 10, target/profile-floor
set -euo pipefail
cd "$(dirname "$0")/.."
persons="${1:-100000}"
seconds="${2:-10}"
out="${3:-target/profile-floor}"
mkdir -p "$out"
CARGO_TARGET_DIR=target/profiling CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release --locked -p mpi-bench
perf record -o "$out/perf.data" -F 499 --call-graph dwarf,12288 -- \
    target/profiling/release/mpi-bench floor --persons "$persons" --seconds "$seconds" \
    > "$out/floor.md"
cat "$out/floor.md"
# Calls per second of the two phases: the fourth column of their rows.
rate() { grep -F "| $1" "$out/floor.md" | awk -F'|' '{gsub(/ /, "", $5); print $5}'; }
perf script -i "$out/perf.data" -F comm,tid,time,ip,sym > "$out/perf.txt" 2> /dev/null
# Then the person view and the resolution (both under disclosure_view) by what their samples
# were in: the five tables' reads, redb's page cache, key comparisons, reads from the file, the
# read cache.
python3 scripts/perf-components.py "$out/perf.txt" "$(rate 'Echo floor')" "$(rate 'FindLocations (mTLS')" \
    499 --find-seconds "$seconds" --unaudited "$(rate 'FindLocations without')" \
    --durable "$(rate 'Echo with a durable')" --within 'Mpi>::disclosure_view' \
    locations_of consents_of qualifications_by_insured persons_of members_of \
    PagedCachedFile::read =PagedCachedFile::read =memcmp pread64 open_table begin_read \
    TransactionTracker decode ReadCache::get ReadCache::put quick_cache
