//! Export: metrics as OTLP from shard snapshots, traces through the OpenTelemetry SDK.
//!
//! Why metrics bypass the SDK's instruments: the hot path must not call the SDK per record
//! (ARCHITECTURE.md, Data flow), so shards aggregate counts and histograms. The SDK (0.33) can read
//! pre-aggregated *counters* through observable instruments, but it has no way to take a
//! pre-aggregated *histogram*: there is no MetricProducer (opentelemetry-rust issue #2505) and its
//! data-point types cannot be built outside the crate (PR #3489 is open). So the encoders (one per
//! analysis, into the one `builder`) write the snapshots straight into the OTLP protobuf types of `opentelemetry-proto` (the crate
//! `opentelemetry-otlp` itself uses) and sends them over gRPC or HTTP. Spans are few (sampled),
//! so they go through the SDK tracer and `opentelemetry-otlp`'s span exporter.

mod anomaly;
mod builder;
mod drift;
pub mod metrics;
mod operational;
mod quality;
pub mod resource;
mod sidecar;
pub mod snapshot;
pub mod traces;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid OTLP endpoint {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("OTLP request failed: {0}")]
    Request(String),
    #[error("OTLP request timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("cannot build the span exporter: {0}")]
    SpanExporter(String),
}

/// Adds the configured OTLP headers to gRPC request metadata. A header that is not valid gRPC
/// metadata (a name with bytes metadata keys do not allow, a value with control characters) is
/// left out.
fn add_grpc_metadata(metadata: &mut tonic::metadata::MetadataMap, headers: &[(String, String)]) {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            k.parse::<tonic::metadata::MetadataKey<_>>(),
            v.parse::<tonic::metadata::MetadataValue<_>>(),
        ) {
            metadata.insert(k, v);
        }
    }
}
