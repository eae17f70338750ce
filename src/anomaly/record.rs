//! Per-record detectors that need no reference profile: low-confidence predictions, latency,
//! output tokens and time per output token far above the model's own recent upper quantile, and
//! empty generations. Plus the windowed counts behind the anomaly rate.

use super::{AnomalyKind, AnomalySettings, Flag};
use crate::{
    pb,
    stats::tail_quantile::{IntervalQuantiles, TailQuantile},
    windows::WindowState,
};
use std::sync::Arc;

/// Quantile of the per-interval latency series the change detectors watch.
pub const INTERVAL_LATENCY_QUANTILE: f64 = 0.95;

/// Records and flags of one window, for the anomaly rates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnomalyCounts {
    pub records: u64,
    /// Records with at least one flag.
    pub flagged: u64,
    /// Flags by `AnomalyKind as usize`.
    pub kinds: [u64; AnomalyKind::ALL.len()],
}

impl WindowState for AnomalyCounts {
    fn empty_like(&self) -> Self {
        Self::default()
    }

    fn merge(&mut self, other: &Self, _exact_budget: usize) {
        self.records += other.records;
        self.flagged += other.flagged;
        for (a, b) in self.kinds.iter_mut().zip(&other.kinds) {
            *a += b;
        }
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn exact_len(&self) -> usize {
        0
    }
}

/// The profile-free detectors of one model version.
#[derive(Debug)]
pub struct RecordDetectors {
    settings: Arc<AnomalySettings>,
    /// Created with the first value of each quantity (a classifier never holds token trackers).
    latency: Option<TailQuantile>,
    output_tokens: Option<TailQuantile>,
    time_per_token: Option<TailQuantile>,
    /// Latencies since the last interval closed, for the latency-p95 series.
    interval_latency: IntervalQuantiles,
    /// Whether a classification with probabilities or a score has been seen.
    scored: bool,
}

impl RecordDetectors {
    pub fn new(settings: Arc<AnomalySettings>) -> Self {
        Self {
            settings,
            latency: None,
            output_tokens: None,
            time_per_token: None,
            interval_latency: IntervalQuantiles::default(),
            scored: false,
        }
    }

    /// Whether these detectors can raise `kind` for this model: it is on and the model has sent
    /// what it looks at (latencies; probabilities; generations with output tokens).
    pub fn can_raise(&self, kind: AnomalyKind) -> bool {
        let s = &*self.settings;
        match kind {
            AnomalyKind::LatencyOutlier => s.latency_factor > 0.0 && self.latency.is_some(),
            AnomalyKind::LowConfidence => s.low_confidence_margin > 0.0 && self.scored,
            AnomalyKind::EmptyOutput => s.empty_output && self.output_tokens.is_some(),
            AnomalyKind::OutputTokensOutlier => {
                s.output_tokens_factor > 0.0 && self.output_tokens.is_some()
            }
            AnomalyKind::TimePerOutputTokenOutlier => {
                s.time_per_token_factor > 0.0 && self.time_per_token.is_some()
            }
            _ => false,
        }
    }

    pub fn settings(&self) -> &Arc<AnomalySettings> {
        &self.settings
    }

