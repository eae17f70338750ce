//! Load generator: streams pre-built batches to a running sidecar over real gRPC on loopback and
//! reports records per second acknowledged. Run it against `inferscope serve --null-sink` (the
//! decode-and-ack limit) and against the default pipeline; see BENCHMARKS.md.
//!
//! cargo run --release --example loadgen -- --addr 127.0.0.1:7717 --seconds 10

use inferscope::pb::{self, ingest_service_client::IngestServiceClient};
use std::time::{Duration, Instant};

struct Args {
    addr: String,
    streams: usize,
    batch: usize,
    features: usize,
    seconds: f64,
}

fn parse() -> Args {
    let mut args = Args {
        addr: "127.0.0.1:7717".into(),
        streams: 2,
        batch: 1000,
        features: 32,
        seconds: 10.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value,
            "--streams" => args.streams = value.parse().expect("--streams"),
            "--batch" => args.batch = value.parse().expect("--batch"),
            "--features" => args.features = value.parse().expect("--features"),
            "--seconds" => args.seconds = value.parse().expect("--seconds"),
            other => {
                panic!("unknown flag {other}; flags: --addr --streams --batch --features --seconds")
            }
        }
    }
    args
}

/// One batch of classifier records with `features` numeric features, built before timing.
fn batch(sequence: u64, size: usize, features: usize) -> pb::RecordBatch {
    let records = (0..size)
        .map(|i| pb::InferenceRecord {
            request_id: format!("req-{sequence}-{i}"),
            latency_seconds: Some(0.001 + (i % 100) as f64 * 0.0005),
            error_type: if i % 100 == 0 {
                "timeout".into()
            } else {
                String::new()
            },
            numeric_features: (0..features).map(|f| (i * f) as f64 * 0.01).collect(),
            prediction: Some(pb::inference_record::Prediction::Classification(
                pb::Classification {
                    predicted_class_index: Some((i % 2) as u32),
                    class_probabilities: vec![0.3, 0.7],
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .collect();
    pb::RecordBatch {
        sequence,
        model: "loadgen".into(),
        version: "1".into(),
        records,
        declarations: vec![pb::ModelDeclaration {
            model: "loadgen".into(),
            version: "1".into(),
            task: pb::TaskType::BinaryClassification as i32,
            class_names: vec!["neg".into(), "pos".into()],
            features: (0..features)
                .map(|f| pb::FeatureSpec {
                    name: format!("f{f}"),
                    kind: pb::FeatureKind::Numeric as i32,
                })
                .collect(),
            ..Default::default()
        }],
    }
}

#[tokio::main]
async fn main() {
    let args = parse();
    let template = batch(0, args.batch, args.features);
    let deadline = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.streams {
        let addr = args.addr.clone();
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = IngestServiceClient::connect(format!("http://{addr}"))
                .await
                .expect("connect")
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let (tx, rx) = tokio::sync::mpsc::channel(32);
            let producer = tokio::spawn(async move {
                let mut sequence = 0u64;
                while started.elapsed() < deadline {
                    let mut b = template.clone();
                    b.sequence = sequence;
                    sequence += 1;
                    if tx.send(b).await.is_err() {
                        break;
                    }
                }
            });
            let mut acks = client
                .stream_records(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .expect("stream")
                .into_inner();
            let mut accepted = 0u64;
            let mut rejected = 0u64;
            loop {
                match acks.message().await {
                    Ok(Some(ack)) => {
                        accepted += u64::from(ack.accepted);
                        rejected += ack.rejects.len() as u64;
                    }
                    Ok(None) => break,
                    Err(status) => {
                        eprintln!("stream ended: {status}");
                        break;
                    }
                }
            }
            let _ = producer.await;
            assert_eq!(
                rejected, 0,
                "the load generator's records should all be valid"
            );
            accepted
        }));
    }
    let mut total = 0u64;
    for task in tasks {
        total += task.await.expect("stream task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "streams={} batch={} features={} records={} seconds={:.2} records_per_second={:.0}",
        args.streams,
        args.batch,
        args.features,
        total,
        elapsed,
        total as f64 / elapsed
    );
}
