//! Shared test harness: a real sidecar on 127.0.0.1:0 with in-memory sinks, and readers for the
//! OTLP requests it exported.
#![allow(dead_code)]

pub mod backends;
pub mod golden;
pub mod otlp;
pub mod process;
pub mod redis;
pub mod tls;

use inferscope::{
    config::{Config, ExportConfig, Sampling},
    export::{metrics::MetricTransport, resource, traces},
    pb::{self, ingest_service_client::IngestServiceClient},
    server::{Sidecar, Sinks},
};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{any_value, KeyValue},
    metrics::v1::{metric, number_data_point, HistogramDataPoint, Metric},
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Keeps every exported span (the SDK's in-memory exporter forgets them on shutdown).
#[derive(Debug, Clone, Default)]
pub struct CollectingExporter(pub Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for CollectingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// A client of the ingest API.
pub type TestClient = IngestServiceClient<Channel>;

pub struct TestSidecar {
    pub sidecar: Sidecar,
    pub metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    pub spans: Arc<Mutex<Vec<SpanData>>>,
}

/// A configuration for tests: two shards, no periodic export (the final export at stop is the
/// one tests read), no sampling of successful records.
pub fn config() -> Config {
    let defaults = Config::default();
    Config {
        shards: 2,
        export: ExportConfig {
            metric_interval: Duration::from_secs(3600),
            ..defaults.export.clone()
        },
        sampling: Sampling {
            ratio: 0.0,
            parent_based: false,
        },
        ..defaults
    }
}

pub async fn start(config: Config) -> TestSidecar {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (transport, metrics) = MetricTransport::memory();
    let spans = CollectingExporter::default();
    let resource = resource::detect();
    let sinks = Sinks {
        metrics: Some(transport),
        traces: Some(traces::tracer_provider(spans.clone(), resource.clone())),
        resource,
    };
    let sidecar = Sidecar::start(listener, config, sinks).await.unwrap();
    TestSidecar {
        sidecar,
        metrics,
        spans: spans.0,
    }
}

impl TestSidecar {
    pub async fn client(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::connect(format!("http://{}", self.sidecar.local_addr))
            .await
            .unwrap()
    }

    /// Stops the sidecar and returns the last metrics request it exported.
    pub async fn stop(self) -> (ExportMetricsServiceRequest, Vec<SpanData>) {
        self.sidecar.stop().await.unwrap();
        let last = self
            .metrics
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a final export");
        let spans = self.spans.lock().unwrap().clone();
        (last, spans)
    }
}

pub fn record(request_id: &str, latency: f64) -> pb::InferenceRecord {
    pb::InferenceRecord {
        request_id: request_id.into(),
        latency_seconds: Some(latency),
        ..Default::default()
    }
}

/// A classifier's record: `request_id` predicted `class`.
pub fn classified(request_id: String, class: &str) -> pb::InferenceRecord {
    pb::InferenceRecord {
        request_id,
        latency_seconds: Some(0.01),
        prediction: Some(pb::inference_record::Prediction::Classification(
            pb::Classification {
                predicted_class: class.into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

pub fn batch(sequence: u64, model: &str, records: Vec<pb::InferenceRecord>) -> pb::RecordBatch {
    pb::RecordBatch {
        sequence,
        model: model.into(),
        version: "1".into(),
        records,
        ..Default::default()
    }
}

pub fn metric<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
}

fn has(attributes: &[KeyValue], wanted: &[(&str, &str)]) -> bool {
    wanted.iter().all(|(k, v)| {
        attributes.iter().any(|a| {
            a.key == *k
                && matches!(&a.value, Some(av) if matches!(&av.value, Some(any_value::Value::StringValue(s)) if s == v))
        })
    })
}

/// Sum of the values of the sum/gauge points of `name` whose attributes include `wanted`.
pub fn value(request: &ExportMetricsServiceRequest, name: &str, wanted: &[(&str, &str)]) -> i64 {
    let Some(m) = metric(request, name) else {
        return 0;
    };
    let points = match &m.data {
        Some(metric::Data::Sum(s)) => &s.data_points,
        Some(metric::Data::Gauge(g)) => &g.data_points,
        _ => panic!("{name} is not a sum or gauge"),
    };
    points
        .iter()
        .filter(|p| has(&p.attributes, wanted))
        .map(|p| match p.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            _ => panic!("{name} is not an integer"),
        })
        .sum()
}

/// The histogram points of `name` whose attributes include `wanted`.
pub fn histograms<'a>(
    request: &'a ExportMetricsServiceRequest,
    name: &str,
    wanted: &[(&str, &str)],
) -> Vec<&'a HistogramDataPoint> {
    let Some(m) = metric(request, name) else {
        return Vec::new();
    };
    match &m.data {
        Some(metric::Data::Histogram(h)) => h
            .data_points
            .iter()
            .filter(|p| has(&p.attributes, wanted))
            .collect(),
        _ => panic!("{name} is not a histogram"),
    }
}

/// The value of the one sum or gauge point of `name` whose attributes are exactly `wanted`
/// (integer or double), or `None` when there is no such point.
pub fn point(
    request: &ExportMetricsServiceRequest,
    name: &str,
    wanted: &[(&str, &str)],
) -> Option<f64> {
    let m = metric(request, name)?;
    let points = match &m.data {
        Some(metric::Data::Sum(s)) => &s.data_points,
        Some(metric::Data::Gauge(g)) => &g.data_points,
        _ => panic!("{name} is not a sum or gauge"),
    };
    let found: Vec<f64> = points
        .iter()
        .filter(|p| p.attributes.len() == wanted.len() && has(&p.attributes, wanted))
        .map(|p| match p.value {
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            Some(number_data_point::Value::AsDouble(d)) => d,
            None => panic!("{name} has a point without a value"),
        })
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {wanted:?}: {} points",
        found.len()
    );
    found.first().copied()
}

/// Sends already-encoded `bytes` as the request of the unary gRPC method `path` (bytes no client
/// library would send); the reply's bytes.
pub async fn raw_unary(
    addr: std::net::SocketAddr,
    path: &'static str,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary::<_, prost::bytes::Bytes, _>(
        tonic::Request::new(prost::bytes::Bytes::from(bytes)),
        path,
        inferscope::capture::otlp::RawCodec,
    )
    .await
    .map(|reply| reply.into_inner().to_vec())
}
