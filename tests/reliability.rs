//! The sidecar under clients that misbehave: a message that cannot be read ends its stream with
//! an error status, an ack always fits in one gRPC message, and a client that stops reading its
//! acks cannot keep a shutdown from exporting.

mod common;

use common::{batch, value};
use inferscope::pb;
use prost::Message;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// `n` records whose `features` numeric features are all missing (NaN): each raises one
/// `missing_feature` flag per feature, named by the declaration's long feature names.
fn flagged(sequence: u64, n: usize, features: usize) -> pb::RecordBatch {
    let name = |i: usize| format!("{i:03}_{}", "a_rather_long_feature_name_".repeat(7));
    let records = (0..n)
        .map(|i| pb::InferenceRecord {
            request_id: format!("{sequence}-{i}"),
            latency_seconds: Some(0.01),
            numeric_features: vec![f64::NAN; features],
            ..Default::default()
        })
        .collect();
    pb::RecordBatch {
        declarations: vec![pb::ModelDeclaration {
            model: "m".into(),
            version: "1".into(),
            features: (0..features)
                .map(|i| pb::FeatureSpec {
                    name: name(i),
                    kind: pb::FeatureKind::Numeric as i32,
                })
                .collect(),
            ..Default::default()
        }],
        ..batch(sequence, "m", records)
    }
}

