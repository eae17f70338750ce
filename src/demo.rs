//! `inferscope demo`: the sidecar plus a synthetic model server streaming realistic records for a
//! binary classifier, a regressor and an LLM over real gRPC, with a live terminal summary. The
//! generators are also what the load generator and tests send.
//!
//! Ground truth: the classifier and the regressor label 30 % of their records inline and send the
//! rest 2–8 s later through SubmitLabels. Reference profiles are captured live from each model's
//! first records. After [`DEGRADE_AFTER`] the world moves away from the models: amounts grow and
//! a new market appears, traffic rises, fraud no longer follows the score and trips run 30 %
//! longer, so drift flags rise and the quality columns drop.
//!
//! Anomalies are injected throughout: a few records per thousand with a feature far outside its
//! reference or a latency spike, empty and runaway LLM answers, and an error burst on the
//! classifier from [`ERROR_BURST_AT`], so flags come back in the acks, the anomaly counters move
//! and the change detectors fire on the error-rate, accuracy and drift series.

use crate::{
    config::Config,
    export::metrics::SidecarSnapshot,
    pb::{self, ingest_service_client::IngestServiceClient},
    self_metrics::SelfCounter,
    server::{ServeError, Sidecar, Sinks},
};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// When the demo's world stops matching its models.
pub const DEGRADE_AFTER: Duration = Duration::from_secs(30);
/// When the classifier's error burst starts, and how long it lasts.
pub const ERROR_BURST_AT: Duration = Duration::from_secs(45);
const ERROR_BURST_FOR: Duration = Duration::from_secs(10);
/// Error rate during the burst, and otherwise.
const BURST_ERROR_RATE: f64 = 0.4;
const ERROR_RATE: f64 = 0.02;
/// Share of records given a feature far outside its reference, and a latency spike.
const OUTLIER_SHARE: f64 = 0.004;
const LATENCY_SPIKE_SHARE: f64 = 0.003;
/// The demo's interval between series points (and metric exports, unless set).
pub const INTERVAL: Duration = Duration::from_secs(5);

/// The demo's change detectors warm up over 4 intervals (20 s) instead of 10, unless a config
/// file set the warm-up, so that the error burst finds them ready.
pub fn shorten_warmups(config: &mut Config) {
    let defaults = &config.anomaly.defaults;
    if defaults.change_warmup == crate::anomaly::settings::DEFAULT_CHANGE_WARMUP {
        let mut shorter = (**defaults).clone();
        shorter.change_warmup = 4;
        config.anomaly.defaults = std::sync::Arc::new(shorter);
    }
}

/// Share of labelled records whose label rides inline; the rest arrive later.
const INLINE_LABEL_SHARE: f64 = 0.3;

/// The synthetic models of the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticModel {
    /// Binary classifier with numeric and categorical features: "fraud-detector" 3.1.
    Classifier,
    /// Regressor: "eta-regressor" 1.2.
    Regressor,
    /// Chat LLM served by vLLM: "support-chat" 2.
    Llm,
}

pub const SYNTHETIC_MODELS: [SyntheticModel; 3] = [
    SyntheticModel::Classifier,
    SyntheticModel::Regressor,
    SyntheticModel::Llm,
];

/// A standard normal draw (Box–Muller); `rand` alone has no normal distribution.
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal latency with the given median (seconds) and spread.
fn lognormal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

fn traceparent(rng: &mut impl Rng) -> String {
    format!(
        "00-{:032x}-{:016x}-01",
        rng.random::<u128>() | 1,
        rng.random::<u64>() | 1
    )
}

impl SyntheticModel {
    pub fn name(self) -> (&'static str, &'static str) {
        match self {
            Self::Classifier => ("fraud-detector", "3.1"),
            Self::Regressor => ("eta-regressor", "1.2"),
            Self::Llm => ("support-chat", "2"),
        }
    }

