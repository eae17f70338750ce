#!/usr/bin/env python3
"""Anomaly-detector evaluation: ROC AUC and speed of inferscope's Half-Space Trees against
river's HalfSpaceTrees and scikit-learn's IsolationForest, on labelled anomaly streams.

Every stream has STREAM_ROWS rows; the first REFERENCE rows are the reference (no anomalies in
them, as a profile captured in production), the rest hold ~2 % anomalies (label 1). The AUC
(sklearn.metrics.roc_auc_score) is computed over the rows after the reference only.

Streams (all from fixed seeds; no download: only data sets bundled with scikit-learn):
- real tabular data (load_breast_cancer, load_wine, load_digits, load_diabetes, load_iris),
  resampled with replacement to the stream length with Gaussian jitter of JITTER x each column's
  standard deviation, with anomalies injected two ways, one stream each:
  "scattered": a normal row with 1 to 3 random (non-constant) features replaced by
               min - U(0.5, 2) * range or max + U(0.5, 2) * range of that feature;
  "uniform":   drawn uniformly from the data's bounding box widened by 20 % (10 % per side);
  and for breast cancer a "natural" stream: benign rows are normal, malignant rows (resampled
  the same way) are the anomalies (the ODDS-style set-up);
- synthetic clusters (make_blobs, 6 clusters in 8 and 32 dimensions): "uniform" anomalies as
  above; "micro": a tight far-away micro-cluster (std 0.1 x the clusters'), its members spread
  over the stream; "micro-burst": the same micro-cluster arriving in 4 bursts of 50 consecutive
  rows (Half-Space Trees are known to do badly when anomalies are packed together).

Detectors (all with the same seed, 42):
- inferscope: target/release/examples/hst_scores (10 trees, height 8, window 250), which scales
  every column as the sidecar does (the reference rows' [min, max] widened by one range width on
  each side, onto [0, 1]: REFERENCE_MARGIN) and scores-then-learns each row;
- river 0.22 anomaly.HalfSpaceTrees (same parameters), progressive score_one then learn_one,
  (a) limits = the per-feature (min, max) of the reference rows, (b) river's documented
  compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(...)), and, as a
  diagnostic, (c) default limits (0, 1) on the rows scaled exactly as inferscope scales them;
- scikit-learn IsolationForest (100 trees): fitted on the reference rows, and fitted on the whole
  stream (transductive); score = -score_samples (higher = more anomalous).
inferscope draws its trees from the same Mersenne Twister stream as river (Python's
random.Random(seed)), so (c) must give inferscope's scores exactly: the diagnostic table checks it
(largest score difference) and repeats the HSTs with seeds 42..46 (mean AUC). Any gap between
inferscope and (a) is then the scaling alone: with raw limits river draws a split's feature with
probability proportional to its raw range width, and puts no split beyond the reference range;
on inferscope's rows every feature has the same chance and a third of each range lies beyond the
reference on either side. Timings (not deterministic, unlike the AUCs)
cover scoring and learning only: inferscope's as reported by hst_scores, river's by
time.perf_counter around its loop (rows already converted to dicts), IsolationForest's fit+score.

The last table is the sidecar's flagging rule as the sidecar runs it (hst_scores --sidecar: trees
built at the end of the reference, so the first 250 rows after it only fill the first window; a
row flagged when its mass, 1 - score, is under ratio x the streaming median mass of the rows
before it, after 1 000 masses: MassRule in src/stats/half_space_trees.rs), over the rows after
the reference.

Run (from the repository root; streams go to a temporary directory, Markdown to stdout):
    python3 -m venv /tmp/oracle-venv && /tmp/oracle-venv/bin/pip install -r tests/oracles/requirements.txt
    cargo build --release --example hst_scores && /tmp/oracle-venv/bin/python tools/eval-anomaly.py
With --sweep, only inferscope's trees over several trees x height x reference-margin settings
(mean ROC AUC and speed), for the defaults' trade-off table.
"""

import hashlib
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import river
import scipy
import sklearn
from river import anomaly, compose, preprocessing
from sklearn import datasets
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

PINNED = {"numpy": "2.3.4", "scikit-learn": "1.7.2", "scipy": "1.16.3", "river": "0.22.0"}
FOUND = {"numpy": np.__version__, "scikit-learn": sklearn.__version__, "scipy": scipy.__version__,
         "river": river.__version__}
assert FOUND == PINNED, f"versions {FOUND} differ from the pinned {PINNED} (tests/oracles/requirements.txt)"

