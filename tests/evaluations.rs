//! Evaluations of generations through a running sidecar: generation records, inline evaluations,
//! evaluations sent before their generation and after it with `SubmitLabels`, several names per
//! generation, a name twice, evaluations that fit nothing. The stream and the exported means,
//! counts and label shares it must give come from the oracle (`tests/oracles/evaluations.py`,
//! NumPy, → `tests/data/evaluations.json`, stream `sidecar`): if the join lost, doubled or
//! misrouted an evaluation, they would differ.

mod common;

use inferscope::pb;
use serde_json::Value;
use std::path::PathBuf;

const MODEL: &str = "llm";

fn generation(request_id: &str, inline: Option<pb::Evaluation>) -> pb::InferenceRecord {
    pb::InferenceRecord {
        request_id: request_id.into(),
        latency_seconds: Some(0.5),
        prediction: Some(pb::inference_record::Prediction::Generation(
            pb::Generation {
                input_tokens: 10,
                output_tokens: 20,
                ..Default::default()
            },
        )),
        label: inline.map(|e| pb::Label {
            value: Some(pb::label::Value::Evaluation(e)),
        }),
        ..Default::default()
    }
}

fn evaluation(name: &str, score: Option<f64>, label: &str) -> pb::Evaluation {
    pb::Evaluation {
        name: name.into(),
        score,
        label: label.into(),
    }
}

