//! Encodes sidecar snapshots as OTLP metrics (cumulative temporality) and sends them over gRPC or
//! HTTP/protobuf. See the module doc of `export` for why the SDK's instruments are not used.
//!
//! A backend outage loses nothing while the process lives: every export carries cumulative
//! totals, so the first export after an outage brings the backend up to date. Failures are logged
//! once (and once more on recovery), counted in `inferscope.export.failures`, never retried in a
//! tight loop.

pub use super::snapshot::SidecarSnapshot;
use super::{builder::MetricsBuilder, ExportError};
use crate::clock::unix_nanos;
use crate::{
    config::{ExportConfig, OtlpProtocol, Signal},
    events::{ExportFailed, ExportRecovered, Outage, SelfEvent},
    models::ModelKey,
    pipeline::Pipeline,
    self_metrics::SelfStats,
};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::{
        metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest,
    },
    common::v1::{InstrumentationScope, KeyValue},
    metrics::v1::{metric::Data, Metric, ResourceMetrics, ScopeMetrics},
    resource::v1::Resource,
};
use prost::Message;
use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use tonic::transport::Channel;

/// Data points one OTLP request carries before the next model version goes into another
/// request (a version is never split). One request for every version at once was the process's
/// memory high-water mark: ~56 MB for 100 versions × 32 features, ~580 bytes a point before
/// encoding (BENCHMARKS.md, "Memory with many model versions"). 10 000 points are ~6 MB before
/// and ~2 MB after encoding, under the 4 MiB an OTLP/gRPC receiver accepts by default.
pub const MAX_POINTS_PER_REQUEST: usize = 10_000;

/// The OTLP request for a whole snapshot at once. `start` is the start of the cumulative period
/// of the process-wide series (process start; each model's series start at its own `since`),
/// `now` the collection time. Exports send [`Requests`]; this is what the tests check that they
/// carry.
#[cfg(test)]
fn encode(
    snapshot: &SidecarSnapshot,
    resource_attributes: Vec<KeyValue>,
    start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let mut b = MetricsBuilder::new(unix_nanos(start), unix_nanos(now));
    encode_models(&mut b, snapshot);
    super::sidecar::encode(&mut b, snapshot);
    with_fleet(snapshot, resource_attributes, b.finish(), start, now)
}

/// Every model version's series, one encoder per analysis, in catalog order.
fn encode_models(b: &mut MetricsBuilder, snapshot: &SidecarSnapshot) {
    super::operational::encode(b, snapshot);
    super::quality::encode(b, snapshot);
    super::evaluation::encode(b, snapshot);
    super::drift::encode(b, snapshot);
    super::anomaly::encode(b, snapshot);
}

/// A request of `metrics` under the sidecar's resource, and the fleet's series (if any) under
/// their own.
fn with_fleet(
    snapshot: &SidecarSnapshot,
    resource_attributes: Vec<KeyValue>,
    metrics: Vec<Metric>,
    start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let mut resource_metrics = Vec::new();
    if let Some(fleet) = &snapshot.fleet {
        // The fleet's series belong to no one sidecar: a resource without the instance's
        // attributes keeps them one series when the lease moves.
        let mut f = MetricsBuilder::new(unix_nanos(start), unix_nanos(now));
        super::quality::encode_fleet(&mut f, fleet);
        super::evaluation::encode_fleet(&mut f, fleet);
        resource_metrics.push(resource_metrics_of(
            super::resource::fleet_attributes(&resource_attributes),
            f.finish(),
        ));
    }
    resource_metrics.insert(0, resource_metrics_of(resource_attributes, metrics));
    ExportMetricsServiceRequest { resource_metrics }
}

/// The OTLP requests of a snapshot, built one at a time so that one is in memory at once: model
/// versions in key order, one version at a time into the request until it holds `max_points`
/// data points; the process-wide series and the fleet's in the first request. Together they
/// carry the points of the whole snapshot's one request (`encode`, in the tests), each metric's
/// in the same order.
pub struct Requests<'a> {
    snapshot: &'a SidecarSnapshot,
    /// Every model version with anything to export, in key order.
    keys: Vec<&'a ModelKey>,
    next: usize,
    resource: Vec<KeyValue>,
    start: SystemTime,
    now: SystemTime,
    max_points: usize,
    /// Whether the first request (with the process-wide series) is still to come.
    first: bool,
}

impl<'a> Requests<'a> {
    pub fn new(
        snapshot: &'a SidecarSnapshot,
        resource: Vec<KeyValue>,
        start: SystemTime,
        now: SystemTime,
        max_points: usize,
    ) -> Self {
        let keys: BTreeSet<&ModelKey> = snapshot
            .models
            .keys()
            .chain(snapshot.quality.keys())
            .chain(snapshot.drift.keys())
            .chain(snapshot.anomaly.keys())
            .collect();
        Self {
            snapshot,
            keys: keys.into_iter().collect(),
            next: 0,
            resource,
            start,
            now,
            max_points,
            first: true,
        }
    }
}

