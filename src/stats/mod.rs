//! Pure numeric state: no I/O, no async, no OpenTelemetry. Each structure has the same small
//! `update` / `merge` / `reset` shape so that windows can be built from mergeable sub-states.

pub mod histogram;

pub use histogram::ExplicitHistogram;