fn labels(model: &str, evaluations: &[(String, pb::Evaluation)]) -> pb::LabelBatch {
    pb::LabelBatch {
        model: model.into(),
        version: "1".into(),
        labels: evaluations
            .iter()
            .map(|(request_id, e)| pb::GroundTruth {
                request_id: request_id.clone(),
                label: Some(pb::Label {
                    value: Some(pb::label::Value::Evaluation(e.clone())),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// A batch of one class label.
fn class_label(model: &str, request_id: &str, class: &str) -> pb::LabelBatch {
    pb::LabelBatch {
        model: model.into(),
        version: "1".into(),
        labels: vec![pb::GroundTruth {
            request_id: request_id.into(),
            label: Some(pb::Label {
                value: Some(pb::label::Value::ClassName(class.into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The attributes of a series of the generation model with `extra`.
fn model<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut a = vec![
        ("inferscope.model.name", MODEL),
        ("inferscope.model.version", "1"),
    ];
    a.extend_from_slice(extra);
    a
}

/// The oracle's `sidecar` stream.
fn oracle() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/evaluations.json");
    let data: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(data["generator"], "tests/oracles/evaluations.py");
    data["streams"]["sidecar"].clone()
}

/// `(request id, evaluation)` of a list of the oracle's evaluations.
fn evaluations(list: &Value) -> Vec<(String, pb::Evaluation)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["request_id"].as_str().unwrap().to_owned(),
                evaluation(
                    e["name"].as_str().unwrap(),
                    e["score"].as_f64(),
                    e["label"].as_str().unwrap(),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn evaluations_join_generations_and_are_exported_per_name() {
    let stream = oracle();
    let sidecar = common::start(common::config()).await;
    let mut client = sidecar.client().await;

    // Evaluations of generations that have not come yet ("late…"): held, joined later.
    let early = evaluations(&stream["early"]);
    client.submit_labels(labels(MODEL, &early)).await.unwrap();

    // The generations, some with an inline judge evaluation, the late ones last.
    let inline = evaluations(&stream["inline"]);
    let generations: Vec<&str> = stream["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    let records: Vec<pb::InferenceRecord> = generations
        .iter()
        .map(|id| {
            let e = inline.iter().find(|(r, _)| r == id).map(|(_, e)| e.clone());
            generation(id, e)
        })
        .collect();
    client
        .submit_records(common::batch(0, MODEL, records))
        .await
        .unwrap();

    // Delayed evaluations: several names per generation, some names twice (the second, with
    // another value, must not count), some for requests never seen.
    let delayed = evaluations(&stream["delayed"]);
    client.submit_labels(labels(MODEL, &delayed)).await.unwrap();

    // Evaluations that fit nothing: one of a classifier's prediction, a class label of a
    // generation.
    client
        .submit_records(common::batch(
            1,
            "clf",
            vec![common::classified("c1".into(), "cat")],
        ))
        .await
        .unwrap();
    client
        .submit_labels(labels(
            "clf",
            &[("c1".into(), evaluation("relevance", Some(1.0), ""))],
        ))
        .await
        .unwrap();
    client
        .submit_labels(class_label(MODEL, generations[1], "cat"))
        .await
        .unwrap();

    let (request, _) = sidecar.stop().await;

    let want = stream["expected"][MODEL].as_object().unwrap();
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        ["judge", "relevance", "thumbs"]
    );
    for window in ["5m", "1h", "all"] {
        for (name, x) in want {
            let attrs = [
                ("window", window),
                ("gen_ai.evaluation.name", name.as_str()),
            ];
            let sample = common::point(
                &request,
                "inferscope.evaluation.sample_size",
                &model(&attrs),
            );
            assert_eq!(sample, x["count"].as_f64(), "{window} {name}");
            let mean = common::point(&request, "inferscope.evaluation.score", &model(&attrs));
            match (mean, x["mean_score"].as_f64()) {
                (Some(got), Some(want)) => {
                    assert!((got - want).abs() < 1e-9, "{window} {name}: {got} {want}")
                }
                (got, want) => assert_eq!(got, want, "{window} {name}"),
            }
            for (label, share) in x["labels"].as_object().unwrap() {
                let attrs = [
                    ("window", window),
                    ("gen_ai.evaluation.name", name.as_str()),
                    ("gen_ai.evaluation.score.label", label.as_str()),
                ];
                let got = common::point(&request, "inferscope.evaluation.label", &model(&attrs));
                let want = share.as_f64().unwrap();
                assert!(
                    got.is_some_and(|s| (s - want).abs() < 1e-12),
                    "{window} {name} {label}: {got:?} {want}"
                );
            }
        }
    }
    for (name, x) in want {
        let attrs = [("gen_ai.evaluation.name", name.as_str())];
        assert_eq!(
            common::point(&request, "inferscope.evaluations", &model(&attrs)),
            x["count"].as_f64(),
            "{name}"
        );
    }

    // The join counters: every evaluation is a label.
    let count = |key: &str| stream[key].as_i64().unwrap();
    let value = |name: &str, extra: &[(&str, &str)]| {
        let mut a = vec![("inferscope.model.name", MODEL)];
        a.extend_from_slice(extra);
        common::value(&request, name, &a)
    };
    assert_eq!(
        value("inferscope.labels.joined", &[("source", "inline")]),
        count("joined_inline")
    );
    assert_eq!(
        value("inferscope.labels.joined", &[("source", "delayed")]),
        count("joined") - count("joined_inline")
    );
    assert_eq!(
        value("inferscope.labels.unmatched", &[("reason", "duplicate")]),
        count("duplicates")
    );
    // The evaluations of requests never seen are still held at the stop.
    assert_eq!(value("inferscope.labels.early", &[]), count("held_early"));
    assert_eq!(
        value(
            "inferscope.labels.unmatched",
            &[("reason", "kind_mismatch")]
        ),
        1,
        "the class label of a generation"
    );
    let clf = [
        ("inferscope.model.name", "clf"),
        ("reason", "kind_mismatch"),
    ];
    assert_eq!(
        common::value(&request, "inferscope.labels.unmatched", &clf),
        1
    );
    // Every generation with a request id waits on for evaluations, none counted unlabelled.
    assert_eq!(
        value("inferscope.labels.pending", &[]),
        generations.len() as i64
    );
    assert_eq!(value("inferscope.predictions.unlabeled", &[]), 0);
}

/// With a shared label store (`--label-store`, a real redis-server): generations wait in the
/// sidecar that saw them and their evaluations join there, and an evaluation is never looked up
/// in Redis, where it would take a classifier's stored prediction out from under its label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_label_store_evaluations_join_generations_locally() {
    let redis = common::redis::Redis::start();
    let config = inferscope::config::Config {
        label_store: Some(redis.url()),
        ..common::config()
    };
    let sidecar = common::start(config).await;
    let mut client = sidecar.client().await;
    let records = vec![generation("g", None), generation("h", None)];
    client
        .submit_records(common::batch(0, MODEL, records))
        .await
        .unwrap();
    client
        .submit_records(common::batch(
            1,
            "clf",
            vec![common::classified("c".into(), "cat")],
        ))
        .await
        .unwrap();
    redis.wait_for_predictions(1);
    let evaluations = [
        ("g".to_owned(), evaluation("relevance", Some(2.0), "")),
        ("g".to_owned(), evaluation("thumbs", None, "up")),
        ("h".to_owned(), evaluation("relevance", Some(4.0), "")),
    ];
    client
        .submit_labels(labels(MODEL, &evaluations))
        .await
        .unwrap();
    // An evaluation of the classifier's prediction: a kind mismatch, held (not looked up).
    client
        .submit_labels(labels(
            "clf",
            &[("c".into(), evaluation("relevance", Some(1.0), ""))],
        ))
        .await
        .unwrap();
    assert_eq!(
        redis.predictions(),
        1,
        "the classifier's prediction is still stored"
    );
    // Its class label takes it.
    client
        .submit_labels(class_label("clf", "c", "cat"))
        .await
        .unwrap();
    assert_eq!(redis.predictions(), 0);
    let (request, _) = sidecar.stop().await;

    let relevance = [("window", "all"), ("gen_ai.evaluation.name", "relevance")];
    assert_eq!(
        common::point(&request, "inferscope.evaluation.score", &model(&relevance)),
        Some(3.0)
    );
    let thumbs = [
        ("window", "all"),
        ("gen_ai.evaluation.name", "thumbs"),
        ("gen_ai.evaluation.score.label", "up"),
    ];
    assert_eq!(
        common::point(&request, "inferscope.evaluation.label", &model(&thumbs)),
        Some(1.0)
    );
    let joined = |m: &str| {
        let a = [("inferscope.model.name", m), ("source", "delayed")];
        common::value(&request, "inferscope.labels.joined", &a)
    };
    assert_eq!((joined(MODEL), joined("clf")), (3, 1));
    assert_eq!(
        common::value(&request, "inferscope.labels.pending", &model(&[])),
        2,
        "both generations wait on in the shard"
    );
    assert_eq!(
        common::value(&request, "inferscope.label_store.lookup_failures", &[]),
        0
    );
}
