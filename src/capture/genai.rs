//! GenAI spans → generation records, and `gen_ai.evaluation.result` span events → evaluation
//! labels: pure functions over the OTLP trace types, no I/O.
//!
//! What the emitters really send (vLLM's `llm_request`, OpenLLMetry, OpenInference, the
//! OpenTelemetry GenAI semantic conventions, status Development) is in
//! `docs/no-code-capture-sources.md`; its section 0 is the table [`record_of`] implements, and
//! README "LLM servers over OTLP" gives it to users. The rules, in short:
//! - **A GenAI span** has a `gen_ai.usage.*` attribute, `gen_ai.request.model` or
//!   `gen_ai.response.model`, or an OpenInference `llm.token_count.*` / `llm.model_name`
//!   attribute, or is named `llm_request` (vLLM, which sends no model by default), or has
//!   `openinference.span.kind = LLM`. Selection is by attributes, not span kind: HTTP server,
//!   proxy and chain spans are not inferences.
//! - **Values** may come as ints, doubles or strings (pitfall 3 of the sources): each is read
//!   leniently; one that cannot be read is left out, never a reason to drop the span.
//! - The **record's time** is the span start plus its latency, so that the record's own span
//!   (`time_unix_nano − latency` … `time_unix_nano`, `crate::pipeline::spans::RecordSpan`) covers
//!   the same interval as the received span, whose child it is.

use crate::pb::{self, inference_record::Prediction, label::Value as LabelValue};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value, AnyValue, KeyValue},
    trace::v1::{span::Event, status::StatusCode, Span},
};
use serde::Deserialize;

/// The model when no attribute names one: the default lists end with the resource's
/// `service.name`, which every SDK sets, so this is rarely used.
pub const UNKNOWN: &str = "unknown";
/// Name of vLLM's request span (`vllm/v1/engine/output_processor.py`, `do_tracing`).
pub const VLLM_SPAN_NAME: &str = "llm_request";
/// The OpenTelemetry GenAI evaluation event (`gen-ai-events.md`, `gen_ai.evaluation.result`).
pub const EVALUATION_EVENT: &str = "gen_ai.evaluation.result";

/// Which attributes name a span's model and version: `[capture.otlp]` in the config file. Each
/// list is tried in order, each name on the span first and then on its resource; the first
/// non-empty value wins.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenAiMapping {
    pub model_attributes: Vec<String>,
    /// Default: `service.version`; without a value the version is `unknown`.
    pub version_attributes: Vec<String>,
}

impl Default for GenAiMapping {
    fn default() -> Self {
        Self {
            model_attributes: [
                "gen_ai.request.model",
                "gen_ai.response.model",
                "llm.model_name",
                "service.name",
            ]
            .map(String::from)
            .to_vec(),
            version_attributes: vec!["service.version".into()],
        }
    }
}

/// What one OTLP traces request turns into.
#[derive(Debug, Default, PartialEq)]
pub struct Captured {
    /// Spans in the request, GenAI or not.
    pub spans: u64,
    /// One per GenAI span, each naming its own model and version.
    pub records: Vec<pb::InferenceRecord>,
    /// The received span's id of each record, by position in `records` (`None`: not 8 bytes or
    /// all zeros), for the index that resolves evaluations sent as log records
    /// ([`super::generations`]).
    pub span_ids: Vec<Option<[u8; 8]>>,
    /// One per `gen_ai.evaluation.result` span event whose generation can be named.
    pub evaluations: Vec<pb::GroundTruth>,
    /// `gen_ai.evaluation.result` span events without a name or a generation to join.
    pub unresolved: u64,
}

/// The records and evaluations of every span of `request`.
pub fn capture(request: &ExportTraceServiceRequest, mapping: &GenAiMapping) -> Captured {
    let mut out = Captured::default();
    for resource_spans in &request.resource_spans {
        let resource: &[KeyValue] = resource_spans
            .resource
            .as_ref()
            .map_or(&[], |r| &r.attributes);
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                out.spans += 1;
                let record = is_genai(span).then(|| record_of(span, resource, mapping));
                for event in span.events.iter().filter(|e| e.name == EVALUATION_EVENT) {
                    match evaluation_of(event, span, record.as_ref(), resource, mapping) {
                        Some(truth) => out.evaluations.push(truth),
                        None => out.unresolved += 1,
                    }
                }
                if let Some(record) = record {
                    out.records.push(record);
                    out.span_ids.push(span_id(&span.span_id));
                }
            }
        }
    }
    out
}

