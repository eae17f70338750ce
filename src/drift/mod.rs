//! Drift: reference profiles of model versions, and (next) per-window drift scores against them.

pub mod bins;
pub mod build;
pub mod model;
pub mod profile;
pub mod registry;
pub mod state;
