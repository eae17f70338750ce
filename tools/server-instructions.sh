#!/usr/bin/env bash
# Instructions per record of the whole server (ingest's decoding and validation, the shards, the
# gRPC stack, delayed labels' SubmitLabels), counted by callgrind under the load generator:
# deterministic enough to compare modes and commits on a machine where timings are not
# (BENCHMARKS.md, "Delayed labels (issue 15)"). A 2 s warm-up (the reference profile's 2000
# records, lazy start-up) is sent first; the counters are zeroed, then LOADGEN_SECONDS of load
# from 4 streams is counted and divided by the records acknowledged (two runs of one binary:
# 21 244 and 21 288 a delayed-label record).
# Usage: tools/server-instructions.sh LABELS OUT [server flags...]
#   LABELS: none | inline | delayed (the load generator's --labels); OUT: callgrind file prefix
#   (the counted part is OUT.1; `callgrind_annotate --inclusive=yes OUT.1`).
# Env: SERVER, LOADGEN (default ./target/release/{inferscope,examples/loadgen}), LOADGEN_SECONDS
# (default 10), IDS (--ids, default 256). Example: tools/server-instructions.sh none /tmp/n --null-sink
set -euo pipefail
labels=${1:?usage: tools/server-instructions.sh LABELS OUT [server flags...]}
out=${2:?usage: tools/server-instructions.sh LABELS OUT [server flags...]}
shift 2
server=${SERVER:-./target/release/inferscope}
loadgen=${LOADGEN:-./target/release/examples/loadgen}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
port=$((17800 + RANDOM % 100))
valgrind --tool=callgrind --callgrind-out-file="$out" "$server" serve --listen 127.0.0.1:$port \
  --shards 1 --no-traces --otlp-endpoint http://127.0.0.1:9 "$@" >"$out.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 120); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.5; done
"$loadgen" --addr 127.0.0.1:$port --seconds 2 --streams 2 --ids "${IDS:-256}" --labels "$labels" \
  --quiet >/dev/null
callgrind_control -z $pid >/dev/null 2>&1
result=$("$loadgen" --addr 127.0.0.1:$port --seconds "${LOADGEN_SECONDS:-10}" --streams 4 \
  --ids "${IDS:-256}" --labels "$labels" --quiet | tail -1)
callgrind_control -d $pid >/dev/null 2>&1
kill -TERM $pid; wait $pid || true
trap - EXIT
records=$(sed 's/.* records=\([0-9]*\).*/\1/' <<<"$result")
total=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$out.1")
echo "labels=$labels records=$records instructions=$total instructions_per_record=$((total / records)) profile=$out.1"