    pub fn declaration(self) -> pb::ModelDeclaration {
        let (model, version) = self.name();
        let numeric = |name: &str| pb::FeatureSpec {
            name: name.into(),
            kind: pb::FeatureKind::Numeric as i32,
        };
        let categorical = |name: &str| pb::FeatureSpec {
            name: name.into(),
            kind: pb::FeatureKind::Categorical as i32,
        };
        let mut decl = pb::ModelDeclaration {
            model: model.into(),
            version: version.into(),
            ..Default::default()
        };
        match self {
            Self::Classifier => {
                decl.task = pb::TaskType::BinaryClassification as i32;
                decl.class_names = vec!["legit".into(), "fraud".into()];
                decl.positive_class = "fraud".into();
                decl.features = vec![
                    numeric("amount"),
                    numeric("account_age_days"),
                    numeric("txn_last_hour"),
                    numeric("distance_km"),
                    categorical("country"),
                    categorical("channel"),
                ];
            }
            Self::Regressor => {
                decl.task = pb::TaskType::Regression as i32;
                decl.features = vec![
                    numeric("distance_km"),
                    numeric("hour"),
                    numeric("traffic_index"),
                ];
            }
            Self::Llm => {
                decl.task = pb::TaskType::Generation as i32;
                decl.gen_ai_provider = "vllm".into();
            }
        }
        decl
    }

    /// The ground truth of a successful record, drawn from the model's world: while healthy the
    /// classifier is calibrated (fraud with probability = its score) and the regressor unbiased;
    /// once `degraded`, fraud is independent of the score and trips take 30 % longer.
    pub fn truth(
        self,
        rng: &mut impl Rng,
        record: &pb::InferenceRecord,
        degraded: bool,
    ) -> Option<pb::Label> {
        use pb::inference_record::Prediction;
        let value = match (self, record.prediction.as_ref()?) {
            (Self::Classifier, Prediction::Classification(c)) => {
                let p = if degraded {
                    // Another transaction's score: no longer related to this one.
                    let amount = lognormal(rng, 40.0, 1.0);
                    1.0 / (1.0 + (-(amount.ln() - 6.0)).exp())
                } else {
                    c.score?
                };
                pb::label::Value::ClassIndex(u32::from(rng.random::<f64>() < p))
            }
            (Self::Regressor, Prediction::Regression(r)) => {
                let actual = if degraded {
                    r.value * 1.3 + 60.0 * normal(rng)
                } else {
                    r.value + 30.0 * normal(rng)
                };
                pb::label::Value::RegressionValue(actual)
            }
            _ => return None,
        };
        Some(pb::Label { value: Some(value) })
    }

    /// One realistic record. `error_rate` is the share of failed requests; `drifted` moves the
    /// feature distributions away from the ones the reference profile captured.
    pub fn record(
        self,
        rng: &mut impl Rng,
        id: u64,
        error_rate: f64,
        drifted: bool,
    ) -> pb::InferenceRecord {
        let failed = rng.random::<f64>() < error_rate;
        let mut record = pb::InferenceRecord {
            request_id: format!("req-{id}"),
            time_unix_nano: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            traceparent: if rng.random::<f64>() < 0.5 {
                traceparent(rng)
            } else {
                String::new()
            },
            ..Default::default()
        };
        match self {
            Self::Classifier => {
                // After the drift: larger amounts, and a new market ("MX") taking a third.
                let amount = lognormal(rng, if drifted { 120.0 } else { 40.0 }, 1.0);
                let p_fraud = (1.0 / (1.0 + (-(amount.ln() - 6.0)).exp())).clamp(0.0, 1.0);
                record.latency_seconds = Some(lognormal(rng, 0.012, 0.5));
                record.numeric_features = vec![
                    amount,
                    rng.random_range(0.0..3000.0),
                    rng.random_range(0.0..10.0_f64).floor(),
                    lognormal(rng, 8.0, 1.2),
                ];
                let countries = ["US", "DE", "FR", "BR", "IN"];
                let channels = ["web", "app", "pos"];
                let country = if drifted && rng.random::<f64>() < 0.33 {
                    "MX"
                } else {
                    countries[rng.random_range(0..countries.len())]
                };
                record.categorical_features = vec![
                    country.into(),
                    channels[rng.random_range(0..channels.len())].into(),
                ];
                record.prediction = Some(pb::inference_record::Prediction::Classification(
                    pb::Classification {
                        predicted_class_index: Some(u32::from(p_fraud >= 0.5)),
                        class_probabilities: vec![1.0 - p_fraud, p_fraud],
                        score: Some(p_fraud),
                        ..Default::default()
                    },
                ));
                if failed {
                    record.error_type = "timeout".into();
                }
            }
            Self::Regressor => {
                let distance = lognormal(rng, 5.0, 0.8);
                record.latency_seconds = Some(lognormal(rng, 0.004, 0.4));
                let traffic: f64 = rng.random();
                record.numeric_features = vec![
                    distance,
                    rng.random_range(0.0..24.0_f64).floor(),
                    // Rush hour everywhere after the drift.
                    if drifted { 0.5 + traffic } else { traffic },
                ];
                record.prediction = Some(pb::inference_record::Prediction::Regression(
                    pb::Regression {
                        value: 120.0 + 90.0 * distance,
                    },
                ));
                if failed {
                    record.error_type = "INTERNAL".into();
                }
            }
            Self::Llm => {
                let output_tokens = rng.random_range(20..400u64);
                let ttft = lognormal(rng, 0.18, 0.5);
                let latency = ttft + output_tokens as f64 * lognormal(rng, 0.012, 0.2);
                record.latency_seconds = Some(latency);
                record.prediction = Some(pb::inference_record::Prediction::Generation(
                    pb::Generation {
                        input_tokens: rng.random_range(50..4000),
                        output_tokens,
                        time_to_first_token_seconds: Some(ttft),
                        finish_reason: if output_tokens > 390 {
                            "length"
                        } else {
                            "stop"
                        }
                        .into(),
                        operation: "chat".into(),
                        ..Default::default()
                    },
                ));
                if failed {
                    record.error_type = "rate_limited".into();
                }
            }
        }
        record
    }