    /// Adds the flags `record` raises to `flags`.
    pub fn check(&mut self, record: &pb::InferenceRecord, flags: &mut Vec<Flag>) {
        let s = &*self.settings;
        let latency = record
            .latency_seconds
            .filter(|l| l.is_finite() && *l >= 0.0);
        if let Some(l) = latency {
            if s.latency_factor > 0.0 {
                tail(&mut self.latency, s, s.latency_factor, l, flags, || {
                    AnomalyKind::LatencyOutlier.flag("latency_seconds", 0.0)
                });
            }
            if s.change_detection {
                self.interval_latency.update(l);
            }
        }
        match &record.prediction {
            Some(pb::inference_record::Prediction::Classification(c))
                if s.low_confidence_margin > 0.0 =>
            {
                if let Some(margin) = margin(c) {
                    self.scored = true;
                    if margin < s.low_confidence_margin {
                        flags.push(AnomalyKind::LowConfidence.flag(&c.predicted_class, margin));
                    }
                }
            }
            // Generation outliers are about successful responses that generate text.
            Some(pb::inference_record::Prediction::Generation(g))
                if record.error_type.is_empty() && g.operation != "embeddings" =>
            {
                if g.output_tokens == 0 {
                    // Only for a model known to report its output tokens (one non-empty answer
                    // seen): a client that never fills the count is not sending empty answers.
                    if s.empty_output && self.output_tokens.is_some() {
                        flags.push(AnomalyKind::EmptyOutput.flag("output_tokens", 1.0));
                    }
                } else if s.output_tokens_factor > 0.0 || s.empty_output {
                    // With a factor of 0 the tracker is only kept for the empty-output rule.
                    tail(
                        &mut self.output_tokens,
                        s,
                        s.output_tokens_factor,
                        g.output_tokens as f64,
                        flags,
                        || AnomalyKind::OutputTokensOutlier.flag("output_tokens", 0.0),
                    );
                }
                // Time per output token after the first, as `gen_ai.server.time_per_output_token`.
                if let (Some(ttft), Some(l)) = (g.time_to_first_token_seconds, latency) {
                    if s.time_per_token_factor > 0.0 && g.output_tokens >= 2 && l >= ttft {
                        let tpot = (l - ttft) / (g.output_tokens - 1) as f64;
                        tail(
                            &mut self.time_per_token,
                            s,
                            s.time_per_token_factor,
                            tpot,
                            flags,
                            || {
                                AnomalyKind::TimePerOutputTokenOutlier
                                    .flag("time_per_output_token", 0.0)
                            },
                        );
                    }
                }
            }
            _ => {}
        }
    }

    /// The latency p95 since the last call and the number of latencies it is over.
    pub fn take_interval_latency(&mut self) -> Option<(f64, u64)> {
        let n = self.interval_latency.count();
        Some((self.interval_latency.take(INTERVAL_LATENCY_QUANTILE)?, n))
    }

