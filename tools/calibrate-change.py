#!/usr/bin/env python3
"""Calibration of the change detectors' defaults (src/anomaly/settings.rs): on standardised
points (z ~ N(0, 1) when nothing changes, as the sidecar feeds them), the number of false alarms
per 10 000 calm points (and the mean run between them, ARL0) and the median delay to detect a
3-sigma shift, for several settings of each detector: river 0.22's PageHinkley and ADWIN (pinned in
tests/oracles/requirements.txt), and NumPy implementations of the two-sided CUSUM and the EWMA
chart with a known in-control mean and sigma (as src/stats/change.rs runs them after their
warm-up). Fixed seeds.

Run: /tmp/oracle-venv/bin/python tools/calibrate-change.py
"""

import numpy as np
import river
from river import drift

assert river.__version__ == "0.22.0", river.__version__

CALM = 40_000
SHIFTS = 20


def cusum(z, k, h):
    up = lo = 0.0
    out = []
    for i, x in enumerate(z):
        up, lo = max(0.0, up + x - k), max(0.0, lo - x - k)
        if up > h or lo > h:
            out.append(i)
            up = lo = 0.0
    return out


def ewma(z, lam, width):
    e, t, out = 0.0, 0, []
    for i, x in enumerate(z):
        t += 1
        e = lam * x + (1 - lam) * e
        if abs(e) > width * np.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * t))):
            out.append(i)
            e, t = 0.0, 0
    return out


def river_detector(make, z):
    d, out = make(), []
    for i, x in enumerate(z):
        d.update(float(x))
        if d.drift_detected:
            out.append(i)
    return out


def main():
    rng = np.random.default_rng(5)
    calm = rng.normal(0.0, 1.0, CALM)
    shifted = [np.concatenate([rng.normal(0, 1, 200), rng.normal(3, 1, 100)]) for _ in range(SHIFTS)]
    settings = [
        ("cusum k=0.5 h=5 (textbook)", lambda z: cusum(z, 0.5, 5)),
        ("cusum k=0.5 h=8 (default)", lambda z: cusum(z, 0.5, 8)),
        ("ewma λ=0.2 L=3 (textbook)", lambda z: ewma(z, 0.2, 3)),
        ("ewma λ=0.2 L=3.5", lambda z: ewma(z, 0.2, 3.5)),
        ("ewma λ=0.2 L=4 (default)", lambda z: ewma(z, 0.2, 4)),
        ("page_hinkley δ=0.5 λ=8", lambda z: river_detector(
            lambda: drift.PageHinkley(min_instances=1, delta=0.5, threshold=8), z)),
        ("page_hinkley δ=0.5 λ=15 (default)", lambda z: river_detector(
            lambda: drift.PageHinkley(min_instances=1, delta=0.5, threshold=15), z)),
        ("adwin δ=0.002 (default)", lambda z: river_detector(
            lambda: drift.ADWIN(delta=0.002, clock=1, max_buckets=5, min_window_length=5, grace_period=10), z)),
    ]
    print("| detector | false alarms per 10 000 calm points | ARL0 (points) | median delay, 3σ shift (points) |")
    print("|---|---|---|---|")
    for name, run in settings:
        alarms = run(calm)
        delays = []
        for w in shifted:
            after = [i for i in run(w) if i >= 200]
            delays.append(after[0] - 200 + 1 if after else float("inf"))
        arl = CALM / len(alarms) if alarms else float("inf")
        arl_text = f"> {CALM}" if not alarms else f"{arl:.0f}"
        print(f"| {name} | {len(alarms) / CALM * 1e4:.2f} | {arl_text} | {np.median(delays):g} |")


if __name__ == "__main__":
    main()
