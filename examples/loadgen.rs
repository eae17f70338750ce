//! Load generator: streams pre-built batches to a running sidecar over real gRPC on loopback and
//! reports records per second acknowledged and the acknowledgement latency (p50/p99/p99.9). Run
//! it against `inferscope serve --null-sink` (the decode-and-ack limit) and against the default
//! pipeline; see BENCHMARKS.md.
//!
//! The batch is protobuf-encoded once, before timing, and sent as raw bytes through a
//! pass-through codec: encoding 32-feature records costs the client about as much as decoding
//! costs the server, and a client that encodes on the fly cannot saturate a server on an equal
//! core.
//!
//! With `--rate`, each stream sends its batches at scheduled instants (`--arrivals`: evenly
//! spaced over all streams by default, or a Poisson process), and each batch's latency runs from
//! its scheduled instant, less at most the 1 ms resolution of tokio's timer: a batch that waits in
//! the load generator behind a stalled server (its stream's queue full, HTTP/2 flow control)
//! counts its wait, so a stall is not hidden (no coordinated omission).
//!
//! cargo run --release --example loadgen -- --help
//! cargo run --release --example loadgen -- --addr 127.0.0.1:7717 --seconds 10 --json
//! (`--unread --nan`: streams that never read their large acks, for the memory budget)

use bytes::{BufMut, Bytes};
use clap::Parser;
use inferscope::{demo::load_test_batch, pb};
use prost::Message;
use std::{
    collections::VecDeque,
    io::IsTerminal,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio_stream::StreamExt;
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

/// `--arrivals`: when batches leave with `--rate`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Arrivals {
    /// Evenly spaced over all streams: batch k of the run is due at k × batch / rate, on stream
    /// k mod streams.
    Even,
    /// A Poisson process at the offered rate: each stream an independent one at rate / streams
    /// (exponential gaps, fixed seeds).
    Poisson,
    /// Every stream sends on the same tick, every batch × streams / rate: bursts of --streams
    /// batches (how the load generator paced before; for comparison).
    Burst,
}

/// `--labels`: how ground truth reaches the sidecar.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Labels {
    /// Predictions wait for labels that never come.
    None,
    /// Every record carries its label.
    Inline,
    /// Each acknowledged batch's labels follow through SubmitLabels.
    Delayed,
}

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Streams pre-built record batches to a running inferscope sidecar over gRPC and \
reports records per second acknowledged and the acknowledgement latency (p50/p99/p99.9)",
    long_about = None,
    after_help = "Prints one line of key=value pairs (or one JSON object with --json) at the end; \
a progress bar on stderr while it runs when stderr is a terminal. BENCHMARKS.md has the commands \
behind every figure (tools/bench-throughput.sh runs the modes back to back)."
)]
struct Args {
    /// The sidecar's gRPC address (host:port).
    #[arg(long, env = "INFERSCOPE_ADDR", default_value = "127.0.0.1:7717")]
    addr: String,
    /// Concurrent StreamRecords streams, each on its own HTTP/2 connection.
    #[arg(long, default_value_t = 2)]
    streams: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Numeric features per record.
    #[arg(long, default_value_t = 32)]
    features: usize,
    /// How long to send.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Distinct pre-built batches, cycled: batch `j` is model `loadgen-j` with error types
    /// `e<j>-<k>`. 1 is one model; a large number drives every cardinality cap (models, error
    /// types) into overflow, for soak runs.
    #[arg(long, default_value_t = 1)]
    distinct: usize,
    /// Versions of the model, cycled over the batches: batch `j` is version `v<j mod N>` (1: the
    /// single version `1`). With --classes, for the memory figure of many active versions.
    #[arg(long, default_value_t = 1)]
    versions: usize,
    /// Classes of the classifier (2: binary, more: multiclass with classes `c0`…).
    #[arg(long, default_value_t = 2)]
    classes: usize,
    /// Batches with distinct request ids, cycled (each batch of 1000 records is 1000 ids): with
    /// 64, ids repeat only every 64 000 records, so predictions go through the pending store as
    /// unique requests would.
    #[arg(long, default_value_t = 64)]
    ids: usize,
    /// How ground truth reaches the sidecar.
    #[arg(long, value_enum, default_value_t = Labels::None)]
    labels: Labels,
    /// Never read acks (a deadlocked model server): the sidecar's memory budget and ack timeout
    /// must bound what such streams hold.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    unread: bool,
    /// Every feature NaN: each record raises flags, so acks are large.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    nan: bool,
    /// Records per second offered by all streams together (0: as fast as the sidecar acks), for
    /// figures at a fixed load rather than at saturation.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// With --rate: how batches are spaced. Ack latency then runs from each batch's due instant
    /// (less at most 1 ms, tokio's timer resolution), so waits in the load generator count.
    #[arg(long, value_enum, default_value_t = Arrivals::Even)]
    arrivals: Arrivals,
    /// Write one line per acked batch to this CSV file (stream, sent_us: when it was sent or
    /// due since the start, latency_us), to see when the slow acks happened.
    #[arg(long, value_name = "PATH")]
    latency_log: Option<std::path::PathBuf>,
    /// Print the summary as one JSON object instead of key=value pairs.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Write the records this run would send (the `--ids` batches, with their labels) to a CSV
    /// file and exit, so that other tools are measured on the same records
    /// (tools/bench-compare.sh): columns f0…, predicted, score, label.
    #[arg(long, value_name = "PATH")]
    dump_csv: Option<std::path::PathBuf>,
}

