//! Operational state of one model version: record counts by outcome, latency histograms, rejects,
//! labels, and the OpenTelemetry GenAI measurements of generation records. Owned by one shard and
//! updated per record with plain arithmetic; exported from snapshots.

use crate::{
    events::{InternalEvent, LabelValuesOverflowed},
    pb,
    stats::ExplicitHistogram,
    validation::REJECT_REASONS,
};

/// Latency buckets in seconds: the OpenTelemetry HTTP semantic-convention boundaries
/// (`http.server.request.duration`) with 1 ms and 2.5 ms added for fast tabular models, and 30 s
/// and 60 s for slow batch models.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    30.0, 60.0,
];
/// `gen_ai.server.request.duration` advisory boundaries (OpenTelemetry GenAI semantic conventions).
pub const GEN_AI_REQUEST_DURATION_BOUNDS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// `gen_ai.server.time_to_first_token` advisory boundaries.
pub const GEN_AI_TTFT_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// `gen_ai.server.time_per_output_token` advisory boundaries.
pub const GEN_AI_TPOT_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// `gen_ai.client.token.usage` advisory boundaries.
pub const GEN_AI_TOKEN_BOUNDS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// The `error.type` value for error kinds past the cap (the semantic conventions' own fallback).
pub const OTHER_ERROR_TYPE: &str = "_OTHER";
/// Default `gen_ai.operation.name` when a generation record names none.
pub const DEFAULT_GEN_AI_OPERATION: &str = "chat";
/// Distinct `gen_ai.operation.name` values kept per model; more fold into `_OTHER`.
pub const MAX_GEN_AI_OPERATIONS: usize = 8;

/// A small string-to-slot table with a cap: the first `cap` distinct values get their own slot,
/// later ones share the overflow slot. Linear search: the tables are small (≤ a few dozen) and
/// mostly hit on the first entry.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundedLabels {
    values: Vec<String>,
    cap: usize,
    /// Values that did not fit and were folded into the overflow slot.
    overflowed: u64,
}

impl BoundedLabels {
    pub fn new(cap: usize) -> Self {
        Self {
            values: Vec::new(),
            cap,
            overflowed: 0,
        }
    }

    /// The slot for `value`: its own, or `cap` (the overflow slot) when the table is full.
    pub fn slot(&mut self, value: &str) -> usize {
        if let Some(i) = self.values.iter().position(|v| v == value) {
            return i;
        }
        if self.values.len() < self.cap {
            self.values.push(value.to_owned());
            return self.values.len() - 1;
        }
        LabelValuesOverflowed {
            value,
            cap: self.cap,
        }
        .emit(&mut self.overflowed);
        self.cap
    }

    /// The label value of a slot.
    pub fn name(&self, slot: usize) -> &str {
        self.values
            .get(slot)
            .map_or(OTHER_ERROR_TYPE, String::as_str)
    }

    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }
}

/// Per-outcome state: slot 0 is success, slot `1 + i` the `i`-th error type.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeStats {
    pub records: u64,
    /// Latency of the records that carried one.
    pub latency: ExplicitHistogram,
}

impl OutcomeStats {
    fn new() -> Self {
        Self {
            records: 0,
            latency: ExplicitHistogram::new(LATENCY_BOUNDS),
        }
    }

    fn merge(&mut self, other: &Self) {
        self.records += other.records;
        self.latency.merge(&other.latency);
    }
}

/// GenAI measurements of one `gen_ai.operation.name`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenAiOperation {
    pub operation: String,
    /// Request duration by outcome slot (same slots as [`ModelOps::outcomes`]).
    pub request_duration: Vec<ExplicitHistogram>,
    /// Successful responses only, as the conventions define both.
    pub time_to_first_token: ExplicitHistogram,
    pub time_per_output_token: ExplicitHistogram,
    pub input_tokens: ExplicitHistogram,
    pub output_tokens: ExplicitHistogram,
}

impl GenAiOperation {
    fn new(operation: &str) -> Self {
        Self {
            operation: operation.to_owned(),
            request_duration: Vec::new(),
            time_to_first_token: ExplicitHistogram::new(GEN_AI_TTFT_BOUNDS),
            time_per_output_token: ExplicitHistogram::new(GEN_AI_TPOT_BOUNDS),
            input_tokens: ExplicitHistogram::new(GEN_AI_TOKEN_BOUNDS),
            output_tokens: ExplicitHistogram::new(GEN_AI_TOKEN_BOUNDS),
        }
    }

    fn merge(&mut self, other: &Self) {
        merge_slots(&mut self.request_duration, &other.request_duration, || {
            ExplicitHistogram::new(GEN_AI_REQUEST_DURATION_BOUNDS)
        });
        self.time_to_first_token.merge(&other.time_to_first_token);
        self.time_per_output_token
            .merge(&other.time_per_output_token);
        self.input_tokens.merge(&other.input_tokens);
        self.output_tokens.merge(&other.output_tokens);
    }
}

