#!/bin/bash
# Peak RSS of a release sidecar (one shard, no export) while <streams> clients stream 1000-record
# batches whose every feature is NaN (large acks) and never read an ack, for 40 s; prints the peak
# and how the streams were ended. Build first: cargo build --release --example loadgen --bin inferscope
# usage: tools/unread-rss.sh <streams> <extra serve args...>
streams=$1; shift
port=17717
./target/release/inferscope serve --listen 127.0.0.1:$port --no-metrics --no-traces --shards 1 "$@" > /tmp/rss-serve.log 2>&1 &
pid=$!
sleep 1
./target/release/examples/loadgen --addr 127.0.0.1:$port --streams $streams --seconds 40 --unread true --nan true > /tmp/rss-load.log 2>&1 &
lg=$!
peak=0
for i in $(seq 1 90); do
  r=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  [ "$r" -gt "$peak" ] && peak=$r
  sleep 0.5
done
wait $lg
kill -TERM $pid; wait $pid
echo "streams=$streams peak_rss_mib=$((peak/1024)) $*"
grep -o "stream ended: code: .[^:]*" /tmp/rss-load.log | sort | uniq -c