impl Iterator for Requests<'_> {
    type Item = ExportMetricsServiceRequest;

    fn next(&mut self) -> Option<ExportMetricsServiceRequest> {
        if !self.first && self.next == self.keys.len() {
            return None;
        }
        let (start, now) = (unix_nanos(self.start), unix_nanos(self.now));
        let mut metrics = MetricList::default();
        while self.next < self.keys.len() && metrics.points < self.max_points {
            let part = self.snapshot.part(self.keys[self.next]);
            let mut b = MetricsBuilder::new(start, now);
            encode_models(&mut b, &part);
            metrics.append(b.finish());
            self.next += 1;
        }
        if !std::mem::take(&mut self.first) {
            return Some(ExportMetricsServiceRequest {
                resource_metrics: vec![resource_metrics_of(self.resource.clone(), metrics.list)],
            });
        }
        let mut b = MetricsBuilder::new(start, now);
        super::sidecar::encode(&mut b, self.snapshot);
        metrics.append(b.finish());
        Some(with_fleet(
            self.snapshot,
            self.resource.clone(),
            metrics.list,
            self.start,
            self.now,
        ))
    }
}

/// Metrics of one request: a metric per name, the data points of later versions appended to it.
#[derive(Default)]
struct MetricList {
    list: Vec<Metric>,
    /// Name → index in `list`.
    index: HashMap<String, usize>,
    points: usize,
}

impl MetricList {
    fn append(&mut self, metrics: Vec<Metric>) {
        for metric in metrics {
            self.points += points_of(&metric);
            match self.index.get(&metric.name) {
                Some(&i) => extend(&mut self.list[i], metric),
                None => {
                    self.index.insert(metric.name.clone(), self.list.len());
                    self.list.push(metric);
                }
            }
        }
    }
}

