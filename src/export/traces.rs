//! Spans for sampled records (always for error records), built by one task from a bounded
//! queue that the shards fill, so span work never runs on the per-record path. A record that
//! carries a W3C `traceparent` gets a span that is a child of the model server's span.

use super::ExportError;
use crate::{
    config::{ExportConfig, OtlpProtocol},
    pipeline::SpanJob,
};
use opentelemetry::{
    trace::{
        Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
        TraceState, Tracer, TracerProvider,
    },
    Context, KeyValue,
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    runtime,
    trace::{
        span_processor_with_async_runtime::BatchSpanProcessor, Sampler, SdkTracerProvider,
        SpanData, SpanExporter,
    },
    Resource,
};
use std::{
    str::FromStr,
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::Duration,
};
use tokio::sync::mpsc;

/// The name of every record span: low-cardinality, as span names should be.
pub const SPAN_NAME: &str = "inferscope.inference";
/// Name of the span that reports a change in a model's drifted features.
pub const DRIFT_SPAN_NAME: &str = "inferscope.drift";
/// The name of the span that carries change detections on a model's series.
pub const CHANGE_SPAN_NAME: &str = "inferscope.change";

/// The OTLP span exporter the configuration asks for.
pub fn otlp_exporter(
    config: &ExportConfig,
) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    let built = match config.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            super::add_grpc_metadata(&mut metadata, &config.headers);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.timeout)
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::HttpProtobuf => {
            let url = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .ok()
                .filter(|u| !u.is_empty() && !config.endpoint_configured)
                .unwrap_or_else(|| format!("{}/v1/traces", config.endpoint));
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .with_timeout(config.timeout)
                .with_headers(config.headers.iter().cloned().collect())
                .build()
        }
    };
    built.map_err(|e| ExportError::SpanExporter(e.to_string()))
}

/// Wraps a span exporter to log an outage once (and the recovery), instead of at every batch.
#[derive(Debug)]
pub struct ReportingExporter<E> {
    inner: E,
    healthy: AtomicBool,
}

impl<E> ReportingExporter<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            healthy: AtomicBool::new(true),
        }
    }
}

impl<E: SpanExporter> SpanExporter for ReportingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                if !self.healthy.swap(true, Relaxed) {
                    tracing::info!(target: "inferscope::export", "span export recovered");
                }
            }
            Err(e) => {
                if self.healthy.swap(false, Relaxed) {
                    tracing::warn!(target: "inferscope::export", error = %e, "span export failed; spans are best-effort and will be dropped until the backend answers");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

/// A tracer provider exporting through `exporter` in batches on the tokio runtime. Sampling is
/// decided before a span is built (in the shard), so the SDK samples everything it is given.
pub fn tracer_provider<E: SpanExporter + 'static>(
    exporter: E,
    resource: Resource,
) -> SdkTracerProvider {
    let processor =
        BatchSpanProcessor::builder(ReportingExporter::new(exporter), runtime::Tokio).build();
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(resource)
        .build()
}

/// The caller's span context from a validated `traceparent` / `tracestate`.
pub fn remote_parent(traceparent: &str, tracestate: &str) -> Option<Context> {
    if traceparent.len() < 55 {
        return None;
    }
    let trace_id = TraceId::from_hex(&traceparent[3..35]).ok()?;
    let span_id = SpanId::from_hex(&traceparent[36..52]).ok()?;
    let flags = u8::from_str_radix(&traceparent[53..55], 16).ok()?;
    let state = TraceState::from_str(tracestate).unwrap_or_default();
    let context = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state);
    Some(Context::new().with_remote_span_context(context))
}

/// Builds one span.
pub fn record_span(tracer: &impl Tracer, job: SpanJob) {
    let parent = remote_parent(&job.traceparent, &job.tracestate).unwrap_or_default();
    let mut attributes = vec![
        KeyValue::new("model.name", job.model),
        KeyValue::new("model.version", job.version),
    ];
    if !job.request_id.is_empty() {
        attributes.push(KeyValue::new("inferscope.request.id", job.request_id));
    }
    if !job.error_type.is_empty() {
        attributes.push(KeyValue::new("error.type", job.error_type.clone()));
    }
    attributes.extend(job.attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)));
    let mut span = tracer
        .span_builder(job.name)
        .with_kind(SpanKind::Internal)
        .with_start_time(job.start)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    if !job.error_type.is_empty() {
        span.set_status(Status::error(job.error_type));
    }
    for event in job.events {
        let mut attributes: Vec<KeyValue> = event
            .text
            .into_iter()
            .map(|(k, v)| KeyValue::new(k, v))
            .collect();
        attributes.extend(event.numbers.into_iter().map(|(k, v)| KeyValue::new(k, v)));
        span.add_event_with_timestamp(event.name, event.time, attributes);
    }
    span.end_with_timestamp(job.end);
}

/// Turns queued span jobs into spans until the queue closes.
pub async fn run_span_builder(provider: SdkTracerProvider, mut jobs: mpsc::Receiver<SpanJob>) {
    let tracer = provider.tracer("inferscope");
    while let Some(job) = jobs.recv().await {
        record_span(&tracer, job);
    }
}
