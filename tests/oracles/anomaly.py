#!/usr/bin/env python3
"""Golden values for the anomaly detectors, written to tests/data/anomaly.json.

Robust z-scores, from SciPy: |t(x) - median| / max(scipy.stats.median_abs_deviation(t(reference),
scale="normal"), scipy.stats.iqr(t(reference), scale="normal")) (none where the MAD is 0), for
probe values against several reference samples, a bimodal one among them; t is log
for a positive reference whose logarithm has the smaller Bowley quartile skewness (NumPy's
quantiles), else the identity.

Half-Space Trees, from river (pinned in requirements.txt):
river.anomaly.HalfSpaceTrees, score_one then learn_one on each row, on a few streams already
scaled into [0, 1] (river's default limits, which is what inferscope feeds its trees after
scaling by the reference profile). Missing values are absent keys in river and NaN in
inferscope. Also the first values of CPython's random.Random(seed).random() for the seeds used,
since the trees are drawn from that generator.

tests/oracle_anomaly.rs builds the same trees with the same seeds and expects the same scores,
and sends the references and probes through a sidecar, expecting the z-scores in its acks.

Run: /tmp/oracle-venv/bin/python tests/oracles/anomaly.py
"""

import json
import math
import pathlib
import random

import numpy as np
import river
import scipy
from river import anomaly
from scipy import stats

OUT = pathlib.Path(__file__).resolve().parent.parent / "data" / "anomaly.json"
assert river.__version__ == "0.22.0", river.__version__
assert np.__version__ == "2.3.4", np.__version__
assert scipy.__version__ == "1.16.3", scipy.__version__


def bowley(v):
    q1, q2, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return (q1 + q3 - 2 * q2) / (q3 - q1) if q3 > q1 else 0.0


def robust_cases():
    rng = np.random.default_rng(7)
    references = {
        "normal": rng.normal(10.0, 2.0, 500),
        "lognormal": rng.lognormal(0.0, 1.0, 700),
        "lognormal_wide": rng.lognormal(2.0, 1.2, 900),
        "integers": np.arange(20, dtype=float),
        # Two modes: the MAD is one mode's spread, the IQR spans both.
        "bimodal": np.concatenate([rng.normal(0.3, 0.01, 260), rng.normal(0.7, 0.01, 240)]),
        # More than half equal: MAD 0, the mean-deviation fallback applies.
        "mostly_zero": np.concatenate([np.zeros(300), rng.exponential(3.0, 100)]),
    }
    cases = []
    for name, ref in references.items():
        # The log scale for a positive feature whose logarithm is more symmetric.
        log = bool(ref.min() > 0 and abs(bowley(np.log(ref))) < abs(bowley(ref)))
        t = np.log if log else (lambda v: v)
        scaled = t(ref)
        median = float(np.median(scaled))
        mad = float(stats.median_abs_deviation(scaled, scale="normal"))
        iqr = float(stats.iqr(scaled, scale="normal"))
        scale = max(mad, iqr) if mad > 0 else math.nan  # MAD 0: no robust scale, no check
        lo, hi = float(ref.min()), float(ref.max())
        probes = np.concatenate([np.linspace(lo - (hi - lo), hi + (hi - lo), 40), rng.choice(ref, 10)])
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.abs(t(probes) - median) / scale
        cases.append({
            "name": name, "reference": ref.tolist(), "probes": probes.tolist(), "log": log,
            # None: no z-score (a value <= 0 on the log scale is left to the range check; a
            # reference with MAD 0 has no robust scale).
            "z": [None if (log and p <= 0) or mad == 0 else float(v) for p, v in zip(probes, z)],
            "mad_zero": mad == 0,
        })
    return cases


def streams():
    rng = np.random.default_rng(20261123)
    # Clustered 4-d data with a few scattered outliers (some outside [0, 1]).
    blobs = np.concatenate([rng.normal(0.3, 0.05, (900, 4)), rng.normal(0.7, 0.05, (900, 4))])
    rng.shuffle(blobs)
    blobs[rng.choice(len(blobs), 30, replace=False)] = rng.uniform(-0.2, 1.2, (30, 4))
    # 12-d with missing values.
    wide = rng.beta(2, 5, (1500, 12))
    wide[rng.random(wide.shape) < 0.03] = np.nan
    # river builds its trees over the features of the first row: keep it whole.
    wide[0] = rng.beta(2, 5, 12)
    # One dimension, river's documentation example repeated.
    doc = np.array([[0.5], [0.45], [0.43], [0.44], [0.445], [0.45], [0.0]] * 60)
    return {"blobs_4d": blobs, "beta_12d_missing": wide, "river_doc_1d": doc}


CASES = {
    # name: (n_trees, height, window_size, seed)
    "default": (10, 8, 250, 42),
    "small": (5, 3, 50, 7),
    "big_seed": (3, 6, 100, 2**40 + 7),
}


def scores(rows, n_trees, height, window, seed):
    hst = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window, seed=seed)
    out = []
    for row in rows:
        x = {f"f{j:02d}": float(v) for j, v in enumerate(row) if not math.isnan(v)}
        out.append(hst.score_one(x))
        hst.learn_one(x)
    return out


def main():
    data = streams()
    cases = []
    for stream, rows in data.items():
        for name, (n_trees, height, window, seed) in CASES.items():
            cases.append({
                "stream": stream, "case": name, "trees": n_trees, "height": height,
                "window": window, "seed": seed, "scores": scores(rows, n_trees, height, window, seed),
            })
    out = {
        "generator": "tests/oracles/anomaly.py",
        "river": river.__version__,
        "scipy": scipy.__version__,
        "robust": robust_cases(),
        "random_first": {str(seed): random.Random(seed).random() for (_, _, _, seed) in CASES.values()},
        # NaN is written as null.
        "streams": {k: [[None if math.isnan(v) else float(v) for v in row] for row in rows]
                    for k, rows in data.items()},
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