    /// Makes `record` anomalous now and then: a feature far outside its reference, a latency
    /// spike, an empty or a very slow LLM answer.
    pub fn inject(self, rng: &mut impl Rng, record: &mut pb::InferenceRecord) {
        if rng.random::<f64>() < LATENCY_SPIKE_SHARE {
            if let Some(l) = &mut record.latency_seconds {
                *l *= 20.0 + 20.0 * rng.random::<f64>();
            }
        }
        if rng.random::<f64>() >= OUTLIER_SHARE {
            return;
        }
        match self {
            // An amount or a trip a hundred times the usual.
            Self::Classifier | Self::Regressor => {
                if let Some(x) = record.numeric_features.first_mut() {
                    *x *= 100.0;
                }
            }
            Self::Llm => {
                if let Some(pb::inference_record::Prediction::Generation(g)) =
                    &mut record.prediction
                {
                    if rng.random::<bool>() {
                        // Nothing generated.
                        g.output_tokens = 0;
                        record.latency_seconds = g.time_to_first_token_seconds;
                    } else if let (Some(l), Some(ttft)) =
                        (&mut record.latency_seconds, g.time_to_first_token_seconds)
                    {
                        // A decode ten times slower per token.
                        *l = ttft + (*l - ttft) * 10.0;
                    }
                }
            }
        }
    }
}

