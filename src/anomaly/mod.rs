//! Per-record anomaly flags: what a record carries that the model version's own data says is
//! wrong, returned in the very ack of its batch, counted per kind, and put on the record's span.
//!
//! Every detector, the flag type, the per-record cap and every anomaly counter live here
//! (ARCHITECTURE.md, walk-through "add an anomaly kind"):
//! - [`features::FeatureDetectors`] checks features: missing and non-finite values (no profile
//!   needed) and, compiled from the reference profile and run from drift's single pass over the
//!   features, values outside the reference's [min, max], categories the reference never kept,
//!   robust outliers against the reference's median and MAD, and the Half-Space Trees score
//!   ([`crate::stats::half_space_trees`]) of the whole record;
//! - [`record::RecordDetectors`] checks what does not need a profile: low-confidence
//!   predictions, latency, output tokens and time per output token against streaming upper
//!   quantiles of the model's own values, and empty generations;
//! - [`series::SeriesWatch`] runs the change detectors of [`crate::stats::change`] over
//!   per-interval series (error rate, latency p95, accuracy or MAE, drift, anomaly rate).
//!
//! Every threshold is per model ([`settings`]).

pub mod features;
pub mod record;
pub mod robust;
pub mod series;
pub mod settings;

pub use record::{AnomalyCounts, RecordDetectors};
pub use series::SeriesWatch;
pub use settings::{AnomalyConfig, AnomalySettings};

use crate::{events::InternalEvent, pb};

/// The kinds of flag, in counter order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyKind {
    /// A numeric feature sent as NaN.
    MissingFeature = 0,
    /// A numeric feature sent as ±infinity.
    NonFiniteFeature = 1,
    /// A finite value outside the reference profile's [min, max].
    OutOfReferenceRange = 2,
    /// A categorical value outside the reference profile's kept categories.
    UnseenCategory = 3,
    /// A numeric feature whose robust z-score against the reference is over the threshold.
    FeatureOutlier = 4,
    /// The top two class probabilities are closer than the margin.
    LowConfidence = 5,
    /// Latency far above the model's own recent upper quantile.
    LatencyOutlier = 6,
    /// A successful generation with no output tokens.
    EmptyOutput = 7,
    /// Output tokens far above the model's own recent upper quantile.
    OutputTokensOutlier = 8,
    /// Time per output token far above the model's own recent upper quantile.
    TimePerOutputTokenOutlier = 9,
    /// A record that the Half-Space Trees isolate (much less mass than a typical record).
    MultivariateOutlier = 10,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 11] = [
        Self::MissingFeature,
        Self::NonFiniteFeature,
        Self::OutOfReferenceRange,
        Self::UnseenCategory,
        Self::FeatureOutlier,
        Self::LowConfidence,
        Self::LatencyOutlier,
        Self::EmptyOutput,
        Self::OutputTokensOutlier,
        Self::TimePerOutputTokenOutlier,
        Self::MultivariateOutlier,
    ];

    /// The `kind` of the flag in acks, metrics and span events.
    pub fn name(self) -> &'static str {
        match self {
            Self::MissingFeature => "missing_feature",
            Self::NonFiniteFeature => "non_finite_feature",
            Self::OutOfReferenceRange => "out_of_reference_range",
            Self::UnseenCategory => "unseen_category",
            Self::FeatureOutlier => "feature_outlier",
            Self::LowConfidence => "low_confidence",
            Self::LatencyOutlier => "latency_outlier",
            Self::EmptyOutput => "empty_output",
            Self::OutputTokensOutlier => "output_tokens_outlier",
            Self::TimePerOutputTokenOutlier => "time_per_output_token_outlier",
            Self::MultivariateOutlier => "multivariate_outlier",
        }
    }

    pub fn flag(self, subject: &str, score: f64) -> Flag {
        Flag {
            kind: self,
            subject: subject.into(),
            score,
        }
    }
}

/// One anomaly a record raised: its kind, what it is about (a feature, `latency_seconds`, …)
/// and how far out it was. Turned into protobuf only for the ack ([`Flag::to_pb`]) and into
/// span events by export.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    pub kind: AnomalyKind,
    pub subject: String,
    pub score: f64,
}

impl Flag {
    pub fn to_pb(&self) -> pb::AnomalyFlag {
        pb::AnomalyFlag {
            kind: self.kind.name().into(),
            score: self.score,
            subject: self.subject.clone(),
        }
    }
}

/// How far outside [min, max] a value is, in units of the reference range (its width, or 1 when
/// the reference held a single value).
pub fn range_distance(value: f64, min: f64, max: f64) -> f64 {
    let width = if max > min { max - min } else { 1.0 };
    if value < min {
        (min - value) / width
    } else {
        (value - max) / width
    }
}

