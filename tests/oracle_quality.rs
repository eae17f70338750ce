//! Quality metrics against scikit-learn: the datasets of `tests/data/quality.json` (written by
//! `tests/oracles/quality.py`) go through a real sidecar over gRPC — half the labels inline, half
//! delayed through SubmitLabels (some of those before their prediction) — and every exported
//! quality value is compared with scikit-learn's: exact metrics within 1e-9 (relative above 1),
//! ROC AUC and average precision within the error bound the sidecar exports with them.

mod common;

use common::golden::{datasets, declaration, label, prediction};
use inferscope::pb;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use serde_json::Value;

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0)
}

/// What the sidecar was sent for one dataset, for checking the join counters.
struct Sent {
    rows: usize,
    duplicates: usize,
    unknown: usize,
}

/// Sends one dataset: even rows carry their label inline; odd rows get it through SubmitLabels,
/// every fifth of those before the record itself. Every seventh delayed label is sent twice, and
/// a few labels name requests that never come.
async fn send(sidecar: &common::TestSidecar, ds: &Value) -> Sent {
    let mut client = sidecar.client().await;
    let name = ds["name"].as_str().unwrap();
    let rows = ds["records"].as_array().unwrap();
    let truth = |i: usize| pb::GroundTruth {
        request_id: format!("{name}-{i}"),
        label: Some(label(ds, &rows[i])),
        ..Default::default()
    };
    let labels = |sequence: u64, labels: Vec<pb::GroundTruth>| pb::LabelBatch {
        sequence,
        model: name.into(),
        version: "1".into(),
        labels,
        ..Default::default()
    };
    // The declaration first (class indices in labels need it), in a batch of its own.
    let mut declare = common::batch(0, name, Vec::new());
    declare.declarations = declaration(ds).into_iter().collect();
    client.submit_records(declare).await.unwrap();

    let delayed: Vec<usize> = (0..rows.len()).filter(|i| i % 2 == 1).collect();
    let (early, late): (Vec<usize>, Vec<usize>) = delayed.iter().partition(|&&i| i % 5 == 1);
    let ack = client
        .submit_labels(labels(0, early.iter().map(|&i| truth(i)).collect()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ack.accepted as usize,
        early.len(),
        "{:?}",
        ack.rejects.first()
    );

    for (chunk_index, chunk) in (0..rows.len()).collect::<Vec<_>>().chunks(250).enumerate() {
        let records = chunk
            .iter()
            .map(|&i| pb::InferenceRecord {
                request_id: format!("{name}-{i}"),
                prediction: Some(prediction(&rows[i])),
                label: (i % 2 == 0).then(|| label(ds, &rows[i])),
                ..Default::default()
            })
            .collect();
        let batch = common::batch(1 + chunk_index as u64, name, records);
        let ack = client.submit_records(batch).await.unwrap().into_inner();
        assert!(ack.rejects.is_empty(), "{name}: {:?}", ack.rejects);
    }

    let mut late_labels: Vec<_> = late.iter().map(|&i| truth(i)).collect();
    let duplicates: Vec<_> = delayed
        .iter()
        .filter(|&&i| i % 7 == 3)
        .map(|&i| truth(i))
        .collect();
    late_labels.extend(duplicates.iter().cloned());
    let unknown = 3;
    for u in 0..unknown {
        late_labels.push(pb::GroundTruth {
            request_id: format!("{name}-never-{u}"),
            label: Some(label(ds, &rows[0])),
            ..Default::default()
        });
    }
    for (k, chunk) in late_labels.chunks(200).enumerate() {
        client
            .submit_labels(labels(1 + k as u64, chunk.to_vec()))
            .await
            .unwrap();
    }
    Sent {
        rows: rows.len(),
        duplicates: duplicates.len(),
        unknown,
    }
}

struct Check<'a> {
    request: &'a ExportMetricsServiceRequest,
    model: &'a str,
    window: &'a str,
    failures: Vec<String>,
}

impl Check<'_> {
    fn attrs<'b>(&'b self, extra: &[(&'b str, &'b str)]) -> Vec<(&'b str, &'b str)> {
        let mut a = vec![
            ("inferscope.model.name", self.model),
            ("inferscope.model.version", "1"),
            ("window", self.window),
        ];
        a.extend_from_slice(extra);
        a
    }

    fn get(&self, metric: &str, extra: &[(&str, &str)]) -> Option<f64> {
        common::point(self.request, metric, &self.attrs(extra))
    }

    /// An exact metric: equal within 1e-9, or absent where scikit-learn's value is undefined.
    fn exact(&mut self, metric: &str, extra: &[(&str, &str)], expected: &Value) {
        let actual = self.get(metric, extra);
        let ok = match (actual, expected.as_f64()) {
            (Some(a), Some(e)) => close(a, e),
            (None, None) => true,
            _ => false,
        };
        if !ok {
            self.failures.push(format!(
                "{} {} {metric}{extra:?}: inferscope {actual:?}, sklearn {expected}",
                self.model, self.window
            ));
        }
    }

    /// ROC AUC or average precision: within the exported error bound.
    fn bounded(&mut self, metric: &str, extra: &[(&str, &str)], expected: &Value) -> Option<f64> {
        let actual = self.get(metric, extra);
        let bound = self.get(&format!("{metric}.error_bound"), extra);
        let ok = match (actual, bound, expected.as_f64()) {
            (Some(a), Some(b), Some(e)) => (a - e).abs() <= b + 1e-9 * e.abs().max(1.0),
            (None, None, None) => true,
            _ => false,
        };
        if !ok {
            self.failures.push(format!(
                "{} {} {metric}{extra:?}: inferscope {actual:?} ± {bound:?}, sklearn {expected}",
                self.model, self.window
            ));
        }
        bound
    }
}