    /// True when the latency detector (if on and fed) is past its warm-up.
    pub fn settled(&self) -> bool {
        self.latency
            .as_ref()
            .is_none_or(|t| t.seen() >= self.settings.tail_warmup)
    }
}

/// Flags `x` when it is over `factor` × the tracker's quantile (once warmed up), with the ratio
/// to the quantile as score; then counts `x`.
fn tail(
    tracker: &mut Option<TailQuantile>,
    s: &AnomalySettings,
    factor: f64,
    x: f64,
    flags: &mut Vec<Flag>,
    flag: impl FnOnce() -> Flag,
) {
    let t = tracker.get_or_insert_with(|| TailQuantile::new(s.tail_quantile, s.tail_epoch));
    if factor > 0.0 && t.seen() >= s.tail_warmup {
        if let Some(q) = t.estimate().filter(|q| *q > 0.0) {
            if x > factor * q {
                let mut f = flag();
                f.score = x / q;
                flags.push(f);
            }
        }
    }
    t.update(x);
}

/// The margin between the two most probable classes: from the probabilities when there are at
/// least two, else from a binary score p (|2p − 1|).
fn margin(c: &pb::Classification) -> Option<f64> {
    if c.class_probabilities.len() >= 2 {
        let (mut first, mut second) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for &p in &c.class_probabilities {
            if p > first {
                second = first;
                first = p;
            } else if p > second {
                second = p;
            }
        }
        return Some(first - second);
    }
    c.score.map(|p| (2.0 * p - 1.0).abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::inference_record::Prediction;

    fn record(latency: f64) -> pb::InferenceRecord {
        pb::InferenceRecord {
            latency_seconds: Some(latency),
            ..Default::default()
        }
    }

    fn kinds(flags: &[Flag]) -> Vec<&str> {
        flags.iter().map(|f| f.kind.name()).collect()
    }

    #[test]
    fn a_latency_spike_is_flagged_after_the_warm_up_and_scored_against_the_p99() {
        let mut d = RecordDetectors::new(Arc::new(AnomalySettings::default()));
        let mut flags = Vec::new();
        // Before the warm-up nothing is flagged, whatever the value.
        d.check(&record(100.0), &mut flags);
        for i in 0..2_000 {
            d.check(&record(0.010 + 0.00001 * (i % 100) as f64), &mut flags);
        }
        assert!(flags.is_empty(), "{flags:?}");
        d.check(&record(0.5), &mut flags);
        assert_eq!(kinds(&flags), ["latency_outlier"]);
        assert!(
            flags[0].score > 40.0 && flags[0].score < 50.0,
            "{}",
            flags[0].score
        );
        flags.clear();
        d.check(&record(0.025), &mut flags);
        assert!(flags.is_empty(), "2.5 × p99 is under the factor");
    }

    #[test]
    fn low_confidence_uses_the_top_two_probabilities_or_the_binary_score() {
        let mut d = RecordDetectors::new(Arc::new(AnomalySettings::default()));
        let mut flags = Vec::new();
        let classified = |probabilities: Vec<f64>, score: Option<f64>| pb::InferenceRecord {
            prediction: Some(Prediction::Classification(pb::Classification {
                predicted_class: "a".into(),
                class_probabilities: probabilities,
                score,
                ..Default::default()
            })),
            ..Default::default()
        };
        d.check(&classified(vec![0.40, 0.38, 0.22], None), &mut flags);
        d.check(&classified(vec![0.60, 0.30, 0.10], None), &mut flags);
        d.check(&classified(vec![], Some(0.51)), &mut flags);
        d.check(&classified(vec![], Some(0.9)), &mut flags);
        assert_eq!(kinds(&flags), ["low_confidence", "low_confidence"]);
        assert!((flags[0].score - 0.02).abs() < 1e-12);
        assert!((flags[1].score - 0.02).abs() < 1e-12);
    }

    #[test]
    fn generations_flag_empty_outputs_and_runaway_lengths_but_not_errors() {
        let mut d = RecordDetectors::new(Arc::new(AnomalySettings::default()));
        let mut flags = Vec::new();
        let generated = |tokens: u64, error: &str| pb::InferenceRecord {
            latency_seconds: Some(1.0 + tokens as f64 * 0.01),
            error_type: error.into(),
            prediction: Some(Prediction::Generation(pb::Generation {
                output_tokens: tokens,
                time_to_first_token_seconds: Some(1.0),
                ..Default::default()
            })),
            ..Default::default()
        };
        d.check(&generated(0, "timeout"), &mut flags);
        d.check(&generated(0, ""), &mut flags);
        assert!(
            flags.is_empty(),
            "no answer with tokens seen yet: {flags:?}"
        );
        d.check(&generated(10, ""), &mut flags);
        d.check(&generated(0, "timeout"), &mut flags);
        assert!(flags.is_empty());
        d.check(&generated(0, ""), &mut flags);
        assert_eq!(kinds(&flags), ["empty_output"]);
        flags.clear();
        let mut embedding = generated(0, "");
        if let Some(Prediction::Generation(g)) = &mut embedding.prediction {
            g.operation = "embeddings".into();
        }
        d.check(&embedding, &mut flags);
        assert!(flags.is_empty());
        for i in 0..1_500 {
            d.check(&generated(100 + i % 50, ""), &mut flags);
        }
        assert!(flags.is_empty(), "{flags:?}");
        d.check(&generated(2_000, ""), &mut flags);
        assert!(
            kinds(&flags).contains(&"output_tokens_outlier"),
            "{flags:?}"
        );
    }

    #[test]
    fn a_detector_at_zero_is_off() {
        let settings = AnomalySettings {
            latency_factor: 0.0,
            ..Default::default()
        };
        let mut d = RecordDetectors::new(Arc::new(settings));
        let mut flags = Vec::new();
        for _ in 0..2_000 {
            d.check(&record(0.01), &mut flags);
        }
        d.check(&record(10.0), &mut flags);
        assert!(flags.is_empty());
        assert!(d.latency.is_none());
    }
}