/// Cuts `flags` down to `cap` so that every kind the record raised is kept before any kind is
/// kept twice: the first flag of each kind (in raise order, up to `cap` kinds), then the other
/// flags in raise order while room is left. The kept flags stay in raise order. Without it a
/// record's per-feature flags (one per feature, raised first) would fill the cap and crowd out
/// its record-level ones, such as the Half-Space Trees' `multivariate_outlier`.
fn keep_every_kind_first(flags: &mut Vec<Flag>, cap: usize) {
    if flags.len() <= cap {
        return;
    }
    let mut seen = [false; AnomalyKind::ALL.len()];
    let kinds = flags
        .iter()
        .filter(|f| !std::mem::replace(&mut seen[f.kind as usize], true))
        .count();
    let mut firsts_left = kinds.min(cap);
    let mut repeats_left = cap - firsts_left;
    let mut seen = [false; AnomalyKind::ALL.len()];
    flags.retain(|f| {
        let first = !std::mem::replace(&mut seen[f.kind as usize], true);
        if first && firsts_left > 0 {
            firsts_left -= 1;
            true
        } else if !first && repeats_left > 0 {
            repeats_left -= 1;
            true
        } else {
            false
        }
    });
}

/// What export needs of a model's anomalies.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySnapshot {
    /// Flags raised since the state was created, by [`AnomalyKind`].
    pub by_kind: [u64; AnomalyKind::ALL.len()],
    /// Flags counted but left out of acks and spans (past [`settings::MAX_FLAGS_PER_RECORD`]).
    pub flags_truncated: u64,
    /// `(window name, counts)`, the since-start counts last.
    pub windows: Vec<(String, AnomalyCounts)>,
    /// Detections by `[series::Series as usize][series::Detector as usize]`.
    pub detections: [[u64; series::Detector::ALL.len()]; series::Series::ALL.len()],
    /// Series that have had a point (their counters are exported, zeros included).
    pub active: [bool; series::Series::ALL.len()],
    /// Kinds the model can raise (its counters are exported, zeros included): the detector is
    /// on and the model sends what it looks at, or the kind has been raised.
    pub raisable: [bool; AnomalyKind::ALL.len()],
    /// The last point of each watched series.
    pub points: Vec<(series::Series, f64)>,
}

/// The anomaly state of one model version: the feature checks (run from drift's pass), the
/// record detectors, windowed counts of records and flags, and the change detectors on its
/// series.
pub struct ModelAnomaly {
    pub features: features::FeatureDetectors,
    pub detectors: RecordDetectors,
    windows: crate::windows::Windows<AnomalyCounts>,
    pub series: SeriesWatch,
    /// Records and flagged records since the state was created (the series take differences).
    records: u64,
    flagged: u64,
    /// Flags since the state was created, by kind.
    by_kind: [u64; AnomalyKind::ALL.len()],
    /// Flags left out of acks and spans by the per-record cap.
    flags_truncated: u64,
    /// The drift state's profile changes last seen (the drift and anomaly-rate series restart
    /// with a new profile).
    profile_changes: u64,
}

impl ModelAnomaly {
    pub fn new(
        settings: std::sync::Arc<AnomalySettings>,
        windows: &[crate::windows::WindowSpec],
        now_ms: u64,
    ) -> Self {
        Self {
            features: features::FeatureDetectors::new(settings.clone()),
            detectors: RecordDetectors::new(settings.clone()),
            windows: crate::windows::Windows::new(AnomalyCounts::default(), windows, 0, now_ms),
            series: SeriesWatch::new(settings),
            records: 0,
            flagged: 0,
            by_kind: [0; AnomalyKind::ALL.len()],
            flags_truncated: 0,
            profile_changes: 0,
        }
    }

    /// Closes an interval of the series: `quality` is the model's since-start quality state;
    /// of its drift state, `drift_score` is the first window's largest drift score,
    /// `profile_changes` how often its profile changed, `capturing` whether a live capture is
    /// under way.
    pub fn close_interval(
        &mut self,
        ops: &crate::operational::ModelOps,
        quality: Option<&crate::quality::state::QualityState>,
        drift_score: Option<f64>,
        profile_changes: u64,
        capturing: bool,
    ) -> Vec<series::Detection> {
        let changes = profile_changes;
        if changes != self.profile_changes {
            self.profile_changes = changes;
            self.series.profile_changed();
        }
        let ok = ops.outcomes.first().map_or(0, |o| o.records);
        let all: u64 = ops.outcomes.iter().map(|o| o.records).sum();
        let mut totals = series::Totals {
            records: self.records,
            errors: all - ok,
            flagged: self.flagged,
            ..Default::default()
        };
        if let Some(state) = quality {
            let confusion = &state.confusion;
            totals.labelled = confusion.total();
            totals.correct = (0..confusion.classes())
                .map(|c| confusion.count(c, c))
                .sum();
            totals.regression_pairs = state.regression.count();
            totals.abs_error = state.regression.abs_error_sum();
        }
        let extras = series::Extras {
            latency_p95: self.detectors.take_interval_latency(),
            drift_score,
            flags_settled: self.detectors.settled() && !capturing && self.features.settled(),
        };
        self.series.observe(totals, extras)
    }

