"""Trains the model that MLServer serves behind the tap in tests/tap.rs, and writes the traffic.

Usage: train.py DIR   (run with .tools/mlserver-venv/bin/python: scikit-learn as pinned in
tools/install-backends.sh, the version MLServer loads the model with)

Writes DIR/model.joblib and DIR/model-settings.json (MLServer's scikit-learn runtime, model
"credit", version "v1"), and prints JSON on stdout: the traffic the test sends through the tap
(`rows`: 4 features each; the first `reference` rows as trained on, the rest with features x_0
and x_1 shifted by +3), its ground truth (`labels`, 0 or 1), and scikit-learn's own accuracy and
ROC AUC of the model on that traffic (the values the sidecar must report).
"""

import json
import os
import sys

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

REFERENCE = 400
SHIFTED = 400
WEIGHTS = np.array([1.5, -2.0, 0.7, 0.0])


def draw(rng, n):
    x = rng.normal(size=(n, 4))
    y = (x @ WEIGHTS + rng.normal(scale=1.0, size=n) > 0).astype(int)
    return x, y


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(13)
    x_train, y_train = draw(rng, 600)
    model = LogisticRegression().fit(x_train, y_train)
    joblib.dump(model, os.path.join(out, "model.joblib"))
    with open(os.path.join(out, "model-settings.json"), "w") as f:
        json.dump(
            {
                "name": "credit",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
                # Its ModelMetadata: the tap reads the schema from it.
                "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
                "outputs": [
                    {"name": "predict", "datatype": "INT64", "shape": [-1, 1]},
                    {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
                ],
            },
            f,
        )

    x_ref, y_ref = draw(rng, REFERENCE)
    x_new, y_new = draw(rng, SHIFTED)
    x_new[:, 0] += 3.0
    x_new[:, 1] += 3.0
    # The labels stay those of the rows before the shift: the inputs moved, the world did not.
    x = np.vstack([x_ref, x_new])
    y = np.concatenate([y_ref, y_new])
    print(
        json.dumps(
            {
                "reference": REFERENCE,
                "rows": x.tolist(),
                "labels": y.tolist(),
                "accuracy": accuracy_score(y, model.predict(x)),
                "roc_auc": roc_auc_score(y, model.predict_proba(x)[:, 1]),
            }
        )
    )


if __name__ == "__main__":
    main()
