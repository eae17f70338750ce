#!/usr/bin/env python3
"""Golden vectors for drift: reference profiles (NumPy quantile bins) and two-sample statistics
(SciPy), written to tests/data/drift.json, plus a real CSV (scikit-learn's wine data) for the
profile CLI, tests/data/wine.csv.

Conventions applied here with NumPy and SciPy, and by inferscope:
- bins: upper edges np.unique(np.quantile(reference, k / B)) for k = 1..B-1 (B = 10 coarse, 100
  fine); a value v falls in bin np.searchsorted(edges, v, side="left") (right-closed bins);
- PSI on the coarse bins with empty shares replaced by 1e-4 (Evidently's convention);
- Jensen-Shannon distance: scipy.spatial.distance.jensenshannon(ref_counts, cur_counts, base=2);
- KS: scipy.stats.ks_2samp(ref, cur): its statistic, and its p-value (exact below 10 000 values),
  which inferscope reproduces for windows small enough to be exact; for larger, binned windows
  inferscope uses the asymptotic scipy.stats.kstwobign.sf(D * sqrt(n*m/(n+m))), also written;
- Wasserstein: scipy.stats.wasserstein_distance(ref, cur);
- categorical: scipy.stats.chisquare(f_obs=current counts, f_exp=reference shares * n_current)
  over the reference categories plus "other"; Jensen-Shannon over the same counts.

Run: /tmp/oracle-venv/bin/pip install -r tests/oracles/requirements.txt
     /tmp/oracle-venv/bin/python tests/oracles/drift.py
"""

import csv
import json
import math
import pathlib
import warnings

import numpy as np
import scipy
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn.datasets import load_wine

warnings.simplefilter("ignore")  # divide-by-zero in chisquare for unseen categories is expected
DATA = pathlib.Path(__file__).resolve().parent.parent / "data"
rng = np.random.default_rng(20261124)
PSI_EPSILON = 1e-4


def num(x):
    x = float(x)
    return None if math.isnan(x) else ("inf" if math.isinf(x) else x)


def edges(ref, bins):
    return np.unique(np.quantile(ref, np.arange(1, bins) / bins))


def counts(e, values):
    return np.bincount(np.searchsorted(e, values, side="left"), minlength=len(e) + 1)


def psi(r, c):
    r = r / r.sum()
    c = c / c.sum()
    r = np.where(r == 0, PSI_EPSILON, r)
    c = np.where(c == 0, PSI_EPSILON, c)
    return float(np.sum((r - c) * np.log(r / c)))


def numeric_case(name, ref, cur):
    coarse, fine = edges(ref, 10), edges(ref, 100)
    rc, cc = counts(coarse, ref), counts(coarse, cur)
    out = {"name": name, "reference": ref.tolist(), "current": cur.tolist(),
           "edges": coarse.tolist(), "fine_edges": fine.tolist()}
    if len(cur) == 0:
        out["expected"] = None
        return out
    ks = stats.ks_2samp(ref, cur)
    n, m = len(ref), len(cur)
    out["expected"] = {
        "psi": psi(rc.astype(float), cc.astype(float)),
        "js_distance": float(jensenshannon(rc, cc, base=2)),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(stats.kstwobign.sf(ks.statistic * math.sqrt(n * m / (n + m)))),
        "ks_2samp_pvalue": float(ks.pvalue),
        "wasserstein": float(stats.wasserstein_distance(ref, cur)),
    }
    return out


def categorical_case(name, ref_counts, cur_counts):
    """Counts over the same categories (the last one is "other")."""
    r = np.array(ref_counts, dtype=float)
    c = np.array(cur_counts, dtype=float)
    f_exp = r / r.sum() * c.sum()
    chi = stats.chisquare(c, f_exp)
    return {"name": name, "reference": ref_counts, "current": cur_counts,
            "expected": {"chi_square": num(chi.statistic), "chi_square_pvalue": num(chi.pvalue),
                         "js_distance": float(jensenshannon(r, c, base=2))}}


def wine():
    d = load_wine()
    path = DATA / "wine.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(d.feature_names) + ["cultivar"])
        for row, t in zip(d.data, d.target):
            w.writerow([repr(float(v)) for v in row] + [d.target_names[t]])
    features = []
    for i, name in enumerate(d.feature_names):
        col = d.data[:, i]
        coarse, fine = edges(col, 10), edges(col, 100)
        features.append({"name": name, "edges": coarse.tolist(), "counts": counts(coarse, col).tolist(),
                         "fine_edges": fine.tolist(), "fine_counts": counts(fine, col).tolist(),
                         "min": float(col.min()), "max": float(col.max()), "mean": float(col.mean()),
                         "std": float(col.std(ddof=1))})
    names, cnt = np.unique(d.target_names[d.target], return_counts=True)
    order = sorted(zip(names, cnt), key=lambda x: (-x[1], x[0]))
    return {"file": "wine.csv", "records": int(len(d.data)), "numeric": features,
            "categorical": {"name": "cultivar", "categories": [[str(k), int(v)] for k, v in order]}}


def main():
    ref = rng.normal(0, 1, 1000)
    numeric = [
        numeric_case("same_distribution", ref, rng.normal(0, 1, 400)),
        numeric_case("mean_shift", ref, rng.normal(0.5, 1, 400)),
        numeric_case("scale_change", ref, rng.normal(0, 2.5, 300)),
        numeric_case("heavy_tails", rng.standard_t(1.5, 800), rng.standard_t(1.5, 500) * 1.3 + 0.2),
        numeric_case("discrete_poisson", rng.poisson(3, 1000).astype(float), rng.poisson(4, 600).astype(float)),
        numeric_case("large_window", ref, rng.normal(0.2, 1.1, 5000)),
        numeric_case("empty_window", ref, np.array([])),
    ]
    categorical = [
        categorical_case("same_shares", [500, 300, 150, 50], [98, 61, 32, 9]),
        categorical_case("shifted_shares", [500, 300, 150, 50], [60, 80, 40, 20]),
        categorical_case("new_categories_into_other", [500, 300, 150, 50], [50, 30, 15, 105]),
        categorical_case("new_categories_no_other_in_reference", [600, 300, 100, 0], [50, 30, 15, 5]),
    ]
    out = {"generator": "tests/oracles/drift.py", "numpy": np.__version__, "scipy": scipy.__version__,
           "psi_epsilon": PSI_EPSILON, "wine": wine(), "numeric": numeric, "categorical": categorical}
    path = DATA / "drift.json"
    with path.open("w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({path.stat().st_size} bytes) and {DATA / 'wine.csv'}")


if __name__ == "__main__":
    main()