/// Whether `span` is an inference (module doc).
pub fn is_genai(span: &Span) -> bool {
    span.name == VLLM_SPAN_NAME
        || span.attributes.iter().any(|kv| {
            let k = kv.key.as_str();
            k.starts_with("gen_ai.usage.")
                || k.starts_with("llm.token_count.")
                || matches!(
                    k,
                    "gen_ai.request.model" | "gen_ai.response.model" | "llm.model_name"
                )
                || (k == "openinference.span.kind" && string(kv.value.as_ref()) == Some("LLM"))
        })
}

/// The generation record of a GenAI span (README, "LLM servers over OTLP", for the table).
pub fn record_of(
    span: &Span,
    resource: &[KeyValue],
    mapping: &GenAiMapping,
) -> pb::InferenceRecord {
    let attrs = &span.attributes;
    let (model, version) = model_and_version(attrs, resource, mapping);
    let latency = seconds(get(attrs, "gen_ai.latency.e2e")).or_else(|| {
        span.end_time_unix_nano
            .checked_sub(span.start_time_unix_nano)
            .filter(|_| span.start_time_unix_nano > 0)
            .map(|ns| ns as f64 / 1e9)
    });
    let time_unix_nano = match (span.start_time_unix_nano, latency) {
        (0, _) => 0,
        (start, Some(l)) => start.saturating_add((l * 1e9) as u64),
        (start, None) => start,
    };
    let finish_reason = finish_reason(attrs);
    let error_type = error_type(span, finish_reason.as_deref());
    let response_model = first_string(attrs, &["gen_ai.response.model", "llm.response.model_name"])
        .filter(|m| *m != model)
        .unwrap_or_default()
        .to_owned();
    let generation = pb::Generation {
        input_tokens: first_tokens(
            attrs,
            &[
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.prompt_tokens",
                "llm.token_count.prompt",
            ],
        ),
        output_tokens: first_tokens(
            attrs,
            &[
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
                "llm.token_count.completion",
            ],
        ),
        time_to_first_token_seconds: seconds(get(attrs, "gen_ai.latency.time_to_first_token"))
            .or_else(|| seconds(get(attrs, "gen_ai.response.time_to_first_chunk")))
            .or_else(|| first_chunk(span)),
        finish_reason: finish_reason.unwrap_or_default(),
        operation: first_string(attrs, &["gen_ai.operation.name", "llm.request.type"])
            .unwrap_or_default()
            .to_owned(),
        response_model,
    };
    pb::InferenceRecord {
        model,
        version,
        request_id: request_id(span),
        time_unix_nano,
        latency_seconds: latency,
        error_type,
        prediction: Some(Prediction::Generation(generation)),
        traceparent: traceparent(span).unwrap_or_default(),
        // Longer than ingest allows: the record would be rejected for a header it only carries.
        tracestate: if span.trace_state.len() <= 512 {
            span.trace_state.clone()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

/// The evaluation a `gen_ai.evaluation.result` event carries, as a delayed label of the
/// generation it names: its `gen_ai.response.id`, else the request id of the GenAI span it is
/// on. `None` without a name or without a generation to join (an event on a span that is not
/// GenAI and names no response id).
pub fn evaluation_of(
    event: &Event,
    span: &Span,
    record: Option<&pb::InferenceRecord>,
    resource: &[KeyValue],
    mapping: &GenAiMapping,
) -> Option<pb::GroundTruth> {
    let attrs = &event.attributes;
    let name = string(get(attrs, "gen_ai.evaluation.name"))?.to_owned();
    let (model, version, span_request) = match record {
        Some(r) => (
            r.model.clone(),
            r.version.clone(),
            Some(r.request_id.clone()),
        ),
        None => {
            let (model, version) = model_and_version(&span.attributes, resource, mapping);
            (model, version, None)
        }
    };
    let request_id = string(get(attrs, "gen_ai.response.id"))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .or(span_request)?;
    Some(pb::GroundTruth {
        model,
        version,
        request_id,
        label: Some(pb::Label {
            value: Some(LabelValue::Evaluation(pb::Evaluation {
                name,
                score: seconds(get(attrs, "gen_ai.evaluation.score.value")),
                label: string(get(attrs, "gen_ai.evaluation.score.label"))
                    .unwrap_or_default()
                    .to_owned(),
            })),
        }),
        time_unix_nano: event.time_unix_nano,
    })
}

/// A span id as 8 bytes, `None` when it has another length or is all zeros (invalid in W3C
/// Trace Context).
pub fn span_id(id: &[u8]) -> Option<[u8; 8]> {
    let id: [u8; 8] = id.try_into().ok()?;
    (id != [0; 8]).then_some(id)
}

/// `00-<trace id>-<span id>-01` of the received span: the record's span becomes its child.
/// Sampled, since the emitter exported it; the sidecar's sampler still decides for the record's
/// own span. `None` for ids of the wrong length or all zeros (invalid in W3C Trace Context).
pub fn traceparent(span: &Span) -> Option<String> {
    let valid = |id: &[u8], len: usize| id.len() == len && id.iter().any(|&b| b != 0);
    if !valid(&span.trace_id, 16) || !valid(&span.span_id, 8) {
        return None;
    }
    Some(format!(
        "00-{}-{}-01",
        hex(&span.trace_id),
        hex(&span.span_id)
    ))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `gen_ai.response.id`, else `gen_ai.request.id` (vLLM), else the span id in hex
/// (OpenInference names no request), so that evaluations on the span still find it.
fn request_id(span: &Span) -> String {
    first_string(
        &span.attributes,
        &["gen_ai.response.id", "gen_ai.request.id"],
    )
    .map(str::to_owned)
    .unwrap_or_else(|| hex(&span.span_id))
}

pub(super) fn model_and_version(
    attrs: &[KeyValue],
    resource: &[KeyValue],
    mapping: &GenAiMapping,
) -> (String, String) {
    let lookup = |names: &[String]| {
        names.iter().find_map(|name| {
            [attrs, resource]
                .iter()
                .find_map(|kvs| string(get(kvs, name)).filter(|v| !v.is_empty()))
        })
    };
    (
        lookup(&mapping.model_attributes)
            .unwrap_or(UNKNOWN)
            .to_owned(),
        lookup(&mapping.version_attributes)
            .unwrap_or(UNKNOWN)
            .to_owned(),
    )
}

/// The first finish reason: `gen_ai.response.finish_reasons` as a string array (semconv,
/// OpenLLMetry), as vLLM's JSON string `'["stop"]'`, or as a plain string; else OpenInference's
/// `llm.finish_reason` or OpenLLMetry ≤ 0.4's `llm.response.finish_reason`.
pub fn finish_reason(attrs: &[KeyValue]) -> Option<String> {
    let reasons = get(attrs, "gen_ai.response.finish_reasons").and_then(|v| match &v.value {
        Some(Value::ArrayValue(a)) => a
            .values
            .first()
            .and_then(|v| string(Some(v)))
            .map(str::to_owned),
        Some(Value::StringValue(s)) if s.trim_start().starts_with('[') => {
            serde_json::from_str::<Vec<String>>(s)
                .ok()?
                .into_iter()
                .next()
        }
        Some(Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    });
    reasons
        .or_else(|| {
            first_string(attrs, &["llm.finish_reason", "llm.response.finish_reason"])
                .map(str::to_owned)
        })
        .filter(|r| !r.is_empty())
}

/// `error.type`; else a vLLM finish reason `abort` or `error`; else `error` for span status
/// ERROR; empty for success.
fn error_type(span: &Span, finish_reason: Option<&str>) -> String {
    if let Some(e) = string(get(&span.attributes, "error.type")).filter(|e| !e.is_empty()) {
        return e.to_owned();
    }
    if let Some(r @ ("abort" | "error")) = finish_reason {
        return r.to_owned();
    }
    let failed = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32);
    if failed {
        "error".to_owned()
    } else {
        String::new()
    }
}

/// Time to the first streamed chunk from span events: OpenInference's `First Token Stream
/// Event`, OpenLLMetry's first `gen_ai.content.completion.chunk` / `llm.content.completion.chunk`.
fn first_chunk(span: &Span) -> Option<f64> {
    let first = span
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.name.as_str(),
                "First Token Stream Event"
                    | "gen_ai.content.completion.chunk"
                    | "llm.content.completion.chunk"
            )
        })
        .map(|e| e.time_unix_nano)
        .min()?;
    (span.start_time_unix_nano > 0 && first >= span.start_time_unix_nano)
        .then(|| (first - span.start_time_unix_nano) as f64 / 1e9)
}

pub(super) fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key)?.value.as_ref()
}

