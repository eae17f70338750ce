"""Instructions per record of the Python client, whole process, counted by callgrind (valgrind):
deterministic enough to compare two builds on a machine where timings are not (issue 15).

For each implementation, a child process runs under ``valgrind --tool=callgrind`` twice: with
``--records 0`` and with ``--records N``. Each run creates a client, declares a binary classifier
with 30 numeric features, sends 1000 warm-up records, flushes, then calls ``record()`` N times in
a plain loop (the call of bench_client.py: request id, latency, 30 floats in a list,
predicted_class, score), flushes again and exits. The difference of the two totals divided by N is
the cost of one record in every thread of the process (the caller's thread and the client's
background threads: building, encoding, sending, acks). ``baseline`` runs the same loop with a
no-op Python function; ``net`` subtracts it, as bench_client.py does (it over-subtracts a little
for the native client, whose call is a C call).

The records go to a small acking gRPC server that this script runs in its own process (its work is
not counted). Needs valgrind, grpcio and protobuf; the native client needs its extension built
with ``maturin develop --release``:

    python deploy/python/bench/instructions.py                       # baseline,native
    python deploy/python/bench/instructions.py --implementations native --records 20000 --keep

``--keep`` leaves the callgrind.out files (in --out) for ``callgrind_annotate --inclusive=yes``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from bench_client import make_client  # noqa: E402


def child(impl: str, records: int, target: str, features: int) -> None:
    import random

    # A queue that holds every record: under valgrind the threads run one at a time, and a
    # dropped record would cost less than a sent one.
    client, record = make_client(impl, target, features, max_queue=records + 2000)
    rng = random.Random(15)
    vectors = [[rng.gauss(0.0, 1.0) for _ in range(features)] for _ in range(1000)]
    ids = [f"req-{i}" for i in range(1000)]
    if client is not None:
        for i in range(1000):
            record(ids[i], latency_seconds=0.012, numeric_features=vectors[i], predicted_class=1, score=0.7)
        if not client.flush(120):
            raise SystemExit("warm-up not acknowledged")
    for sent in range(records):
        k = sent % 1000
        record(ids[k], latency_seconds=0.012, numeric_features=vectors[k], predicted_class=1, score=0.7)
    if client is not None:
        if not client.flush(600):
            raise SystemExit("records not acknowledged")
        s = client.stats()
        if s.dropped:
            raise SystemExit(f"{s.dropped} records dropped")
        client.close(5)
    sys.stdout.flush()
    os._exit(0)  # the interpreter's teardown is the same in both runs; skip it


def serve():
    """A gRPC IngestService that acks every batch (counting its records)."""
    import grpc

    from inferscope_client import pb, pb_grpc

    class Acker(pb_grpc.IngestServiceServicer):
        def StreamRecords(self, request_iterator, context):
            for batch in request_iterator:
                yield pb.BatchAck(sequence=batch.sequence, accepted=len(batch.records))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_IngestServiceServicer_to_server(Acker(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def count(impl: str, records: int, target: str, features: int, out: str) -> int:
    path = os.path.join(out, f"callgrind.out.{impl}.{records}")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={path}",
           sys.executable, os.path.abspath(__file__), "--child", impl, "--records", str(records),
           "--target", target, "--features", str(features)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{impl} ({records} records) failed:\n{run.stdout}\n{run.stderr[-3000:]}")
    with open(path) as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise SystemExit(f"no total in {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--implementations", default="baseline,native")
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--features", type=int, default=30)
    p.add_argument("--out", default=None, help="where the callgrind.out files go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the callgrind.out files")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.records, args.target, args.features)
        return
    server, target = serve()
    out = args.out or tempfile.mkdtemp(prefix="inferscope-instructions-")
    os.makedirs(out, exist_ok=True)
    results = {}
    try:
        for impl in args.implementations.split(","):
            empty = count(impl, 0, target, args.features, out)
            full = count(impl, args.records, target, args.features, out)
            results[impl] = (full - empty) / args.records
    finally:
        server.stop(0)
    base = results.get("baseline", 0.0)
    for impl, per_record in results.items():
        row = {"implementation": impl, "records": args.records, "features": args.features,
               "instructions_per_record": round(per_record),
               "net": round(per_record - base) if impl != "baseline" else 0}
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{impl:<9} {row['instructions_per_record']:>8} instructions/record   net {row['net']:>8}")
    if args.keep:
        print(f"callgrind files in {out}", file=sys.stderr)
    elif args.out is None:
        for name in os.listdir(out):
            os.remove(os.path.join(out, name))
        os.rmdir(out)


if __name__ == "__main__":
    main()
