//! Pure numeric state: no I/O, no async, no OpenTelemetry. Each structure has the same small
//! `update` / `merge` / `reset` shape so that windows can be built from mergeable sub-states.

pub mod change;
pub mod confusion;
pub mod drift;
pub mod half_space_trees;
pub mod histogram;
pub mod regression;
pub mod score_curve;
pub mod tail_quantile;

pub use confusion::{Average, ConfusionMatrix};
pub use histogram::ExplicitHistogram;
pub use regression::RegressionErrors;
pub use score_curve::{Estimate, ScoreCurve};