fn points_of(metric: &Metric) -> usize {
    match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Appends `from`'s data points to `into` (the same metric: one name is one instrument).
fn extend(into: &mut Metric, from: Metric) {
    match (&mut into.data, from.data) {
        (Some(Data::Gauge(a)), Some(Data::Gauge(b))) => a.data_points.extend(b.data_points),
        (Some(Data::Sum(a)), Some(Data::Sum(b))) => a.data_points.extend(b.data_points),
        (Some(Data::Histogram(a)), Some(Data::Histogram(b))) => a.data_points.extend(b.data_points),
        (Some(Data::ExponentialHistogram(a)), Some(Data::ExponentialHistogram(b))) => {
            a.data_points.extend(b.data_points)
        }
        (Some(Data::Summary(a)), Some(Data::Summary(b))) => a.data_points.extend(b.data_points),
        _ => unreachable!("metric {} encoded as two kinds of instrument", into.name),
    }
}

fn resource_metrics_of(attributes: Vec<KeyValue>, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: "inferscope".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
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
        let endpoint = config.signal_endpoint(Signal::Metrics);
        let ca = config.signal_ca(Signal::Metrics);
        match config.protocol {
            OtlpProtocol::Grpc => {
                let channel = super::grpc_channel(&endpoint, ca, config.timeout)?;
                Ok(Self::Grpc {
                    client: MetricsServiceClient::new(channel),
                    headers,
                })
            }
            OtlpProtocol::HttpProtobuf => Ok(Self::Http {
                client: super::http_client(&endpoint, ca, config.timeout)?,
                url: endpoint,
                headers,
            }),
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
                super::grpc_outcome(
                    tokio::time::timeout(timeout, client.export(req)).await,
                    timeout,
                )
            }
            Self::Http {
                client,
                url,
                headers,
            } => super::post_protobuf(client, url, headers, request.encode_to_vec()).await,
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
    /// With a shared label store: where this sidecar's quality windows go, and the fleet's
    /// merge comes from.
    fleet: Option<crate::fleet::Fleet>,
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
            fleet: None,
        }
    }

    /// Shares each snapshot's quality windows with the fleet, and exports the fleet's merge
    /// while this sidecar holds the fleet lease.
    pub fn with_fleet(mut self, fleet: Option<crate::fleet::Fleet>) -> Self {
        self.fleet = fleet;
        self
    }

    /// Sends the snapshot as [`Requests`] of at most [`MAX_POINTS_PER_REQUEST`] points, one at
    /// a time. The first failure ends the export: the rest of it waits for the next one, whose
    /// cumulative totals bring the backend up to date.
    pub async fn export(&mut self, snapshot: &SidecarSnapshot) -> Result<(), ExportError> {
        let requests = Requests::new(
            snapshot,
            self.resource.clone(),
            self.start,
            SystemTime::now(),
            MAX_POINTS_PER_REQUEST,
        );
        let mut result = Ok(());
        for request in requests {
            result = self.transport.send(request, self.timeout).await;
            if result.is_err() {
                break;
            }
        }
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
                    let mut snapshot = SidecarSnapshot::collect(&pipeline).await;
                    if let Some(fleet) = &self.fleet {
                        fleet.publish(&snapshot.quality);
                        snapshot.fleet = fleet.view();
                    }
                    // An export to a slow backend is given up at shutdown: the final export
                    // carries the same cumulative totals.
                    tokio::select! {
                        _ = self.export(&snapshot) => {}
                        _ = stop.cancelled() => break,
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        models::Declaration,
        operational::ModelOps,
        pb,
        quality::{ModelQuality, QualitySettings},
    };
    use std::collections::BTreeMap;

    /// `versions` model versions with operational series (more records and error types the
    /// higher the version) and, every other one, quality series.
    fn snapshot(versions: usize) -> SidecarSnapshot {
        let mut snapshot = SidecarSnapshot::default();
        for v in 0..versions {
            let key = ModelKey::new("m", format!("v{v}"));
            let mut ops = ModelOps::new(4);
            for i in 0..=v {
                ops.update(&pb::InferenceRecord {
                    error_type: if i % 3 == 1 {
                        format!("e{i}")
                    } else {
                        String::new()
                    },
                    latency_seconds: Some(0.01 * i as f64),
                    ..Default::default()
                });
            }
            snapshot.models.insert(key.clone(), ops);
            if v % 2 == 1 {
                continue;
            }
            let mut q = ModelQuality::new(v as u32, &QualitySettings::default(), 0);
            q.declare(&Declaration {
                task: pb::TaskType::MulticlassClassification,
                class_names: vec!["a".into(), "b".into(), "c".into()],
                positive_class: None,
                numeric_features: Vec::new(),
                categorical_features: Vec::new(),
                gen_ai_provider: None,
                allow_undeclared_classes: false,
            });
            for i in 0..=v {
                let record = pb::InferenceRecord {
                    prediction: Some(pb::inference_record::Prediction::Classification(
                        pb::Classification {
                            class_probabilities: vec![0.2, 0.3, 0.5],
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                };
                let prediction = q.prediction(&record).expect("a prediction");
                q.count_prediction(&prediction);
                let label = pb::Label {
                    value: Some(pb::label::Value::ClassIndex((i % 3) as u32)),
                };
                let truth = q.truth(&prediction, &label).expect("a declared class");
                q.observe(&prediction, truth).expect("a class pair");
            }
            snapshot.quality.insert(key, q.snapshot(1_000));
        }
        snapshot
    }

    /// Every data point (as text), by metric name, in the order the requests carry them.
    fn points(requests: &[ExportMetricsServiceRequest]) -> BTreeMap<(usize, String), Vec<String>> {
        let mut out: BTreeMap<(usize, String), Vec<String>> = BTreeMap::new();
        for request in requests {
            for (resource, rm) in request.resource_metrics.iter().enumerate() {
                for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                    let entry = out.entry((resource, metric.name.clone())).or_default();
                    match &metric.data {
                        Some(Data::Gauge(g)) => {
                            entry.extend(g.data_points.iter().map(|p| format!("{p:?}")))
                        }
                        Some(Data::Sum(s)) => {
                            entry.extend(s.data_points.iter().map(|p| format!("{p:?}")))
                        }
                        Some(Data::Histogram(h)) => {
                            entry.extend(h.data_points.iter().map(|p| format!("{p:?}")))
                        }
                        other => panic!("{}: unexpected {other:?}", metric.name),
                    }
                }
            }
        }
        out
    }

    #[test]
    fn requests_carry_the_points_of_one_request() {
        let snapshot = snapshot(7);
        let (start, now) = (SystemTime::UNIX_EPOCH, SystemTime::now());
        let whole = encode(&snapshot, Vec::new(), start, now);
        let expected = points(std::slice::from_ref(&whole));
        assert!(expected.len() > 10, "{:?}", expected.keys());
        for max_points in [1, 10, 60, usize::MAX] {
            let requests: Vec<_> =
                Requests::new(&snapshot, Vec::new(), start, now, max_points).collect();
            assert_eq!(points(&requests), expected, "{max_points} points a request");
            match max_points {
                // One version a request (each has points), the process-wide series in the first.
                1 => assert_eq!(requests.len(), 7),
                10 | 60 => assert!((2..7).contains(&requests.len()), "{}", requests.len()),
                _ => assert_eq!(requests.len(), 1),
            }
        }
        // Nothing but the process-wide series: one request.
        let empty = SidecarSnapshot::default();
        let requests: Vec<_> = Requests::new(&empty, Vec::new(), start, now, 1).collect();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            points(&requests),
            points(&[encode(&empty, Vec::new(), start, now)])
        );
    }
}
