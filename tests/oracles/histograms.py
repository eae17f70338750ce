"""Golden vectors for inferscope's explicit-bucket histogram (src/stats/histogram.rs).

Oracle: NumPy. With OpenTelemetry/Prometheus semantics a value v falls in bucket i when
bounds[i-1] < v <= bounds[i]; that is numpy.searchsorted(bounds, v, side="left").

Run from the repository root (writes tests/data/histograms.json):
    python3 -m venv /tmp/oracles && /tmp/oracles/bin/pip install -r tests/oracles/requirements.txt
    /tmp/oracles/bin/python tests/oracles/histograms.py
"""

import json
import pathlib

import numpy as np

# The bound sets of src/operational.rs; the Rust test checks that they still agree.
BOUNDS = {
    "LATENCY_BOUNDS": [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
                       1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0],
    "GEN_AI_REQUEST_DURATION_BOUNDS": [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56,
                                       5.12, 10.24, 20.48, 40.96, 81.92],
    "GEN_AI_TTFT_BOUNDS": [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                           1.0, 2.5, 5.0, 7.5, 10.0],
    "GEN_AI_TPOT_BOUNDS": [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                           2.5],
    "GEN_AI_TOKEN_BOUNDS": [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
                            262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0],
}


def datasets(rng, bounds):
    b = np.array(bounds)
    yield "lognormal", rng.lognormal(np.log(np.median(b)), 1.5, 1500)
    yield "on_the_bounds", np.concatenate([b, b, np.nextafter(b, np.inf), np.nextafter(b, -np.inf)])
    yield "below_and_above", np.concatenate([rng.uniform(-5, 0, 50), rng.uniform(b[-1], 10 * b[-1], 50)])
    yield "single", np.array([b[len(b) // 2]])
    yield "empty", np.array([])
    yield "integers", rng.integers(0, int(b[-1]) + 2, 500).astype(float)


def main():
    rng = np.random.default_rng(20261123)
    cases = []
    for name, bounds in BOUNDS.items():
        for dataset, values in datasets(rng, bounds):
            buckets = np.bincount(np.searchsorted(bounds, values, side="left"),
                                  minlength=len(bounds) + 1)
            cases.append({
                "bounds": name,
                "dataset": dataset,
                "values": values.tolist(),
                "bucket_counts": buckets.tolist(),
                "count": int(values.size),
                "sum": float(np.sum(values)),
                "min": float(values.min()) if values.size else None,
                "max": float(values.max()) if values.size else None,
            })
    out = pathlib.Path(__file__).resolve().parents[1] / "data" / "histograms.json"
    out.write_text(json.dumps({"oracle": f"numpy {np.__version__}", "bounds": BOUNDS,
                               "cases": cases}, indent=None) + "\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
