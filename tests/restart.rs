//! What survives a restart (`--state-dir`): after `kill -9` a sidecar takes back the
//! declarations it was sent and the reference profiles it captured, so that positional records
//! are still read by their schema and drift is still measured against the old traffic instead
//! of being re-baselined on the new.

mod common;

use common::process::{self, serve};
use inferscope::pb::{self, ingest_service_client::IngestServiceClient};
use std::{path::Path, time::Duration};
use tonic::transport::Channel;

fn declaration() -> pb::ModelDeclaration {
    pb::ModelDeclaration {
        model: "fraud".into(),
        version: "7".into(),
        task: pb::TaskType::BinaryClassification as i32,
        class_names: vec!["ok".into(), "fraud".into()],
        features: vec![pb::FeatureSpec {
            name: "amount".into(),
            kind: pb::FeatureKind::Numeric as i32,
        }],
        ..Default::default()
    }
}

/// Positional records (no names: they need the declaration), each with its label inline.
fn batch(sequence: u64, amounts: impl Iterator<Item = f64>, declare: bool) -> pb::RecordBatch {
    let records = amounts
        .enumerate()
        .map(|(i, amount)| pb::InferenceRecord {
            request_id: format!("{sequence}-{i}"),
            latency_seconds: Some(0.01),
            numeric_features: vec![amount],
            prediction: Some(pb::inference_record::Prediction::Classification(
                pb::Classification {
                    predicted_class_index: Some((i % 2) as u32),
                    ..Default::default()
                },
            )),
            label: Some(pb::Label {
                value: Some(pb::label::Value::ClassIndex((i % 2) as u32)),
            }),
            ..Default::default()
        })
        .collect();
    pb::RecordBatch {
        sequence,
        model: "fraud".into(),
        version: "7".into(),
        declarations: if declare { vec![declaration()] } else { vec![] },
        records,
        ..Default::default()
    }
}

async fn reference(client: &mut IngestServiceClient<Channel>) -> Result<String, tonic::Status> {
    client
        .export_reference(pb::ExportReferenceRequest {
            model: "fraud".into(),
            version: "7".into(),
        })
        .await
        .map(|r| r.into_inner().profile_json)
}

fn saved_references(state: &Path) -> usize {
    std::fs::read_dir(state.join("references"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".profile.json"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn kill_9_and_restart_keeps_declarations_and_the_captured_reference() {
    let dir = common::tls::temp_dir("restart");
    let state = dir.join("state");
    let args = [
        "--state-dir",
        state.to_str().unwrap(),
        "--reference-records",
        "50",
    ];
    let first = serve(&args);
    let mut client = IngestServiceClient::connect(first.url()).await.unwrap();
    assert_eq!(
        reference(&mut client).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    // Amounts 0..50 are the reference; they complete the capture.
    let ack = client
        .submit_records(batch(1, (0..50).map(f64::from), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.accepted, ack.rejects.len()), (50, 0));
    let captured = reference(&mut client)
        .await
        .expect("the capture is complete");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while saved_references(&state) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the capture was never saved"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = first.stop("-KILL");
    assert_eq!(killed.status.code(), None, "killed by the signal");

    let second = serve(&args);
    let mut client = IngestServiceClient::connect(second.url()).await.unwrap();
    // The reference is the captured one, not a new capture from what follows.
    assert_eq!(reference(&mut client).await.unwrap(), captured);
    // Positional records and class indices without declaring again: the schema is known.
    let ack = client
        .submit_records(batch(2, (0..20).map(|i| 1000.0 + f64::from(i)), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 20, "{:?}", ack.rejects);
    assert!(ack.rejects.is_empty(), "{:?}", ack.rejects);
    // Drift is measured against the old traffic: every shifted amount is out of its range.
    let out_of_range = ack
        .flags
        .iter()
        .filter(|f| {
            f.anomalies
                .iter()
                .any(|a| a.kind == "out_of_reference_range" && a.subject == "amount")
        })
        .count();
    assert_eq!(out_of_range, 20, "{:?}", ack.flags);
    assert_eq!(reference(&mut client).await.unwrap(), captured);
    // `inferscope profile --from-sidecar` keeps the capture as a file --profiles-dir loads.
    let file = dir.join("kept.profile.json");
    let out = std::process::Command::new(process::BIN)
        .args(["profile", "--from-sidecar", "--addr", &second.addr])
        .args(["--model", "fraud", "--version", "7", "--output"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", process::output(&out));
    let kept = inferscope::drift::profile::Profile::load(&file).unwrap();
    assert_eq!(kept, serde_json::from_str(&captured).unwrap());
    assert_eq!((kept.source.as_str(), kept.records), ("live:first-50", 50));
    let logs = process::output(&second.stop("-TERM"));
    assert!(
        logs.contains("state restored") && logs.contains("reference_profiles=1"),
        "{logs}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn without_a_state_directory_nothing_survives() {
    // The in-memory default, stated by a test so that the README's promise is checked both ways.
    let first = serve(&["--reference-records", "50"]);
    let mut client = IngestServiceClient::connect(first.url()).await.unwrap();
    client
        .submit_records(batch(1, (0..50).map(f64::from), true))
        .await
        .unwrap();
    assert!(reference(&mut client).await.is_ok());
    first.stop("-KILL");
    let second = serve(&["--reference-records", "50"]);
    let mut client = IngestServiceClient::connect(second.url()).await.unwrap();
    assert_eq!(
        reference(&mut client).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let ack = client
        .submit_records(batch(2, (0..20).map(f64::from), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ack.rejects.len(),
        20,
        "positional records need the declaration"
    );
}
