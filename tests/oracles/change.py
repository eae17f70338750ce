#!/usr/bin/env python3
"""Golden detection indices for the change detectors, from river (pinned in requirements.txt):
river.drift.PageHinkley and river.drift.ADWIN on several streams and parameter sets, written to
tests/data/change.json. tests/oracle_change.rs runs inferscope's ports on the same streams and
expects the same indices.

Run: /tmp/oracle-venv/bin/python tests/oracles/change.py
"""

import json
import math
import pathlib
import random

import numpy as np
import river
from river import drift

OUT = pathlib.Path(__file__).resolve().parent.parent / "data" / "change.json"


def streams():
    rng = random.Random(12345)
    np_rng = np.random.default_rng(20261125)
    return {
        # river's own documentation example.
        "river_doc": [float(v) for v in rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)],
        "mean_shift": np.concatenate([np_rng.normal(0, 1, 1500), np_rng.normal(1.5, 1, 1500)]).tolist(),
        "gradual": (np_rng.normal(0, 1, 3000) + np.linspace(0, 3, 3000)).tolist(),
        "variance_change": np.concatenate([np_rng.normal(0, 0.5, 1500), np_rng.normal(0, 3, 1500)]).tolist(),
        "error_rate_burst": np.concatenate([np_rng.binomial(1, 0.02, 2000), np_rng.binomial(1, 0.3, 300),
                                            np_rng.binomial(1, 0.02, 2000)]).astype(float).tolist(),
        "stationary": np_rng.normal(5, 1, 3000).tolist(),
    }


class Cusum:
    """Two-sided tabular CUSUM (Montgomery 9.1) after a warm-up fixing mu0 and sigma (ddof 0)."""

    def __init__(self, warmup=30, k=0.5, h=5.0):
        self.warmup, self.k, self.h = warmup, k, h
        self.seen = []
        self.up = self.down = 0.0
        self.drift_detected = False

    def update(self, x):
        self.drift_detected = False
        if len(self.seen) < self.warmup:
            self.seen.append(x)
            return
        mu, sigma = float(np.mean(self.seen)), float(np.std(self.seen))
        self.up = max(0.0, self.up + x - mu - self.k * sigma)
        self.down = max(0.0, self.down + mu - self.k * sigma - x)
        if self.up > self.h * sigma or self.down > self.h * sigma:
            self.drift_detected = True
            self.up = self.down = 0.0


class Ewma:
    """EWMA chart (Montgomery 9.2) with time-varying limits after a warm-up fixing mu0, sigma."""

    def __init__(self, warmup=30, lam=0.2, L=3.0):
        self.warmup, self.lam, self.L = warmup, lam, L
        self.seen = []
        self.z = 0.0
        self.t = 0
        self.drift_detected = False

    def update(self, x):
        self.drift_detected = False
        if len(self.seen) < self.warmup:
            self.seen.append(x)
            self.z = float(np.mean(self.seen))
            return
        mu, sigma = float(np.mean(self.seen)), float(np.std(self.seen))
        self.t += 1
        self.z = self.lam * x + (1 - self.lam) * self.z
        width = self.L * sigma * math.sqrt(self.lam / (2 - self.lam) * (1 - (1 - self.lam) ** (2 * self.t)))
        if abs(self.z - mu) > width:
            self.drift_detected = True
            self.z = mu
            self.t = 0


DETECTORS = {
    "page_hinkley_default": lambda: drift.PageHinkley(),
    "page_hinkley_sensitive_up": lambda: drift.PageHinkley(min_instances=10, delta=0.01, threshold=10, mode="up"),
    "page_hinkley_down": lambda: drift.PageHinkley(threshold=20, mode="down"),
    "adwin_default": lambda: drift.ADWIN(),
    "adwin_clock_1": lambda: drift.ADWIN(delta=0.01, clock=1, max_buckets=3, min_window_length=3, grace_period=5),
    "cusum_default": lambda: Cusum(),
    "cusum_wide": lambda: Cusum(warmup=100, k=1.0, h=8.0),
    "ewma_default": lambda: Ewma(),
    "ewma_slow": lambda: Ewma(warmup=100, lam=0.05, L=2.7),
}


def main():
    data = streams()
    cases = []
    for sname, values in data.items():
        for dname, make in DETECTORS.items():
            d = make()
            hits = []
            for i, v in enumerate(values):
                d.update(v)
                if d.drift_detected:
                    hits.append(i)
            cases.append({"stream": sname, "detector": dname, "detections": hits})
    out = {"generator": "tests/oracles/change.py", "river": river.__version__, "streams": data, "cases": cases}
    with OUT.open("w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases)")
    for c in cases:
        print(c["stream"], c["detector"], c["detections"][:8], len(c["detections"]))


if __name__ == "__main__":
    main()
