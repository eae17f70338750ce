//! OTLP log records → evaluation labels: the `gen_ai.evaluation.result` event as the
//! OpenTelemetry GenAI semantic conventions define it (`gen-ai-events.md`, status Development: an
//! event, that is a log record whose `event_name` is the event's name), pure functions over the
//! OTLP logs types, no I/O.
//!
//! A record is the event when its `event_name` field (OTLP ≥ 1.5, the Python SDK's
//! `Logger.emit(event_name=…)`) or, from SDKs older than that field, its `event.name` attribute is
//! `gen_ai.evaluation.result`. Its attributes `gen_ai.evaluation.name` (required),
//! `gen_ai.evaluation.score.value`, `gen_ai.evaluation.score.label` become `Label.evaluation`;
//! the generation it evaluates is found, in this order:
//! 1. the record's `span_id` (the conventions parent the event to the evaluated span), looked up
//!    in the [`GenerationIndex`] the traces receiver fills: model, version and request id of the
//!    generation made from that span (`gen_ai.response.id`, when the event has one, names the
//!    request);
//! 2. else `gen_ai.response.id`: the request id; model and version of the generation with that
//!    request id in the index, else from the record's attributes and resource by the same
//!    `[capture.otlp]` lists as a span's (the evaluator's own resource, so set its
//!    `service.name`/`service.version` as the server's when the index has forgotten it);
//! 3. else it is counted as unresolved, as is an event without a name or with `error.type` (the
//!    evaluation itself failed: there is no result to count).
//!
//! Other log records are not evaluations: the sidecar exports no logs, so they are taken,
//! counted in `inferscope.otlp.log_records.ignored` and dropped (never an error to the sender).

use super::{
    genai::{self, GenAiMapping, EVALUATION_EVENT},
    generations::GenerationIndex,
};
use crate::pb::{self, label::Value as LabelValue};
use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest, common::v1::KeyValue, logs::v1::LogRecord,
};
use std::time::Instant;

/// The attribute that named an event before `LogRecord.event_name` existed.
pub const EVENT_NAME_ATTRIBUTE: &str = "event.name";

/// What one OTLP logs request turns into.
#[derive(Debug, Default, PartialEq)]
pub struct CapturedLogs {
    /// Log records in the request.
    pub log_records: u64,
    /// One per evaluation event whose generation was found.
    pub evaluations: Vec<pb::GroundTruth>,
    /// Evaluation events without a name, with `error.type`, or whose generation was not found.
    pub unresolved: u64,
    /// Log records that are not evaluation events.
    pub ignored: u64,
}

/// Why an evaluation event was not taken (for the debug log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    NoName,
    Failed,
    UnknownSpan,
}

/// The evaluations of every log record of `request`.
pub fn capture_logs(
    request: &ExportLogsServiceRequest,
    mapping: &GenAiMapping,
    index: &mut GenerationIndex,
    now: Instant,
) -> CapturedLogs {
    let mut out = CapturedLogs::default();
    for resource_logs in &request.resource_logs {
        let resource: &[KeyValue] = resource_logs
            .resource
            .as_ref()
            .map_or(&[], |r| &r.attributes);
        for scope in &resource_logs.scope_logs {
            for record in &scope.log_records {
                out.log_records += 1;
                if !is_evaluation(record) {
                    out.ignored += 1;
                    continue;
                }
                match evaluation_of_log(record, resource, mapping, index, now) {
                    Ok(truth) => out.evaluations.push(truth),
                    Err(reason) => {
                        tracing::debug!(target: "inferscope::capture", ?reason, "evaluation event not taken");
                        out.unresolved += 1;
                    }
                }
            }
        }
    }
    out
}

/// Whether `record` is a `gen_ai.evaluation.result` event (module doc).
pub fn is_evaluation(record: &LogRecord) -> bool {
    record.event_name == EVALUATION_EVENT
        || (record.event_name.is_empty()
            && genai::string(genai::get(&record.attributes, EVENT_NAME_ATTRIBUTE))
                == Some(EVALUATION_EVENT))
}

