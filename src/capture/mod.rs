//! No-code capture: inputs that turn what model servers already emit into inference records,
//! through the same ingest path as the gRPC API (ARCHITECTURE.md §6c), so that a pod gets
//! monitoring by configuration alone (README: No-code capture).

pub mod genai;
pub mod generations;
pub mod kserve;
pub mod logs;
pub mod otlp;

/// The config file's `[capture.*]` sections.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureFile {
    /// `[capture.otlp]`: which span and resource attributes name a GenAI span's model and version.
    pub otlp: Option<genai::GenAiMapping>,
    /// `[capture.kserve]`: KServe's payload logger, its join store and per-model mappings.
    pub kserve: Option<kserve::KserveFile>,
}
