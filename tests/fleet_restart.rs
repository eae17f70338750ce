//! A fleet sidecar killed with SIGKILL mid-stream and started again (`--label-store`): the
//! predictions it acked wait in Redis, so the labels sent after the restart, to it or to another
//! sidecar, join them. What a SIGKILL can still lose is the writer's queue of the last
//! milliseconds (README, "What survives a restart"); this test measures it and holds it to the
//! queue's bound.

mod common;

use common::{process::serve, redis::Redis};
use inferscope::pb::{self, ingest_service_client::IngestServiceClient};
use std::{
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

const BATCH: usize = 100;
/// The writer's queue (`src/label_store.rs`, `WRITE_QUEUE`) in batches plus the pipelines in
/// flight (`MAX_IN_FLIGHT`): the most a SIGKILL can take with it.
const MOST_LOST: usize = (64 + 8) * BATCH;

fn records(sequence: u64) -> pb::RecordBatch {
    let records = (0..BATCH)
        .map(|i| pb::InferenceRecord {
            request_id: format!("{sequence}-{i}"),
            latency_seconds: Some(0.01),
            prediction: Some(pb::inference_record::Prediction::Classification(
                pb::Classification {
                    predicted_class: ["yes", "no"][i % 2].into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .collect();
    common::batch(sequence, "m", records)
}

fn labels(sequences: impl Iterator<Item = u64>) -> pb::LabelBatch {
    pb::LabelBatch {
        sequence: 1,
        model: "m".into(),
        version: "1".into(),
        labels: sequences
            .flat_map(|s| {
                (0..BATCH).map(move |i| pb::GroundTruth {
                    request_id: format!("{s}-{i}"),
                    label: Some(pb::Label {
                        value: Some(pb::label::Value::ClassName("yes".into())),
                    }),
                    ..Default::default()
                })
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acked_prediction_beyond_the_writer_queue() {
    let redis = Redis::start();
    let url = redis.url();
    let args = ["--label-store", url.as_str()];
    let a = serve(&args);
    let b = serve(&args);
    let mut to_a = IngestServiceClient::connect(a.url()).await.unwrap();

    // Batches go to A until it dies; the kill comes while they flow.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut acked = 0u64;
            for sequence in 1.. {
                if to_a.submit_records(records(sequence)).await.is_err() {
                    break;
                }
                acked = sequence;
                if acked == 30 {
                    stop.store(true, Relaxed);
                }
            }
            acked
        }
    });
    while !stop.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let killed = a.stop("-KILL");
    assert_eq!(killed.status.code(), None, "killed by the signal");
    let acked = sender.await.unwrap();
    assert!(acked >= 30, "{acked}");

    let a = serve(&args);
    let stored = redis.predictions() as usize;
    let lost = acked as usize * BATCH - stored;
    eprintln!(
        "acked {} predictions, {stored} in Redis after SIGKILL, lost {lost}",
        acked as usize * BATCH
    );
    assert!(lost <= MOST_LOST, "lost {lost}");

    // The rest of the labels: half to the restarted sidecar, half to the other one.
    let half = acked / 2;
    for (url, range) in [(a.url(), 1..=half), (b.url(), half + 1..=acked)] {
        let mut client = IngestServiceClient::connect(url).await.unwrap();
        let n = (range.end() + 1 - range.start()) as usize * BATCH;
        let ack = client
            .submit_labels(labels(range))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.accepted as usize, n);
    }
    // Every stored prediction was taken by a label (GETDEL: joined where it was taken).
    redis.wait_for_predictions(0);
}

fn declaration() -> pb::ModelDeclaration {
    pb::ModelDeclaration {
        model: "fraud".into(),
        version: "7".into(),
        features: vec![pb::FeatureSpec {
            name: "amount".into(),
            kind: pb::FeatureKind::Numeric as i32,
        }],
        ..Default::default()
    }
}

fn amounts(sequence: u64, amounts: impl Iterator<Item = f64>) -> pb::RecordBatch {
    pb::RecordBatch {
        sequence,
        model: "fraud".into(),
        version: "7".into(),
        declarations: vec![declaration()],
        records: amounts
            .map(|amount| pb::InferenceRecord {
                latency_seconds: Some(0.01),
                numeric_features: vec![amount],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn reference(url: String) -> Result<String, tonic::Status> {
    let mut client = IngestServiceClient::connect(url).await.unwrap();
    client
        .export_reference(pb::ExportReferenceRequest {
            model: "fraud".into(),
            version: "7".into(),
        })
        .await
        .map(|r| r.into_inner().profile_json)
}

/// A rollout replaces a pod: the new sidecar, with no state of its own, measures drift against
/// the reference the fleet captured, not against its own first records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pod_takes_the_reference_the_fleet_captured() {
    let redis = Redis::start();
    let url = redis.url();
    let args = ["--label-store", url.as_str(), "--reference-records", "50"];
    let old = serve(&args);
    let mut client = IngestServiceClient::connect(old.url()).await.unwrap();
    client
        .submit_records(amounts(1, (0..50).map(f64::from)))
        .await
        .unwrap();
    let captured = reference(old.url()).await.expect("captured");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while redis.command(&["EXISTS", "{fraud@7}:reference"]) != ":1" {
        assert!(std::time::Instant::now() < deadline, "never shared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(old);

    let new = serve(&args);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reference(new.url()).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "never taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reference(new.url()).await.unwrap(), captured);
    // Shifted traffic is measured against the old pod's: every amount is out of its range.
    let mut client = IngestServiceClient::connect(new.url()).await.unwrap();
    let ack = client
        .submit_records(amounts(2, (0..50).map(|i| 1000.0 + f64::from(i))))
        .await
        .unwrap()
        .into_inner();
    let out_of_range = ack
        .flags
        .iter()
        .filter(|f| {
            f.anomalies
                .iter()
                .any(|a| a.kind == "out_of_reference_range")
        })
        .count();
    assert_eq!(out_of_range, 50, "{:?}", ack.flags);
    assert_eq!(reference(new.url()).await.unwrap(), captured);
}
