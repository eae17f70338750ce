//! Encodes sidecar snapshots as OTLP metrics (cumulative temporality) and sends them over gRPC or
//! HTTP/protobuf. See the module doc of `export` for why the SDK's instruments are not used.
//!
//! A backend outage loses nothing while the process lives: every export carries cumulative
//! totals, so the first export after an outage brings the backend up to date. Failures are logged
//! once (and once more on recovery), counted in `inferscope.export.failures`, never retried in a
//! tight loop.

use super::{resource, ExportError};
use crate::clock::unix_nanos;
use crate::{
    config::{ExportConfig, OtlpProtocol},
    events::{ExportFailed, ExportRecovered, Outage, SelfEvent},
    models::ModelKey,
    operational::ModelOps,
    pipeline::{Pipeline, ShardSnapshot},
    quality::QualitySnapshot,
    self_metrics::{Instrument, SelfStats, SelfValues},
    stats::ExplicitHistogram,
    validation::{reason_name, REJECT_REASONS},
};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::{
        metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest,
    },
    common::v1::{InstrumentationScope, KeyValue},
    metrics::v1::{
        metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};
use prost::Message;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use tonic::transport::Channel;

/// Everything exported at one collection, merged across shards.
#[derive(Debug, Clone, Default)]
pub struct SidecarSnapshot {
    pub models: BTreeMap<ModelKey, ModelOps>,
    /// Quality by model version (shards own disjoint models; the overflow model has none).
    pub quality: BTreeMap<ModelKey, QualitySnapshot>,
    /// Drift by model version, for those with a reference profile.
    pub drift: BTreeMap<ModelKey, crate::drift::model::DriftSnapshot>,
    /// Anomaly rates, change detections and series points by model version.
    pub anomaly: BTreeMap<ModelKey, crate::anomaly::AnomalySnapshot>,
    pub models_overflow: u64,
    /// Predictions waiting for delayed labels in all shards, and the total capacity.
    pub pending_labels: usize,
    pub pending_capacity: usize,
    /// The process-wide counters of [`crate::self_metrics::SELF_METRICS`], indexed by
    /// [`crate::self_metrics::SelfCounter`].
    pub self_metrics: SelfValues,
    pub queue_depths: Vec<usize>,
    pub queue_capacity: usize,
}

impl SidecarSnapshot {
    /// Merges shard snapshots (model keys are disjoint across shards except the overflow key)
    /// with the process-wide counters.
    pub fn assemble(shards: Vec<ShardSnapshot>, pipeline: &Pipeline) -> Self {
        let mut snapshot = SidecarSnapshot {
            self_metrics: pipeline.stats.load(),
            queue_depths: pipeline.queue_depths(),
            queue_capacity: pipeline.queue_capacity(),
            ..Default::default()
        };
        for shard in shards {
            snapshot.models_overflow += shard.models_overflow;
            snapshot.pending_labels += shard.pending;
            snapshot.pending_capacity += shard.pending_capacity;
            snapshot.quality.extend(shard.quality);
            snapshot.drift.extend(shard.drift);
            snapshot.anomaly.extend(shard.anomaly);
            for (key, ops) in shard.models {
                match snapshot.models.get_mut(&key) {
                    Some(existing) => existing.merge(&ops),
                    None => {
                        snapshot.models.insert(key, ops);
                    }
                }
            }
        }
        snapshot
    }

    /// Collects a fresh snapshot from the running shards.
    pub async fn collect(pipeline: &Pipeline) -> Self {
        let shards = pipeline.snapshot().await;
        Self::assemble(shards, pipeline)
    }
}

/// One data point: the start of its cumulative period (Unix ns), its attributes, its value.
pub(super) type Point<T> = (u64, Vec<KeyValue>, T);

/// Builds the metric list of one export.
pub(super) struct MetricsBuilder {
    pub(super) start: u64,
    now: u64,
    metrics: Vec<Metric>,
}

