//! Load generator: streams pre-built batches to a running sidecar over real gRPC on loopback and
//! reports records per second acknowledged. Run it against `inferscope serve --null-sink` (the
//! decode-and-ack limit) and against the default pipeline; see BENCHMARKS.md.
//!
//! The batch is protobuf-encoded once, before timing, and sent as raw bytes through a
//! pass-through codec: encoding 32-feature records costs the client about as much as decoding
//! costs the server, and a client that encodes on the fly cannot saturate a server on an equal
//! core.
//!
//! cargo run --release --example loadgen -- --addr 127.0.0.1:7717 --seconds 10
//! (`--unread true --nan true`: streams that never read their large acks, for the memory budget)

use bytes::{BufMut, Bytes};
use inferscope::{demo::load_test_batch, pb};
use prost::Message;
use std::time::{Duration, Instant};
use tonic::{
    codec::{Codec, EncodeBuf, Encoder},
    Status,
};
use tonic_prost::ProstCodec;

/// Sends already-encoded `RecordBatch` bytes; decodes `BatchAck`s as usual.
struct PreEncoded;

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = pb::BatchAck;
    type Encoder = BytesEncoder;
    type Decoder = <ProstCodec<(), pb::BatchAck> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<(), pb::BatchAck>::default().decoder()
    }
}

struct Args {
    addr: String,
    streams: usize,
    batch: usize,
    features: usize,
    seconds: f64,
    /// Distinct pre-built batches, cycled: batch `j` is model `loadgen-j` with error types
    /// `e<j>-<k>`. 1 (the default) is one model; a large number drives every cardinality cap
    /// (models, error types) into overflow, for soak runs.
    distinct: usize,
    /// Batches with distinct request ids, cycled (each 1000-record batch is 1000 ids): with the
    /// default 64, ids repeat only every 64 000 records, so predictions go through the pending
    /// store as unique requests would.
    ids: usize,
    /// `none` (the default: predictions wait for labels that never come), `inline` (every record
    /// carries its label) or `delayed` (each acked batch's labels follow through SubmitLabels).
    labels: String,
    /// Never read acks (a deadlocked model server): the sidecar's memory budget and ack timeout
    /// must bound what such streams hold.
    unread: bool,
    /// Every feature NaN: each record raises flags, so acks are large.
    nan: bool,
    /// Records per second offered by all streams together (0, the default: as fast as the
    /// server acks): for figures at a fixed load rather than at saturation.
    rate: f64,
}

fn parse() -> Args {
    let mut args = Args {
        addr: "127.0.0.1:7717".into(),
        streams: 2,
        batch: 1000,
        features: 32,
        seconds: 10.0,
        distinct: 1,
        ids: 64,
        labels: "none".into(),
        unread: false,
        nan: false,
        rate: 0.0,
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
            "--distinct" => args.distinct = value.parse().expect("--distinct"),
            "--ids" => args.ids = value.parse().expect("--ids"),
            "--labels" => args.labels = value,
            "--unread" => args.unread = value.parse().expect("--unread true|false"),
            "--nan" => args.nan = value.parse().expect("--nan true|false"),
            "--rate" => args.rate = value.parse().expect("--rate records per second"),
            other => panic!(
                "unknown flag {other}; flags: --addr --streams --batch --features --seconds \
                 --distinct --ids --labels none|inline|delayed --unread --nan --rate"
            ),
        }
    }
    args
}

