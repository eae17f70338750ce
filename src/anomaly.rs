//! Per-record anomaly flags: what a record carries that the model version's own data says is
//! wrong, returned in the very ack of its batch, counted per kind, and put on the record's span.
//!
//! The cheap, deterministic detectors live here and in the drift state (which knows the
//! reference): missing and non-finite numeric features (no profile needed), values outside the
//! reference's [min, max] and categories the reference never kept (with a profile).

use crate::pb;

/// The kinds of flag, in counter order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyKind {
    /// A declared numeric feature sent as NaN.
    MissingFeature = 0,
    /// A numeric feature sent as ±infinity.
    NonFiniteFeature = 1,
    /// A finite value outside the reference profile's [min, max].
    OutOfReferenceRange = 2,
    /// A categorical value outside the reference profile's kept categories.
    UnseenCategory = 3,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 4] = [
        Self::MissingFeature,
        Self::NonFiniteFeature,
        Self::OutOfReferenceRange,
        Self::UnseenCategory,
    ];

    /// The `kind` of the flag in acks, metrics and span events.
    pub fn name(self) -> &'static str {
        match self {
            Self::MissingFeature => "missing_feature",
            Self::NonFiniteFeature => "non_finite_feature",
            Self::OutOfReferenceRange => "out_of_reference_range",
            Self::UnseenCategory => "unseen_category",
        }
    }

    pub fn flag(self, subject: &str, score: f64) -> pb::AnomalyFlag {
        pb::AnomalyFlag {
            kind: self.name().into(),
            score,
            subject: subject.into(),
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