/// Feature `f` of load-test record `i`: uniform in [0, 10), the same for the same (i, f), and
/// unrelated across records and features (SplitMix64), so that the records look like independent
/// draws to drift and anomaly detectors, not like points on one line in batch order.
fn load_value(i: usize, f: usize) -> f64 {
    let mut z = ((i as u64) << 32 | f as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 10.0
}

/// The load test batch encoded, with the request id of record `bad` made invalid UTF-8 (for
/// tests of malformed records: no client library sends one).
pub fn encoded_with_invalid_utf8(
    sequence: u64,
    size: usize,
    bad: usize,
) -> (pb::RecordBatch, Vec<u8>) {
    use prost::Message;
    let mut batch = load_test_batch(sequence, size, 4);
    let marker = "\u{1F6A9}\u{1F6A9}\u{1F6A9}"; // 12 bytes, found in the encoding and broken
    batch.records[bad].request_id = marker.into();
    let mut bytes = batch.encode_to_vec();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .expect("the marker is encoded as is");
    bytes[at] = 0xff;
    (batch, bytes)
}

/// A uniform batch for load tests and benchmarks: a declared binary classifier ("loadgen" 1)
/// with `features` numeric features, 1 % error records.
pub fn load_test_batch(sequence: u64, size: usize, features: usize) -> pb::RecordBatch {
    let records = (0..size)
        .map(|i| pb::InferenceRecord {
            request_id: format!("req-{sequence}-{i}"),
            latency_seconds: Some(0.001 + (i % 100) as f64 * 0.0005),
            error_type: if i % 100 == 0 {
                "timeout".into()
            } else {
                String::new()
            },
            numeric_features: (0..features).map(|f| load_value(i, f)).collect(),
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
        ..Default::default()
    }
}

/// Streams synthetic records of one model to `addr` at `rate` records/s until `stop`. Roughly
/// one batch in 50 carries an invalid record (a NaN latency) to show rejects.
async fn stream_model(
    addr: SocketAddr,
    model: SyntheticModel,
    rate: u32,
    stop: tokio_util::sync::CancellationToken,
) {
    let Ok(mut client) = IngestServiceClient::connect(format!("http://{addr}")).await else {
        return;
    };
    let labels_client = client.clone();
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let producer = tokio::spawn(async move {
        let mut rng = SmallRng::from_os_rng();
        // Delayed labels, due at their instant.
        let mut due: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64, String)>> =
            Default::default();
        let mut labels: BTreeMap<u64, pb::Label> = BTreeMap::new();
        let batches_per_second = 10u32;
        let per_batch = (rate / batches_per_second).max(1);
        let mut ticker =
            tokio::time::interval(Duration::from_millis(1000 / batches_per_second as u64));
        let (name, version) = model.name();
        let mut id = 0u64;
        for sequence in 0u64.. {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let elapsed = started.elapsed();
            let degraded = elapsed >= DEGRADE_AFTER;
            let burst = model == SyntheticModel::Classifier
                && elapsed >= ERROR_BURST_AT
                && elapsed < ERROR_BURST_AT + ERROR_BURST_FOR;
            let error_rate = if burst { BURST_ERROR_RATE } else { ERROR_RATE };
            let mut records: Vec<_> = (0..per_batch)
                .map(|_| {
                    id += 1;
                    let mut record = model.record(&mut rng, id, error_rate, degraded);
                    model.inject(&mut rng, &mut record);
                    if record.error_type.is_empty() {
                        if let Some(label) = model.truth(&mut rng, &record, degraded) {
                            if rng.random::<f64>() < INLINE_LABEL_SHARE {
                                record.label = Some(label);
                            } else {
                                let delay = Duration::from_secs_f64(rng.random_range(2.0..8.0));
                                due.push(std::cmp::Reverse((
                                    Instant::now() + delay,
                                    id,
                                    record.request_id.clone(),
                                )));
                                labels.insert(id, label);
                            }
                        }
                    }
                    record
                })
                .collect();
            let mut ready = Vec::new();
            while due.peek().is_some_and(|d| d.0 .0 <= Instant::now()) {
                let std::cmp::Reverse((_, label_id, request_id)) = due.pop().expect("peeked");
                ready.push(pb::GroundTruth {
                    request_id,
                    label: labels.remove(&label_id),
                    time_unix_nano: SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64),
                    ..Default::default()
                });
            }
            if !ready.is_empty() {
                let mut labels_client = labels_client.clone();
                let batch = pb::LabelBatch {
                    sequence,
                    model: name.into(),
                    version: version.into(),
                    labels: ready,
                    ..Default::default()
                };
                tokio::spawn(async move {
                    let _ = labels_client.submit_labels(batch).await;
                });
            }
            if sequence % 50 == 49 {
                records[0].latency_seconds = Some(f64::NAN);
            }
            let batch = pb::RecordBatch {
                sequence,
                model: name.into(),
                version: version.into(),
                declarations: if sequence == 0 {
                    vec![model.declaration()]
                } else {
                    Vec::new()
                },
                records,
                ..Default::default()
            };
            if tx.send(batch).await.is_err() {
                break;
            }
        }
    });
    if let Ok(response) = client
        .stream_records(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        let mut acks = response.into_inner();
        while let Ok(Some(_ack)) = acks.message().await {}
    }
    producer.abort();
}

/// Per-model figures for the terminal table.
struct Row {
    records: u64,
    errors: u64,
    rejected: u64,
    p50: Option<f64>,
    p95: Option<f64>,
    tokens: Option<(f64, f64)>,
    /// Quality over the shortest window, as text.
    quality: String,
    /// Drift over the shortest window, as text.
    drift: String,
    /// Anomaly flags and change detections, as text.
    anomalies: String,
}

