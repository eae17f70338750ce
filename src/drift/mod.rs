//! Drift: reference profiles of model versions, and (next) per-window drift scores against them.

pub mod build;
pub mod profile;
