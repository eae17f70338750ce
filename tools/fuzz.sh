#!/usr/bin/env bash
# Runs tests/fuzz_ingest.rs (decode + validate + aggregate under mutated inputs) for SECONDS
# with a fresh seed; when it fails, the input that failed is added to tests/data/fuzz/, so that
# `cargo test` replays it from then on (commit it with the fix).
# Usage: tools/fuzz.sh [SECONDS]
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
seed=${INFERSCOPE_FUZZ_SEED:-$RANDOM$RANDOM}
echo "fuzzing for $seconds s with seed $seed"
if INFERSCOPE_FUZZ_SECONDS=$seconds INFERSCOPE_FUZZ_SEED=$seed \
    cargo test --release --test fuzz_ingest; then
  echo "no failure in $seconds s"
  exit 0
fi
current=target/tmp/fuzz-current.bin
if [[ -f $current ]]; then
  keep=tests/data/fuzz/crash-$(sha256sum "$current" | cut -c1-16).bin
  mv "$current" "$keep"
  echo "the failing input is now $keep"
fi
exit 1