/// A short drift summary of a model over its first (shortest) window.
fn drift_summary(d: &crate::drift::model::DriftSnapshot) -> String {
    let Some(w) = d.windows.first().filter(|w| !w.features.is_empty()) else {
        return String::new();
    };
    let mut top: Vec<&crate::drift::model::FeatureScores> =
        w.features.iter().filter(|f| f.drifted).collect();
    let score = |f: &crate::drift::model::FeatureScores| f.psi.or(f.js_distance).unwrap_or(0.0);
    top.sort_by(|a, b| score(b).total_cmp(&score(a)));
    let names: Vec<String> = top
        .iter()
        .take(3)
        .map(|f| {
            if f.numeric {
                format!("{} PSI {:.2}", f.name, score(f))
            } else {
                format!("{} JS {:.2}", f.name, score(f))
            }
        })
        .collect();
    format!(
        "{}: drift {}/{} features{}{} · reference {}",
        w.window,
        w.drifted_features,
        w.scored_features,
        if w.dataset_drift {
            " DATASET DRIFT"
        } else {
            ""
        },
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        },
        d.source
    )
}

/// A short quality summary of a model over its first (shortest) window.
fn quality_summary(q: &crate::quality::QualitySnapshot) -> String {
    let Some((window, state)) = q.windows.first() else {
        return String::new();
    };
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let pending = format!("pending {}", q.join.pending);
    if state.regression.count() > 0 {
        let r = &state.regression;
        return format!(
            "{window}: MAE {} bias {} R² {} · {pending}",
            f(r.mae()),
            f(r.mean_error()),
            f(r.r2())
        );
    }
    if state.confusion.total() > 0 {
        let auc = state
            .curves
            .first()
            .and_then(|c| c.roc_auc())
            .map(|e| e.value);
        return format!(
            "{window}: accuracy {} ROC AUC {} log loss {} · {pending}",
            f(state.confusion.accuracy()),
            f(auc),
            f(state.log_loss())
        );
    }
    String::new()
}

/// Flags over the shortest window, flag counts by kind since start, and change detections.
fn anomaly_summary(a: &crate::anomaly::AnomalySnapshot) -> String {
    use crate::anomaly::{
        series::{Detector, Series},
        AnomalyKind,
    };
    let Some((window, counts)) = a.windows.first() else {
        return String::new();
    };
    let mut text = format!(
        "anomalies: {:.2}% of records flagged ({window})",
        100.0 * counts.flagged as f64 / counts.records.max(1) as f64
    );
    let kinds: Vec<String> = AnomalyKind::ALL
        .iter()
        .filter(|&&k| a.by_kind[k as usize] > 0)
        .map(|&k| format!("{} {}", k.name(), a.by_kind[k as usize]))
        .collect();
    if !kinds.is_empty() {
        text += &format!(" · {}", kinds.join(", "));
    }
    let changes: Vec<String> = Series::ALL
        .iter()
        .flat_map(|&s| Detector::ALL.iter().map(move |&d| (s, d)))
        .filter(|&(s, d)| a.detections[s as usize][d as usize] > 0)
        .map(|(s, d)| format!("{}/{}", s.name(), d.name()))
        .collect();
    if !changes.is_empty() {
        text += &format!("\n{:<22} changes detected: {}", "", changes.join(", "));
    }
    text
}

fn rows(snapshot: &SidecarSnapshot) -> BTreeMap<String, Row> {
    snapshot
        .models
        .iter()
        .map(|(key, ops)| {
            let latency = ops.latency();
            let tokens = (!ops.gen_ai.is_empty()).then(|| {
                ops.gen_ai.iter().fold((0.0, 0.0), |(i, o), op| {
                    (i + op.input_tokens.sum(), o + op.output_tokens.sum())
                })
            });
            (
                format!("{}@{}", key.model, key.version),
                Row {
                    records: ops.records(),
                    errors: ops.errors(),
                    rejected: ops.rejected.iter().sum(),
                    p50: latency.quantile(0.5),
                    p95: latency.quantile(0.95),
                    tokens,
                    quality: snapshot
                        .quality
                        .get(key)
                        .map(quality_summary)
                        .unwrap_or_default(),
                    drift: snapshot
                        .drift
                        .get(key)
                        .map(drift_summary)
                        .unwrap_or_default(),
                    anomalies: snapshot
                        .anomaly
                        .get(key)
                        .map(anomaly_summary)
                        .unwrap_or_default(),
                },
            )
        })
        .collect()
}