impl MetricsBuilder {
    /// A cumulative floating-point sum (a counter of non-negative amounts).
    pub(super) fn sum_double(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        points: Vec<Point<f64>>,
    ) {
        if points.is_empty() {
            return;
        }
        let data_points = points
            .into_iter()
            .map(|(start, attributes, value)| NumberDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: self.now,
                value: Some(number_data_point::Value::AsDouble(value)),
                ..Default::default()
            })
            .collect();
        self.push(
            name,
            unit,
            description,
            metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        );
    }

    /// A floating-point gauge; points without a value (undefined metrics) are left out.
    pub(super) fn gauge_double(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        points: Vec<Point<Option<f64>>>,
    ) {
        let data_points: Vec<_> = points
            .into_iter()
            .filter_map(|(start, attributes, value)| {
                Some(NumberDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: self.now,
                    value: Some(number_data_point::Value::AsDouble(value?)),
                    ..Default::default()
                })
            })
            .collect();
        if data_points.is_empty() {
            return;
        }
        self.push(
            name,
            unit,
            description,
            metric::Data::Gauge(Gauge { data_points }),
        );
    }

    fn push(&mut self, name: &str, unit: &str, description: &str, data: metric::Data) {
        self.metrics.push(Metric {
            name: name.to_owned(),
            description: description.to_owned(),
            unit: unit.to_owned(),
            data: Some(data),
            ..Default::default()
        });
    }

    fn number(&self, start: u64, attributes: Vec<KeyValue>, value: i64) -> NumberDataPoint {
        NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: self.now,
            value: Some(number_data_point::Value::AsInt(value)),
            ..Default::default()
        }
    }

    /// A cumulative sum; monotonic for counters, not for up-down counters.
    pub(super) fn sum(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        monotonic: bool,
        points: Vec<Point<i64>>,
    ) {
        if points.is_empty() {
            return;
        }
        let data_points = points
            .into_iter()
            .map(|(start, attributes, value)| self.number(start, attributes, value))
            .collect();
        self.push(
            name,
            unit,
            description,
            metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: monotonic,
            }),
        );
    }

    pub(super) fn gauge(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        points: Vec<Point<i64>>,
    ) {
        let data_points = points
            .into_iter()
            .map(|(start, attributes, value)| self.number(start, attributes, value))
            .collect();
        self.push(
            name,
            unit,
            description,
            metric::Data::Gauge(Gauge { data_points }),
        );
    }

    pub(super) fn histogram(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        points: Vec<Point<&ExplicitHistogram>>,
    ) {
        if points.is_empty() {
            return;
        }
        let data_points = points
            .into_iter()
            .map(|(start, attributes, h)| HistogramDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: self.now,
                count: h.count(),
                sum: Some(h.sum()),
                bucket_counts: h.bucket_counts().to_vec(),
                explicit_bounds: h.bounds().to_vec(),
                min: h.min(),
                max: h.max(),
                ..Default::default()
            })
            .collect();
        self.push(
            name,
            unit,
            description,
            metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        );
    }
}

/// Start of a model version's cumulative series: when its state was created (process start if
/// it has none).
pub(super) fn model_since(snapshot: &SidecarSnapshot, key: &ModelKey, start: u64) -> u64 {
    snapshot
        .models
        .get(key)
        .map_or(start, |ops| unix_nanos(ops.since))
}

pub(super) fn model_attributes(key: &ModelKey) -> Vec<KeyValue> {
    vec![
        resource::attribute("model.name", &key.model),
        resource::attribute("model.version", &key.version),
    ]
}

pub(super) fn with(mut attributes: Vec<KeyValue>, key: &str, value: &str) -> Vec<KeyValue> {
    attributes.push(resource::attribute(key, value));
    attributes
}

/// Attributes of an outcome slot: `outcome` and, for errors, `error.type`.
fn outcome_attributes(base: &[KeyValue], ops: &ModelOps, slot: usize) -> Vec<KeyValue> {
    match ops.error_type_of(slot) {
        None => with(base.to_vec(), "outcome", "ok"),
        Some(error) => with(with(base.to_vec(), "outcome", "error"), "error.type", error),
    }
}

