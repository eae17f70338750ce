//! Spans for sampled records (always for error and flagged records) and for model-level events
//! (drift changes, change detections), built by one task from the plain [`SpanJob`]s of a
//! bounded queue that the shards fill, so span work never runs on the per-record path. A record
//! that carries a W3C `traceparent` gets a span that is a child of the model server's span.

use super::ExportError;
use crate::{
    config::{ExportConfig, OtlpProtocol, Signal},
    events::{Outage, SpanExportFailed, SpanExportRecovered, Uncounted},
    models::ModelKey,
    pipeline::spans::{RecordSpan, SpanJob},
    tracecontext::TraceParent,
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
    time::{Duration, SystemTime},
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
    let endpoint = config.signal_endpoint(Signal::Traces);
    let ca = config.signal_ca(Signal::Traces);
    // The channel and the HTTP client are built here, with the TLS settings the configuration
    // asks for, so that both signals connect the same way.
    let built = match config.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            super::add_grpc_metadata(&mut metadata, &config.headers);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_channel(super::grpc_channel(&endpoint, ca, config.timeout)?)
                .with_timeout(config.timeout)
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(super::http_client(&endpoint, ca, config.timeout)?)
            .with_endpoint(endpoint)
            .with_timeout(config.timeout)
            .with_headers(config.headers.iter().cloned().collect())
            .build(),
    };
    built.map_err(|e| ExportError::SpanExporter(e.to_string()))
}

/// Wraps a span exporter to log an outage once (and the recovery), instead of at every batch.
#[derive(Debug)]
pub struct ReportingExporter<E> {
    inner: E,
    outage: Outage,
}

impl<E> ReportingExporter<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            outage: Outage::default(),
        }
    }
}

impl<E: SpanExporter> SpanExporter for ReportingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => self.outage.recovered(&SpanExportRecovered),
            Err(error) => self.outage.failed(&SpanExportFailed { error }, Uncounted),
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

/// The caller's span context from a parsed `traceparent` and its `tracestate`.
pub fn remote_parent(parent: &TraceParent, tracestate: &str) -> Context {
    let state = TraceState::from_str(tracestate).unwrap_or_default();
    let context = SpanContext::new(
        TraceId::from(parent.trace_id),
        SpanId::from(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        state,
    );
    Context::new().with_remote_span_context(context)
}

/// One span event: its name, time and attributes.
struct Event {
    name: &'static str,
    time: SystemTime,
    attributes: Vec<KeyValue>,
}

/// What one span is made of, whatever it reports.
struct SpanParts {
    name: &'static str,
    parent: Context,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
    error_type: String,
    events: Vec<Event>,
}

fn model_attributes(model: String, version: String) -> Vec<KeyValue> {
    vec![
        KeyValue::new("inferscope.model.name", model),
        KeyValue::new("inferscope.model.version", version),
    ]
}

/// The span of a record, with one `inferscope.anomaly` event per flag.
fn record_parts(job: RecordSpan) -> SpanParts {
    let parent = job
        .parent
        .map(|p| remote_parent(&p, &job.tracestate))
        .unwrap_or_default();
    let mut attributes = model_attributes(job.model, job.version);
    if !job.request_id.is_empty() {
        attributes.push(KeyValue::new("inferscope.request.id", job.request_id));
    }
    if !job.error_type.is_empty() {
        attributes.push(KeyValue::new("error.type", job.error_type.clone()));
    }
    attributes.extend(job.attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)));
    let events = job
        .flags
        .into_iter()
        .map(|f| Event {
            name: "inferscope.anomaly",
            time: job.end,
            attributes: vec![
                KeyValue::new("kind", f.kind.name()),
                KeyValue::new("subject", f.subject),
                KeyValue::new("score", f.score),
            ],
        })
        .collect();
    SpanParts {
        name: SPAN_NAME,
        parent,
        start: job.start,
        end: job.end,
        attributes,
        error_type: job.error_type,
        events,
    }
}

/// A span about a model version at `at`, in a trace of its own (no request caused it).
fn model_parts(
    name: &'static str,
    key: ModelKey,
    at: SystemTime,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
) -> SpanParts {
    let mut all = model_attributes(key.model, key.version);
    all.extend(attributes);
    SpanParts {
        name,
        parent: Context::new(),
        start: at,
        end: at,
        attributes: all,
        error_type: String::new(),
        events,
    }
}

/// The parts of a queued span.
fn parts(job: SpanJob) -> SpanParts {
    match job {
        SpanJob::Record(record) => record_parts(record),
        SpanJob::DriftChange { key, at, change } => {
            // One event per feature that started or stopped drifting.
            let event = |name, f: &crate::drift::model::FeatureScores| {
                let mut attributes = vec![
                    KeyValue::new("feature", f.name.clone()),
                    KeyValue::new("method", if f.numeric { "psi" } else { "jensenshannon" }),
                ];
                if let Some(score) = f.psi.or(f.js_distance) {
                    attributes.push(KeyValue::new("score", score));
                }
                Event {
                    name,
                    time: at,
                    attributes,
                }
            };
            let mut events: Vec<Event> = change
                .started
                .iter()
                .map(|f| event("inferscope.drift.detected", f))
                .collect();
            events.extend(
                change
                    .stopped
                    .iter()
                    .map(|f| event("inferscope.drift.resolved", f)),
            );
            let attributes = vec![
                KeyValue::new("inferscope.drift.window", change.window),
                KeyValue::new(
                    "inferscope.drift.drifted_features",
                    change.drifted.to_string(),
                ),
                KeyValue::new(
                    "inferscope.drift.dataset_drift",
                    change.dataset_drift.to_string(),
                ),
            ];
            model_parts(DRIFT_SPAN_NAME, key, at, attributes, events)
        }
        SpanJob::SeriesChange {
            key,
            at,
            detections,
        } => {
            let events = detections
                .iter()
                .map(|d| Event {
                    name: "inferscope.change.detected",
                    time: at,
                    attributes: vec![
                        KeyValue::new("series", d.series.name()),
                        KeyValue::new("detector", d.detector.name()),
                        KeyValue::new("value", d.value),
                        KeyValue::new("level", d.level),
                    ],
                })
                .collect();
            model_parts(CHANGE_SPAN_NAME, key, at, Vec::new(), events)
        }
    }
}

/// Builds one span.
pub fn build_span(tracer: &impl Tracer, job: SpanJob) {
    let parts = parts(job);
    let mut span = tracer
        .span_builder(parts.name)
        .with_kind(SpanKind::Internal)
        .with_start_time(parts.start)
        .with_attributes(parts.attributes)
        .start_with_context(tracer, &parts.parent);
    if !parts.error_type.is_empty() {
        span.set_status(Status::error(parts.error_type));
    }
    for event in parts.events {
        span.add_event_with_timestamp(event.name, event.time, event.attributes);
    }
    span.end_with_timestamp(parts.end);
}

/// Turns queued span jobs into spans until the queue closes.
pub async fn run_span_builder(provider: SdkTracerProvider, mut jobs: mpsc::Receiver<SpanJob>) {
    let tracer = provider.tracer("inferscope");
    while let Some(job) = jobs.recv().await {
        build_span(&tracer, job);
    }
}
