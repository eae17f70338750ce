//! Operational instruments per model version: records by outcome, inference latency, rejects,
//! delayed labels, and the OpenTelemetry GenAI server and client measurements.

use super::{
    builder::{model_attributes, with, MetricsBuilder},
    resource,
    snapshot::SidecarSnapshot,
};
use crate::{
    clock::unix_nanos,
    operational::ModelOps,
    validation::{reason_name, REJECT_REASONS},
};
use opentelemetry_proto::tonic::common::v1::KeyValue;

/// Attributes of an outcome slot: `outcome` and, for errors, `error.type`.
fn outcome_attributes(base: &[KeyValue], ops: &ModelOps, slot: usize) -> Vec<KeyValue> {
    match ops.error_type_of(slot) {
        None => with(base.to_vec(), "outcome", "ok"),
        Some(error) => with(with(base.to_vec(), "outcome", "error"), "error.type", error),
    }
}

pub(super) fn encode(b: &mut MetricsBuilder, snapshot: &SidecarSnapshot) {
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

        // GenAI conventions: `gen_ai.request.model` is the model; `inferscope.model.version` is kept so the
        // series join the others.
        let provider = ops.gen_ai_provider.as_deref().unwrap_or("_OTHER");
        for operation in &ops.gen_ai {
            let gen_ai = vec![
                resource::attribute("gen_ai.operation.name", &operation.operation),
                resource::attribute("gen_ai.provider.name", provider),
                resource::attribute("gen_ai.request.model", &key.model),
                resource::attribute("inferscope.model.version", &key.version),
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
}