ROOT = pathlib.Path(__file__).resolve().parent.parent
HST_SCORES = ROOT / "target" / "release" / "examples" / "hst_scores"
MARGIN = 1.0  # REFERENCE_MARGIN of src/stats/half_space_trees.rs
STREAM_ROWS = 12_000
REFERENCE = 2_000
ANOMALY_RATE = 0.02
JITTER = 0.02
TREES, HEIGHT, WINDOW, SEED = 10, 8, 250, 42
DIAGNOSTIC_SEEDS = [42, 43, 44, 45, 46]
RATIOS = [0.2, 0.3, 0.4, 0.5, 0.6]


def rng_for(name):
    """One generator per stream, so that adding a stream leaves the others unchanged."""
    return np.random.default_rng([20261126, zlib.crc32(name.encode())])


def resample(pool, std, n, rng):
    return pool[rng.integers(0, len(pool), n)] + rng.normal(0.0, 1.0, (n, pool.shape[1])) * JITTER * std


def anomaly_rows(n_rows, rng, bursts=None):
    """Positions of the anomalies, all after the reference: spread at random, or in bursts."""
    count = round(ANOMALY_RATE * (n_rows - REFERENCE))
    if bursts is None:
        return np.sort(rng.choice(np.arange(REFERENCE, n_rows), count, replace=False))
    length = count // bursts
    slots = (n_rows - REFERENCE) // bursts  # one burst inside each slot, so they never overlap
    starts = [REFERENCE + b * slots + rng.integers(0, slots - length) for b in range(bursts)]
    return np.concatenate([np.arange(s, s + length) for s in starts])


def scattered(normal, base, rng):
    lo, hi = base.min(axis=0), base.max(axis=0)
    width = hi - lo
    candidates = np.flatnonzero(width > 0)
    out = normal.copy()
    for row in out:
        for j in rng.choice(candidates, rng.integers(1, 4), replace=False):
            far = rng.uniform(0.5, 2.0) * width[j]
            row[j] = lo[j] - far if rng.random() < 0.5 else hi[j] + far
    return out


def uniform_box(base, n, rng):
    lo, hi = base.min(axis=0), base.max(axis=0)
    pad = 0.1 * (hi - lo)
    return rng.uniform(lo - pad, hi + pad, (n, base.shape[1]))


def stream(name, normal, make_anomalies, rng, bursts=None):
    """`normal`: STREAM_ROWS normal rows; make_anomalies(n, replaced_rows) -> n anomalous rows."""
    x = normal.copy()
    y = np.zeros(len(x), dtype=int)
    at = anomaly_rows(len(x), rng, bursts)
    x[at] = make_anomalies(len(at), x[at])
    y[at] = 1
    return name, x, y


def tabular_streams():
    out = []
    loaders = [("breast_cancer", datasets.load_breast_cancer), ("wine", datasets.load_wine),
               ("digits", datasets.load_digits), ("diabetes", datasets.load_diabetes),
               ("iris", datasets.load_iris)]
    for name, load in loaders:
        base = load().data.astype(float)
        std = base.std(axis=0)
        rng = rng_for(f"{name} scattered")
        out.append(stream(f"{name} scattered", resample(base, std, STREAM_ROWS, rng),
                          lambda n, rows, rng=rng, base=base: scattered(rows, base, rng), rng))
        rng = rng_for(f"{name} uniform")
        out.append(stream(f"{name} uniform", resample(base, std, STREAM_ROWS, rng),
                          lambda n, rows, rng=rng, base=base: uniform_box(base, n, rng), rng))
        if name == "breast_cancer":
            cancer = load()
            benign, malignant = base[cancer.target == 1], base[cancer.target == 0]
            rng = rng_for(f"{name} natural")
            out.append(stream(f"{name} natural", resample(benign, std, STREAM_ROWS, rng),
                              lambda n, rows, rng=rng: resample(malignant, std, n, rng), rng))
    return out