fn merge_slots(
    mine: &mut Vec<ExplicitHistogram>,
    theirs: &[ExplicitHistogram],
    new: impl Fn() -> ExplicitHistogram,
) {
    if mine.len() < theirs.len() {
        mine.resize_with(theirs.len(), new);
    }
    for (m, t) in mine.iter_mut().zip(theirs) {
        m.merge(t);
    }
}

fn slot_mut<T>(slots: &mut Vec<T>, slot: usize, new: impl Fn() -> T) -> &mut T {
    if slots.len() <= slot {
        slots.resize_with(slot + 1, new);
    }
    &mut slots[slot]
}

/// Everything operational about one model version, cumulative since start.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOps {
    /// Error types seen, in slot order; outcome slot `1 + i` is `error_types.name(i)`.
    pub error_types: BoundedLabels,
    /// Slot 0: success; slot `1 + i`: error type `i` (the last one possibly `_OTHER`).
    pub outcomes: Vec<OutcomeStats>,
    /// Rejected records, indexed by `RejectReason as usize`.
    pub rejected: [u64; REJECT_REASONS.len()],
    pub labels_accepted: u64,
    /// Rejected delayed labels, indexed by `RejectReason as usize`.
    pub labels_rejected: [u64; REJECT_REASONS.len()],
    pub gen_ai_provider: Option<String>,
    pub gen_ai: Vec<GenAiOperation>,
    /// Operation names past [`MAX_GEN_AI_OPERATIONS`] fold into `_OTHER`.
    gen_ai_operations: BoundedLabels,
    /// Start of the cumulative period: when this state was created. A model version forgotten
    /// for idleness and seen again starts a new period, which backends read as a counter reset.
    pub since: std::time::SystemTime,
}

impl ModelOps {
    pub fn new(max_error_types: usize) -> Self {
        Self {
            error_types: BoundedLabels::new(max_error_types),
            outcomes: vec![OutcomeStats::new()],
            rejected: [0; REJECT_REASONS.len()],
            labels_accepted: 0,
            labels_rejected: [0; REJECT_REASONS.len()],
            gen_ai_provider: None,
            gen_ai: Vec::new(),
            gen_ai_operations: BoundedLabels::new(MAX_GEN_AI_OPERATIONS),
            since: std::time::SystemTime::now(),
        }
    }

    /// The outcome slot of a record: 0 for success, `1 + error-type slot` otherwise.
    fn outcome_slot(&mut self, error_type: &str) -> usize {
        if error_type.is_empty() {
            0
        } else {
            1 + self.error_types.slot(error_type)
        }
    }

    /// Name of an outcome slot as the `error.type` attribute; `None` for success.
    pub fn error_type_of(&self, slot: usize) -> Option<&str> {
        (slot > 0).then(|| self.error_types.name(slot - 1))
    }

    /// Accounts one validated record. The hot path: arithmetic and at most two short linear
    /// searches (error type, operation name).
    pub fn update(&mut self, record: &pb::InferenceRecord) {
        let slot = self.outcome_slot(&record.error_type);
        let outcome = slot_mut(&mut self.outcomes, slot, OutcomeStats::new);
        outcome.records += 1;
        if let Some(latency) = record.latency_seconds {
            outcome.latency.update(latency);
        }
        if let Some(pb::inference_record::Prediction::Generation(g)) = &record.prediction {
            self.update_generation(g, slot, record.latency_seconds);
        }
    }

    fn update_generation(&mut self, g: &pb::Generation, slot: usize, latency: Option<f64>) {
        let name = if g.operation.is_empty() {
            DEFAULT_GEN_AI_OPERATION
        } else {
            &g.operation
        };
        // `gen_ai` is indexed by operation slot: slots are handed out in order, so a new slot is
        // always the next index.
        let op_slot = self.gen_ai_operations.slot(name);
        if op_slot == self.gen_ai.len() {
            let name = self.gen_ai_operations.name(op_slot);
            self.gen_ai.push(GenAiOperation::new(name));
        }
        let operation = &mut self.gen_ai[op_slot];
        if let Some(duration) = latency {
            slot_mut(&mut operation.request_duration, slot, || {
                ExplicitHistogram::new(GEN_AI_REQUEST_DURATION_BOUNDS)
            })
            .update(duration);
        }
        operation.input_tokens.update(g.input_tokens as f64);
        operation.output_tokens.update(g.output_tokens as f64);
        if slot != 0 {
            return;
        }
        if let Some(ttft) = g.time_to_first_token_seconds {
            operation.time_to_first_token.update(ttft);
            // Time per output token after the first (the conventions' definition): needs the
            // total duration, the first-token time and at least two output tokens.
            if let Some(duration) = latency {
                if g.output_tokens >= 2 && duration >= ttft {
                    operation
                        .time_per_output_token
                        .update((duration - ttft) / (g.output_tokens - 1) as f64);
                }
            }
        }
    }

    /// Takes what the operational metrics need from a model declaration.
    pub fn declare(&mut self, declaration: &crate::models::Declaration) {
        self.gen_ai_provider
            .clone_from(&declaration.gen_ai_provider);
    }

