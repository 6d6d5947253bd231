#!/usr/bin/env bash
# The crash test at length: SIGKILL the server at random moments under concurrent load and
# check every acknowledged write after each restart (tests/e2e/crash.rs).
#
#   scripts/crash-test.sh [CYCLES]      default 200; KOUIKI_CRASH_SEED=... replays a run
set -euo pipefail
cd "$(dirname "$0")/.."
export KOUIKI_CRASH_CYCLES="${1:-200}"
exec cargo test --locked --test e2e crash:: -- --nocapture
