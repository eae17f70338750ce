//! Evaluations of generations through a running sidecar: generation records, inline evaluations,
//! evaluations sent before their generation and after it with `SubmitLabels`, several names per
//! generation, a name twice, evaluations that fit nothing. The exported means, counts and label
//! shares are checked against values computed here from the inputs by a separate, plain pass
//! (the first evaluation of each name of each generation counts): if the join lost, doubled or
//! misrouted an evaluation, they would differ.

mod common;

use inferscope::pb;
use std::collections::{BTreeMap, HashSet};

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

/// What the sidecar should export for one evaluation name.
#[derive(Debug, Default)]
struct Expected {
    count: u64,
    scores: Vec<f64>,
    labels: BTreeMap<String, u64>,
}

/// The expected statistics: every evaluation of a generation that exists, in arrival order,
/// counted the first time its (request, name) is met.
fn expected<'a>(
    generations: &HashSet<String>,
    arrivals: impl IntoIterator<Item = &'a (String, pb::Evaluation)>,
) -> BTreeMap<String, Expected> {
    let mut seen = HashSet::new();
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    for (request_id, e) in arrivals {
        if !generations.contains(request_id) || !seen.insert((request_id, &e.name)) {
            continue;
        }
        let x = out.entry(e.name.clone()).or_default();
        x.count += 1;
        x.scores.extend(e.score);
        if !e.label.is_empty() {
            *x.labels.entry(e.label.clone()).or_default() += 1;
        }
    }
    out
}

#[tokio::test]
async fn evaluations_join_generations_and_are_exported_per_name() {
    let sidecar = common::start(common::config()).await;
    let mut client = sidecar.client().await;

    // Evaluations of five generations that have not come yet ("late…"): held, joined later.
    let early: Vec<(String, pb::Evaluation)> = (0..5)
        .flat_map(|i| {
            let id = format!("late{i}");
            [
                (
                    id.clone(),
                    evaluation("relevance", Some(0.1 * i as f64), ""),
                ),
                (
                    id.clone(),
                    evaluation("thumbs", None, ["up", "down"][i % 2]),
                ),
            ]
        })
        .collect();
    client.submit_labels(labels(MODEL, &early)).await.unwrap();

    // Forty generations, every fourth with an inline judge evaluation; then the late five.
    let inline: Vec<(String, pb::Evaluation)> = (0..40)
        .filter(|i| i % 4 == 0)
        .map(|i| {
            let verdict = if i % 8 == 0 { "pass" } else { "fail" };
            (
                format!("g{i}"),
                evaluation("judge", Some(i as f64), verdict),
            )
        })
        .collect();
    let mut records: Vec<pb::InferenceRecord> = (0..40)
        .map(|i| {
            let id = format!("g{i}");
            let e = inline
                .iter()
                .find(|(r, _)| *r == id)
                .map(|(_, e)| e.clone());
            generation(&id, e)
        })
        .collect();
    records.extend((0..5).map(|i| generation(&format!("late{i}"), None)));
    let generations: HashSet<String> = records.iter().map(|r| r.request_id.clone()).collect();
    client
        .submit_records(common::batch(0, MODEL, records))
        .await
        .unwrap();

    // Delayed evaluations: several names per generation, some names twice (the second, with
    // another value, must not count), some for requests never seen.
    let mut delayed = Vec::new();
    for i in 0..40u32 {
        let id = format!("g{i}");
        if i % 3 != 0 {
            let score = f64::from((i * 37) % 101) / 10.0;
            delayed.push((id.clone(), evaluation("relevance", Some(score), "")));
        }
        if i % 2 == 0 {
            let thumb = if i % 10 < 7 { "up" } else { "down" };
            delayed.push((id.clone(), evaluation("thumbs", None, thumb)));
        }
        if i % 5 == 0 {
            // Judged again (inline already for multiples of 4), or for the first time.
            delayed.push((id.clone(), evaluation("judge", Some(100.0), "fail")));
        }
        if i % 7 == 1 {
            delayed.push((id.clone(), evaluation("relevance", Some(-50.0), "")));
        }
    }
    delayed.push(("nobody".into(), evaluation("relevance", Some(9.0), "")));
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
        .submit_labels(class_label(MODEL, "g1", "cat"))
        .await
        .unwrap();

    let (request, _) = sidecar.stop().await;

    // Inline evaluations arrive with their records, before the delayed ones; the early ones are
    // joined when their (late) generations come, after the inline ones of the same batch.
    let want = expected(&generations, inline.iter().chain(&early).chain(&delayed));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        ["judge", "relevance", "thumbs"]
    );
    for window in ["5m", "1h", "all"] {
        for (name, x) in &want {
            let attrs = [
                ("window", window),
                ("gen_ai.evaluation.name", name.as_str()),
            ];
            let sample = common::point(
                &request,
                "inferscope.evaluation.sample_size",
                &model(&attrs),
            );
            assert_eq!(sample, Some(x.count as f64), "{window} {name}");
            let mean = common::point(&request, "inferscope.evaluation.score", &model(&attrs));
            let want_mean = (!x.scores.is_empty())
                .then(|| x.scores.iter().sum::<f64>() / x.scores.len() as f64);
            match (mean, want_mean) {
                (Some(got), Some(want)) => {
                    assert!((got - want).abs() < 1e-9, "{window} {name}: {got} {want}")
                }
                (got, want) => assert_eq!(got, want, "{window} {name}"),
            }
            let labelled: u64 = x.labels.values().sum();
            for (label, n) in &x.labels {
                let attrs = [
                    ("window", window),
                    ("gen_ai.evaluation.name", name.as_str()),
                    ("gen_ai.evaluation.score.label", label.as_str()),
                ];
                let share = common::point(&request, "inferscope.evaluation.label", &model(&attrs));
                let want = *n as f64 / labelled as f64;
                assert!(
                    share.is_some_and(|s| (s - want).abs() < 1e-12),
                    "{window} {name} {label}: {share:?} {want}"
                );
            }
        }
    }
    for (name, x) in &want {
        let attrs = [("gen_ai.evaluation.name", name.as_str())];
        assert_eq!(
            common::point(&request, "inferscope.evaluations", &model(&attrs)),
            Some(x.count as f64),
            "{name}"
        );
    }

    // The join counters: every evaluation is a label.
    let joined: u64 = want.values().map(|x| x.count).sum();
    let sent = inline.len() + early.len() + delayed.len();
    let value = |name: &str, extra: &[(&str, &str)]| {
        let mut a = vec![("inferscope.model.name", MODEL)];
        a.extend_from_slice(extra);
        common::value(&request, name, &a)
    };
    assert_eq!(
        value("inferscope.labels.joined", &[("source", "inline")]),
        inline.len() as i64
    );
    assert_eq!(
        value("inferscope.labels.joined", &[("source", "delayed")]) as u64,
        joined - inline.len() as u64
    );
    // Sent but not joined: the duplicates, and "nobody"'s, which is still held at the stop.
    let duplicates = sent as u64 - joined - 1;
    assert_eq!(
        value("inferscope.labels.unmatched", &[("reason", "duplicate")]) as u64,
        duplicates
    );
    assert_eq!(value("inferscope.labels.early", &[]), 1);
    assert_eq!(
        value(
            "inferscope.labels.unmatched",
            &[("reason", "kind_mismatch")]
        ),
        1,
        "the class label of g1"
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