    pub fn record_reject(&mut self, reason: pb::RejectReason) {
        self.rejected[reason as usize] += 1;
    }

    pub fn record_label_reject(&mut self, reason: pb::RejectReason) {
        self.labels_rejected[reason as usize] += 1;
    }

    /// Total records received (accepted) across outcomes.
    pub fn records(&self) -> u64 {
        self.outcomes.iter().map(|o| o.records).sum()
    }

    pub fn errors(&self) -> u64 {
        self.records() - self.outcomes[0].records
    }

    /// All latencies merged across outcomes.
    pub fn latency(&self) -> ExplicitHistogram {
        let mut all = ExplicitHistogram::new(LATENCY_BOUNDS);
        for o in &self.outcomes {
            all.merge(&o.latency);
        }
        all
    }

    /// Adds another shard's state for the same model key (only the overflow key can be split
    /// across shards). Error-type slots are matched by name, not by position.
    pub fn merge(&mut self, other: &Self) {
        for (slot, theirs) in other.outcomes.iter().enumerate() {
            let mine = match other.error_type_of(slot) {
                None => 0,
                Some(name) => self.outcome_slot(name),
            };
            slot_mut(&mut self.outcomes, mine, OutcomeStats::new).merge(theirs);
        }
        for (m, t) in self.rejected.iter_mut().zip(&other.rejected) {
            *m += t;
        }
        for (m, t) in self.labels_rejected.iter_mut().zip(&other.labels_rejected) {
            *m += t;
        }
        self.labels_accepted += other.labels_accepted;
        self.since = self.since.min(other.since);
        if self.gen_ai_provider.is_none() {
            self.gen_ai_provider.clone_from(&other.gen_ai_provider);
        }
        for theirs in &other.gen_ai {
            let op_slot = self.gen_ai_operations.slot(&theirs.operation);
            if op_slot == self.gen_ai.len() {
                let name = self.gen_ai_operations.name(op_slot);
                self.gen_ai.push(GenAiOperation::new(name));
            }
            self.gen_ai[op_slot].merge(theirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(error_type: &str, latency: f64) -> pb::InferenceRecord {
        pb::InferenceRecord {
            error_type: error_type.into(),
            latency_seconds: Some(latency),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_split_by_error_type_with_a_cap() {
        let mut ops = ModelOps::new(2);
        for e in ["", "", "timeout", "oom", "disk", "timeout"] {
            ops.update(&rec(e, 0.01));
        }
        assert_eq!(ops.records(), 6);
        assert_eq!(ops.errors(), 4);
        let by_name: Vec<(Option<&str>, u64)> = (0..ops.outcomes.len())
            .map(|s| (ops.error_type_of(s), ops.outcomes[s].records))
            .collect();
        assert_eq!(
            by_name,
            vec![
                (None, 2),
                (Some("timeout"), 2),
                (Some("oom"), 1),
                (Some("_OTHER"), 1)
            ]
        );
        assert_eq!(ops.error_types.overflowed(), 1);
    }

    #[test]
    fn generation_records_fill_the_gen_ai_histograms() {
        let mut ops = ModelOps::new(4);
        let g = pb::InferenceRecord {
            latency_seconds: Some(2.0),
            prediction: Some(pb::inference_record::Prediction::Generation(
                pb::Generation {
                    input_tokens: 100,
                    output_tokens: 11,
                    time_to_first_token_seconds: Some(0.5),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        ops.update(&g);
        let op = &ops.gen_ai[0];
        assert_eq!(op.operation, "chat");
        assert_eq!(op.request_duration[0].count(), 1);
        assert_eq!(op.input_tokens.sum(), 100.0);
        assert_eq!(op.output_tokens.sum(), 11.0);
        assert_eq!(op.time_to_first_token.sum(), 0.5);
        // (2.0 - 0.5) / (11 - 1)
        assert!((op.time_per_output_token.sum() - 0.15).abs() < 1e-12);
    }

    #[test]
    fn merge_matches_error_types_by_name() {
        let mut a = ModelOps::new(4);
        a.update(&rec("timeout", 0.1));
        let mut b = ModelOps::new(4);
        b.update(&rec("oom", 0.2));
        b.update(&rec("timeout", 0.3));
        b.update(&rec("", 0.3));
        a.merge(&b);
        let mut all = ModelOps::new(4);
        for r in [
            rec("timeout", 0.1),
            rec("oom", 0.2),
            rec("timeout", 0.3),
            rec("", 0.3),
        ] {
            all.update(&r);
        }
        assert_eq!(a.records(), all.records());
        for slot in 0..all.outcomes.len() {
            let name = all.error_type_of(slot);
            let mine = (0..a.outcomes.len())
                .find(|&s| a.error_type_of(s) == name)
                .unwrap();
            assert_eq!(
                a.outcomes[mine].records, all.outcomes[slot].records,
                "{name:?}"
            );
            assert_eq!(
                a.outcomes[mine].latency.count(),
                all.outcomes[slot].latency.count()
            );
        }
    }
}
