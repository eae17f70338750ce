#!/usr/bin/env python3
"""Sends a few hundred synthetic inference records (and some delayed labels) to an inferscope
sidecar, by default at 127.0.0.1:7717, and prints the client's counters.

    python examples/send_records.py [--target 127.0.0.1:7717] [--count 300]

Start a sidecar first, e.g. `inferscope serve` (or `inferscope demo`) on the same machine.
"""

import argparse
import logging
import math
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from inferscope_client import InferscopeClient  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="127.0.0.1:7717")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rng = random.Random(args.seed)

    client = InferscopeClient(args.target, model="fraud", version="7", batch_size=100)
    # Fast path: declare the schema once, then send positional features.
    client.declare_model(
        task="binary",
        class_names=["legit", "fraud"],
        positive_class="fraud",
        numeric_features=["amount", "account_age_days"],
        categorical_features=["country"],
    )
    client.declare_model("chat", "2025-01", task="generation", gen_ai_provider="vllm")

    labels = []
    for i in range(args.count):
        rid = f"req-{i}"
        if i % 10 == 9:  # an LLM call
            client.record(
                rid,
                model="chat",
                version="2025-01",
                latency_seconds=rng.uniform(0.3, 3.0),
                input_tokens=rng.randint(20, 400),
                output_tokens=rng.randint(10, 600),
                time_to_first_token_seconds=rng.uniform(0.05, 0.4),
                finish_reason="stop",
            )
            continue
        amount = rng.lognormvariate(3.5, 1.2)
        score = 1 / (1 + math.exp(-(math.log(amount) - 5)))
        failed = rng.random() < 0.02
        client.record(
            rid,
            latency_seconds=rng.gammavariate(2.0, 0.006),
            error_type="timeout" if failed else "",
            numeric_features=[amount, float(rng.randint(0, 3000))],
            categorical_features=[rng.choice(["fr", "de", "us", "br"])],
            predicted_class=None if failed else int(score >= 0.5),
            score=None if failed else score,
        )
        if not failed and rng.random() < 0.3:
            labels.append((rid, "fraud" if rng.random() < score else "legit"))

    time.sleep(0.5)  # ground truth arrives later
    for rid, label in labels:
        client.send_label(rid, label)

    ok = client.close(timeout=10)
    print(client.stats())
    if not ok:
        print(f"not everything was acknowledged: is a sidecar listening on {args.target}?", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