/// The delayed evaluation label of an evaluation event (module doc for how its generation is
/// found).
pub fn evaluation_of_log(
    record: &LogRecord,
    resource: &[KeyValue],
    mapping: &GenAiMapping,
    index: &mut GenerationIndex,
    now: Instant,
) -> Result<pb::GroundTruth, Unresolved> {
    let attrs = &record.attributes;
    let name = genai::string(genai::get(attrs, "gen_ai.evaluation.name"))
        .filter(|n| !n.is_empty())
        .ok_or(Unresolved::NoName)?;
    if genai::string(genai::get(attrs, "error.type")).is_some_and(|e| !e.is_empty()) {
        return Err(Unresolved::Failed);
    }
    let response_id =
        genai::string(genai::get(attrs, "gen_ai.response.id")).filter(|id| !id.is_empty());
    let by_span = genai::span_id(&record.span_id).and_then(|id| index.by_span(id, now));
    let (model, version, request_id) = match (by_span, response_id) {
        (Some(g), response) => (
            g.model.to_string(),
            g.version.to_string(),
            response.map_or_else(|| g.request_id.to_string(), str::to_owned),
        ),
        (None, Some(response)) => match index.by_request(response, now) {
            Some(g) => (
                g.model.to_string(),
                g.version.to_string(),
                response.to_owned(),
            ),
            None => {
                let (model, version) = genai::model_and_version(attrs, resource, mapping);
                (model, version, response.to_owned())
            }
        },
        (None, None) => return Err(Unresolved::UnknownSpan),
    };
    let time_unix_nano = if record.time_unix_nano > 0 {
        record.time_unix_nano
    } else {
        record.observed_time_unix_nano
    };
    Ok(pb::GroundTruth {
        model,
        version,
        request_id,
        label: Some(pb::Label {
            value: Some(LabelValue::Evaluation(pb::Evaluation {
                name: name.to_owned(),
                score: genai::seconds(genai::get(attrs, "gen_ai.evaluation.score.value")),
                label: genai::string(genai::get(attrs, "gen_ai.evaluation.score.label"))
                    .unwrap_or_default()
                    .to_owned(),
            })),
        }),
        time_unix_nano,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::{any_value::Value, AnyValue},
        logs::v1::{ResourceLogs, ScopeLogs},
        resource::v1::Resource,
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

    const SPAN: [u8; 8] = [9, 8, 7, 6, 5, 4, 3, 2];

    fn event(attributes: Vec<KeyValue>) -> LogRecord {
        LogRecord {
            event_name: EVALUATION_EVENT.into(),
            time_unix_nano: 42,
            trace_id: vec![1; 16],
            span_id: SPAN.to_vec(),
            attributes,
            ..Default::default()
        }
    }

    fn evaluation(truth: &pb::GroundTruth) -> &pb::Evaluation {
        match &truth.label.as_ref().unwrap().value {
            Some(LabelValue::Evaluation(e)) => e,
            other => panic!("not an evaluation: {other:?}"),
        }
    }

    #[test]
    fn events_join_by_span_then_by_response_id_and_the_rest_are_counted() {
        let now = Instant::now();
        let mut index = GenerationIndex::default();
        index.insert(SPAN, "gpt-4o-mini", "unknown", "chatcmpl-1", now);
        index.insert([5; 8], "gpt-4o-mini", "unknown", "chatcmpl-2", now);
        let by_span = event(vec![
            s("gen_ai.evaluation.name", "relevance"),
            kv("gen_ai.evaluation.score.value", Value::DoubleValue(0.75)),
            s("gen_ai.evaluation.score.label", "pass"),
        ]);
        // Known by response id only, the evaluator's resource naming another model.
        let mut by_response = event(vec![
            s("gen_ai.evaluation.name", "thumbs"),
            s("gen_ai.evaluation.score.label", "up"),
            s("gen_ai.response.id", "chatcmpl-2"),
        ]);
        by_response.span_id.clear();
        // Unknown response id: model and version from the resource; the old `event.name` form.
        let mut unknown = event(vec![
            s(EVENT_NAME_ATTRIBUTE, EVALUATION_EVENT),
            s("gen_ai.evaluation.name", "judge"),
            kv("gen_ai.evaluation.score.value", Value::IntValue(3)),
            s("gen_ai.response.id", "cmpl-9"),
        ]);
        unknown.event_name.clear();
        unknown.span_id = vec![7; 8];
        let mut orphan = event(vec![s("gen_ai.evaluation.name", "relevance")]);
        orphan.span_id = vec![7; 8];
        let failed = event(vec![
            s("gen_ai.evaluation.name", "relevance"),
            s("error.type", "timeout"),
        ]);
        let nameless = event(vec![kv(
            "gen_ai.evaluation.score.value",
            Value::DoubleValue(1.0),
        )]);
        let plain = LogRecord {
            body: Some(AnyValue {
                value: Some(Value::StringValue("GET / 200".into())),
            }),
            ..Default::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![s("service.name", "judge-app"), s("service.version", "3")],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        by_span,
                        by_response,
                        unknown,
                        orphan,
                        failed,
                        nameless,
                        plain,
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let out = capture_logs(&request, &GenAiMapping::default(), &mut index, now);
        assert_eq!((out.log_records, out.unresolved, out.ignored), (7, 3, 1));
        let got: Vec<_> = out
            .evaluations
            .iter()
            .map(|t| {
                let e = evaluation(t);
                (
                    t.model.as_str(),
                    t.version.as_str(),
                    t.request_id.as_str(),
                    e.name.as_str(),
                    e.score,
                    e.label.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "gpt-4o-mini",
                    "unknown",
                    "chatcmpl-1",
                    "relevance",
                    Some(0.75),
                    "pass"
                ),
                ("gpt-4o-mini", "unknown", "chatcmpl-2", "thumbs", None, "up"),
                ("judge-app", "3", "cmpl-9", "judge", Some(3.0), ""),
            ]
        );
        assert_eq!(out.evaluations[0].time_unix_nano, 42);
    }
}
