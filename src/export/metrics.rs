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
    pipeline::Pipeline,
    self_metrics::SelfStats,
};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::{
        metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest,
    },
    common::v1::{InstrumentationScope, KeyValue},
    metrics::v1::{Metric, ResourceMetrics, ScopeMetrics},
    resource::v1::Resource,
};
use prost::Message;
use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use tonic::transport::Channel;

/// The OTLP request for a snapshot. `start` is the start of the cumulative period of the
/// process-wide series (process start; each model's series start at its own `since`), `now` the
/// collection time.
pub fn encode(
    snapshot: &SidecarSnapshot,
    resource_attributes: Vec<KeyValue>,
    start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let mut b = MetricsBuilder::new(unix_nanos(start), unix_nanos(now));

    // One encoder per analysis, in catalog order.
    super::operational::encode(&mut b, snapshot);
    super::quality::encode(&mut b, snapshot);
    super::evaluation::encode(&mut b, snapshot);
    super::drift::encode(&mut b, snapshot);
    super::anomaly::encode(&mut b, snapshot);
    super::sidecar::encode(&mut b, snapshot);

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
    resource_metrics.insert(0, resource_metrics_of(resource_attributes, b.finish()));
    ExportMetricsServiceRequest { resource_metrics }
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
