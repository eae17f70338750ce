//! # inferscope
//!
//! A sidecar that watches machine-learning models in production: the model server streams
//! inference records to it over gRPC, and it turns them into operational, LLM and quality
//! signals, drift and anomaly signals, exported as OpenTelemetry metrics and traces.
//!
//! # Layout
//! In the order a record travels:
//! - [`pb`]: the API, generated from `proto/inferscope/v1`.
//! - [`config`]: flags, environment and file, resolved once at start-up.
//! - [`ingest`]: the gRPC service; decodes batches, answers acks; the only place errors become
//!   `tonic::Status`.
//! - [`capture`]: no-code inputs (OTLP traces in) that make the same records as the API.
//! - [`tap`]: a no-code input in front of an Open Inference Protocol model server: calls are
//!   forwarded unchanged and each `ModelInfer` pair becomes records.
//! - [`validation`]: per-record checks; one bad record is rejected alone.
//! - [`models`]: model keys and declarations (task, classes, feature schema).
//! - [`pipeline`]: routing by (model, version) to shard workers that own all state.
//! - [`operational`]: what a shard keeps per model: outcomes, latency, GenAI histograms.
//! - [`quality`]: predictions joined with labels (inline or delayed), quality per window.
//! - [`windows`]: sliding windows as rings of mergeable buckets.
//! - [`drift`]: reference profiles, live capture, drift scores per window.
//! - [`anomaly`]: per-record anomaly flags returned in acks, anomaly rates, and change detection
//!   on each model's per-interval series.
//! - [`stats`]: pure numeric structures (no I/O, no async), each `update` / `merge` / `reset`.
//! - [`export`]: snapshots to OTLP metrics; sampled records to spans.
//! - [`events`] and [`self_metrics`]: what the sidecar logs and counts about itself (bounds hit,
//!   batches shed, export failures), each event pairing its log line with its counter.
//! - [`security`]: TLS, mutual TLS and the bearer token of ingest.
//! - [`server`]: assembles the above and shuts it down in order.
//! - [`demo`]: a built-in synthetic model server for `inferscope demo`.
//! - [`label_stream`] and [`label_import`]: labels from outside the pod, appended to a Redis
//!   stream by `inferscope labels` and read by every sidecar of a fleet into ingest.

pub mod anomaly;
pub mod capture;
pub mod clock;
pub mod config;
pub mod demo;
pub mod drift;
pub mod events;
pub mod export;
pub mod fleet;
pub mod ingest;
pub mod label_import;
pub mod label_store;
pub mod label_stream;
pub mod listener;
pub mod models;
pub mod operational;
pub mod pipeline;
pub mod quality;
pub mod security;
pub mod self_metrics;
pub mod server;
pub mod state;
pub mod stats;
pub mod tap;
pub mod tracecontext;
pub mod validation;
pub mod windows;
pub mod wire;

pub mod pb {
    //! Types and gRPC stubs generated from `proto/inferscope/v1`.
    tonic::include_proto!("inferscope.v1");
    pub use crate::wire::{LabelBatch, RecordBatch};
    /// The encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("inferscope_descriptor");
}

pub mod oip {
    //! Types and gRPC stubs of the Open Inference Protocol, generated from `proto/oip/`.
    tonic::include_proto!("inference");
}
