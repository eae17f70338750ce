//! What the shards hand to the span builder ([`crate::export::traces`]): plain data, built only
//! for the records and events that get a span, and the sampling decision that picks them.

use crate::{
    anomaly::{series::Detection, Flag},
    config::Sampling,
    drift::model::DriftChange,
    models::ModelKey,
    pb,
    tracecontext::{self, TraceParent},
};
use rand::{rngs::SmallRng, Rng};
use std::time::{Duration, SystemTime};

/// A span to build.
#[derive(Debug, Clone)]
pub enum SpanJob {
    /// A sampled record, an error record or a flagged record.
    Record(RecordSpan),
    /// Features of a model that started or stopped drifting (a trace of its own).
    DriftChange {
        key: ModelKey,
        at: SystemTime,
        change: DriftChange,
    },
    /// Change detections on a model's series (a trace of its own).
    SeriesChange {
        key: ModelKey,
        at: SystemTime,
        detections: Vec<Detection>,
    },
}

/// One record's span: from `time_unix_nano − latency` to `time_unix_nano`.
#[derive(Debug, Clone)]
pub struct RecordSpan {
    pub model: String,
    pub version: String,
    pub request_id: String,
    /// The caller's span, which this one is a child of.
    pub parent: Option<TraceParent>,
    pub tracestate: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub error_type: String,
    pub attributes: Vec<(String, String)>,
    /// The record's anomaly flags, one span event each.
    pub flags: Vec<Flag>,
}

impl RecordSpan {
    /// The span of an accepted record; `received` stands in for a missing `time_unix_nano`.
    pub fn of(
        record: &pb::InferenceRecord,
        model: &str,
        version: &str,
        parent: Option<TraceParent>,
        received: SystemTime,
        flags: &[Flag],
    ) -> Self {
        let end = match record.time_unix_nano {
            0 => received,
            t => SystemTime::UNIX_EPOCH + Duration::from_nanos(t),
        };
        let start = record
            .latency_seconds
            .and_then(|l| Duration::try_from_secs_f64(l).ok())
            .and_then(|l| end.checked_sub(l))
            .unwrap_or(end);
        Self {
            model: model.to_owned(),
            version: version.to_owned(),
            request_id: record.request_id.clone(),
            parent,
            tracestate: record.tracestate.clone(),
            start,
            end,
            error_type: record.error_type.clone(),
            attributes: record
                .attributes
                .iter()
                .map(|a| (a.key.clone(), a.value.clone()))
                .collect(),
            flags: flags.to_vec(),
        }
    }
}

/// Which successful records get a span (error records always do). With a `traceparent`, the
/// ratio applies to its trace id as OpenTelemetry's `TraceIdRatioBased` does, so the decision
/// agrees with other ratio samplers on the same trace.
pub struct Sampler {
    settings: Sampling,
    rng: SmallRng,
}

impl Sampler {
    pub fn new(settings: Sampling, rng: SmallRng) -> Self {
        Self { settings, rng }
    }

    /// Whether a record (validated, so a `traceparent` it carries is well formed) gets a span.
    pub fn sampled(&mut self, record: &pb::InferenceRecord) -> bool {
        if !record.error_type.is_empty() {
            return true;
        }
        let Sampling {
            ratio,
            parent_based,
        } = self.settings;
        let parent = &record.traceparent;
        if !parent.is_empty() {
            if parent_based {
                return tracecontext::sampled_flag(parent);
            }
            if ratio >= 1.0 {
                return true;
            }
            let low = tracecontext::trace_id_low(parent);
            return (low >> 1) < (ratio * (1u64 << 63) as f64) as u64;
        }
        ratio >= 1.0 || (ratio > 0.0 && self.rng.random::<f64>() < ratio)
    }
}
