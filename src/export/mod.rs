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
mod evaluation;
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
pub(crate) fn add_grpc_metadata(
    metadata: &mut tonic::metadata::MetadataMap,
    headers: &[(String, String)],
) {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            k.parse::<tonic::metadata::MetadataKey<_>>(),
            v.parse::<tonic::metadata::MetadataValue<_>>(),
        ) {
            metadata.insert(k, v);
        }
    }
}

/// A lazily connecting gRPC channel to `endpoint`. An `https://` endpoint gets TLS (rustls),
/// verified by `ca` when `OTEL_EXPORTER_OTLP_[SIGNAL_]CERTIFICATE` names one, else by the
/// system's roots.
pub(crate) fn grpc_channel(
    endpoint: &str,
    ca: Option<&crate::config::PemFile>,
    timeout: std::time::Duration,
) -> Result<tonic::transport::Channel, ExportError> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let invalid = |e: tonic::transport::Error| ExportError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: error_chain(&e),
    };
    let mut channel = Channel::from_shared(endpoint.to_owned())
        .map_err(|e| ExportError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(timeout);
    if endpoint.starts_with("https://") {
        let tls = match ca {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.pem)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        channel = channel.tls_config(tls).map_err(invalid)?;
    }
    Ok(channel.connect_lazy())
}

/// An HTTP client for OTLP/HTTP. `https://` URLs are verified by `ca` alone when it is given
/// (the specification's "certificate to use when verifying a server's TLS credentials"), else
/// by the platform's verifier.
pub(crate) fn http_client(
    url: &str,
    ca: Option<&crate::config::PemFile>,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, ExportError> {
    let invalid = |e: reqwest::Error| ExportError::Endpoint {
        endpoint: url.to_owned(),
        reason: error_chain(&e),
    };
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(ca) = ca {
        let roots = reqwest::Certificate::from_pem_bundle(&ca.pem).map_err(invalid)?;
        builder = builder.tls_certs_only(roots);
    }
    builder.build().map_err(invalid)
}

/// The outcome of a gRPC export call made under `tokio::time::timeout(timeout, …)`.
pub(crate) fn grpc_outcome<T>(
    outcome: Result<Result<T, tonic::Status>, tokio::time::error::Elapsed>,
    timeout: std::time::Duration,
) -> Result<(), ExportError> {
    match outcome {
        Err(_) => Err(ExportError::Timeout(timeout)),
        Ok(Err(status)) => Err(ExportError::Request(format!(
            "{}: {}",
            status.code(),
            status.message()
        ))),
        Ok(Ok(_)) => Ok(()),
    }
}

/// POSTs an encoded OTLP request to `url` (OTLP/HTTP, protobuf) with the configured headers.
pub(crate) async fn post_protobuf(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: impl Into<reqwest::Body>,
) -> Result<(), ExportError> {
    let mut request = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body);
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let response = request
        .send()
        .await
        .map_err(|e| ExportError::Request(error_chain(&e)))?;
    if response.status().is_success() {
        return Ok(());
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(ExportError::Request(format!(
        "HTTP {status}: {}",
        body.chars().take(200).collect::<String>()
    )))
}

/// An error with its sources, on one line.
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