pub(super) fn string(value: Option<&AnyValue>) -> Option<&str> {
    match &value?.value {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn first_string<'a>(attrs: &'a [KeyValue], keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| string(get(attrs, k)).filter(|s| !s.is_empty()))
}

/// A number given as an int, a double or a decimal string.
fn number(value: Option<&AnyValue>) -> Option<f64> {
    match &value?.value {
        Some(Value::IntValue(i)) => Some(*i as f64),
        Some(Value::DoubleValue(d)) => Some(*d),
        Some(Value::StringValue(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|v: &f64| v.is_finite())
}

/// Seconds (or a score): any finite number; ingest checks the range.
pub(super) fn seconds(value: Option<&AnyValue>) -> Option<f64> {
    number(value)
}

/// The first token count among `keys` that is a whole number ≥ 0.
fn first_tokens(attrs: &[KeyValue], keys: &[&str]) -> u64 {
    keys.iter()
        .find_map(|k| match &get(attrs, k)?.value {
            Some(Value::IntValue(i)) => u64::try_from(*i).ok(),
            _ => number(get(attrs, k))
                .filter(|v| *v >= 0.0 && v.fract() == 0.0)
                .map(|v| v as u64),
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::ArrayValue,
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Status},
    };

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }
    fn s(key: &str, v: &str) -> KeyValue {
        kv(key, Value::StringValue(v.into()))
    }
    fn i(key: &str, v: i64) -> KeyValue {
        kv(key, Value::IntValue(v))
    }
    fn d(key: &str, v: f64) -> KeyValue {
        kv(key, Value::DoubleValue(v))
    }

    const START: u64 = 1_700_000_000_000_000_000;

    fn span(name: &str, attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            name: name.into(),
            start_time_unix_nano: START,
            end_time_unix_nano: START + 1_500_000_000,
            attributes,
            ..Default::default()
        }
    }

    fn generation(r: &pb::InferenceRecord) -> &pb::Generation {
        match &r.prediction {
            Some(Prediction::Generation(g)) => g,
            other => panic!("not a generation: {other:?}"),
        }
    }

    /// As vLLM's `do_tracing` sets them (docs/no-code-capture-sources.md, A.3).
    fn vllm() -> Span {
        span(
            "llm_request",
            vec![
                d("gen_ai.latency.time_to_first_token", 0.05),
                d("gen_ai.latency.e2e", 0.9),
                d("gen_ai.latency.time_in_queue", 0.01),
                i("gen_ai.usage.prompt_tokens", 12),
                i("gen_ai.usage.completion_tokens", 40),
                s("gen_ai.request.id", "cmpl-1"),
                s("gen_ai.response.finish_reasons", "[\"stop\"]"),
                d("gen_ai.request.temperature", 0.7),
            ],
        )
    }

    #[test]
    fn a_vllm_span_with_its_json_string_finish_reasons_and_old_token_names() {
        let resource = [s("service.name", "vllm-demo"), s("service.version", "v3")];
        let r = record_of(&vllm(), &resource, &GenAiMapping::default());
        assert_eq!((r.model.as_str(), r.version.as_str()), ("vllm-demo", "v3"));
        assert_eq!(r.request_id, "cmpl-1");
        assert_eq!(r.latency_seconds, Some(0.9));
        assert_eq!(r.time_unix_nano, START + 900_000_000);
        assert_eq!(r.error_type, "");
        assert_eq!(
            r.traceparent,
            "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"
        );
        let g = generation(&r);
        assert_eq!((g.input_tokens, g.output_tokens), (12, 40));
        assert_eq!(g.time_to_first_token_seconds, Some(0.05));
        assert_eq!(g.finish_reason, "stop");
        assert_eq!(g.operation, "");
        assert!(is_genai(&vllm()));
    }

    #[test]
    fn a_vllm_abort_is_an_error_and_no_service_version_is_unknown() {
        let mut span = vllm();
        span.attributes[6] = s("gen_ai.response.finish_reasons", "[\"abort\"]");
        let r = record_of(&span, &[s("service.name", "x")], &GenAiMapping::default());
        assert_eq!(r.error_type, "abort");
        assert_eq!(r.version, UNKNOWN);
        assert_eq!(generation(&r).finish_reason, "abort");
    }

    /// OpenLLMetry ≥ 0.5 (semconv names, finish reasons as a string array) vs. ≤ 0.4.
    #[test]
    fn openllmetry_new_and_old_token_names() {
        let reasons = kv(
            "gen_ai.response.finish_reasons",
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::StringValue("length".into())),
                }],
            }),
        );
        let new = span(
            "openai.chat",
            vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.provider.name", "openai"),
                s("gen_ai.request.model", "gpt-4o"),
                s("gen_ai.response.model", "gpt-4o-2024-08-06"),
                s("gen_ai.response.id", "chatcmpl-9"),
                i("gen_ai.usage.input_tokens", 7),
                i("gen_ai.usage.output_tokens", 30),
                reasons,
            ],
        );
        let r = record_of(&new, &[s("service.name", "app")], &GenAiMapping::default());
        assert_eq!(r.model, "gpt-4o");
        assert_eq!(r.request_id, "chatcmpl-9");
        assert_eq!(r.latency_seconds, Some(1.5));
        let g = generation(&r);
        assert_eq!((g.input_tokens, g.output_tokens), (7, 30));
        assert_eq!(g.finish_reason, "length");
        assert_eq!(g.operation, "chat");
        assert_eq!(g.response_model, "gpt-4o-2024-08-06");

        let old = span(
            "openai.chat",
            vec![
                s("llm.request.type", "completion"),
                s("gen_ai.request.model", "gpt-3.5"),
                s("gen_ai.usage.prompt_tokens", "5"),
                d("gen_ai.usage.completion_tokens", 11.0),
                s("llm.response.finish_reason", "stop"),
            ],
        );
        let r = record_of(&old, &[], &GenAiMapping::default());
        let g = generation(&r);
        assert_eq!((g.input_tokens, g.output_tokens), (5, 11));
        assert_eq!(g.operation, "completion");
        assert_eq!(g.finish_reason, "stop");
        assert_eq!(g.response_model, "");
    }

    #[test]
    fn openinference_llm_spans_with_first_token_event_and_error_status() {
        let mut span = span(
            "ChatCompletion",
            vec![
                s("openinference.span.kind", "LLM"),
                s("llm.model_name", "gpt-4o-mini"),
                i("llm.token_count.prompt", 3),
                i("llm.token_count.completion", 9),
                s("llm.finish_reason", "stop"),
            ],
        );
        span.events.push(Event {
            name: "First Token Stream Event".into(),
            time_unix_nano: START + 250_000_000,
            ..Default::default()
        });
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        });
        assert!(is_genai(&span));
        let r = record_of(&span, &[], &GenAiMapping::default());
        assert_eq!(r.model, "gpt-4o-mini");
        assert_eq!(r.request_id, "0102030405060708");
        assert_eq!(r.error_type, "error");
        let g = generation(&r);
        assert_eq!((g.input_tokens, g.output_tokens), (3, 9));
        assert_eq!(g.time_to_first_token_seconds, Some(0.25));
        let chain = self::span("chain", vec![s("openinference.span.kind", "CHAIN")]);
        assert!(!is_genai(&chain));
    }

    #[test]
    fn the_mapping_is_configurable_and_errors_take_error_type() {
        let mapping = GenAiMapping {
            model_attributes: vec!["k8s.deployment.name".into()],
            version_attributes: vec!["app.version".into(), "service.version".into()],
        };
        let mut span = vllm();
        span.attributes.push(s("error.type", "timeout"));
        span.attributes.push(s("app.version", "7"));
        let resource = [
            s("k8s.deployment.name", "llama"),
            s("service.version", "v3"),
        ];
        let r = record_of(&span, &resource, &mapping);
        assert_eq!((r.model.as_str(), r.version.as_str()), ("llama", "7"));
        assert_eq!(r.error_type, "timeout");
        let file: GenAiMapping = toml::from_str("model_attributes = [\"a\"]").unwrap();
        assert_eq!(file.model_attributes, ["a"]);
        assert_eq!(file.version_attributes, ["service.version"]);
    }

    #[test]
    fn evaluation_events_become_labels_of_their_generation() {
        let mut genai = vllm();
        genai.events.push(Event {
            name: EVALUATION_EVENT.into(),
            time_unix_nano: START + 5,
            attributes: vec![
                s("gen_ai.evaluation.name", "relevance"),
                d("gen_ai.evaluation.score.value", 0.8),
                s("gen_ai.evaluation.score.label", "pass"),
            ],
            ..Default::default()
        });
        let mut judge = span("judge", vec![s("gen_ai.request.model", "judge-model")]);
        judge.attributes.clear();
        judge.events.push(Event {
            name: EVALUATION_EVENT.into(),
            attributes: vec![
                s("gen_ai.evaluation.name", "thumbs"),
                s("gen_ai.evaluation.score.label", "up"),
                s("gen_ai.response.id", "cmpl-0"),
            ],
            ..Default::default()
        });
        // On a span that is not GenAI and without a response id: no generation to join.
        judge.events.push(Event {
            name: EVALUATION_EVENT.into(),
            attributes: vec![s("gen_ai.evaluation.name", "orphan")],
            ..Default::default()
        });
        let plain = span("GET /", vec![s("http.method", "GET")]);
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![s("service.name", "vllm-demo")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![genai, judge, plain],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let out = capture(&request, &GenAiMapping::default());
        assert_eq!(out.spans, 3);
        assert_eq!(out.records.len(), 1);
        assert_eq!(out.evaluations.len(), 2);
        assert_eq!(out.unresolved, 1, "the orphan");
        assert_eq!(out.span_ids, [Some([1, 2, 3, 4, 5, 6, 7, 8])]);
        let first = &out.evaluations[0];
        assert_eq!(
            (first.model.as_str(), first.request_id.as_str()),
            ("vllm-demo", "cmpl-1")
        );
        assert_eq!(first.time_unix_nano, START + 5);
        let Some(LabelValue::Evaluation(e)) = &first.label.as_ref().unwrap().value else {
            panic!("not an evaluation")
        };
        assert_eq!(
            (e.name.as_str(), e.score, e.label.as_str()),
            ("relevance", Some(0.8), "pass")
        );
        assert_eq!(out.evaluations[1].request_id, "cmpl-0");
        assert_eq!(out.evaluations[1].model, "vllm-demo");
    }

    #[test]
    fn invalid_ids_give_no_traceparent_and_plain_finish_reasons_pass() {
        let mut s0 = vllm();
        s0.trace_id = vec![0; 16];
        assert_eq!(traceparent(&s0), None);
        s0.trace_id = vec![1; 15];
        assert_eq!(traceparent(&s0), None);
        assert_eq!(
            finish_reason(&[s("gen_ai.response.finish_reasons", "stop")]).as_deref(),
            Some("stop")
        );
        assert_eq!(
            finish_reason(&[s("gen_ai.response.finish_reasons", "[not json")]),
            None
        );
    }
}