def blob_streams():
    out = []
    for dims in (8, 32):
        for kind, bursts in (("uniform", None), ("micro", None), ("micro-burst", 4)):
            name = f"blobs{dims} {kind}"
            rng = rng_for(name)
            x, _, centres = datasets.make_blobs(n_samples=STREAM_ROWS, n_features=dims, centers=6, cluster_std=1.0,
                                                center_box=(-10.0, 10.0), random_state=int(rng.integers(2**31)),
                                                return_centers=True)
            if kind == "uniform":
                make = lambda n, rows, rng=rng, x=x: uniform_box(x, n, rng)
            else:
                # A tight micro-cluster around the point, among 4000 drawn in the centres' box,
                # farthest from every cluster centre.
                candidates = rng.uniform(-10.0, 10.0, (4000, dims))
                gap = np.min(np.linalg.norm(candidates[:, None, :] - centres[None, :, :], axis=2), axis=1)
                centre = candidates[np.argmax(gap)]
                make = lambda n, rows, rng=rng, centre=centre: centre + rng.normal(0.0, 0.1, (n, len(centre)))
            out.append(stream(name, x, make, rng, bursts))
    return out


def run_hst_scores(csv_path, seed, *extra):
    """hst_scores' output: per row (score, flag), and its ns per row."""
    done = subprocess.run([str(csv_path.parent / HST_SCORES.name), str(csv_path), "--reference", str(REFERENCE), "--trees", str(TREES),
                           "--height", str(HEIGHT), "--window", str(WINDOW), "--seed", str(seed), *extra],
                          capture_output=True, text=True, check=True)
    ns = float(re.search(r"([0-9.]+) ns per row", done.stderr).group(1))
    out = np.array(done.stdout.split(), dtype=float).reshape(-1, 2)
    return out[:, 0], out[:, 1].astype(bool), ns


def inferscope_scores(csv_path, seed):
    scores, _, ns = run_hst_scores(csv_path, seed)
    return scores, ns


def river_scores(model, rows):
    scores = np.empty(len(rows))
    start = time.perf_counter()
    for i, x in enumerate(rows):
        scores[i] = model.score_one(x)
        model.learn_one(x)
    return scores, (time.perf_counter() - start) / len(rows) * 1e6


def river_hst(seed, limits=None):
    return anomaly.HalfSpaceTrees(n_trees=TREES, height=HEIGHT, window_size=WINDOW, limits=limits, seed=seed)


def isolation_forest(x, fit_rows):
    start = time.perf_counter()
    model = IsolationForest(n_estimators=100, random_state=SEED).fit(x[:fit_rows])
    scores = -model.score_samples(x)
    return scores, (time.perf_counter() - start) / len(x) * 1e6


def auc(y, s):
    return roc_auc_score(y[REFERENCE:], s[REFERENCE:])