/// The label of record `i` of every batch, whose predicted class is `i mod classes`: right four
/// times out of five.
fn truth(i: usize, classes: usize) -> u32 {
    ((i + usize::from(i.is_multiple_of(5))) % classes) as u32
}

/// Batch `j` as sent, before labels: its model (`--distinct`), version (`--versions`), classes
/// (`--classes`) and error types.
fn template(j: usize, args: &Args) -> pb::RecordBatch {
    let mut b = load_test_batch(j as u64, args.batch, args.features);
    b.sequence = j as u64;
    if args.classes > 2 {
        let k = args.classes;
        for d in &mut b.declarations {
            d.task = pb::TaskType::MulticlassClassification as i32;
            d.class_names = (0..k).map(|c| format!("c{c}")).collect();
        }
        for (i, r) in b.records.iter_mut().enumerate() {
            // Half the mass on the predicted class, the rest spread evenly.
            let mut probabilities = vec![0.5 / (k - 1) as f64; k];
            probabilities[i % k] = 0.5;
            r.prediction = Some(pb::inference_record::Prediction::Classification(
                pb::Classification {
                    predicted_class_index: Some((i % k) as u32),
                    class_probabilities: probabilities,
                    ..Default::default()
                },
            ));
        }
    }
    if args.versions > 1 {
        b.version = format!("v{}", j % args.versions);
        for d in &mut b.declarations {
            d.version = b.version.clone();
        }
    }
    if args.distinct > 1 {
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
    }
    b
}

/// `--dump-csv`: the records of `batches` batches as CSV.
fn dump_csv(path: &std::path::Path, args: &Args, batches: usize) -> Result<(), String> {
    let mut out = csv::Writer::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut header: Vec<String> = (0..args.features).map(|f| format!("f{f}")).collect();
    header.extend(["predicted", "score", "label"].map(String::from));
    out.write_record(&header).map_err(|e| e.to_string())?;
    for j in 0..batches {
        for (i, r) in template(j, args).records.iter().enumerate() {
            let Some(pb::inference_record::Prediction::Classification(c)) = &r.prediction else {
                unreachable!("load_test_batch makes classifications")
            };
            let mut row: Vec<String> = r.numeric_features.iter().map(f64::to_string).collect();
            row.push(c.predicted_class_index.unwrap_or_default().to_string());
            row.push(c.class_probabilities[1].to_string());
            row.push(truth(i, args.classes).to_string());
            out.write_record(&row).map_err(|e| e.to_string())?;
        }
    }
    out.flush().map_err(|e| e.to_string())
}

/// Acknowledgement latencies in microseconds, one per acked batch: from the instant the batch
/// was due (`--rate`) or the moment the stream handed it to the HTTP/2 connection (no rate) to
/// the moment its ack is read. Acks come in batch
/// order (README, `StreamRecords`), so each stream pairs them with a queue of send instants.
#[derive(Default)]
struct Latencies(Vec<u32>);

