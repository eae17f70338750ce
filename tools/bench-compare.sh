#!/usr/bin/env bash
# The whole comparison of issue 15 in one run (BENCHMARKS.md, "The whole comparison"): the null
# sink against every mode of tools/bench-throughput.sh, back to back, for each number of
# features, then two peers (whylogs and river, pinned below, in .tools/peers-venv) on the same
# records (`loadgen --dump-csv`), and one table: records/s, the share of the null sink's rate,
# server CPU per record, ack latency.
# Usage: tools/bench-compare.sh [ROUNDS] [SECONDS]      (default 3 rounds of 10 s)
# Env: FEATURES (default "16 32 128 256"), MODES (default "null inline delayed nohst nodrift"),
# PEERS=0 skips the peers. Needs the machine to itself: it pins the server to core 0 and the load
# generator to core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-10}
export FEATURES=${FEATURES:-16 32 128 256}
export MODES=${MODES:-null inline delayed nohst nodrift}
out=$(mktemp)
trap 'rm -f "$out" "$out.csv"' EXIT
tools/bench-throughput.sh "$rounds" "$seconds" | tee "$out"
echo
echo "| features | mode | records/s (mean of $rounds) | share of null sink | server CPU µs/record | ack p50 ms | ack p99 ms | ack p99.9 ms |"
echo "|---|---|---|---|---|---|---|---|"
awk '
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    k = v["features"] SUBSEP v["mode"]; n[k]++; rate[k] += v["records_per_second"]
    cpu[k] += v["cpu_us_per_record"]; p50[k] += v["ack_p50_ms"]; p99[k] += v["ack_p99_ms"]
    p999[k] += v["ack_p999_ms"]; if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
  END {
    for (i = 1; i <= m; i++) {
      k = order[i]; split(k, fm, SUBSEP); null = fm[1] SUBSEP "null"
      share = (null in rate) ? sprintf("%.2f", (rate[k] / n[k]) / (rate[null] / n[null])) : "-"
      printf "| %s | %s | %.0f | %s | %.3f | %.2f | %.2f | %.2f |\n", fm[1], fm[2], rate[k] / n[k],
        share, cpu[k] / n[k], p50[k] / n[k], p99[k] / n[k], p999[k] / n[k]
    }
  }' "$out"
[[ "${PEERS:-1}" == 1 ]] || exit 0
venv=.tools/peers-venv
packages="whylogs==1.6.4 river==0.22.0 pandas==2.2.3"
if [[ ! -f $venv/.packages || "$(cat $venv/.packages)" != "$packages" ]]; then
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q $packages
  echo "$packages" > "$venv/.packages"
fi
echo
echo "Peers on the same records (one core, CPU per record, $packages):"
for features in $FEATURES; do
  ./target/release/examples/loadgen --dump-csv "$out.csv" --features "$features" --ids 64
  echo "features=$features"
  taskset -c 1 "$venv/bin/python" tools/bench-peers.py "$out.csv"
done