def evaluate(name, x, y, workdir):
    csv_path = workdir / (re.sub(r"\W+", "_", name) + ".csv")
    np.savetxt(csv_path, x, fmt="%.17g", delimiter=",", header=",".join(f"f{j}" for j in range(x.shape[1])),
               comments="")
    x = np.loadtxt(csv_path, delimiter=",", skiprows=1, ndmin=2)  # exactly the values hst_scores reads
    lo, hi = x[:REFERENCE].min(axis=0), x[:REFERENCE].max(axis=0)
    # As hst_scores (and the sidecar) scale: the reference range widened by one width on each
    # side (REFERENCE_MARGIN in src/stats/half_space_trees.rs) onto [0, 1].
    width = np.where(hi > lo, hi - lo, 1.0)
    origin, scale = lo - MARGIN * width, 1.0 / (width * (1.0 + 2.0 * MARGIN))
    raw = [dict(enumerate(map(float, row))) for row in x]
    scaled = [dict(enumerate(map(float, row))) for row in (x - origin) * scale]
    limits = {j: (float(lo[j]), float(hi[j])) for j in range(x.shape[1])}

    r = {"name": name, "rows": len(x), "dims": x.shape[1], "anomaly_pct": 100 * y[REFERENCE:].mean()}
    hst, r["ns_inferscope"] = inferscope_scores(csv_path, SEED)
    r["inferscope"] = auc(y, hst)
    yy = y[REFERENCE:]
    r["flags"] = {}
    for ratio in RATIOS:
        # The sidecar's rule, run by hst_scores as the sidecar runs it (trees from the end of
        # the reference, streaming median, warm-up).
        flagged = run_hst_scores(csv_path, SEED, "--sidecar", "--ratio", str(ratio))[1][REFERENCE:]
        r["flags"][ratio] = (flagged[yy == 0].mean(), flagged[yy == 1].mean(),
                             int(flagged[yy == 0].sum()), int(flagged[yy == 1].sum()))
    s, r["us_river_limits"] = river_scores(river_hst(SEED, limits), raw)
    r["river_limits"] = auc(y, s)
    s, r["us_river_minmax"] = river_scores(compose.Pipeline(preprocessing.MinMaxScaler(), river_hst(SEED)), raw)
    r["river_minmax"] = auc(y, s)
    s, r["us_if_ref"] = isolation_forest(x, REFERENCE)
    r["if_ref"] = auc(y, s)
    s, r["us_if_all"] = isolation_forest(x, len(x))
    r["if_all"] = auc(y, s)
    # Diagnostic: the scaling (river on inferscope's [0, 1] rows) and the seeds.
    r["seeds_inferscope"] = [auc(y, inferscope_scores(csv_path, seed)[0]) for seed in DIAGNOSTIC_SEEDS]
    r["seeds_river_limits"] = [r["river_limits"]] + [auc(y, river_scores(river_hst(seed, limits), raw)[0])
                                                     for seed in DIAGNOSTIC_SEEDS[1:]]
    r["seeds_river_scaled"] = []
    for seed in DIAGNOSTIC_SEEDS:
        s = river_scores(river_hst(seed), scaled)[0]
        r["seeds_river_scaled"].append(auc(y, s))
        if seed == SEED:
            r["max_diff"] = float(np.max(np.abs(s - hst)))
    print(f"{name}: inferscope {r['inferscope']:.3f}, river {r['river_limits']:.3f}", file=sys.stderr)
    return r


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def sweep(streams):
    """inferscope alone over trees x height and the reference margin: mean ROC AUC and median
    ns per row (--sweep)."""
    configs = [(10, 8, None), (5, 8, None), (3, 8, None), (20, 8, None), (10, 6, None), (5, 6, None),
               (10, 10, None), (10, 8, 0.0), (10, 8, 0.5), (10, 8, 2.0)]
    aucs = {c: [] for c in configs}
    ns = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="inferscope-eval-anomaly-") as tmp:
        binary = pathlib.Path(tmp) / HST_SCORES.name
        shutil.copy2(HST_SCORES, binary)
        for name, x, y in streams:
            csv_path = pathlib.Path(tmp) / "stream.csv"
            np.savetxt(csv_path, x, fmt="%.17g", delimiter=",",
                       header=",".join(f"f{j}" for j in range(x.shape[1])), comments="")
            for trees, height, margin in configs:
                args = [str(binary), str(csv_path), "--reference", str(REFERENCE), "--trees", str(trees),
                        "--height", str(height), "--window", str(WINDOW), "--seed", str(SEED)]
                if margin is not None:
                    args += ["--margin", str(margin)]
                done = subprocess.run(args, capture_output=True, text=True, check=True)
                scores = np.array(done.stdout.split(), dtype=float).reshape(-1, 2)[:, 0]
                aucs[(trees, height, margin)].append(auc(y, scores))
                ns[(trees, height, margin)].append(float(re.search(r"([0-9.]+) ns per row", done.stderr).group(1)))
            print(f"{name}: swept", file=sys.stderr)
    print("### inferscope HST: trees, height and reference margin\n")
    print(table(["trees", "height", "reference margin", "mean ROC AUC (17 streams)", "ns per row (median)",
                 "memory per model version"],
                [[t, h, "1 (default)" if m is None else m, f"{np.mean(aucs[(t, h, m)]):.3f}",
                  f"{np.median(ns[(t, h, m)]):.0f}", f"{t * (2 ** (h + 1) - 1) * 16 // 1024} KB"]
                 for t, h, m in configs]))