fn print_summary(
    elapsed: Duration,
    addr: SocketAddr,
    exporting: bool,
    now: &SidecarSnapshot,
    before: &BTreeMap<String, u64>,
    dt: f64,
) {
    println!();
    println!(
        "inferscope demo · {:>4.0}s{} · gRPC {addr} · OTLP export {}",
        elapsed.as_secs_f64(),
        if elapsed >= DEGRADE_AFTER {
            " · the world has drifted: features shift, quality degrades"
        } else {
            ""
        },
        if exporting {
            "on"
        } else {
            "off (set OTEL_EXPORTER_OTLP_ENDPOINT to export)"
        }
    );
    println!(
        "{:<22} {:>9} {:>8} {:>7} {:>8} {:>8} {:>8}  tokens in/out",
        "model@version", "records", "rec/s", "errors", "rejected", "p50 ms", "p95 ms",
    );
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.1}", s * 1000.0));
    for (name, row) in rows(now) {
        let rate = (row.records - before.get(&name).copied().unwrap_or(0)) as f64 / dt;
        let errors = if row.records > 0 {
            100.0 * row.errors as f64 / row.records as f64
        } else {
            0.0
        };
        let tokens = row
            .tokens
            .map_or(String::new(), |(i, o)| format!("{i:.0}/{o:.0}"));
        println!(
            "{name:<22} {:>9} {rate:>8.1} {errors:>6.1}% {:>8} {:>8} {:>8}  {tokens}",
            row.records,
            row.rejected,
            ms(row.p50),
            ms(row.p95),
        );
        if !row.quality.is_empty() {
            println!("{:<22} {}", "", row.quality);
        }
        if !row.drift.is_empty() {
            println!("{:<22} {}", "", row.drift);
        }
        if !row.anomalies.is_empty() {
            println!("{:<22} {}", "", row.anomalies);
        }
    }
    println!(
        "streams {} · shed batches {} · spans dropped {} · export failures {}",
        now.self_metrics[SelfCounter::StreamsActive],
        now.self_metrics[SelfCounter::BatchesShed],
        now.self_metrics[SelfCounter::SpansDropped],
        now.self_metrics[SelfCounter::ExportFailures]
    );
}

/// Runs the demo until Ctrl-C or `duration`.
pub async fn run(
    config: Config,
    sinks: Sinks,
    exporting: bool,
    duration: Option<Duration>,
    rate: u32,
) -> Result<(), DemoError> {
    let listener = match TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::info!(
                "{} is taken ({e}); the demo listens on a free port instead",
                config.listen
            );
            TcpListener::bind("127.0.0.1:0").await?
        }
    };
    let sidecar = Sidecar::start(listener, config, sinks).await?;
    let addr = sidecar.local_addr;
    let stop = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = SYNTHETIC_MODELS
        .iter()
        .map(|&m| tokio::spawn(stream_model(addr, m, rate, stop.clone())))
        .collect();

    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    ticker.tick().await;
    let mut before = BTreeMap::new();
    let mut last = Instant::now();
    let signal = crate::server::shutdown_signal();
    tokio::pin!(signal);
    loop {
        let finished = duration.is_some_and(|d| started.elapsed() >= d);
        if finished {
            break;
        }
        tokio::select! {
            _ = &mut signal => break,
            _ = ticker.tick() => {
                let snapshot = sidecar.snapshot().await;
                let dt = last.elapsed().as_secs_f64();
                last = Instant::now();
                print_summary(started.elapsed(), addr, exporting, &snapshot, &before, dt);
                before = rows(&snapshot).into_iter().map(|(k, r)| (k, r.records)).collect();
            }
        }
    }
    stop.cancel();
    for client in clients {
        let _ = client.await;
    }
    sidecar.stop().await?;
    println!("\ndemo finished");
    Ok(())
}