#[tokio::main]
async fn main() {
    let args = parse();
    let (inline, delayed) = match args.labels.as_str() {
        "none" => (false, false),
        "inline" => (true, false),
        "delayed" => (false, true),
        other => panic!("--labels {other}: use none, inline or delayed"),
    };
    let batches = args.distinct.max(args.ids).max(1);
    let templates: Vec<Bytes> = (0..batches)
        .map(|j| {
            let mut b = load_test_batch(j as u64, args.batch, args.features);
            b.sequence = j as u64;
            if args.nan {
                for r in &mut b.records {
                    r.numeric_features.fill(f64::NAN);
                }
            }
            if inline {
                for (i, r) in b.records.iter_mut().enumerate() {
                    // Right four times out of five.
                    let truth = if i % 5 == 0 { 1 - i % 2 } else { i % 2 };
                    r.label = Some(inferscope::pb::Label {
                        value: Some(inferscope::pb::label::Value::ClassIndex(truth as u32)),
                    });
                }
            }
            if args.distinct <= 1 {
                return Bytes::from(b.encode_to_vec());
            }
            let j = j % args.distinct;
            b.model = format!("loadgen-{j}");
            for d in &mut b.declarations {
                d.model = b.model.clone();
            }
            for (i, r) in b.records.iter_mut().enumerate() {
                if !r.error_type.is_empty() || i % 10 == 0 {
                    r.error_type = format!("e{j}-{}", i % 7);
                }
            }
            Bytes::from(b.encode_to_vec())
        })
        .collect();
    // Delayed mode: the labels of template `j`, sent once its batch is acknowledged.
    let label_batches: std::sync::Arc<Vec<pb::LabelBatch>> = std::sync::Arc::new(
        (0..if delayed { batches } else { 0 })
            .map(|j| {
                let b = load_test_batch(j as u64, args.batch, args.features);
                pb::LabelBatch {
                    sequence: j as u64,
                    model: b.model.clone(),
                    version: b.version.clone(),
                    labels: b
                        .records
                        .iter()
                        .enumerate()
                        .map(|(i, r)| pb::GroundTruth {
                            request_id: r.request_id.clone(),
                            label: Some(pb::Label {
                                value: Some(pb::label::Value::ClassIndex(
                                    (if i % 5 == 0 { 1 - i % 2 } else { i % 2 }) as u32,
                                )),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
            })
            .collect(),
    );
    let labels_sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for stream in 0..args.streams {
        // Streams start at evenly spaced templates, so they do not send the same ids in step.
        let offset = stream * templates.len() / args.streams;
        let addr = args.addr.clone();
        let templates = templates.clone();
        let label_batches = label_batches.clone();
        let labels_sent = labels_sent.clone();
        let unread = args.unread;
        // With --rate, each stream sends a batch every batch × streams / rate seconds.
        let (rate, per_batch) = (args.rate, (args.batch * args.streams) as f64);
        tasks.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("address")
                .connect()
                .await
                .expect("connect");
            let (label_tx, mut label_rx) = tokio::sync::mpsc::channel::<u64>(64);
            let labeller = {
                let mut client =
                    pb::ingest_service_client::IngestServiceClient::new(channel.clone());
                tokio::spawn(async move {
                    while let Some(j) = label_rx.recv().await {
                        let batch = label_batches[j as usize].clone();
                        let n = batch.labels.len() as u64;
                        if client.submit_labels(batch).await.is_ok() {
                            labels_sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            };
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.expect("ready");
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
            let mut pace = (rate > 0.0).then(|| {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(per_batch / rate));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick
            });
            let producer = tokio::spawn(async move {
                for template in templates.iter().cycle().skip(offset) {
                    if let Some(pace) = &mut pace {
                        pace.tick().await;
                    }
                    if started.elapsed() >= deadline || tx.send(template.clone()).await.is_err() {
                        break;
                    }
                }
            });
            let mut acks = grpc
                .streaming(
                    tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                    http::uri::PathAndQuery::from_static(
                        "/inferscope.v1.IngestService/StreamRecords",
                    ),
                    PreEncoded,
                )
                .await
                .expect("stream")
                .into_inner();
            let mut accepted = 0u64;
            let mut rejected = 0u64;
            if unread {
                // Holds the stream open without reading until the deadline (or until the
                // sidecar ends it: then the next read says how).
                tokio::time::sleep(deadline.saturating_sub(started.elapsed())).await;
            }
            loop {
                match acks.message().await {
                    Ok(Some(ack)) => {
                        accepted += u64::from(ack.accepted);
                        rejected += ack.rejects.len() as u64;
                        if delayed {
                            // Waits when labels fall behind, which slows the records too.
                            let _ = label_tx.send(ack.sequence).await;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        eprintln!("stream ended: {status}");
                        break;
                    }
                }
            }
            let _ = producer.await;
            drop(label_tx);
            let _ = labeller.await;
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
        "streams={} batch={} features={} labels={} records={} labels_sent={} seconds={:.2} records_per_second={:.0}",
        args.streams,
        args.batch,
        args.features,
        args.labels,
        total,
        labels_sent.load(std::sync::atomic::Ordering::Relaxed),
        elapsed,
        total as f64 / elapsed
    );
}
