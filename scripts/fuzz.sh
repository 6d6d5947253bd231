#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 600), on the stable
# toolchain without a sanitizer, then minimizes each corpus (fuzz/corpus/TARGET, committed
# small). Installs cargo-fuzz from crates.io when it is missing. A crash stops the script and
# leaves its input under fuzz/artifacts/TARGET/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(identifiers requests store_records)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== $target: ${seconds} s"
  cargo fuzz run --sanitizer none -O "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1
  cargo fuzz cmin --sanitizer none -O "$target" "corpus/$target"
done
