//! Half-Space Trees against river: the streams of `tests/data/anomaly.json` (written by
//! `tests/oracles/anomaly.py` with `river.anomaly.HalfSpaceTrees`, score then learn per row) must get
//! river's scores from inferscope's trees built with the same seed, for every parameter set.
//! Robust z-scores of features against their reference, returned in acks, must be SciPy's.

mod common;

use common::golden::floats;
use inferscope::{
    anomaly::{AnomalyConfig, AnomalySettings},
    pb,
    stats::half_space_trees::{HalfSpaceTrees, PythonRandom},
};
use serde_json::Value;
use std::sync::Arc;

fn golden() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/anomaly.json"
    ))
    .expect("tests/data/anomaly.json (run tests/oracles/anomaly.py)");
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn the_tree_generator_draws_what_cpython_draws() {
    let g = golden();
    let firsts = g["random_first"].as_object().unwrap();
    assert!(!firsts.is_empty());
    for (seed, first) in firsts {
        let seed: u64 = seed.parse().unwrap();
        assert_eq!(
            PythonRandom::new(seed).random(),
            first.as_f64().unwrap(),
            "seed {seed}"
        );
    }
}

#[test]
fn half_space_trees_score_every_row_as_river_does() {
    let g = golden();
    let cases = g["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let rows: Vec<Vec<f64>> = g["streams"][case["stream"].as_str().unwrap()]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(f64::NAN))
                    .collect()
            })
            .collect();
        let expected: Vec<f64> = case["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let mut hst = HalfSpaceTrees::new(
            rows[0].len(),
            case["trees"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as u32,
            case["window"].as_u64().unwrap() as u32,
            case["seed"].as_u64().unwrap(),
        );
        let label = format!("{} / {}", case["stream"], case["case"]);
        assert_eq!(rows.len(), expected.len(), "{label}");
        for (i, (row, want)) in rows.iter().zip(&expected).enumerate() {
            let got = hst.score_learn(row);
            assert!(
                (got - want).abs() <= 1e-12,
                "{label}: row {i}: {got} vs river {want}"
            );
        }
        // Not a stream of zeros: scores vary past the first window.
        assert!(expected.iter().any(|&s| s > 0.0), "{label}");
    }
}

/// The references of `robust` captured live as profiles, then the probes: every probe whose
/// SciPy robust z-score (on the log scale for the log-normal references) is over the threshold
/// comes back flagged `feature_outlier` in the ack with that z as score; the others do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robust_z_scores_in_the_acks_are_scipys() {
    const THRESHOLD: f64 = 0.5;
    let g = golden();
    let cases = g["robust"].as_array().unwrap();
    let mut config = common::config();
    config.drift.reference_records = 0;
    config.anomaly = AnomalyConfig {
        defaults: Arc::new(AnomalySettings {
            feature_outlier_z: THRESHOLD,
            ..Default::default()
        }),
        ..Default::default()
    };
    let sidecar = common::start(config).await;
    let mut client = sidecar.client().await;
    let mut checked = 0;
    for (n, case) in cases.iter().enumerate() {
        let model = case["name"].as_str().unwrap();
        let reference = floats(&case["reference"]);
        let probes = floats(&case["probes"]);
        // None where no z-score applies (a value <= 0 on the log scale).
        let z: Vec<Option<f64>> = case["z"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::as_f64)
            .collect();
        let records = |values: &[f64]| -> Vec<pb::InferenceRecord> {
            values
                .iter()
                .map(|&v| pb::InferenceRecord {
                    numeric_features: vec![v],
                    ..Default::default()
                })
                .collect()
        };
        // The reference: exactly the records of one batch, captured on request.
        let mut capture = common::batch(2 * n as u64, model, records(&reference));
        capture.declarations = vec![pb::ModelDeclaration {
            model: model.into(),
            version: "1".into(),
            features: vec![pb::FeatureSpec {
                name: "x".into(),
                kind: pb::FeatureKind::Numeric as i32,
            }],
            ..Default::default()
        }];
        client
            .capture_reference(pb::CaptureReferenceRequest {
                model: model.into(),
                version: "1".into(),
                records: reference.len() as u32,
            })
            .await
            .unwrap();
        client.submit_records(capture).await.unwrap();
        let ack = client
            .submit_records(common::batch(2 * n as u64 + 1, model, records(&probes)))
            .await
            .unwrap()
            .into_inner();
        let mut flagged = vec![None; probes.len()];
        for r in &ack.flags {
            for a in r.anomalies.iter().filter(|a| a.kind == "feature_outlier") {
                assert_eq!(a.subject, "x");
                flagged[r.index as usize] = Some(a.score);
            }
        }
        for (i, (&want, got)) in z.iter().zip(&flagged).enumerate() {
            match (want, got) {
                (Some(want), Some(got)) => {
                    assert!(want > THRESHOLD, "{model}: probe {i} flagged at z {want}");
                    assert!(
                        (got - want).abs() <= 1e-9 * want.max(1.0),
                        "{model}: probe {i}: {got} vs SciPy {want}"
                    );
                    checked += 1;
                }
                (Some(want), None) => {
                    assert!(
                        want <= THRESHOLD,
                        "{model}: probe {i} (z {want}) not flagged"
                    )
                }
                (None, got) => assert_eq!(*got, None, "{model}: probe {i} has no z-score"),
            }
        }
    }
    assert!(checked > 100, "{checked}");
    sidecar.stop().await;
}