def main():
    if "--sweep" in sys.argv[1:]:
        sweep(tabular_streams() + blob_streams())
        return
    print(f"versions: {', '.join(f'{k} {v}' for k, v in FOUND.items())}", file=sys.stderr)
    if not HST_SCORES.exists():
        sys.exit(f"{HST_SCORES} is missing: cargo build --release --example hst_scores")

    streams = tabular_streams() + blob_streams()

    with tempfile.TemporaryDirectory(prefix="inferscope-eval-anomaly-") as tmp:
        # One binary for the whole run, even if target/ is rebuilt meanwhile.
        shutil.copy2(HST_SCORES, pathlib.Path(tmp) / HST_SCORES.name)
        digest = hashlib.sha256(HST_SCORES.read_bytes()).hexdigest()[:16]
        print(f"hst_scores: {HST_SCORES} (sha256 {digest}…)", file=sys.stderr)
        results = [evaluate(name, x, y, pathlib.Path(tmp)) for name, x, y in streams]

    f3 = lambda v: f"{v:.3f}"
    mean = lambda key: float(np.mean([r[key] for r in results]))
    keys = ["inferscope", "river_limits", "river_minmax", "if_ref", "if_all"]
    print("### ROC AUC (rows after the reference)\n")
    print(table(["stream", "rows", "dims", "anomalies", "inferscope HST", "river HST (limits)",
                 "river HST (MinMaxScaler)", "IsolationForest (reference fit)", "IsolationForest (whole stream)"],
                [[r["name"], r["rows"], r["dims"], f"{r['anomaly_pct']:.1f} %"] + [f3(r[k]) for k in keys]
                 for r in results]
                + [["**mean**", "", "", ""] + [f"**{mean(k):.3f}**" for k in keys]]))

    print("\n### Speed (scoring + learning, per row)\n")
    speed = [[r["name"], r["dims"], f"{r['ns_inferscope']:.0f} ns", f"{r['us_river_limits']:.1f} µs",
              f"{r['us_river_minmax']:.1f} µs", f"{1000 * r['us_river_limits'] / r['ns_inferscope']:.0f}×",
              f"{1000 * r['us_river_minmax'] / r['ns_inferscope']:.0f}×", f"{r['us_if_ref']:.1f} µs",
              f"{r['us_if_all']:.1f} µs"] for r in results]
    ratio_limits = [1000 * r["us_river_limits"] / r["ns_inferscope"] for r in results]
    ratio_minmax = [1000 * r["us_river_minmax"] / r["ns_inferscope"] for r in results]
    speed.append(["**median**", "", f"**{np.median([r['ns_inferscope'] for r in results]):.0f} ns**",
                  f"**{np.median([r['us_river_limits'] for r in results]):.1f} µs**",
                  f"**{np.median([r['us_river_minmax'] for r in results]):.1f} µs**",
                  f"**{np.median(ratio_limits):.0f}×**", f"**{np.median(ratio_minmax):.0f}×**",
                  f"**{np.median([r['us_if_ref'] for r in results]):.1f} µs**",
                  f"**{np.median([r['us_if_all'] for r in results]):.1f} µs**"])
    print(table(["stream", "dims", "inferscope", "river (limits)", "river (MinMaxScaler)",
                 "river (limits) / inferscope", "river (MinMaxScaler) / inferscope",
                 "IsolationForest fit+score (reference fit)", "IsolationForest fit+score (whole stream)"], speed))

    print("\n### Diagnostic: seeds and scaling (mean ROC AUC over seeds "
          f"{DIAGNOSTIC_SEEDS[0]}..{DIAGNOSTIC_SEEDS[-1]}, min–max in brackets)\n")
    spread = lambda v: f"{np.mean(v):.3f} ({min(v):.3f}–{max(v):.3f})"
    diag_keys = ["seeds_inferscope", "seeds_river_scaled", "seeds_river_limits"]
    print(table(["stream", "inferscope HST", "river HST on inferscope's [0, 1] rows", "river HST (limits)",
                 f"max |score difference|, inferscope vs river on [0, 1] rows (seed {SEED})"],
                [[r["name"]] + [spread(r[k]) for k in diag_keys] + [f"{r['max_diff']:.1e}"] for r in results]
                + [["**mean**"] + [f"**{np.mean([np.mean(r[k]) for r in results]):.3f}**" for k in diag_keys]
                   + [f"**{max(r['max_diff'] for r in results):.1e}** (max)"]]))

    print("\n### Flagging rule as the sidecar runs it: mass < ratio × streaming median mass\n")
    rows = []
    for ratio in RATIOS:
        fpr = [r["flags"][ratio][0] for r in results]
        rec = [r["flags"][ratio][1] for r in results]
        false, true = sum(r["flags"][ratio][2] for r in results), sum(r["flags"][ratio][3] for r in results)
        rows.append([ratio, f"{100 * np.mean(fpr):.2f} %", f"{100 * np.max(fpr):.2f} %", f"{100 * np.mean(rec):.1f} %",
                     f"{100 * np.min(rec):.1f} %", f"{100 * true / max(1, true + false):.0f} %"])
    print(table(["ratio", "false positive rate (mean)", "FPR (worst stream)", "recall (mean)",
                 "recall (worst stream)", "precision (all streams pooled, 2 % anomalies)"], rows))
    print("\nPer stream (false positive rate / recall):\n", file=sys.stderr)
    print(table(["stream"] + [str(q) for q in RATIOS],
                [[r["name"]] + [f"{100 * r['flags'][q][0]:.2f} % / {100 * r['flags'][q][1]:.0f} %" for q in RATIOS]
                 for r in results]), file=sys.stderr)


if __name__ == "__main__":
    main()
