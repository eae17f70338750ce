#!/usr/bin/env bash
# End-to-end throughput on loopback (BENCHMARKS.md): the release server pinned to core 0 with one
# shard, the load generator pinned to core 1 with 16 streams of 1000-record batches and 256 000
# distinct request ids. For each round, one run per mode, back to back:
#   null      --null-sink: decode and ack only (the practical limit)
#   none      default pipeline; predictions wait for labels that never come (the pending store
#             fills to --max-pending-labels and evicts its oldest for every new prediction)
#   inline    default pipeline; every record carries its label
#   delayed   default pipeline; every batch's labels follow through SubmitLabels once acked;
#             2 048 000 distinct request ids and --max-pending-labels 2000000, so that every
#             prediction waits for its label: at saturation the unacked batches and the load
#             generator's queue of labels (up to 64 batches a stream) hold more predictions than
#             256 000 ids or the default 200 000 pending, which made most predictions duplicates
#             or evicted (BENCHMARKS.md, "Delayed labels (issue 15)")
#   nojoin    default pipeline with --max-pending-labels 0 (delayed-label join off)
#   nodrift   as inline, with --reference-records 0 (no profile: no drift, no profile-based
#             anomaly checks, no Half-Space Trees)
#   nohst     as inline, with the Half-Space Trees off (config file: [anomaly] hst_trees = 0)
#   redis     as delayed, with the fleet's shared label store (--label-store) on a redis-server
#             from .tools/bin (tools/install-backends.sh redis) pinned to core 1 with the load
#             generator, emptied before each run (not in the default MODES)
# In every default mode the model's reference profile is captured from its first 2000 records,
# so drift (32 numeric features) and every anomaly detector run for the rest of the run.
# Usage: tools/bench-throughput.sh [ROUNDS] [SECONDS]
# Env: MODES="null inline ..." runs only those modes; BASELINE=/path/to/an/older/inferscope runs
# every mode with that server too, right after this checkout's (`server=base` in the output), so
# that a change is compared with what it replaced in the same run on a noisy machine.
# RATE=N offers N records/s in total (the load generator's --rate) instead of saturating: figures
# at a fixed load, e.g. the highest rate at which the redis mode stores every prediction.
# FEATURES="16 32 128 256" repeats everything for each number of numeric features (default 32).
# SHARDS=2 SERVER_CPUS=0,1 LOADGEN_CPUS=0,1: the scaling figure (the server's shards on both cores,
# the load generator sharing them; defaults 1, 0 and 1).
# STREAMS and BATCH (default 16 and 1000): the load generator's streams and records per batch.
# ARRIVALS=even|poisson|burst (with RATE; default even): how the load generator spaces batches
# (examples/loadgen.rs --arrivals; burst is how it paced before: every stream on the same tick).
# Each line also gives the load generator's ack latency (p50/p99/p99.9, ms; with RATE, from each
# batch's due instant, so batches held up in the load generator by a stalled server count).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-10}
cargo build --release --bin inferscope --example loadgen >/dev/null
cpu() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }
nohst_config=$(mktemp --suffix=.toml)
trap 'rm -f "$nohst_config"' EXIT
printf '[anomaly]\nhst_trees = 0\n' >"$nohst_config"
redis_pid=
if [[ " ${MODES:-} " == *" redis "* ]]; then
  taskset -c 1 .tools/bin/redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no \
    --maxmemory 2gb --maxmemory-policy volatile-ttl >/tmp/inferscope-bench-redis.log 2>&1 &
  redis_pid=$!
  trap 'rm -f "$nohst_config"; kill $redis_pid 2>/dev/null || true' EXIT
  sleep 0.5
fi
for features in ${FEATURES:-32}; do
for round in $(seq "$rounds"); do
  for mode in ${MODES:-null nodrift nohst inline none delayed nojoin}; do
    for server in ./target/release/inferscope ${BASELINE:-}; do
      flags=(); labels=none; ids=256
      case $mode in
        null) flags=(--null-sink) ;;
        inline) labels=$mode ;;
        delayed) labels=$mode; ids=2048; flags=(--max-pending-labels 2000000) ;;
        nojoin) flags=(--max-pending-labels 0) ;;
        nodrift) flags=(--reference-records 0); labels=inline ;;
        nohst) flags=(--config "$nohst_config"); labels=inline ;;
        redis)
          flags=(--label-store redis://127.0.0.1:16379/0); labels=delayed
          .tools/bin/redis-cli -p 16379 FLUSHALL >/dev/null
          .tools/bin/redis-cli -p 16379 CONFIG RESETSTAT >/dev/null ;;
      esac
      taskset -c "${SERVER_CPUS:-0}" "$server" serve --listen 127.0.0.1:17717 --shards "${SHARDS:-1}" "${flags[@]}" \
        --no-traces --otlp-endpoint http://127.0.0.1:9 >/tmp/inferscope-bench.log 2>&1 &
      pid=$!
      sleep 1
      before=$(cpu $pid)
      result=$(taskset -c "${LOADGEN_CPUS:-1}" ./target/release/examples/loadgen --addr 127.0.0.1:17717 \
        --seconds "$seconds" --streams "${STREAMS:-16}" --batch "${BATCH:-1000}" --ids "$ids" \
        --labels "$labels" --rate "${RATE:-0}" --arrivals "${ARRIVALS:-even}" \
        --features "$features" --quiet | tail -1)
      rate=$(sed 's/.*records_per_second=\([0-9]*\).*/\1/' <<<"$result")
      records=$(sed 's/.* records=\([0-9]*\).*/\1/' <<<"$result")
      used=$(echo "$(cpu $pid) - $before" | bc)
      rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
      label=new; [[ $server == ./target/release/inferscope ]] || label=base
      extra=
      if [[ $mode == redis ]]; then
        # Predictions written (SET calls; the rest were dropped and counted) and taken (GETDEL hits).
        stats=$(.tools/bin/redis-cli -p 16379 INFO commandstats)
        sets=$(sed -n 's/^cmdstat_set:calls=\([0-9]*\).*/\1/p' <<<"$stats")
        extra=" stored_share=$(echo "scale=3; ${sets:-0} / $records" | bc) redis_keys_left=$(.tools/bin/redis-cli -p 16379 DBSIZE)"
      fi
      latency=$(grep -o 'ack_p50_ms=.*' <<<"$result")
      echo "features=$features round=$round mode=$mode server=$label records_per_second=$rate cpu_us_per_record=$(echo "scale=3; $used * 1000000 / $records" | bc) rss_kb=$rss $latency$extra"
      kill -TERM $pid
      wait $pid || true
      sleep 0.5
    done
  done
done
done
