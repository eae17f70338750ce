#!/usr/bin/env python3
"""Golden vectors for the quality metrics, computed with scikit-learn.

Writes tests/data/quality.json: several datasets (inputs: one record per row) with the values
scikit-learn computes on them. tests/oracle_quality.rs sends the same records through a real
sidecar (half the labels inline, half delayed through SubmitLabels) and compares what it exports.

Conventions the Rust side follows, applied here with scikit-learn's own functions:
- binary models send `score` (probability of the positive class); the prediction is
  score > 0.5 (sklearn's predict for a probabilistic binary classifier);
- multiclass models send class probabilities; the prediction is their argmax (first maximum);
- "undeclared" models send predicted class names only; classes are the names seen;
- undefined values (sklearn returns nan) are written as null: inferscope leaves them out.

Run: python3 -m venv /tmp/oracle-venv && /tmp/oracle-venv/bin/pip install -r tests/oracles/requirements.txt
     /tmp/oracle-venv/bin/python tests/oracles/quality.py
"""

import json
import math
import pathlib
import warnings

import numpy as np
import sklearn
from sklearn import metrics as m

warnings.simplefilter("ignore")  # sklearn warns on the undefined cases this script exercises
OUT = pathlib.Path(__file__).resolve().parent.parent / "data" / "quality.json"
rng = np.random.default_rng(20261123)


def num(x):
    x = float(x)
    return None if math.isnan(x) else x


def classification_expected(y, pred, classes, present=None):
    """Label-based metrics with labels=None (classes present in y or pred), as inferscope does."""
    labels = sorted(set(y) | set(pred))
    p, r, f, s = m.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out = {
        "accuracy": m.accuracy_score(y, pred),
        "balanced_accuracy": m.balanced_accuracy_score(y, pred),
        "per_class": {
            c: {"precision": p[i], "recall": r[i], "f1": f[i], "support": int(s[i])}
            for i, c in enumerate(labels)
        },
        "averages": {},
        "prediction_rate": {c: float(np.mean(np.array(pred) == c)) for c in sorted(set(pred))},
        "confusion": {},
    }
    for avg in ("micro", "macro", "weighted"):
        pa, ra, fa, _ = m.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        out["averages"][avg] = {"precision": pa, "recall": ra, "f1": fa}
    cm = m.confusion_matrix(y, pred, labels=labels)
    for i, t in enumerate(labels):
        for j, q in enumerate(labels):
            if cm[i, j]:
                out["confusion"][f"{t}|{q}"] = int(cm[i, j])
    return out


def binary(name, n, pos_rate, separation, decimals=None, all_positive=False):
    classes = ["neg", "pos"]
    y01 = (rng.random(n) < pos_rate).astype(int)
    if all_positive:
        y01[:] = 1
    logits = rng.normal(0, 1, n) + separation * (2 * y01 - 1)
    score = 1 / (1 + np.exp(-logits))
    if decimals is not None:
        score = np.round(score, decimals)
    y = [classes[v] for v in y01]
    pred = [classes[int(s > 0.5)] for s in score]
    exp = classification_expected(y, pred, classes)
    exp["roc_auc"] = num(m.roc_auc_score(y01, score)) if len(set(y01)) == 2 else None
    exp["average_precision"] = num(m.average_precision_score(y01, score))
    exp["log_loss"] = m.log_loss(y, score, labels=classes)
    exp["brier_score"] = m.brier_score_loss(y01, score)
    return {
        "name": name,
        "task": "binary",
        "classes": classes,
        "records": [{"y": t, "score": float(s)} for t, s in zip(y, score)],
        "expected": exp,
    }


def multiclass(name, n, k, absent=None):
    classes = [f"c{i:02d}" for i in range(k)]  # sorted as sklearn wants labels
    weights = np.ones(k)
    if absent is not None:
        weights[absent] = 0
    yi = rng.choice(k, size=n, p=weights / weights.sum())
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), yi] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred_i = probs.argmax(axis=1)
    y = [classes[i] for i in yi]
    pred = [classes[i] for i in pred_i]
    exp = classification_expected(y, pred, classes)
    exp["roc_auc"] = num(m.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=classes))
    exp["per_class_roc_auc"] = {
        c: (num(m.roc_auc_score(yi == i, probs[:, i])) if 0 < (yi == i).sum() < n else None)
        for i, c in enumerate(classes)
    }
    onehot = np.eye(k)[yi]
    exp["average_precision"] = num(m.average_precision_score(onehot, probs, average="macro"))
    exp["per_class_average_precision"] = {
        c: num(m.average_precision_score(onehot[:, i], probs[:, i])) for i, c in enumerate(classes)
    }
    exp["log_loss"] = m.log_loss(y, probs, labels=classes)
    exp["brier_score"] = m.brier_score_loss(y, probs, labels=classes)
    return {
        "name": name,
        "task": "multiclass",
        "classes": classes,
        "records": [{"y": t, "probabilities": [float(v) for v in row]} for t, row in zip(y, probs)],
        "expected": exp,
    }


def undeclared(name, n):
    names = ["cat", "dog", "fox", "owl"]
    yi = rng.choice(4, size=n, p=[0.5, 0.3, 0.15, 0.05])
    flip = rng.random(n) < 0.3
    pi = np.where(flip, rng.choice(4, size=n), yi)
    y = [names[i] for i in yi]
    pred = [names[i] for i in pi]
    return {
        "name": name,
        "task": "undeclared",
        "classes": [],
        "records": [{"y": t, "predicted": q} for t, q in zip(y, pred)],
        "expected": classification_expected(y, pred, names),
    }


def regression(name, n, outliers):
    y = rng.normal(50, 10, n)
    pred = y + rng.normal(0.5, 3, n)
    idx = rng.choice(n, size=outliers, replace=False)
    pred[idx] += rng.standard_cauchy(outliers) * 100
    y[rng.choice(n, size=2, replace=False)] = 0.0  # MAPE's epsilon path
    return {
        "name": name,
        "task": "regression",
        "classes": [],
        "records": [{"y": float(a), "value": float(b)} for a, b in zip(y, pred)],
        "expected": {
            "mae": m.mean_absolute_error(y, pred),
            "mse": m.mean_squared_error(y, pred),
            "rmse": m.root_mean_squared_error(y, pred),
            "mape": m.mean_absolute_percentage_error(y, pred),
            "r2": m.r2_score(y, pred),
            "mean_error": float(np.mean(pred - y)),
        },
    }


def main():
    datasets = [
        binary("binary_balanced", 400, 0.5, 1.0),
        binary("binary_imbalanced", 1500, 0.05, 1.5),
        binary("binary_ties", 300, 0.4, 0.8, decimals=1),
        binary("binary_single_class", 60, 1.0, 1.0, all_positive=True),
        # Over the exact-AUC cap (2000 pairs): the histogram estimate and its bound.
        binary("binary_large_approximate", 3000, 0.3, 1.0),
        multiclass("multiclass_3", 500, 3),
        multiclass("multiclass_12_one_absent", 600, 12, absent=7),
        undeclared("undeclared_names", 400),
        regression("regression_outliers", 800, 12),
        regression("regression_small", 5, 0),
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w") as f:
        json.dump(
            {"generator": "tests/oracles/quality.py", "sklearn": sklearn.__version__,
             "numpy": np.__version__, "datasets": datasets},
            f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(datasets)} datasets)")


if __name__ == "__main__":
    main()