impl Latencies {
    /// The `q` quantile (nearest rank), in milliseconds; None without samples.
    fn quantile_ms(&mut self, q: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        Some(f64::from(self.0[rank - 1]) / 1000.0)
    }
}

/// One acked batch: its stream, when it was due (or sent) since the start, and its latency.
struct Sample {
    stream: u32,
    sent_us: u32,
    latency_us: u32,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

fn write_latency_log(path: &std::path::Path, samples: &[Sample]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "stream,sent_us,latency_us")?;
    for s in samples {
        writeln!(out, "{},{},{}", s.stream, s.sent_us, s.latency_us)?;
    }
    out.flush()
}

/// tokio's timer fires on whole milliseconds: a paced batch's latency starts at most this long
/// after it was due, so the load generator's own timer is not counted against the sidecar.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// When a paced stream's batches are due (`--rate`, `--arrivals`), after the common start.
struct Schedule {
    arrivals: Arrivals,
    /// Between two batches of the whole run: batch / rate.
    gap: Duration,
    streams: usize,
    stream: usize,
    /// Batches this stream has been given so far.
    sent: u64,
    rng: rand::rngs::StdRng,
}

impl Schedule {
    fn new(arrivals: Arrivals, gap: Duration, streams: usize, stream: usize) -> Self {
        use rand::SeedableRng;
        Self {
            arrivals,
            gap,
            streams,
            stream,
            sent: 0,
            rng: rand::rngs::StdRng::seed_from_u64(15 + stream as u64),
        }
    }

