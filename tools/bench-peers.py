#!/usr/bin/env python3
"""CPU per record of two peers on the load generator's records (tools/bench-compare.sh).

Reads the CSV written by `loadgen --dump-csv` (features f0…, predicted, score, label) and measures,
with time.process_time (every thread of this process), what each peer spends per record:

- whylogs_dataframe: whylogs.log(pandas=...) on the whole DataFrame (a column profile of every
  feature, the prediction, the score and the label), the way whylogs is meant to be used in batch.
- whylogs_rows: whylogs.log(row=...) one record at a time, the way a model server calling it per
  request would (on the first --rows-sample rows only: it is slow).
- river: per record, four metrics (Accuracy, F1, ROCAUC, LogLoss) updated with the prediction and
  its label, plus Half-Space Trees (10 trees of height 8, window 250) scoring then learning the
  features after a MinMaxScaler: the closest river gets to inferscope's quality plus HST path.

Prints one line per peer: `peer=NAME records=N cpu_us_per_record=X`.
Run: .tools/peers-venv/bin/python tools/bench-peers.py RECORDS.csv
"""

import argparse
import time

import pandas as pd


def cpu_per_record(work, records):
    start = time.process_time()
    work()
    return (time.process_time() - start) * 1e6 / records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv")
    parser.add_argument("--rows-sample", type=int, default=500)
    parser.add_argument("--river-records", type=int, default=20000)
    args = parser.parse_args()
    df = pd.read_csv(args.csv)
    features = [c for c in df.columns if c.startswith("f")]

    import whylogs

    whylogs.log(pandas=df.head(100))  # imports and first-use set-up outside the timing
    print(f"peer=whylogs_dataframe records={len(df)} "
          f"cpu_us_per_record={cpu_per_record(lambda: whylogs.log(pandas=df), len(df)):.2f}",
          flush=True)

    sample = df.head(args.rows_sample).to_dict(orient="records")

    def rows():
        for row in sample:
            whylogs.log(row=row)

    print(f"peer=whylogs_rows records={len(sample)} "
          f"cpu_us_per_record={cpu_per_record(rows, len(sample)):.2f}", flush=True)

    from river import anomaly, metrics, preprocessing

    head = df.head(args.river_records)
    xs = head[features].to_dict(orient="records")
    predicted = head["predicted"].tolist()
    scores = head["score"].tolist()
    labels = head["label"].tolist()

    def river_path():
        accuracy, f1, auc, log_loss = (metrics.Accuracy(), metrics.F1(), metrics.ROCAUC(),
                                       metrics.LogLoss())
        model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=10, height=8, window_size=250, seed=42)
        for x, p, s, y in zip(xs, predicted, scores, labels):
            accuracy.update(y, p)
            f1.update(y, p)
            auc.update(y, {0: 1 - s, 1: s})
            log_loss.update(y, {0: 1 - s, 1: s})
            model.score_one(x)
            model.learn_one(x)

    print(f"peer=river records={len(xs)} "
          f"cpu_us_per_record={cpu_per_record(river_path, len(xs)):.2f}", flush=True)


if __name__ == "__main__":
    main()