/// The OTLP request for a snapshot. `start` is the start of the cumulative period of the
/// process-wide series (process start; each model's series start at its own `since`), `now` the
/// collection time.
pub fn encode(
    snapshot: &SidecarSnapshot,
    resource_attributes: Vec<KeyValue>,
    start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let mut b = MetricsBuilder {
        start: unix_nanos(start),
        now: unix_nanos(now),
        metrics: Vec::new(),
    };

    let mut received = Vec::new();
    let mut durations = Vec::new();
    let mut rejected = Vec::new();
    let mut labels = Vec::new();
    let mut labels_rejected = Vec::new();
    let mut gen_ai_duration = Vec::new();
    let mut gen_ai_ttft = Vec::new();
    let mut gen_ai_tpot = Vec::new();
    let mut gen_ai_tokens = Vec::new();
    for (key, ops) in &snapshot.models {
        // Each model version's series start when its state was created.
        let since = unix_nanos(ops.since);
        let base = model_attributes(key);
        for (slot, outcome) in ops.outcomes.iter().enumerate() {
            let attributes = outcome_attributes(&base, ops, slot);
            received.push((since, attributes.clone(), outcome.records as i64));
            if outcome.latency.count() > 0 {
                durations.push((since, attributes, &outcome.latency));
            }
        }
        for reason in REJECT_REASONS {
            let n = ops.rejected[reason as usize];
            if n > 0 {
                rejected.push((
                    since,
                    with(base.clone(), "reason", reason_name(reason)),
                    n as i64,
                ));
            }
            let n = ops.labels_rejected[reason as usize];
            if n > 0 {
                labels_rejected.push((
                    since,
                    with(base.clone(), "reason", reason_name(reason)),
                    n as i64,
                ));
            }
        }
        labels.push((since, base.clone(), ops.labels_accepted as i64));

        // GenAI conventions: `gen_ai.request.model` is the model; `model.version` is kept so the
        // series join the others.
        let provider = ops.gen_ai_provider.as_deref().unwrap_or("_OTHER");
        for operation in &ops.gen_ai {
            let gen_ai = vec![
                resource::attribute("gen_ai.operation.name", &operation.operation),
                resource::attribute("gen_ai.provider.name", provider),
                resource::attribute("gen_ai.request.model", &key.model),
                resource::attribute("model.version", &key.version),
            ];
            for (slot, h) in operation.request_duration.iter().enumerate() {
                if h.count() > 0 {
                    let attributes = match ops.error_type_of(slot) {
                        None => gen_ai.clone(),
                        Some(error) => with(gen_ai.clone(), "error.type", error),
                    };
                    gen_ai_duration.push((since, attributes, h));
                }
            }
            if operation.time_to_first_token.count() > 0 {
                gen_ai_ttft.push((since, gen_ai.clone(), &operation.time_to_first_token));
            }
            if operation.time_per_output_token.count() > 0 {
                gen_ai_tpot.push((since, gen_ai.clone(), &operation.time_per_output_token));
            }
            gen_ai_tokens.push((
                since,
                with(gen_ai.clone(), "gen_ai.token.type", "input"),
                &operation.input_tokens,
            ));
            gen_ai_tokens.push((
                since,
                with(gen_ai, "gen_ai.token.type", "output"),
                &operation.output_tokens,
            ));
        }
    }

    b.sum(
        "inferscope.records.received",
        "{record}",
        "Inference records accepted, by outcome (ok or error) and error type.",
        true,
        received,
    );
    b.sum(
        "inferscope.records.rejected",
        "{record}",
        "Inference records rejected by validation, by reason.",
        true,
        rejected,
    );
    b.histogram(
        "inferscope.inference.duration",
        "s",
        "Inference latency reported by the model server.",
        durations,
    );
    b.sum(
        "inferscope.labels.received",
        "{label}",
        "Delayed ground-truth labels accepted.",
        true,
        labels,
    );
    b.sum(
        "inferscope.labels.rejected",
        "{label}",
        "Delayed ground-truth labels rejected by validation, by reason.",
        true,
        labels_rejected,
    );
    b.histogram(
        "gen_ai.server.request.duration",
        "s",
        "Generative AI server request duration such as time-to-last byte or last output token.",
        gen_ai_duration,
    );
    b.histogram(
        "gen_ai.server.time_to_first_token",
        "s",
        "Time to generate first token for successful responses.",
        gen_ai_ttft,
    );
    b.histogram(
        "gen_ai.server.time_per_output_token",
        "s",
        "Time per output token generated after the first token for successful responses.",
        gen_ai_tpot,
    );
    b.histogram(
        "gen_ai.client.token.usage",
        "{token}",
        "Number of input and output tokens used.",
        gen_ai_tokens,
    );

    super::quality::encode(&mut b, snapshot);
    super::drift::encode(&mut b, snapshot);
    super::anomaly::encode(&mut b, snapshot);

    for (metric, value) in snapshot.self_metrics.iter() {
        let monotonic = match metric.instrument {
            Instrument::Counter => true,
            Instrument::UpDownCounter => false,
        };
        b.sum(
            metric.name,
            metric.unit,
            metric.description,
            monotonic,
            vec![(b.start, Vec::new(), value)],
        );
    }
    b.sum(
        "inferscope.models.overflow",
        "{record}",
        "Records counted under model __other__ because --max-models was reached.",
        true,
        vec![(b.start, Vec::new(), snapshot.models_overflow as i64)],
    );
    b.gauge(
        "inferscope.queue.depth",
        "{batch}",
        "Batches waiting in each shard's queue.",
        snapshot
            .queue_depths
            .iter()
            .enumerate()
            .map(|(shard, &depth)| {
                (
                    b.start,
                    vec![resource::attribute("shard", &shard.to_string())],
                    depth as i64,
                )
            })
            .collect(),
    );
    b.gauge(
        "inferscope.labels.pending.capacity",
        "{prediction}",
        "Predictions the pending-label stores hold before the oldest is dropped.",
        vec![(b.start, Vec::new(), snapshot.pending_capacity as i64)],
    );
    b.gauge(
        "inferscope.queue.capacity",
        "{batch}",
        "Batches each shard's queue holds before batches are shed.",
        vec![(b.start, Vec::new(), snapshot.queue_capacity as i64)],
    );

    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource_attributes,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "inferscope".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics: b.metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Where encoded metrics go.
#[derive(Debug, Clone)]
pub enum MetricTransport {
    Grpc {
        client: MetricsServiceClient<Channel>,
        headers: Vec<(String, String)>,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: Vec<(String, String)>,
    },
    /// Kept in memory, for tests and for a sidecar with metrics export turned off.
    Memory(Arc<Mutex<Vec<ExportMetricsServiceRequest>>>),
}

impl MetricTransport {
    /// The transport the configuration asks for. Connections are lazy: a missing backend is
    /// found at the first export, not at start-up.
    pub fn from_config(config: &ExportConfig) -> Result<Self, ExportError> {
        let headers = config.headers.clone();
        match config.protocol {
            OtlpProtocol::Grpc => {
                let endpoint = Channel::from_shared(config.endpoint.clone()).map_err(|e| {
                    ExportError::Endpoint {
                        endpoint: config.endpoint.clone(),
                        reason: e.to_string(),
                    }
                })?;
                let channel = endpoint.connect_timeout(config.timeout).connect_lazy();
                Ok(Self::Grpc {
                    client: MetricsServiceClient::new(channel),
                    headers,
                })
            }
            OtlpProtocol::HttpProtobuf => {
                // The signal-specific variable is a full URL; the generic one gets the path.
                let url = std::env::var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
                    .ok()
                    .filter(|u| !u.is_empty() && !config.endpoint_configured)
                    .unwrap_or_else(|| format!("{}/v1/metrics", config.endpoint));
                let client = reqwest::Client::builder()
                    .timeout(config.timeout)
                    .build()
                    .map_err(|e| ExportError::Endpoint {
                        endpoint: url.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(Self::Http {
                    client,
                    url,
                    headers,
                })
            }
        }
    }

    pub fn memory() -> (Self, Arc<Mutex<Vec<ExportMetricsServiceRequest>>>) {
        let store = Arc::new(Mutex::new(Vec::new()));
        (Self::Memory(store.clone()), store)
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Grpc { .. } => "OTLP/gRPC".into(),
            Self::Http { url, .. } => format!("OTLP/HTTP {url}"),
            Self::Memory(_) => "memory".into(),
        }
    }

    async fn send(
        &mut self,
        request: ExportMetricsServiceRequest,
        timeout: Duration,
    ) -> Result<(), ExportError> {
        match self {
            Self::Grpc { client, headers } => {
                let mut req = tonic::Request::new(request);
                req.set_timeout(timeout);
                super::add_grpc_metadata(req.metadata_mut(), headers);
                match tokio::time::timeout(timeout, client.export(req)).await {
                    Err(_) => Err(ExportError::Timeout(timeout)),
                    Ok(Err(status)) => Err(ExportError::Request(format!(
                        "{}: {}",
                        status.code(),
                        status.message()
                    ))),
                    Ok(Ok(_)) => Ok(()),
                }
            }
            Self::Http {
                client,
                url,
                headers,
            } => {
                let mut req = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec());
                for (k, v) in headers.iter() {
                    req = req.header(k.as_str(), v.as_str());
                }
                let response = req
                    .send()
                    .await
                    .map_err(|e| ExportError::Request(error_chain(&e)))?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    Err(ExportError::Request(format!(
                        "HTTP {status}: {}",
                        body.chars().take(200).collect::<String>()
                    )))
                }
            }
            Self::Memory(store) => {
                store
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(request);
                Ok(())
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Sends snapshots, remembering whether the backend was reachable last time so that an outage
/// is logged once, not at every interval.
pub struct MetricExporter {
    transport: MetricTransport,
    resource: Vec<KeyValue>,
    start: SystemTime,
    timeout: Duration,
    /// The transport's description, for the log lines.
    to: String,
    /// Whether the last export failed, so that an outage is logged once.
    outage: Outage,
    stats: Arc<SelfStats>,
}

impl MetricExporter {
    pub fn new(
        transport: MetricTransport,
        resource: Vec<KeyValue>,
        timeout: Duration,
        stats: Arc<SelfStats>,
    ) -> Self {
        Self {
            to: transport.describe(),
            transport,
            resource,
            start: SystemTime::now(),
            timeout,
            outage: Outage::default(),
            stats,
        }
    }

    pub async fn export(&mut self, snapshot: &SidecarSnapshot) -> Result<(), ExportError> {
        let request = encode(
            snapshot,
            self.resource.clone(),
            self.start,
            SystemTime::now(),
        );
        let result = self.transport.send(request, self.timeout).await;
        match &result {
            Ok(()) => self.outage.recovered(&ExportRecovered { to: &self.to }),
            Err(error) => self.outage.failed(
                &ExportFailed {
                    to: &self.to,
                    error,
                },
                self.stats.counter(ExportFailed::COUNTER),
            ),
        }
        result
    }

    /// Exports every `interval` until `stop`, then hands the exporter back for the final export.
    pub async fn run_periodic(
        mut self,
        pipeline: Arc<Pipeline>,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate: skip the empty export at start
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let snapshot = SidecarSnapshot::collect(&pipeline).await;
                    let _ = self.export(&snapshot).await;
                }
                _ = stop.cancelled() => break,
            }
        }
        self
    }
}