/// A client that streams up to `batches` flagged batches (about 100 kB each, acks of up to the
/// message limit) and never reads an ack: the response stream it must keep open, and the task
/// sending the batches.
async fn stuck_client(
    s: &common::TestSidecar,
    batches: u64,
    records: usize,
) -> (
    tonic::Response<tonic::Streaming<pb::BatchAck>>,
    tokio::task::JoinHandle<()>,
) {
    let mut client = s.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let acks = client
        .stream_records(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    let sender = tokio::spawn(async move {
        for sequence in 1..=batches {
            if tx.send(flagged(sequence, records, 8)).await.is_err() {
                break;
            }
        }
    });
    (acks, sender)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_ends_its_stream_with_an_error_status() {
    let mut config = common::config();
    config.max_message_bytes = 64 * 1024;
    let s = common::start(config).await;
    let mut client = s.client().await;
    let small = batch(1, "m", vec![common::record("a", 0.1)]);
    let big = batch(
        2,
        "m",
        (0..4000)
            .map(|i| common::record(&format!("request-{i:08}"), 0.1))
            .collect(),
    );
    assert!(big.encoded_len() > 64 * 1024);
    let after = batch(3, "m", vec![common::record("b", 0.1)]);
    let mut acks = client
        .stream_records(tokio_stream::iter(vec![small, big, after]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acks.next().await.unwrap().unwrap().sequence, 1);
    let status = acks
        .next()
        .await
        .expect("the stream ends with a status, not silently")
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-message-bytes"),
        "{}",
        status.message()
    );
    assert!(acks.next().await.is_none());
    let (metrics, _) = s.stop().await;
    assert_eq!(value(&metrics, "inferscope.streams.failed", &[]), 1);
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")]
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_always_fits_in_one_message() {
    let limit = 256 * 1024;
    let mut config = common::config();
    config.max_message_bytes = limit;
    let s = common::start(config).await;
    let mut client = s.client().await;
    // 1000 records × 8 flags with 200-byte subjects: about 1.8 MB of flags.
    let ack = client
        .submit_records(flagged(1, 1000, 8))
        .await
        .expect("the ack arrives")
        .into_inner();
    assert!(ack.encoded_len() <= limit, "{} bytes", ack.encoded_len());
    assert_eq!(ack.accepted, 1000);
    assert!(ack.flags_dropped > 0);
    let kept: usize = ack.flags.iter().map(|f| f.anomalies.len()).sum();
    assert_eq!(kept + ack.flags_dropped as usize, 8000);
    // The first records keep theirs: the flags of the last flagged records go.
    assert_eq!(ack.flags[0].index, 0);
    assert!(ack.flags.windows(2).all(|w| w[1].index == w[0].index + 1));
    let (metrics, _) = s.stop().await;
    assert_eq!(
        value(&metrics, "inferscope.ack.flags_dropped", &[]),
        ack.flags_dropped as i64
    );
    assert_eq!(
        value(
            &metrics,
            "inferscope.anomalies",
            &[("inferscope.model.name", "m"), ("kind", "missing_feature")]
        ),
        8000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_client_not_reading_acks_still_exports_exactly() {
    let budget = Duration::from_secs(4);
    let mut config = common::config();
    config.shutdown_budget = budget;
    let s = common::start(config).await;
    let (_acks, sender) = stuck_client(&s, 200, 1000).await;
    // Until the sidecar stops taking batches: its acks fill every buffer on the way.
    let counted = stalled(&s).await as i64;
    assert!(!sender.is_finished(), "the client is blocked, not done");
    let started = Instant::now();
    let (metrics, _) = s.stop().await;
    assert!(
        started.elapsed() < budget,
        "stop took {:?}",
        started.elapsed()
    );
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")]
        ),
        counted
    );
    // Its connection could not finish (the acks it does not read fill the flow-control window)
    // and was cut at half the budget, so that the final export ran.
    assert_eq!(value(&metrics, "inferscope.connections.cut", &[]), 1);
    sender.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_and_counted() {
    let mut config = common::config();
    config.max_connections = 1;
    let s = common::start(config).await;
    let mut first = s.client().await;
    first
        .submit_records(batch(1, "m", vec![common::record("a", 0.1)]))
        .await
        .unwrap();
    let second = async {
        let mut client = pb::ingest_service_client::IngestServiceClient::connect(format!(
            "http://{}",
            s.sidecar.local_addr
        ))
        .await?;
        client
            .submit_records(batch(2, "m", vec![common::record("b", 0.1)]))
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(second.await.is_err(), "a second connection is refused");
    // The first one is unaffected.
    first
        .submit_records(batch(3, "m", vec![common::record("c", 0.1)]))
        .await
        .unwrap();
    let (metrics, _) = s.stop().await;
    assert!(value(&metrics, "inferscope.connections.refused", &[]) >= 1);
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")]
        ),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_its_age() {
    use tokio::io::AsyncReadExt;
    let mut config = common::config();
    config.max_connection_age = Duration::from_secs(1);
    config.connection_age_grace = Duration::from_secs(1);
    let s = common::start(config).await;
    // Connects and never says a word.
    let mut silent = tokio::net::TcpStream::connect(s.sidecar.local_addr)
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // the server's settings frame
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the silent connection is still open after 10 s"
    );
    s.stop().await;
}

/// Records counted so far, once they have not grown for a second (the stream no longer read).
async fn stalled(s: &common::TestSidecar) -> u64 {
    let (mut counted, mut same) = (u64::MAX, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = s
            .sidecar
            .snapshot()
            .await
            .models
            .values()
            .map(|o| o.records())
            .sum::<u64>();
        same = if now == counted && now > 0 {
            same + 1
        } else {
            0
        };
        if same == 4 {
            return now;
        }
        counted = now;
        assert!(Instant::now() < deadline, "the stream never stalled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_not_reading_acks_holds_no_more_than_the_memory_budget() {
    let budget = 1 << 20;
    let mut config = common::config();
    config.max_message_bytes = budget;
    config.max_ingest_bytes = budget;
    let s = common::start(config).await;
    // About 300 kB a batch: three fit the budget.
    let records = 3000;
    let batch_bytes = flagged(0, records, 8).encoded_len();
    let (_acks, sender) = stuck_client(&s, 100, records).await;
    let counted = stalled(&s).await;
    // Without the budget the stream takes 16 batches in flight and more whose acks wait in the
    // transport. With it, what fits beside the acks handed over (each counted until the
    // transport asks for the next, so a few more batches get in while it still does).
    let fit = (budget / batch_bytes) as u64;
    let taken = counted / records as u64;
    assert!(
        taken <= fit + 2,
        "{taken} batches taken, {fit} fit the budget"
    );
    sender.abort();
    let (metrics, _) = s.stop().await;
    assert!(value(&metrics, "inferscope.batches.over_budget", &[]) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_does_not_read_its_acks_is_ended() {
    let mut config = common::config();
    config.ack_timeout = Duration::from_secs(1);
    let s = common::start(config).await;
    let (_acks, sender) = stuck_client(&s, 200, 1000).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let snapshot = s.sidecar.snapshot().await;
        if snapshot.self_metrics[inferscope::self_metrics::SelfCounter::StreamsUnread] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unread stream was never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sender.abort();
    let (metrics, _) = s.stop().await;
    assert_eq!(value(&metrics, "inferscope.streams.unread", &[]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_not_utf8_is_rejected_alone() {
    let s = common::start(common::config()).await;
    let (batch, bytes) = inferscope::demo::encoded_with_invalid_utf8(7, 5, 2);
    let reply = common::raw_unary(
        s.sidecar.local_addr,
        "/inferscope.v1.IngestService/SubmitRecords",
        bytes,
    )
    .await
    .expect("the batch is taken, less its bad record");
    let ack = pb::BatchAck::decode(reply.as_slice()).unwrap();
    assert_eq!((ack.sequence, ack.accepted), (7, 4));
    assert_eq!(ack.rejects.len(), 1, "{:?}", ack.rejects);
    let reject = &ack.rejects[0];
    assert_eq!(reject.index, 2);
    assert_eq!(reject.reason(), pb::RejectReason::Malformed);
    assert!(reject.message.contains("UTF-8"), "{}", reject.message);
    let (metrics, _) = s.stop().await;
    let model = [("inferscope.model.name", batch.model.as_str())];
    assert_eq!(value(&metrics, "inferscope.records.received", &model), 4);
    assert_eq!(
        value(
            &metrics,
            "inferscope.records.rejected",
            &[
                ("inferscope.model.name", batch.model.as_str()),
                ("reason", "malformed")
            ]
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_that_is_not_utf8_is_rejected_alone() {
    let s = common::start(common::config()).await;
    let batch = pb::LabelBatch {
        sequence: 3,
        model: "m".into(),
        version: "1".into(),
        labels: ["a", "\u{1F6A9}\u{1F6A9}", "c"]
            .iter()
            .map(|id| pb::GroundTruth {
                request_id: (*id).into(),
                label: Some(pb::Label {
                    value: Some(pb::label::Value::ClassName("x".into())),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut bytes = batch.encode_to_vec();
    let at = bytes
        .windows(4)
        .position(|w| w == "\u{1F6A9}".as_bytes())
        .unwrap();
    bytes[at] = 0xff;
    let reply = common::raw_unary(
        s.sidecar.local_addr,
        "/inferscope.v1.IngestService/SubmitLabels",
        bytes,
    )
    .await
    .expect("the batch is taken, less its bad label");
    let ack = pb::LabelAck::decode(reply.as_slice()).unwrap();
    assert_eq!((ack.sequence, ack.accepted), (3, 2));
    assert_eq!(ack.rejects.len(), 1, "{:?}", ack.rejects);
    assert_eq!(ack.rejects[0].index, 1);
    assert_eq!(ack.rejects[0].field, "labels");
    assert_eq!(ack.rejects[0].reason(), pb::RejectReason::Malformed);
    s.stop().await;
}