    /// When the stream's next batch is due, given when its last one was.
    fn next(&mut self, last: Duration) -> Duration {
        use rand::Rng;
        let (k, n, s) = (self.sent, self.streams as u64, self.stream as u64);
        self.sent += 1;
        match self.arrivals {
            // Batch k·n + s of the whole run.
            Arrivals::Even => self.gap.mul_f64((k * n + s) as f64),
            // n Poisson streams at rate/n each make one at the offered rate: exponential gaps
            // with mean n·gap, drawn as -ln(U) × mean with U in (0, 1].
            Arrivals::Poisson => {
                let u = 1.0 - self.rng.random::<f64>();
                last + self.gap.mul_f64(n as f64 * -u.ln())
            }
            Arrivals::Burst => self.gap.mul_f64((k * n) as f64),
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (inline, delayed) = (
        args.labels == Labels::Inline,
        args.labels == Labels::Delayed,
    );
    if args.streams == 0
        || args.batch == 0
        || args.versions == 0
        || args.classes < 2
        || args.seconds <= 0.0
        || args.rate < 0.0
    {
        eprintln!(
            "loadgen: --streams, --batch and --versions must be at least 1, --classes at least \
             2, --seconds above 0, --rate 0 or more"
        );
        std::process::exit(2);
    }
    let batches = args.distinct.max(args.ids).max(args.versions).max(1);
    if let Some(path) = &args.dump_csv {
        if let Err(message) = dump_csv(path, &args, batches) {
            eprintln!("loadgen: --dump-csv {message}");
            std::process::exit(1);
        }
        return;
    }
    let templates: Vec<Bytes> = (0..batches)
        .map(|j| {
            let mut b = template(j, &args);
            if args.nan {
                for r in &mut b.records {
                    r.numeric_features.fill(f64::NAN);
                }
            }
            if inline {
                for (i, r) in b.records.iter_mut().enumerate() {
                    r.label = Some(inferscope::pb::Label {
                        value: Some(inferscope::pb::label::Value::ClassIndex(truth(
                            i,
                            args.classes,
                        ))),
                    });
                }
            }
            Bytes::from(b.encode_to_vec())
        })
        .collect();
    // Delayed mode: the labels of template `j`, sent once its batch is acknowledged.
    let label_batches: Arc<Vec<pb::LabelBatch>> = Arc::new(
        (0..if delayed { batches } else { 0 })
            .map(|j| {
                let b = template(j, &args);
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
                                value: Some(pb::label::Value::ClassIndex(truth(i, args.classes))),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
            })
            .collect(),
    );
    let labels_sent = Arc::new(AtomicU64::new(0));
    // Records acknowledged so far, all streams: the progress bar reads it.
    let acked = Arc::new(AtomicU64::new(0));
    let deadline = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let progress = (!args.quiet && !args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new((args.seconds * 10.0).ceil() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed} [{bar:30}] {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let seconds = started.elapsed().as_secs_f64();
                let records = acked.load(Relaxed);
                bar.set_position((seconds * 10.0) as u64);
                bar.set_message(format!(
                    "{records} records acked, {:.0} records/s",
                    records as f64 / seconds.max(1e-3)
                ));
                if seconds >= deadline.as_secs_f64() {
                    bar.finish_and_clear();
                    break;
                }
            }
        })
    });
    // With --rate each stream sends on its schedule; without, as fast as its acks come back.
    let paced = args.rate > 0.0;
    let gap = if paced {
        Duration::from_secs_f64(args.batch as f64 / args.rate)
    } else {
        Duration::ZERO
    };
    // Streams start sending together, once every stream is open (or failed to open).
    let opened = Arc::new(tokio::sync::Barrier::new(args.streams));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = Vec::new();
    for stream in 0..args.streams {
        // Streams start at evenly spaced templates, so they do not send the same ids in step.
        let offset = stream * templates.len() / args.streams;
        let addr = args.addr.clone();
        let templates = templates.clone();
        let label_batches = label_batches.clone();
        let labels_sent = labels_sent.clone();
        let acked = acked.clone();
        let (opened, start, due_from) = (opened.clone(), start.clone(), start.clone());
        let unread = args.unread;
        let mut schedule = Schedule::new(args.arrivals, gap, args.streams, stream);
        // Each batch with the instant its latency starts (paced), or None (when it is pulled).
        let (tx, rx) = tokio::sync::mpsc::channel::<(Bytes, Option<Instant>)>(32);
        let producer = async move {
            if !paced {
                for template in templates.iter().cycle().skip(offset) {
                    if started.elapsed() >= deadline
                        || tx.send((template.clone(), None)).await.is_err()
                    {
                        break;
                    }
                }
                return;
            }
            let Some(&start) = due_from.get() else { return };
            let mut at = Duration::ZERO;
            for template in templates.iter().cycle().skip(offset) {
                at = schedule.next(at);
                if at >= deadline {
                    break;
                }
                let due = start + at;
                tokio::time::sleep_until(due.into()).await;
                let origin = Instant::now().min(due + TIMER_RESOLUTION);
                if tx.send((template.clone(), Some(origin))).await.is_err() {
                    break;
                }
            }
        };
        tasks.push(tokio::spawn(async move {
            let open = async {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| format!("--addr {addr}: {e}"))?
                    .connect()
                    .await
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                let (label_tx, mut label_rx) = tokio::sync::mpsc::channel::<u64>(64);
                let labeller = {
                    let mut client =
                        pb::ingest_service_client::IngestServiceClient::new(channel.clone());
                    tokio::spawn(async move {
                        while let Some(j) = label_rx.recv().await {
                            let batch = label_batches[j as usize].clone();
                            let n = batch.labels.len() as u64;
                            if client.submit_labels(batch).await.is_ok() {
                                labels_sent.fetch_add(n, Relaxed);
                            }
                        }
                    })
                };
                let mut grpc = tonic::client::Grpc::new(channel);
                grpc.ready().await.map_err(|e| format!("{addr}: {e}"))?;
                // When each batch's latency starts: its due instant (paced), or when it left
                // for the connection (tonic pulls the next one as it writes).
                let sent_at = Arc::new(Mutex::new(VecDeque::<Instant>::new()));
                let outgoing = {
                    let sent_at = sent_at.clone();
                    tokio_stream::wrappers::ReceiverStream::new(rx).map(move |(batch, origin)| {
                        sent_at
                            .lock()
                            .expect("not poisoned")
                            .push_back(origin.unwrap_or_else(Instant::now));
                        batch
                    })
                };
                let acks = grpc
                    .streaming(
                        tonic::Request::new(outgoing),
                        http::uri::PathAndQuery::from_static(
                            "/inferscope.v1.IngestService/StreamRecords",
                        ),
                        PreEncoded,
                    )
                    .await
                    .map_err(|status| format!("StreamRecords refused: {status}"))?
                    .into_inner();
                Ok::<_, String>((acks, sent_at, label_tx, labeller))
            }
            .await;
            // Every stream waits for the others, so that paced schedules share one start.
            opened.wait().await;
            start.get_or_init(Instant::now);
            let (mut acks, sent_at, label_tx, labeller) = open?;
            tokio::spawn(producer);
            let mut accepted = 0u64;
            let mut rejected = 0u64;
            let mut latencies = Vec::new();
            if unread {
                // Holds the stream open without reading until the deadline (or until the
                // sidecar ends it: then the next read says how).
                tokio::time::sleep(deadline.saturating_sub(started.elapsed())).await;
            }
            loop {
                match acks.message().await {
                    Ok(Some(ack)) => {
                        if let Some(sent) = sent_at.lock().expect("not poisoned").pop_front() {
                            latencies.push(Sample {
                                stream: stream as u32,
                                sent_us: micros(sent.saturating_duration_since(started)),
                                latency_us: micros(sent.elapsed()),
                            });
                        }
                        accepted += u64::from(ack.accepted);
                        acked.fetch_add(u64::from(ack.accepted), Relaxed);
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
            drop(label_tx);
            let _ = labeller.await;
            if rejected > 0 {
                return Err(format!(
                    "the sidecar rejected {rejected} records; the load generator's records \
                     should all be valid (a sidecar of another version?)"
                ));
            }
            Ok::<_, String>((accepted, latencies))
        }));
    }
    let mut total = 0u64;
    let mut latencies = Latencies::default();
    let mut samples = Vec::new();
    let mut failed = false;
    for task in tasks {
        match task.await.expect("stream task") {
            Ok((accepted, stream_latencies)) => {
                total += accepted;
                latencies
                    .0
                    .extend(stream_latencies.iter().map(|s| s.latency_us));
                samples.extend(stream_latencies);
            }
            Err(message) => {
                eprintln!("loadgen: {message}");
                failed = true;
            }
        }
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    if let Some(path) = &args.latency_log {
        samples.sort_by_key(|s| s.sent_us);
        if let Err(e) = write_latency_log(path, &samples) {
            eprintln!("loadgen: --latency-log {}: {e}", path.display());
            failed = true;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let labels = match args.labels {
        Labels::None => "none",
        Labels::Inline => "inline",
        Labels::Delayed => "delayed",
    };
    let arrivals = match args.arrivals {
        Arrivals::Even => "even",
        Arrivals::Poisson => "poisson",
        Arrivals::Burst => "burst",
    };
    let (p50, p99, p999) = (
        latencies.quantile_ms(0.5),
        latencies.quantile_ms(0.99),
        latencies.quantile_ms(0.999),
    );
    let summary = serde_json::json!({
        "streams": args.streams,
        "batch": args.batch,
        "features": args.features,
        "labels": labels,
        "rate_offered": args.rate,
        "arrivals": if paced { arrivals } else { "none" },
        "records": total,
        "labels_sent": labels_sent.load(Relaxed),
        "seconds": elapsed,
        "records_per_second": total as f64 / elapsed,
        "acks": latencies.0.len(),
        "ack_p50_ms": p50,
        "ack_p99_ms": p99,
        "ack_p999_ms": p999,
    });
    if args.json {
        println!("{summary}");
    } else {
        let ms = |v: Option<f64>| v.map_or_else(|| "none".to_string(), |v| format!("{v:.3}"));
        println!(
            "streams={} batch={} features={} labels={labels} arrivals={} records={total} \
             labels_sent={} seconds={elapsed:.2} records_per_second={:.0} ack_p50_ms={} ack_p99_ms={} ack_p999_ms={}",
            args.streams,
            args.batch,
            args.features,
            if paced { arrivals } else { "none" },
            labels_sent.load(Relaxed),
            total as f64 / elapsed,
            ms(p50),
            ms(p99),
            ms(p999),
        );
    }
    if failed {
        std::process::exit(1);
    }
}
