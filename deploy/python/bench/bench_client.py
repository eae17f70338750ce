"""What the Python client costs the model server (issue 15): whole-process CPU per record, drops,
and the latency of each ``record()`` call, for the native and the pure-Python client in one run.

Each implementation runs in a process of its own (so that the CPU figures are that process's
alone: resource.getrusage(RUSAGE_SELF) counts every thread, the client's background threads
included). The process declares a binary classifier with ``--features`` numeric features, then
calls ``record()`` at ``--rate`` records per second for ``--seconds`` (in 1 ms ticks: each tick
sends what is due, then sleeps), times every call with time.perf_counter_ns, then flushes. A third
process, ``baseline``, runs the same loop with a no-op ``record``: its CPU per record is the
harness's own (the loop, the timer calls, the sleeps), subtracted in the ``net`` column.

Needs a running sidecar (the release build; --null-sink keeps the sidecar's own work small, but
its CPU is not counted here anyway):

    cargo build --release --bin inferscope
    ./target/release/inferscope serve --listen 127.0.0.1:17717 --null-sink --no-traces \\
        --otlp-endpoint http://127.0.0.1:9 &
    python deploy/python/bench/bench_client.py --target 127.0.0.1:17717

Prints one line per implementation and, with --json, one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return r.ru_utime + r.ru_stime


def percentile(sorted_values, q: float) -> float:
    if not sorted_values:
        return math.nan
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def make_client(impl: str, target: str, features: int, max_queue: int):
    """``(client, record)`` for ``impl``: the native or pure-Python client with a binary
    classifier of ``features`` numeric features declared, or for ``baseline`` no client and a
    no-op ``record``. Also used by bench/instructions.py."""
    if impl == "baseline":

        def record(*_a, **_k):
            return True

        return None, record
    os.environ["INFERSCOPE_CLIENT"] = impl
    import inferscope_client

    cls = inferscope_client.InferscopeClient
    if cls.implementation != impl:
        raise SystemExit(f"asked for the {impl} client, got {cls.implementation}")
    client = cls(target, model="bench", version="1", max_queue=max_queue)
    client.declare_model(task="binary", class_names=["neg", "pos"],
                         numeric_features=[f"f{i}" for i in range(features)])
    return client, client.record


def run_one(impl: str, args: argparse.Namespace) -> dict:
    """One implementation, in this process."""
    client, record = make_client(impl, args.target, args.features, args.max_queue)

    rng = random.Random(15)
    # Inputs made before timing: 1000 feature vectors and request ids, cycled.
    vectors = [[rng.gauss(0.0, 1.0) for _ in range(args.features)] for _ in range(1000)]
    total = int(args.rate * args.seconds)
    ids = [f"req-{i}" for i in range(1000)]
    latencies = array("q", bytes(8 * total))
    accepted = 0
    tick = 0.001
    per_tick = args.rate * tick
    perf = time.perf_counter_ns
    if client is not None:  # connect and warm up before measuring
        for i in range(1000):
            record(ids[i], latency_seconds=0.012, numeric_features=vectors[i], predicted_class=1, score=0.7)
        client.flush(10)
    start_cpu = cpu_seconds()
    start = time.monotonic()
    due = 0.0
    sent = 0
    while sent < total:
        due += per_tick
        n = min(total, int(due)) - sent
        for _ in range(n):
            k = sent % 1000
            t0 = perf()
            ok = record(ids[k], latency_seconds=0.012, numeric_features=vectors[k], predicted_class=1, score=0.7)
            latencies[sent] = perf() - t0
            accepted += ok
            sent += 1
        next_tick = start + (sent / args.rate)
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    elapsed = time.monotonic() - start
    flushed = client.flush(30) if client is not None else True
    used = cpu_seconds() - start_cpu
    stats = client.stats() if client is not None else None
    if client is not None:
        client.close(5)
    lat = sorted(latencies)
    return {
        "implementation": impl,
        "records": total,
        "features": args.features,
        "target_rate": args.rate,
        "achieved_rate": round(total / elapsed),
        "seconds": round(elapsed, 2),
        "cpu_us_per_record": used / total * 1e6,
        "accepted": accepted,
        "dropped": stats.dropped if stats else 0,
        "acked": (stats.acked - 1000) if stats else total,
        "flushed": flushed,
        "record_p50_us": percentile(lat, 0.50) / 1000,
        "record_p99_us": percentile(lat, 0.99) / 1000,
        "record_p999_us": percentile(lat, 0.999) / 1000,
        "record_max_us": lat[-1] / 1000 if lat else math.nan,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=os.environ.get("INFERSCOPE_ADDR", "127.0.0.1:7717"))
    p.add_argument("--rate", type=float, default=100_000, help="records per second (default 100000)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--features", type=int, default=30)
    p.add_argument("--max-queue", type=int, default=10_000, help="the client's max_queue (default 10000)")
    p.add_argument("--implementations", default="baseline,native,python")
    p.add_argument("--json", action="store_true", help="one JSON object per implementation")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args)))
        return
    results = []
    for impl in args.implementations.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, "--target", args.target,
               "--rate", str(args.rate), "--seconds", str(args.seconds), "--features", str(args.features),
               "--max-queue", str(args.max_queue)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    base = next((r["cpu_us_per_record"] for r in results if r["implementation"] == "baseline"), 0.0)
    for r in results:
        r["net_cpu_us_per_record"] = r["cpu_us_per_record"] - base if r["implementation"] != "baseline" else 0.0
    if args.json:
        for r in results:
            print(json.dumps(r))
        return
    print(f"{'client':<9} {'rec/s':>8} {'CPU µs/rec':>10} {'net':>6} {'dropped':>8} {'acked':>8} "
          f"{'p50 µs':>7} {'p99 µs':>7} {'p99.9 µs':>8} {'max µs':>8}")
    for r in results:
        print(f"{r['implementation']:<9} {r['achieved_rate']:>8} {r['cpu_us_per_record']:>10.2f} "
              f"{r['net_cpu_us_per_record']:>6.2f} {r['dropped']:>8} {r['acked']:>8} {r['record_p50_us']:>7.2f} "
              f"{r['record_p99_us']:>7.2f} {r['record_p999_us']:>8.2f} {r['record_max_us']:>8.0f}")


if __name__ == "__main__":
    main()
