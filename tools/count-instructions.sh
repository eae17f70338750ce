#!/usr/bin/env bash
# Instructions per record on the shard path (tools/shard-cost), this checkout against another
# commit, counted by callgrind: deterministic, so it compares commits on a noisy machine where
# timings cannot (BENCHMARKS.md). Both runs build the same records, so only the shard's work is
# counted. Usage: tools/count-instructions.sh BASE_REV [BATCHES]
# Env: NO_DRIFT=1 measures without a reference profile (no drift, no profile-based checks);
# RECORD_FEATURES=N sends N numeric features a record (default 32). The base commit must have the
# ShardSettings tools/shard-cost builds (e43c855 or later). Cargo runs under /tmp/cargo.lock when
# that file exists (machines shared by several builds), valgrind outside it.
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
lock=(); [ -e /tmp/cargo.lock ] && lock=(flock /tmp/cargo.lock)
count() { # DIR LABEL
  (cd "$1/tools/shard-cost" && CARGO_TARGET_DIR="$target" "${lock[@]}" cargo build -q --release)
  cp "$target/release/shard-cost" "$work/bin-$2"
  local setup total
  setup=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$work/bin-$2" "$batches" setup 2>&1 | sed -n 's/.*Collected : //p')
  total=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$work/bin-$2" "$batches" 2>&1 | sed -n 's/.*Collected : //p')
  echo "$2 features=${RECORD_FEATURES:-32} instructions_per_record=$(( (total - setup) / (batches * 1000) ))"
}
count "$work/base" base
count "$PWD" head
