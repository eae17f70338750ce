#!/usr/bin/env bash
# Instructions per record on the shard path (tools/shard-cost), this checkout against another
# commit, counted by callgrind: deterministic, so it compares commits on a noisy machine where
# timings cannot (BENCHMARKS.md). Usage: tools/count-instructions.sh BASE_REV [BATCHES]
# Env: FEATURES=before-series-interval for a base commit older than ShardSettings::series_interval;
# NO_DRIFT=1 measures without a reference profile (no drift, no profile-based checks).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: tools/count-instructions.sh BASE_REV [BATCHES]}
batches=${2:-20}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
work=$(mktemp -d)
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/base" "$base" >/dev/null 2>&1
mkdir -p "$work/base/tools"
cp -r tools/shard-cost "$work/base/tools/"
target=${CARGO_TARGET_DIR:-$PWD/target}
count() { # DIR LABEL FEATURES
  (cd "$1/tools/shard-cost" && CARGO_TARGET_DIR="$target" cargo build -q --release ${3:+--features "$3"})
  cp "$target/release/shard-cost" "$work/bin-$2"
  local setup total
  setup=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$work/bin-$2" 0 2>&1 | sed -n 's/.*Collected : //p')
  total=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$work/bin-$2" "$batches" 2>&1 | sed -n 's/.*Collected : //p')
  echo "$2 instructions_per_record=$(( (total - setup) / (batches * 1000) ))"
}
count "$work/base" base "${FEATURES:-}"
count "$PWD" head ""
