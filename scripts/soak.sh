#!/usr/bin/env bash
# The soak: the mixed load (90 % FindLocations, 9 % RegisterLocations, 1 % consent changes)
# at a fraction of its measured maximum against the server on loopback, for a bounded time,
# reporting refused sends, failed calls, p50/p99/p99.9 by kind and resident memory every 30 s
# (crates/mpi-bench/src/soak.rs). Exits non-zero on any error.
#
#   scripts/soak.sh [SECONDS] [FRACTION]      defaults 600 and 0.7
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked -p mpi-bench -- soak --duration "${1:-600}" --fraction "${2:-0.7}"