    #[inline]
    pub fn advance(&mut self, now_ms: u64) {
        self.windows.advance(now_ms);
    }

    /// Ends one accepted record: counts it with its flags (empty when it raised none) into the
    /// windows and the cumulative counters, then keeps at most
    /// [`settings::MAX_FLAGS_PER_RECORD`] flags for the ack and the span (the rest counted, the
    /// first time logged; [`keep_every_kind_first`] chooses which).
    #[inline]
    pub fn close_record(&mut self, flags: &mut Vec<Flag>, key: &crate::models::ModelKey) {
        let live = self.windows.live();
        live.records += 1;
        self.records += 1;
        if flags.is_empty() {
            return;
        }
        live.flagged += 1;
        self.flagged += 1;
        for f in flags.iter() {
            live.kinds[f.kind as usize] += 1;
            self.by_kind[f.kind as usize] += 1;
        }
        let cap = settings::MAX_FLAGS_PER_RECORD;
        if flags.len() > cap {
            crate::events::FlagsTruncated {
                key,
                flags: flags.len(),
                cap,
            }
            .emit(&mut self.flags_truncated);
            keep_every_kind_first(flags, cap);
        }
    }

    pub fn snapshot(&mut self, now_ms: u64) -> AnomalySnapshot {
        self.windows.advance(now_ms);
        self.windows.flush();
        AnomalySnapshot {
            by_kind: self.by_kind,
            flags_truncated: self.flags_truncated,
            windows: self.windows.views(),
            detections: self.series.detections,
            active: self.series.active,
            raisable: std::array::from_fn(|k| {
                let kind = AnomalyKind::ALL[k];
                self.by_kind[k] > 0
                    || self.features.can_raise(kind)
                    || self.detectors.can_raise(kind)
            }),
            points: self.series.last_points().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{models::ModelKey, windows::WindowSpec};
    use std::{sync::Arc, time::Duration};

    fn state() -> ModelAnomaly {
        let windows = [WindowSpec {
            name: "5m".into(),
            length: Duration::from_secs(300),
            buckets: 10,
        }];
        ModelAnomaly::new(Arc::new(AnomalySettings::default()), &windows, 0)
    }

    fn kinds(flags: &[Flag]) -> Vec<(AnomalyKind, &str)> {
        flags.iter().map(|f| (f.kind, f.subject.as_str())).collect()
    }

    #[test]
    fn a_record_level_flag_survives_many_feature_flags() {
        let mut anomaly = state();
        // Twelve features out of range and outliers, raised first, then the Half-Space Trees'
        // flag and a latency outlier.
        let mut flags = Vec::new();
        for f in 0..12 {
            let name = format!("f{f}");
            flags.push(AnomalyKind::OutOfReferenceRange.flag(&name, 2.0));
            flags.push(AnomalyKind::FeatureOutlier.flag(&name, 9.0));
        }
        flags.push(AnomalyKind::MultivariateOutlier.flag("", 0.9));
        flags.push(AnomalyKind::LatencyOutlier.flag("latency_seconds", 5.0));
        let raised = flags.len();
        anomaly.close_record(&mut flags, &ModelKey::new("m", "1"));

        use AnomalyKind::*;
        // Each kind once, then the repeats in raise order; all in raise order.
        assert_eq!(
            kinds(&flags),
            vec![
                (OutOfReferenceRange, "f0"),
                (FeatureOutlier, "f0"),
                (OutOfReferenceRange, "f1"),
                (FeatureOutlier, "f1"),
                (OutOfReferenceRange, "f2"),
                (FeatureOutlier, "f2"),
                (MultivariateOutlier, ""),
                (LatencyOutlier, "latency_seconds"),
            ]
        );
        // The counters still see every flag.
        let snapshot = anomaly.snapshot(0);
        assert_eq!(snapshot.by_kind[OutOfReferenceRange as usize], 12);
        assert_eq!(snapshot.by_kind[FeatureOutlier as usize], 12);
        assert_eq!(snapshot.by_kind[MultivariateOutlier as usize], 1);
        assert_eq!(snapshot.flags_truncated, (raised - 8) as u64);
    }

    #[test]
    fn more_kinds_than_the_cap_keep_the_first_kinds_raised() {
        let mut flags: Vec<Flag> = AnomalyKind::ALL
            .iter()
            .flat_map(|&k| [k.flag("a", 1.0), k.flag("b", 1.0)])
            .collect();
        keep_every_kind_first(&mut flags, 8);
        let expected: Vec<_> = AnomalyKind::ALL[..8].iter().map(|&k| (k, "a")).collect();
        assert_eq!(kinds(&flags), expected);
    }

    #[test]
    fn flags_within_the_cap_are_left_alone() {
        let mut flags = vec![
            AnomalyKind::FeatureOutlier.flag("x", 6.0),
            AnomalyKind::FeatureOutlier.flag("y", 7.0),
        ];
        let before = flags.clone();
        keep_every_kind_first(&mut flags, 8);
        assert_eq!(flags, before);
    }
}
