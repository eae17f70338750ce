#!/usr/bin/env bash
# Soak: the default pipeline under steady load, RSS sampled from /proc every interval.
# Usage: tools/soak.sh [seconds=600] [interval=30] [streams=4] [distinct=1] [ids=256]  (release build:
#   cargo build --release --bin inferscope --example loadgen)
# Env: SERVE_FLAGS and LOADGEN_FLAGS add flags to the server and the load generator, e.g. the
# many-versions memory figure of BENCHMARKS.md: SERVE_FLAGS="--max-models 128"
# LOADGEN_FLAGS="--versions 100 --classes 10 --labels delayed --rate 100000".
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"; interval="${2:-30}"; streams="${3:-4}"; distinct="${4:-1}"; ids="${5:-256}"
# shellcheck disable=SC2086
taskset -c 0 ./target/release/inferscope serve --listen 127.0.0.1:17718 --shards 1 ${SERVE_FLAGS:-} \
    --no-traces --otlp-endpoint http://127.0.0.1:9 > /tmp/inferscope-soak.log 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
sleep 1
taskset -c 1 ./target/release/examples/loadgen --addr 127.0.0.1:17718 --seconds "$seconds" --streams "$streams" --distinct "$distinct" --ids "$ids" \
  --quiet ${LOADGEN_FLAGS:-} &
load=$!
start=$(date +%s)
echo "elapsed_s rss_kb"
while kill -0 "$load" 2>/dev/null; do
  echo "$(( $(date +%s) - start )) $(awk '/VmRSS/ {print $2}' /proc/$server/status)"
  sleep "$interval"
done
wait "$load"