#[tokio::test]
async fn quality_metrics_match_scikit_learn_through_the_pipeline() {
    let datasets = datasets();
    let sidecar = common::start(common::config()).await;
    let mut sent = Vec::new();
    for ds in &datasets {
        sent.push(send(&sidecar, ds).await);
    }
    let (request, _) = sidecar.stop().await;

    let mut failures = Vec::new();
    for (ds, sent) in datasets.iter().zip(&sent) {
        let model = ds["name"].as_str().unwrap();
        let e = &ds["expected"];
        let base = [
            ("inferscope.model.name", model),
            ("inferscope.model.version", "1"),
        ];

        // The join: every row joined exactly once, duplicates and unknown requests counted.
        let count = |metric: &str, extra: &[(&str, &str)]| {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            common::point(&request, metric, &a).unwrap_or(-1.0) as usize
        };
        let inline = count("inferscope.labels.joined", &[("source", "inline")]);
        let delayed = count("inferscope.labels.joined", &[("source", "delayed")]);
        assert_eq!(
            (inline, delayed),
            (sent.rows.div_ceil(2), sent.rows / 2),
            "{model}"
        );
        assert_eq!(
            count("inferscope.labels.unmatched", &[("reason", "duplicate")]),
            sent.duplicates,
            "{model}"
        );
        assert_eq!(
            count("inferscope.labels.early", &[]),
            sent.unknown,
            "{model}: unknown labels are held"
        );
        assert_eq!(
            count("inferscope.labels.pending", &[]),
            0,
            "{model}: every prediction joined"
        );
        assert_eq!(count("inferscope.quality.pairs", &[]), sent.rows, "{model}");

        for window in ["5m", "1h", "all"] {
            let mut c = Check {
                request: &request,
                model,
                window,
                failures: Vec::new(),
            };
            if ds["task"] == "regression" {
                for name in ["mae", "mse", "rmse", "mape", "r2", "mean_error"] {
                    c.exact(&format!("inferscope.quality.{name}"), &[], &e[name]);
                }
                failures.extend(c.failures);
                continue;
            }
            c.exact("inferscope.quality.accuracy", &[], &e["accuracy"]);
            c.exact(
                "inferscope.quality.balanced_accuracy",
                &[],
                &e["balanced_accuracy"],
            );
            for (class, scores) in e["per_class"].as_object().unwrap() {
                for name in ["precision", "recall", "f1"] {
                    c.exact(
                        &format!("inferscope.quality.{name}"),
                        &[("class", class)],
                        &scores[name],
                    );
                }
            }
            for (average, scores) in e["averages"].as_object().unwrap() {
                for name in ["precision", "recall", "f1"] {
                    c.exact(
                        &format!("inferscope.quality.{name}"),
                        &[("average", average)],
                        &scores[name],
                    );
                }
            }
            for (class, rate) in e["prediction_rate"].as_object().unwrap() {
                c.exact(
                    "inferscope.quality.predicted_class",
                    &[("class", class)],
                    rate,
                );
            }
            if ds["task"] == "undeclared" {
                // No probabilities: no curves and no losses are exported.
                c.exact("inferscope.quality.roc_auc", &[], &Value::Null);
                c.exact("inferscope.quality.log_loss", &[], &Value::Null);
            } else {
                c.exact("inferscope.quality.log_loss", &[], &e["log_loss"]);
                c.exact("inferscope.quality.brier_score", &[], &e["brier_score"]);
            }
            match ds["task"].as_str().unwrap() {
                "binary" => {
                    let bound = c.bounded("inferscope.quality.roc_auc", &[], &e["roc_auc"]);
                    c.bounded(
                        "inferscope.quality.average_precision",
                        &[],
                        &e["average_precision"],
                    );
                    if model == "binary_large_approximate" {
                        // Past the exact cap: the histogram estimate, with a useful bound.
                        let bound = bound.unwrap();
                        assert!(bound > 0.0 && bound < 0.01, "{model}: bound {bound}");
                    } else if let Some(bound) = bound {
                        assert_eq!(bound, 0.0, "{model}: under the exact cap");
                    }
                }
                "multiclass" => {
                    c.bounded(
                        "inferscope.quality.roc_auc",
                        &[("average", "macro")],
                        &e["roc_auc"],
                    );
                    c.bounded(
                        "inferscope.quality.average_precision",
                        &[("average", "macro")],
                        &e["average_precision"],
                    );
                    for (class, auc) in e["per_class_roc_auc"].as_object().unwrap() {
                        c.bounded("inferscope.quality.roc_auc", &[("class", class)], auc);
                    }
                    for (class, ap) in e["per_class_average_precision"].as_object().unwrap() {
                        c.bounded(
                            "inferscope.quality.average_precision",
                            &[("class", class)],
                            ap,
                        );
                    }
                }
                _ => {}
            }
            failures.extend(c.failures);
        }
        // Raw counters since start: the confusion matrix.
        for (cell, n) in e["confusion"].as_object().into_iter().flatten() {
            let (t, p) = cell.split_once('|').unwrap();
            let got = count(
                "inferscope.quality.confusion",
                &[("true_class", t), ("predicted_class", p)],
            );
            if got != n.as_u64().unwrap() as usize {
                failures.push(format!("{model} confusion {cell}: {got} != {n}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
