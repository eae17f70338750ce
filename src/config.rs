//! Configuration: command-line flags, environment variables and an optional TOML file, resolved
//! once at start-up into a validated [`Config`]. Precedence: flag > environment > file > default.
//!
//! The three sources share one declaration, [`ConfigArgs`]: clap reads it from flags and
//! environment, serde from the file, and [`Config::resolve`] merges the two and checks every
//! value, reporting all invalid settings together.
//!
//! The OTLP settings are the standard `OTEL_*` variables (OpenTelemetry SDK environment
//! specification), so a sidecar configured like any other OpenTelemetry component just works.

pub use crate::security::{AuthToken, PemFile, ServerTls};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// Loopback by default: a NetworkPolicy cannot protect a localhost port, the bind can.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7717";
/// Batches waiting per shard before ingest answers UNAVAILABLE. With the default batch limit the
/// worst case is `DEFAULT_SHARD_QUEUE_BATCHES × DEFAULT_MAX_BATCH_RECORDS` records per shard.
pub const DEFAULT_SHARD_QUEUE_BATCHES: usize = 64;
pub use crate::validation::DEFAULT_MAX_BATCH_RECORDS;
/// Largest gRPC message accepted (bytes).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Distinct (model, version) pairs tracked; further pairs fold into `__other__`.
pub const DEFAULT_MAX_MODELS: usize = 64;
/// A model version with no traffic for this long is forgotten (its series stop; memory and its
/// `--max-models` slot are freed), so that version rollouts over weeks do not fill the caps.
pub const DEFAULT_MODEL_IDLE_EXPIRY: Duration = Duration::from_secs(3600);
/// Distinct `error.type` values kept per model; further values fold into `_OTHER`.
pub const DEFAULT_MAX_ERROR_TYPES: usize = 32;
/// Share of successful records that get a span. Error records always get one.
pub const DEFAULT_TRACE_SAMPLE_RATIO: f64 = 0.01;
/// Spans waiting for the exporter; past it spans are dropped and counted.
pub const DEFAULT_SPAN_QUEUE: usize = 4096;
/// How often metrics are exported (the SDK default is 60 s; 15 s matches common scrape intervals).
pub const DEFAULT_METRIC_EXPORT_INTERVAL: Duration = Duration::from_secs(15);
/// Time allowed for one OTLP export request.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time from SIGTERM to exit: drain, final export. Kubernetes' default grace period is 30 s.
pub const DEFAULT_SHUTDOWN_BUDGET: Duration = Duration::from_secs(20);
/// Ingest memory budget: 64 MiB of batches and acks as encoded (the process holds a few times
/// that while they are in flight), four batches of the largest size; the model server's
/// sidecar limit in deploy/ is 256 MiB.
pub const DEFAULT_MAX_INGEST_BYTES: usize = 64 * 1024 * 1024;
/// A stream whose client has not read an ack for 30 s is ended: a healthy client reads acks
/// within milliseconds, and a deadlocked one must not hold its batches for good.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Connection age after which a client is asked to reconnect: idle and silent connections
/// (which answer keepalive pings, or never speak) end within the hour instead of never.
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);
/// Time a connection past its age gets to finish its streams before it is closed.
pub const CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);
/// Batches one stream may have in flight (dispatched, not yet acked).
pub const DEFAULT_MAX_INFLIGHT_BATCHES: usize = 16;
/// How often the profiles directory is looked at for added, changed or removed profiles.
pub const DEFAULT_PROFILES_POLL: Duration = Duration::from_secs(10);

/// Where OTLP goes when nothing is configured: the standard local collector ports.
pub const DEFAULT_OTLP_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// The OTLP/HTTP counterpart of [`DEFAULT_OTLP_GRPC_ENDPOINT`].
pub const DEFAULT_OTLP_HTTP_ENDPOINT: &str = "http://localhost:4318";
/// The OTLP protocol when none is configured (the OpenTelemetry specification's default).
pub const DEFAULT_OTLP_PROTOCOL: OtlpProtocol = OtlpProtocol::HttpProtobuf;
/// The sampler for successful records when none is configured, at
/// [`DEFAULT_TRACE_SAMPLE_RATIO`].
pub const DEFAULT_TRACES_SAMPLER: &str = "traceidratio";

/// Declares the settings struct and, from the same field list, `or`: these settings where they
/// are set, the fallback's elsewhere. So a new setting is one field, plus its check in
/// [`Config::resolve`].
macro_rules! settings {
    (
        $(#[$struct_attr:meta])*
        pub struct $name:ident {
            $( $(#[$field_attr:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$struct_attr])*
        pub struct $name {
            $( $(#[$field_attr])* pub $field: $ty, )*
        }

        impl $name {
            fn or(self, fallback: Self) -> Self {
                Self {
                    $( $field: Setting::or(self.$field, fallback.$field), )*
                }
            }
        }
    };
}

/// One setting from one source, which another source can fill in.
trait Setting {
    fn or(self, fallback: Self) -> Self;
}

impl<T> Setting for Option<T> {
    fn or(self, fallback: Self) -> Self {
        Option::or(self, fallback)
    }
}

/// A switch is on when any source turns it on.
impl Setting for bool {
    fn or(self, fallback: Self) -> Self {
        self || fallback
    }
}

settings! {
    /// Every setting: the flags shared by `serve` and `demo`, each also read from an environment
    /// variable, and the keys of the config file (the long flag names with `_`).
    #[derive(Debug, Clone, Default, Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct ConfigArgs {
        /// TOML file with any of the settings below (keys as the long flag names, `-` as `_`).
        #[arg(long, env = "INFERSCOPE_CONFIG")]
        #[serde(skip)] // Not a key of the file: a file does not name another.
        pub config: Option<PathBuf>,
        /// Address the gRPC server listens on [default: 127.0.0.1:7717].
        #[arg(long, env = "INFERSCOPE_LISTEN")]
        pub listen: Option<SocketAddr>,
        /// Shard workers; records of one (model, version) always go to the same shard
        /// [default: cores].
        #[arg(long, env = "INFERSCOPE_SHARDS")]
        pub shards: Option<usize>,
        /// Batches queued per shard before new batches are answered UNAVAILABLE [default: 64].
        #[arg(long, env = "INFERSCOPE_SHARD_QUEUE_BATCHES")]
        pub shard_queue_batches: Option<usize>,
        /// Records per batch; a larger batch is refused with INVALID_ARGUMENT [default: 10000].
        #[arg(long, env = "INFERSCOPE_MAX_BATCH_RECORDS")]
        pub max_batch_records: Option<usize>,
        /// Largest gRPC message in bytes [default: 16777216].
        #[arg(long, env = "INFERSCOPE_MAX_MESSAGE_BYTES")]
        pub max_message_bytes: Option<usize>,
        /// Bytes of batches (as encoded on the wire) and acks in flight across every stream and
        /// call; a batch that does not fit is refused with RESOURCE_EXHAUSTED [default: 67108864].
        #[arg(long, env = "INFERSCOPE_MAX_INGEST_BYTES")]
        pub max_ingest_bytes: Option<usize>,
        /// Seconds a stream may leave an ack unread before it is ended [default: 30].
        #[arg(long, env = "INFERSCOPE_ACK_TIMEOUT_SECONDS")]
        pub ack_timeout_seconds: Option<f64>,
        /// Connections open at once; one more is closed at once and counted [default: 256].
        #[arg(long, env = "INFERSCOPE_MAX_CONNECTIONS")]
        pub max_connections: Option<usize>,
        /// Seconds after which a connection is asked to close (its client reconnects), so that
        /// idle and silent connections do not stay forever; it gets 30 s more to finish
        /// [default: 3600].
        #[arg(long, env = "INFERSCOPE_MAX_CONNECTION_AGE_SECONDS")]
        pub max_connection_age_seconds: Option<f64>,
        /// (model, version) pairs tracked before new ones fold into `__other__` [default: 64].
        #[arg(long, env = "INFERSCOPE_MAX_MODELS")]
        pub max_models: Option<usize>,
        /// Seconds without records or labels after which a model version is forgotten
        /// [default: 3600].
        #[arg(long, env = "INFERSCOPE_MODEL_IDLE_EXPIRY_SECONDS")]
        pub model_idle_expiry_seconds: Option<f64>,
        /// Distinct error types per model before new ones fold into `_OTHER` [default: 32].
        #[arg(long, env = "INFERSCOPE_MAX_ERROR_TYPES")]
        pub max_error_types: Option<usize>,
        /// Quality windows, comma-separated durations such as `5m,1h` [default: 5m,1h]. Since-start
        /// values are always exported too (window="all").
        #[arg(long, env = "INFERSCOPE_WINDOWS")]
        pub windows: Option<String>,
        /// Buckets per window: a window slides in steps of its length / buckets [default: 10].
        #[arg(long, env = "INFERSCOPE_WINDOW_BUCKETS")]
        pub window_buckets: Option<usize>,
        /// Classes per model with their own series; further classes fold into `__other__`
        /// [default: 32].
        #[arg(long, env = "INFERSCOPE_MAX_CLASSES")]
        pub max_classes: Option<usize>,
        /// Predictions waiting for a delayed label, in total, split evenly across shards; past it
        /// the oldest is dropped unlabelled and counted. 0 turns the delayed-label join off (inline
        /// labels still count) [default: 200000].
        #[arg(long, env = "INFERSCOPE_MAX_PENDING_LABELS")]
        pub max_pending_labels: Option<usize>,
        /// Seconds a prediction waits for its delayed label [default: 86400].
        #[arg(long, env = "INFERSCOPE_LABEL_TTL_SECONDS")]
        pub label_ttl_seconds: Option<f64>,
        /// Labels held waiting for a prediction that has not arrived yet, in total
        /// [default: 10000].
        #[arg(long, env = "INFERSCOPE_MAX_EARLY_LABELS")]
        pub max_early_labels: Option<usize>,
        /// Seconds such an early label is held [default: 60].
        #[arg(long, env = "INFERSCOPE_EARLY_LABEL_HOLD_SECONDS")]
        pub early_label_hold_seconds: Option<f64>,
        /// Windows with at most this many scored pairs get exact ROC AUC and average precision;
        /// larger ones a histogram estimate with its error bound [default: 2000].
        #[arg(long, env = "INFERSCOPE_EXACT_AUC_MAX_PAIRS")]
        pub exact_auc_max_pairs: Option<usize>,
        /// Directory of reference profiles (`*.json`, from `inferscope profile`); files added,
        /// changed or removed are picked up without a restart.
        #[arg(long, env = "INFERSCOPE_PROFILES_DIR")]
        pub profiles_dir: Option<PathBuf>,
        /// Directory where declarations and live-captured reference profiles are saved, so that
        /// a restarted sidecar takes them back (a volume; created if missing) [default: none,
        /// nothing survives a restart].
        #[arg(long, env = "INFERSCOPE_STATE_DIR")]
        pub state_dir: Option<PathBuf>,
        /// Where a fleet of sidecars keeps the predictions that wait for delayed labels, so
        /// that a label reaching any sidecar joins its prediction: `redis://[user:password@]host:port/db`
        /// or `rediss://…` (TLS) [default: none, each sidecar in its own memory].
        #[arg(long, env = "INFERSCOPE_LABEL_STORE")]
        pub label_store: Option<String>,
        /// Milliseconds a label batch waits for the label store's answer before its labels take
        /// the in-memory path; also the store's write timeout [default: 200].
        #[arg(long, env = "INFERSCOPE_LABEL_STORE_TIMEOUT_MS")]
        pub label_store_timeout_ms: Option<u64>,
        /// File holding the label store's password (a mounted Secret), used instead of a
        /// password in --label-store's URL; the user, for a Redis ACL, stays the URL's.
        #[arg(long, env = "INFERSCOPE_LABEL_STORE_PASSWORD_FILE")]
        pub label_store_password_file: Option<PathBuf>,
        /// Seconds between looks at the profiles directory [default: 10].
        #[arg(long, env = "INFERSCOPE_PROFILES_POLL_SECONDS")]
        pub profiles_poll_seconds: Option<f64>,
        /// Records of a model version captured into its reference profile when none is loaded; 0
        /// turns live capture off [default: 2000].
        #[arg(long, env = "INFERSCOPE_REFERENCE_RECORDS")]
        pub reference_records: Option<usize>,
        /// Feature names tracked per model version (for drift and feature anomalies; the
        /// prediction comes on top): a live capture takes the first ones it meets, a loaded
        /// profile its first ones; further names are counted and logged, not tracked
        /// [default: 256].
        #[arg(long, env = "INFERSCOPE_MAX_FEATURES_PER_MODEL")]
        pub max_features_per_model: Option<usize>,
        /// Windows with at most this many values of a feature get exact KS and Wasserstein (against
        /// a complete reference sample) [default: 1000].
        #[arg(long, env = "INFERSCOPE_EXACT_DRIFT_MAX_VALUES")]
        pub exact_drift_max_values: Option<usize>,
        /// PSI at or above which a numeric feature has drifted [default: 0.2].
        #[arg(long, env = "INFERSCOPE_DRIFT_PSI_THRESHOLD")]
        pub drift_psi_threshold: Option<f64>,
        /// Jensen–Shannon distance at or above which a categorical feature has drifted
        /// [default: 0.1].
        #[arg(long, env = "INFERSCOPE_DRIFT_JS_THRESHOLD")]
        pub drift_js_threshold: Option<f64>,
        /// Share of drifted features at or above which a model's dataset has drifted
        /// [default: 0.5].
        #[arg(long, env = "INFERSCOPE_DATASET_DRIFT_SHARE")]
        pub dataset_drift_share: Option<f64>,
        /// Seconds allowed from SIGTERM to exit [default: 20].
        #[arg(long, env = "INFERSCOPE_SHUTDOWN_BUDGET_SECONDS")]
        pub shutdown_budget_seconds: Option<f64>,
        /// Decode and acknowledge only: no validation, no metrics. For measuring the ingest limit.
        #[arg(long, env = "INFERSCOPE_NULL_SINK")]
        pub null_sink: bool,
        /// OTLP endpoint for metrics and traces [env: OTEL_EXPORTER_OTLP_ENDPOINT; default:
        /// http://localhost:4318 for http/protobuf, http://localhost:4317 for grpc].
        #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
        pub otlp_endpoint: Option<String>,
        /// OTLP protocol [env: OTEL_EXPORTER_OTLP_PROTOCOL; default: http/protobuf].
        #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL")]
        pub otlp_protocol: Option<OtlpProtocol>,
        /// Extra OTLP request headers, `key=value,key2=value2` [env: OTEL_EXPORTER_OTLP_HEADERS].
        #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS")]
        pub otlp_headers: Option<String>,
        /// Metric export interval in milliseconds
        /// [env: OTEL_METRIC_EXPORT_INTERVAL; default: 15000].
        #[arg(long, env = "OTEL_METRIC_EXPORT_INTERVAL")]
        pub metric_export_interval: Option<u64>,
        /// Per-request OTLP timeout in milliseconds
        /// [env: OTEL_EXPORTER_OTLP_TIMEOUT; default: 10000].
        #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT")]
        pub otlp_timeout: Option<u64>,
        /// Sampler for successful records: always_on, always_off, traceidratio,
        /// parentbased_always_on, parentbased_always_off, parentbased_traceidratio
        /// [env: OTEL_TRACES_SAMPLER; default: traceidratio]. Error records are always traced.
        #[arg(long, env = "OTEL_TRACES_SAMPLER")]
        pub traces_sampler: Option<String>,
        /// Ratio for the *traceidratio samplers [env: OTEL_TRACES_SAMPLER_ARG; default: 0.01].
        #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
        pub traces_sampler_arg: Option<f64>,
        /// Do not export metrics (traces still go out).
        #[arg(long, env = "INFERSCOPE_NO_METRICS")]
        pub no_metrics: bool,
        /// Do not export traces.
        #[arg(long, env = "INFERSCOPE_NO_TRACES")]
        pub no_traces: bool,
        /// OTLP endpoint for metrics, used as-is (a full URL: for http/protobuf with its path,
        /// e.g. http://collector:4318/v1/metrics); wins over --otlp-endpoint
        /// [env: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT].
        #[arg(long, env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")]
        pub otlp_metrics_endpoint: Option<String>,
        /// OTLP endpoint for traces, used as-is; wins over --otlp-endpoint
        /// [env: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT].
        #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
        pub otlp_traces_endpoint: Option<String>,
        /// PEM bundle of the CA certificates that verify the OTLP backend's TLS certificate
        /// (https:// endpoints; without it the system's roots) [env: OTEL_EXPORTER_OTLP_CERTIFICATE].
        #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
        pub otlp_certificate: Option<PathBuf>,
        /// As --otlp-certificate, for metrics only [env: OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE].
        #[arg(long, env = "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE")]
        pub otlp_metrics_certificate: Option<PathBuf>,
        /// As --otlp-certificate, for traces only [env: OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE].
        #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")]
        pub otlp_traces_certificate: Option<PathBuf>,
        /// PEM certificate chain ingest serves TLS with (with --tls-key; without both, ingest is
        /// plaintext).
        #[arg(long, env = "INFERSCOPE_TLS_CERT")]
        pub tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, env = "INFERSCOPE_TLS_KEY")]
        pub tls_key: Option<PathBuf>,
        /// PEM bundle of the CA certificates that sign client certificates: every client must
        /// present one (mutual TLS). Needs --tls-cert.
        #[arg(long, env = "INFERSCOPE_TLS_CLIENT_CA")]
        pub tls_client_ca: Option<PathBuf>,
        /// File holding a bearer token: every ingest call must carry `authorization: Bearer
        /// <token>` or is answered UNAUTHENTICATED (health and reflection stay open).
        #[arg(long, env = "INFERSCOPE_AUTH_TOKEN_FILE")]
        pub auth_token_file: Option<PathBuf>,
        /// Log format: text (plain when not written to a terminal) or json, one object a line
        /// [default: text].
        #[arg(long, env = "INFERSCOPE_LOG_FORMAT")]
        pub log_format: Option<LogFormat>,
        /// Anomaly detectors: defaults and per-model sections (file only).
        #[arg(skip)]
        pub anomaly: Option<crate::anomaly::settings::AnomalyFile>,
        /// Address of an OTLP/gRPC traces receiver (`TraceService/Export`, conventionally
        /// 127.0.0.1:4317): GenAI spans become generation records, every span is forwarded to
        /// the traces endpoint [default: off].
        #[arg(long, env = "INFERSCOPE_OTLP_RECEIVE_GRPC")]
        pub otlp_receive_grpc: Option<SocketAddr>,
        /// Address of an OTLP/HTTP traces receiver (`POST /v1/traces`, protobuf, conventionally
        /// 127.0.0.1:4318), as --otlp-receive-grpc [default: off].
        #[arg(long, env = "INFERSCOPE_OTLP_RECEIVE_HTTP")]
        pub otlp_receive_http: Option<SocketAddr>,
        /// No-code capture: `[capture.otlp]` (file only).
        #[arg(skip)]
        pub capture: Option<crate::capture::CaptureFile>,
        /// Address of the Open Inference Protocol tap: a gRPC `inference.GRPCInferenceService`
        /// forwarding every call to --tap-upstream and recording `ModelInfer` calls (README:
        /// "Open Inference Protocol tap") [default: off].
        #[arg(long, env = "INFERSCOPE_TAP_LISTEN")]
        pub tap_listen: Option<SocketAddr>,
        /// The model server's OIP gRPC endpoint the tap forwards to, e.g. http://127.0.0.1:8081.
        #[arg(long, env = "INFERSCOPE_TAP_UPSTREAM")]
        pub tap_upstream: Option<String>,
        /// Address of the tap's REST/JSON side: an HTTP/1.1 proxy forwarding every request to
        /// --tap-http-upstream and recording `POST /v2/models/{name}/infer` [default: off].
        #[arg(long, env = "INFERSCOPE_TAP_HTTP_LISTEN")]
        pub tap_http_listen: Option<SocketAddr>,
        /// The model server's OIP REST endpoint the tap's REST side forwards to, e.g.
        /// http://127.0.0.1:8080.
        #[arg(long, env = "INFERSCOPE_TAP_HTTP_UPSTREAM")]
        pub tap_http_upstream: Option<String>,
        /// The tap's queue and per-model mappings: `[tap]`, `[tap.models.<name>]` (file only).
        #[arg(skip)]
        pub tap: Option<crate::tap::TapFile>,
        /// Address of the KServe payload-logger endpoint: CloudEvents over HTTP, any path
        /// (README: "KServe's payload logger") [default: off].
        #[arg(long, env = "INFERSCOPE_CLOUDEVENTS_LISTEN")]
        pub cloudevents_listen: Option<SocketAddr>,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
pub enum OtlpProtocol {
    #[value(name = "grpc")]
    #[serde(rename = "grpc")]
    Grpc,
    #[value(name = "http/protobuf")]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured only when written to a terminal.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Which successful records get a span (error records always do).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Share of records sampled by trace id when the parent does not decide.
    pub ratio: f64,
    /// Follow the `sampled` flag of the caller's `traceparent` when there is one.
    pub parent_based: bool,
}

/// [`DEFAULT_TRACES_SAMPLER`] at [`DEFAULT_TRACE_SAMPLE_RATIO`].
impl Default for Sampling {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_TRACE_SAMPLE_RATIO,
            parent_based: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    /// The generic endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`), without a trailing `/`: the base
    /// that [`signal_endpoint`](Self::signal_endpoint) appends the signal's path to.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Whether the endpoint came from configuration (false: the built-in local default).
    pub endpoint_configured: bool,
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`: used as-is, wins over `endpoint`.
    pub metrics_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: used as-is, wins over `endpoint`.
    pub traces_endpoint: Option<String>,
    /// CA bundle that verifies the metrics backend (`OTEL_EXPORTER_OTLP_[METRICS_]CERTIFICATE`).
    pub metrics_ca: Option<PemFile>,
    /// CA bundle that verifies the traces backend (`OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`).
    pub traces_ca: Option<PemFile>,
    pub headers: Vec<(String, String)>,
    pub metric_interval: Duration,
    pub timeout: Duration,
    pub metrics: bool,
    pub traces: bool,
}

/// An OTLP signal, for its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Metrics,
    Traces,
}

impl ExportConfig {
    /// Where `signal` goes, as the OpenTelemetry specification resolves it: the signal's own
    /// endpoint as-is when set; otherwise the generic one, with `/v1/metrics` or `/v1/traces`
    /// appended for OTLP/HTTP (gRPC addresses services, not paths).
    pub fn signal_endpoint(&self, signal: Signal) -> String {
        let (own, path) = match signal {
            Signal::Metrics => (&self.metrics_endpoint, "/v1/metrics"),
            Signal::Traces => (&self.traces_endpoint, "/v1/traces"),
        };
        match (own, self.protocol) {
            (Some(own), _) => own.clone(),
            (None, OtlpProtocol::Grpc) => self.endpoint.clone(),
            (None, OtlpProtocol::HttpProtobuf) => format!("{}{path}", self.endpoint),
        }
    }

    /// The CA bundle that verifies `signal`'s backend, if one is configured.
    pub fn signal_ca(&self, signal: Signal) -> Option<&PemFile> {
        match signal {
            Signal::Metrics => self.metrics_ca.as_ref(),
            Signal::Traces => self.traces_ca.as_ref(),
        }
    }
}

/// Validated settings of one sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub shards: usize,
    pub shard_queue_batches: usize,
    pub max_message_bytes: usize,
    pub max_inflight_batches: usize,
    /// Bytes of batches and acks in flight (`crate::ingest::MemoryBudget`).
    pub max_ingest_bytes: usize,
    /// How long a stream may leave an ack unread before it is ended.
    pub ack_timeout: Duration,
    /// Connections open at once (`crate::listener`).
    pub max_connections: usize,
    /// After this a connection is asked to close; `connection_age_grace` later it is closed.
    pub max_connection_age: Duration,
    /// [`CONNECTION_AGE_GRACE`], or the age itself when that is shorter.
    pub connection_age_grace: Duration,
    pub max_models: usize,
    pub model_idle_expiry: Duration,
    pub max_error_types: usize,
    /// Quality settings, with the pending and early-label capacities for the whole sidecar
    /// (each shard gets its share).
    pub quality: crate::quality::QualitySettings,
    pub drift: crate::drift::model::DriftSettings,
    pub profiles_dir: Option<PathBuf>,
    pub profiles_poll: Duration,
    /// `--state-dir`: where declarations and captured profiles outlive the process.
    pub state_dir: Option<PathBuf>,
    /// `--label-store`: the fleet's Redis URL.
    pub label_store: Option<String>,
    pub label_store_timeout: Duration,
    /// `--label-store-password-file`: replaces the URL's password.
    pub label_store_password: Option<crate::label_store::Password>,
    /// Anomaly detectors, per model name (`[anomaly]` and `[anomaly.models."<name>"]`).
    pub anomaly: crate::anomaly::AnomalyConfig,
    /// OTLP traces receivers (`--otlp-receive-grpc`, `--otlp-receive-http`, `[capture.otlp]`).
    pub otlp_receive: crate::capture::otlp::OtlpReceive,
    /// KServe's payload logger: `--cloudevents-listen` and `[capture.kserve]`.
    pub kserve: crate::capture::kserve::KserveSettings,
    pub span_queue: usize,
    pub shutdown_budget: Duration,
    pub null_sink: bool,
    pub limits: crate::validation::Limits,
    pub sampling: Sampling,
    pub export: ExportConfig,
    /// TLS (and mTLS) of the ingest server; `None` serves plaintext.
    pub tls: Option<ServerTls>,
    /// The bearer token every ingest call must carry; `None` asks for none.
    pub auth_token: Option<AuthToken>,
    pub log_format: LogFormat,
    /// The Open Inference Protocol tap: `--tap-listen`, `--tap-upstream` and `[tap]`.
    pub tap: crate::tap::TapSettings,
}

/// A setting that cannot be used, with the setting's name and what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    ParseFile {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("config file: {0}")]
    Anomaly(#[from] crate::anomaly::settings::AnomalySettingError),
    #[error("cannot read {setting}={}: {source}", .path.display())]
    File {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid setting {setting}={value}: {fix}")]
    Invalid {
        setting: &'static str,
        value: String,
        fix: &'static str,
    },
    /// More than one of the above, all found in one pass over the settings.
    #[error("{} invalid settings:{}", .0.len(), one_a_line(.0))]
    Several(Vec<ConfigError>),
}

fn invalid(setting: &'static str, value: impl ToString, fix: &'static str) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_string(),
        fix,
    }
}

fn one_a_line(errors: &[ConfigError]) -> String {
    errors.iter().map(|e| format!("\n  {e}")).collect()
}

/// The invalid settings found so far, so that start-up reports all of them at once instead of
/// one per attempt.
#[derive(Default)]
struct InvalidSettings(Vec<ConfigError>);

impl InvalidSettings {
    /// The checked value, or, if the setting is invalid, a placeholder: the error is kept and
    /// the remaining settings are still checked, but [`finish`](Self::finish) then fails, so a
    /// placeholder never reaches a [`Config`].
    fn check<T: Default>(&mut self, checked: Result<T, ConfigError>) -> T {
        checked.unwrap_or_else(|error| {
            self.report(error);
            T::default()
        })
    }

    fn report(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    /// One error naming every invalid setting (a single one as itself), if there was any.
    fn finish(mut self) -> Result<(), ConfigError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(ConfigError::Several(self.0)),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::resolve(ConfigArgs::default()).expect("defaults are valid")
    }
}

impl Config {
    /// Merges flags/environment (already in `args`) over the config file and the defaults, and
    /// checks every value. An unreadable file fails at once; invalid settings are reported
    /// together.
    pub fn resolve(args: ConfigArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ConfigArgs::default(),
        };
        let given = args.or(file);
        let mut bad = InvalidSettings::default();

        let listen = given
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = bad.check(positive("--shards", given.shards.unwrap_or(cores)));
        let shard_queue_batches = bad.check(positive(
            "--shard-queue-batches",
            given
                .shard_queue_batches
                .unwrap_or(DEFAULT_SHARD_QUEUE_BATCHES),
        ));
        let max_batch_records = bad.check(positive(
            "--max-batch-records",
            given.max_batch_records.unwrap_or(DEFAULT_MAX_BATCH_RECORDS),
        ));
        let max_message_bytes = given.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes < 1024 {
            bad.report(invalid(
                "--max-message-bytes",
                max_message_bytes,
                "use at least 1024 bytes",
            ));
        }
        let max_ingest_bytes = given.max_ingest_bytes.unwrap_or(DEFAULT_MAX_INGEST_BYTES);
        if max_ingest_bytes < max_message_bytes {
            bad.report(invalid(
                "--max-ingest-bytes",
                max_ingest_bytes,
                "use at least --max-message-bytes, or no batch of the largest size could be taken",
            ));
        }
        let ack_timeout = bad.check(seconds(
            "--ack-timeout-seconds",
            given.ack_timeout_seconds,
            DEFAULT_ACK_TIMEOUT,
        ));
        let max_connections = bad.check(positive(
            "--max-connections",
            given
                .max_connections
                .unwrap_or(crate::listener::DEFAULT_MAX_CONNECTIONS),
        ));
        let max_connection_age = bad.check(seconds(
            "--max-connection-age-seconds",
            given.max_connection_age_seconds,
            DEFAULT_MAX_CONNECTION_AGE,
        ));
        let max_models = bad.check(positive(
            "--max-models",
            given.max_models.unwrap_or(DEFAULT_MAX_MODELS),
        ));
        let model_idle_expiry = bad.check(seconds(
            "--model-idle-expiry-seconds",
            given.model_idle_expiry_seconds,
            DEFAULT_MODEL_IDLE_EXPIRY,
        ));
        let max_error_types = bad.check(positive(
            "--max-error-types",
            given.max_error_types.unwrap_or(DEFAULT_MAX_ERROR_TYPES),
        ));

        let window_buckets = bad.check(positive(
            "--window-buckets",
            given
                .window_buckets
                .unwrap_or(crate::quality::DEFAULT_WINDOW_BUCKETS),
        ));
        let windows: Vec<_> = bad
            .check(parse_windows(given.windows.as_deref()))
            .into_iter()
            .map(|length| crate::windows::WindowSpec::new(length, window_buckets))
            .collect();
        let quality = crate::quality::QualitySettings {
            windows: windows.clone(),
            max_classes: bad.check(positive(
                "--max-classes",
                given
                    .max_classes
                    .unwrap_or(crate::quality::DEFAULT_MAX_CLASSES),
            )),
            exact_auc_pairs: given
                .exact_auc_max_pairs
                .unwrap_or(crate::quality::DEFAULT_EXACT_AUC_PAIRS),
            max_pending: given
                .max_pending_labels
                .unwrap_or(crate::quality::DEFAULT_MAX_PENDING),
            label_ttl: bad.check(seconds(
                "--label-ttl-seconds",
                given.label_ttl_seconds,
                crate::quality::DEFAULT_LABEL_TTL,
            )),
            max_early_labels: given
                .max_early_labels
                .unwrap_or(crate::quality::DEFAULT_MAX_EARLY_LABELS),
            early_label_hold: bad.check(seconds(
                "--early-label-hold-seconds",
                given.early_label_hold_seconds,
                crate::quality::DEFAULT_EARLY_LABEL_HOLD,
            )),
            // Set by the server when `--label-store` gives a store.
            shared_store: false,
        };
        let drift = crate::drift::model::DriftSettings {
            windows,
            exact_values: given
                .exact_drift_max_values
                .unwrap_or(crate::drift::model::DEFAULT_EXACT_DRIFT_VALUES),
            reference_records: given
                .reference_records
                .unwrap_or(crate::drift::model::DEFAULT_REFERENCE_RECORDS),
            psi_threshold: bad.check(above_zero(
                "--drift-psi-threshold",
                given.drift_psi_threshold,
                crate::drift::model::DEFAULT_PSI_THRESHOLD,
            )),
            js_threshold: bad.check(above_zero(
                "--drift-js-threshold",
                given.drift_js_threshold,
                crate::drift::model::DEFAULT_JS_THRESHOLD,
            )),
            dataset_drift_share: bad.check(above_zero(
                "--dataset-drift-share",
                given.dataset_drift_share,
                crate::drift::model::DEFAULT_DATASET_DRIFT_SHARE,
            )),
            max_features: bad.check(positive(
                "--max-features-per-model",
                given
                    .max_features_per_model
                    .unwrap_or(crate::drift::model::DEFAULT_MAX_FEATURES_PER_MODEL),
            )),
        };
        let profiles_dir = bad.check(existing_dir("--profiles-dir", given.profiles_dir));
        let store_given = given.label_store.is_some();
        let label_store = bad.check(match given.label_store {
            Some(url) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => {
                Err(invalid(
                    "--label-store",
                    crate::label_store::redact(&url),
                    "give a redis:// or rediss:// URL",
                ))
            }
            url => Ok(url),
        });
        let label_store_password = bad.check(match given.label_store_password_file {
            Some(path) if !store_given => Err(invalid(
                "INFERSCOPE_LABEL_STORE_PASSWORD_FILE (--label-store-password-file)",
                path.display(),
                "a password needs a label store: give --label-store too",
            )),
            path => crate::label_store::Password::read(path),
        });
        let label_store_timeout = bad.check(match given.label_store_timeout_ms {
            None => Ok(Duration::from_millis(200)),
            Some(ms) if (1..=60_000).contains(&ms) => Ok(Duration::from_millis(ms)),
            Some(ms) => Err(invalid(
                "--label-store-timeout-ms",
                ms,
                "use 1 to 60000 milliseconds",
            )),
        });
        let profiles_poll = bad.check(seconds(
            "--profiles-poll-seconds",
            given.profiles_poll_seconds,
            DEFAULT_PROFILES_POLL,
        ));
        let shutdown_budget = bad.check(seconds(
            "--shutdown-budget-seconds",
            given.shutdown_budget_seconds,
            DEFAULT_SHUTDOWN_BUDGET,
        ));

        let protocol = given.otlp_protocol.unwrap_or(DEFAULT_OTLP_PROTOCOL);
        let endpoint_configured = given.otlp_endpoint.is_some();
        let endpoint = bad.check(otlp_endpoint(given.otlp_endpoint.as_deref(), protocol));
        let headers = bad.check(parse_headers(given.otlp_headers.as_deref()));
        let metric_interval = Duration::from_millis(
            bad.check(positive(
                "OTEL_METRIC_EXPORT_INTERVAL (--metric-export-interval)",
                given
                    .metric_export_interval
                    .unwrap_or(DEFAULT_METRIC_EXPORT_INTERVAL.as_millis() as u64),
            )),
        );
        let timeout = Duration::from_millis(
            bad.check(positive(
                "OTEL_EXPORTER_OTLP_TIMEOUT (--otlp-timeout)",
                given
                    .otlp_timeout
                    .unwrap_or(DEFAULT_EXPORT_TIMEOUT.as_millis() as u64),
            )),
        );
        let metrics_endpoint = bad.check(signal_endpoint(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT (--otlp-metrics-endpoint)",
            given.otlp_metrics_endpoint,
        ));
        let traces_endpoint = bad.check(signal_endpoint(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (--otlp-traces-endpoint)",
            given.otlp_traces_endpoint,
        ));
        let ca = bad.check(optional_pem(
            "OTEL_EXPORTER_OTLP_CERTIFICATE (--otlp-certificate)",
            given.otlp_certificate,
        ));
        let metrics_ca = bad
            .check(optional_pem(
                "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE (--otlp-metrics-certificate)",
                given.otlp_metrics_certificate,
            ))
            .or_else(|| ca.clone());
        let traces_ca = bad
            .check(optional_pem(
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE (--otlp-traces-certificate)",
                given.otlp_traces_certificate,
            ))
            .or(ca);
        let tls = bad.check(server_tls(
            given.tls_cert,
            given.tls_key,
            given.tls_client_ca,
        ));
        let auth_token = bad.check(AuthToken::read(given.auth_token_file));
        let ratio = bad.check(sampler_ratio(given.traces_sampler_arg));
        let sampling = bad.check(parse_sampler(given.traces_sampler.as_deref(), ratio));

        let anomaly = bad.check(
            given
                .anomaly
                .unwrap_or_default()
                .resolve()
                .map_err(ConfigError::from),
        );

        let kserve = bad.check(kserve_settings(
            given.cloudevents_listen,
            given.capture.as_ref().and_then(|c| c.kserve.clone()),
        ));

        let mapping = given.capture.and_then(|c| c.otlp).unwrap_or_default();
        if mapping.model_attributes.is_empty() {
            bad.report(invalid(
                "[capture.otlp] model_attributes",
                "[]",
                "name at least one attribute, e.g. [\"gen_ai.request.model\", \"service.name\"]",
            ));
        }
        let tap = bad.check(tap_settings(
            (given.tap_listen, given.tap_upstream),
            (given.tap_http_listen, given.tap_http_upstream),
            given.tap.unwrap_or_default(),
        ));
        let otlp_receive = crate::capture::otlp::OtlpReceive {
            grpc: given.otlp_receive_grpc,
            http: given.otlp_receive_http,
            mapping,
        };

        bad.finish()?;
        Ok(Config {
            listen,
            shards,
            shard_queue_batches,
            max_message_bytes,
            max_inflight_batches: DEFAULT_MAX_INFLIGHT_BATCHES,
            max_ingest_bytes,
            ack_timeout,
            max_connections,
            max_connection_age,
            connection_age_grace: CONNECTION_AGE_GRACE.min(max_connection_age),
            max_models,
            model_idle_expiry,
            max_error_types,
            quality,
            drift,
            profiles_dir,
            profiles_poll,
            state_dir: given.state_dir,
            label_store,
            label_store_timeout,
            label_store_password,
            anomaly,
            otlp_receive,
            kserve,
            span_queue: DEFAULT_SPAN_QUEUE,
            shutdown_budget,
            null_sink: given.null_sink,
            limits: crate::validation::Limits {
                max_batch_records,
                ..Default::default()
            },
            sampling,
            export: ExportConfig {
                endpoint,
                protocol,
                endpoint_configured,
                metrics_endpoint,
                traces_endpoint,
                metrics_ca,
                traces_ca,
                headers,
                metric_interval,
                timeout,
                metrics: !given.no_metrics,
                traces: !given.no_traces,
            },
            tls,
            auth_token,
            log_format: given.log_format.unwrap_or_default(),
            tap,
        })
    }
}

/// `--cloudevents-listen` and `[capture.kserve]`, checked: each model's mapping must make a
/// declaration that gRPC would accept.
fn kserve_settings(
    listen: Option<SocketAddr>,
    file: Option<crate::capture::kserve::KserveFile>,
) -> Result<crate::capture::kserve::KserveSettings, ConfigError> {
    use crate::capture::kserve::{
        KserveSettings, DEFAULT_JOIN_CAPACITY, DEFAULT_JOIN_TTL, DEFAULT_MODEL_VERSION,
    };
    let file = file.unwrap_or_default();
    let join_capacity = positive(
        "capture.kserve.join_capacity",
        file.join_capacity.unwrap_or(DEFAULT_JOIN_CAPACITY),
    )?;
    let join_ttl = seconds(
        "capture.kserve.join_ttl_seconds",
        file.join_ttl_seconds,
        DEFAULT_JOIN_TTL,
    )?;
    for (model, mapping) in &file.models {
        let version = mapping.version.as_deref().unwrap_or(DEFAULT_MODEL_VERSION);
        if let Some(declaration) = mapping.declaration(model, version) {
            let limits = crate::validation::Limits::default();
            crate::validation::check_declaration(&declaration, &limits).map_err(|e| {
                invalid(
                    "capture.kserve.models",
                    format!("{model}: {e}"),
                    "give a task and class names that a gRPC ModelDeclaration could declare",
                )
            })?;
        }
    }
    Ok(KserveSettings {
        listen,
        join_capacity,
        join_ttl,
        models: file.models,
    })
}

/// `--tap-listen`, `--tap-upstream`, `--tap-http-listen`, `--tap-http-upstream` and `[tap]`,
/// checked: each side's two addresses go together, and each model's mapping must make a
/// declaration that gRPC would accept.
fn tap_settings(
    (listen, upstream): (Option<SocketAddr>, Option<String>),
    (http_listen, http_upstream): (Option<SocketAddr>, Option<String>),
    file: crate::tap::TapFile,
) -> Result<crate::tap::TapSettings, ConfigError> {
    // (listen, upstream, their flags, and what to say when one is missing or the URL is bad)
    let sides: [(_, _, &'static str, &'static str, [&'static str; 3]); 2] = [
        (
            &listen,
            &upstream,
            "--tap-listen",
            "--tap-upstream",
            [
                "the tap needs its model server too: give --tap-upstream (its gRPC URL)",
                "the tap needs its own address too: give --tap-listen",
                "give the model server's gRPC URL, e.g. http://127.0.0.1:8081",
            ],
        ),
        (
            &http_listen,
            &http_upstream,
            "--tap-http-listen",
            "--tap-http-upstream",
            [
                "the tap's REST side needs its model server too: give --tap-http-upstream (its \
                 REST URL)",
                "the tap's REST side needs its own address too: give --tap-http-listen",
                "give the model server's REST URL, e.g. http://127.0.0.1:8080",
            ],
        ),
    ];
    for (listen, upstream, listen_flag, upstream_flag, [no_upstream, no_listen, bad_url]) in sides {
        match (listen, upstream) {
            (Some(listen), None) => return Err(invalid(listen_flag, listen, no_upstream)),
            (None, Some(upstream)) => return Err(invalid(upstream_flag, upstream, no_listen)),
            _ => {}
        }
        if let Some(url) = upstream {
            let usable = url.parse::<tonic::codegen::http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            });
            if !usable {
                return Err(invalid(upstream_flag, url, bad_url));
            }
        }
    }
    let queue = positive("tap.queue", file.queue.unwrap_or(crate::tap::DEFAULT_QUEUE))?;
    for (model, mapping) in &file.models {
        if let Err(e) = mapping.check(model) {
            return Err(invalid(
                "tap.models",
                format!("{model}: {e}"),
                "give class names that a gRPC ModelDeclaration could declare (at least two, \
                 none twice; positive_class one of them)",
            ));
        }
    }
    let request_id_header = match file.request_id_header {
        Some(h) if h.parse::<tonic::codegen::http::HeaderName>().is_err() => {
            return Err(invalid(
                "tap.request_id_header",
                h,
                "give a header name, e.g. x-request-id",
            ))
        }
        h => h.map(|h| h.to_ascii_lowercase()),
    };
    Ok(crate::tap::TapSettings {
        listen,
        upstream,
        http_listen,
        http_upstream,
        queue,
        models: file.models,
        request_id_header,
        request_id_parameter: file.request_id_parameter,
        read_metadata: file.read_metadata.unwrap_or(true),
    })
}

/// The settings of the TOML file at `path`.
fn read_file(path: &Path) -> Result<ConfigArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

fn positive<T: Copy + PartialOrd + From<u8> + ToString>(
    setting: &'static str,
    value: T,
) -> Result<T, ConfigError> {
    if value < T::from(1) {
        return Err(invalid(setting, value, "use a whole number of at least 1"));
    }
    Ok(value)
}

fn above_zero(setting: &'static str, value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        Some(v) => Err(invalid(setting, v, "use a number above 0")),
    }
}

fn seconds(
    setting: &'static str,
    value: Option<f64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 && s <= 30.0 * 86_400.0 => {
            Ok(Duration::from_secs_f64(s))
        }
        Some(s) => Err(invalid(
            setting,
            s,
            "use a number of seconds above 0, at most 30 days",
        )),
    }
}

fn existing_dir(
    setting: &'static str,
    dir: Option<PathBuf>,
) -> Result<Option<PathBuf>, ConfigError> {
    match dir {
        Some(dir) if !dir.is_dir() => Err(invalid(
            setting,
            dir.display(),
            "give an existing directory of profile files",
        )),
        dir => Ok(dir),
    }
}

/// `--windows`: comma-separated durations, at most 8.
fn parse_windows(list: Option<&str>) -> Result<Vec<Duration>, ConfigError> {
    let Some(list) = list else {
        return Ok(crate::quality::DEFAULT_WINDOWS.to_vec());
    };
    let windows = list
        .split(',')
        .filter(|w| !w.trim().is_empty())
        .map(|w| {
            crate::windows::parse_duration(w).ok_or_else(|| {
                invalid(
                    "--windows",
                    list,
                    "give durations such as 30s, 5m, 1h or 1d, separated by commas",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if windows.len() > 8 {
        return Err(invalid("--windows", windows.len(), "use at most 8 windows"));
    }
    Ok(windows)
}

/// The endpoint without a trailing `/`, or the protocol's local default when none is configured.
fn otlp_endpoint(configured: Option<&str>, protocol: OtlpProtocol) -> Result<String, ConfigError> {
    match configured {
        Some(e) if e.starts_with("http://") || e.starts_with("https://") => {
            Ok(e.trim_end_matches('/').to_string())
        }
        Some(e) => Err(invalid(
            "OTEL_EXPORTER_OTLP_ENDPOINT (--otlp-endpoint)",
            e,
            "give a URL with its scheme, e.g. http://localhost:4318",
        )),
        None => Ok(match protocol {
            OtlpProtocol::Grpc => DEFAULT_OTLP_GRPC_ENDPOINT.into(),
            OtlpProtocol::HttpProtobuf => DEFAULT_OTLP_HTTP_ENDPOINT.into(),
        }),
    }
}

/// A signal's own endpoint (used as-is, so only its scheme is checked).
fn signal_endpoint(
    setting: &'static str,
    configured: Option<String>,
) -> Result<Option<String>, ConfigError> {
    match configured.filter(|e| !e.is_empty()) {
        Some(e) if e.starts_with("http://") || e.starts_with("https://") => Ok(Some(e)),
        Some(e) => Err(invalid(
            setting,
            e,
            "give a full URL with its scheme, e.g. http://localhost:4318/v1/metrics",
        )),
        None => Ok(None),
    }
}

/// The PEM file a setting names, read now so that a wrong path fails at start-up.
fn optional_pem(
    setting: &'static str,
    path: Option<PathBuf>,
) -> Result<Option<PemFile>, ConfigError> {
    path.map(|path| PemFile::read(setting, path)).transpose()
}

/// `--tls-cert`, `--tls-key` and `--tls-client-ca`: all or nothing of a server identity, and
/// client verification only on top of it.
fn server_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<ServerTls>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ServerTls {
            cert: PemFile::read("INFERSCOPE_TLS_CERT (--tls-cert)", cert)?,
            key: PemFile::read("INFERSCOPE_TLS_KEY (--tls-key)", key)?,
            client_ca: optional_pem("INFERSCOPE_TLS_CLIENT_CA (--tls-client-ca)", client_ca)?,
        })),
        (Some(cert), None) => Err(invalid(
            "INFERSCOPE_TLS_CERT (--tls-cert)",
            cert.display(),
            "give the certificate's private key too (--tls-key)",
        )),
        (None, Some(key)) => Err(invalid(
            "INFERSCOPE_TLS_KEY (--tls-key)",
            key.display(),
            "give the certificate too (--tls-cert)",
        )),
        (None, None) => match client_ca {
            Some(ca) => Err(invalid(
                "INFERSCOPE_TLS_CLIENT_CA (--tls-client-ca)",
                ca.display(),
                "client certificates need TLS: give --tls-cert and --tls-key too",
            )),
            None => Ok(None),
        },
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: comma-separated `key=value` pairs, values percent-decoded as the
/// specification asks for `%20`-style escapes.
fn parse_headers(raw: Option<&str>) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                invalid(
                    "OTEL_EXPORTER_OTLP_HEADERS (--otlp-headers)",
                    pair,
                    "write headers as key=value,key2=value2",
                )
            })?;
            Ok((
                key.trim().to_ascii_lowercase(),
                percent_decode(value.trim()),
            ))
        })
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            // Bytes, not a `&str` slice: a multi-byte character after `%` must not panic.
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `OTEL_TRACES_SAMPLER_ARG`: the ratio of the `*traceidratio` samplers.
fn sampler_ratio(arg: Option<f64>) -> Result<f64, ConfigError> {
    match arg {
        None => Ok(DEFAULT_TRACE_SAMPLE_RATIO),
        Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Some(r) => Err(invalid(
            "OTEL_TRACES_SAMPLER_ARG (--traces-sampler-arg)",
            r,
            "use a ratio between 0 and 1",
        )),
    }
}

fn parse_sampler(name: Option<&str>, ratio: f64) -> Result<Sampling, ConfigError> {
    let (ratio, parent_based) = match name.unwrap_or(DEFAULT_TRACES_SAMPLER) {
        "always_on" => (1.0, false),
        "always_off" => (0.0, false),
        "traceidratio" => (ratio, false),
        "parentbased_always_on" => (1.0, true),
        "parentbased_always_off" => (0.0, true),
        "parentbased_traceidratio" => (ratio, true),
        other => {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER (--traces-sampler)",
                other,
                "use always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            ))
        }
    };
    Ok(Sampling {
        ratio,
        parent_based,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_and_export_to_the_local_collector() {
        let config = Config::default();
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.export.endpoint, DEFAULT_OTLP_HTTP_ENDPOINT);
        assert!(!config.export.endpoint_configured);
        assert_eq!(config.sampling.ratio, DEFAULT_TRACE_SAMPLE_RATIO);
    }

    #[test]
    fn grpc_protocol_defaults_to_port_4317() {
        let args = ConfigArgs {
            otlp_protocol: Some(OtlpProtocol::Grpc),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(args).unwrap().export.endpoint,
            DEFAULT_OTLP_GRPC_ENDPOINT
        );
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let cases: Vec<(ConfigArgs, &str)> = vec![
            (
                ConfigArgs {
                    shards: Some(0),
                    ..Default::default()
                },
                "--shards",
            ),
            (
                ConfigArgs {
                    otlp_endpoint: Some("localhost:4317".into()),
                    ..Default::default()
                },
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                ConfigArgs {
                    traces_sampler: Some("sometimes".into()),
                    ..Default::default()
                },
                "OTEL_TRACES_SAMPLER",
            ),
            (
                ConfigArgs {
                    traces_sampler_arg: Some(1.5),
                    ..Default::default()
                },
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                ConfigArgs {
                    otlp_headers: Some("no-equals-sign".into()),
                    ..Default::default()
                },
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                ConfigArgs {
                    otlp_traces_endpoint: Some("tempo:4318/v1/traces".into()),
                    ..Default::default()
                },
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                ConfigArgs {
                    max_features_per_model: Some(0),
                    ..Default::default()
                },
                "--max-features-per-model",
            ),
            (
                ConfigArgs {
                    label_store_password_file: Some("/run/secrets/redis".into()),
                    ..Default::default()
                },
                "--label-store-password-file",
            ),
        ];
        for (args, setting) in cases {
            let message = Config::resolve(args).unwrap_err().to_string();
            assert!(message.contains(setting), "{message} should name {setting}");
        }
    }

    #[test]
    fn half_a_tap_names_the_missing_half() {
        let listen = ConfigArgs {
            tap_listen: Some("127.0.0.1:8001".parse().unwrap()),
            ..Default::default()
        };
        let message = Config::resolve(listen).unwrap_err().to_string();
        assert!(
            message.contains("127.0.0.1:8001") && message.contains("give --tap-upstream"),
            "{message}"
        );
        assert!(!message.contains("Some("), "{message}");
        let upstream = ConfigArgs {
            tap_upstream: Some("http://127.0.0.1:8081".into()),
            ..Default::default()
        };
        let message = Config::resolve(upstream).unwrap_err().to_string();
        assert!(message.contains("give --tap-listen"), "{message}");
    }

    #[test]
    fn half_a_rest_tap_and_a_bad_rest_upstream_are_named() {
        let listen = ConfigArgs {
            tap_http_listen: Some("127.0.0.1:9080".parse().unwrap()),
            ..Default::default()
        };
        let message = Config::resolve(listen).unwrap_err().to_string();
        assert!(message.contains("give --tap-http-upstream"), "{message}");
        let upstream = ConfigArgs {
            tap_http_upstream: Some("http://127.0.0.1:8080".into()),
            ..Default::default()
        };
        let message = Config::resolve(upstream).unwrap_err().to_string();
        assert!(message.contains("give --tap-http-listen"), "{message}");
        let bad = ConfigArgs {
            tap_http_listen: Some("127.0.0.1:9080".parse().unwrap()),
            tap_http_upstream: Some("127.0.0.1:8080".into()),
            ..Default::default()
        };
        let message = Config::resolve(bad).unwrap_err().to_string();
        assert!(message.contains("REST URL"), "{message}");
        // REST alone is a tap.
        let rest = ConfigArgs {
            tap_http_listen: Some("127.0.0.1:9080".parse().unwrap()),
            tap_http_upstream: Some("http://127.0.0.1:8080".into()),
            ..Default::default()
        };
        let tap = Config::resolve(rest).unwrap().tap;
        assert_eq!(tap.http_upstream.as_deref(), Some("http://127.0.0.1:8080"));
        assert!(tap.read_metadata);
    }

    #[test]
    fn the_feature_bound_is_a_setting_of_the_file_too() {
        assert_eq!(
            Config::default().drift.max_features,
            crate::drift::model::DEFAULT_MAX_FEATURES_PER_MODEL
        );
        let file: ConfigArgs = toml::from_str("max_features_per_model = 16").unwrap();
        assert_eq!(Config::resolve(file).unwrap().drift.max_features, 16);
    }

    #[test]
    fn every_bad_setting_is_named_in_one_error() {
        let err = Config::resolve(ConfigArgs {
            shards: Some(0),
            traces_sampler: Some("sometimes".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Several(errors) if errors.len() == 2),
            "{err:?}"
        );
        let message = err.to_string();
        for setting in [
            "--shards=0",
            "OTEL_TRACES_SAMPLER (--traces-sampler)=sometimes",
        ] {
            assert!(message.contains(setting), "{message} should name {setting}");
        }
    }

    fn export(args: ConfigArgs) -> ExportConfig {
        Config::resolve(args).unwrap().export
    }

    #[test]
    fn the_generic_endpoint_gets_each_signals_path_over_http() {
        let e = export(ConfigArgs {
            otlp_endpoint: Some("https://collector:4318/".into()),
            ..Default::default()
        });
        assert_eq!(
            e.signal_endpoint(Signal::Metrics),
            "https://collector:4318/v1/metrics"
        );
        assert_eq!(
            e.signal_endpoint(Signal::Traces),
            "https://collector:4318/v1/traces"
        );
        // Nothing configured: the local collector, each signal on its own path.
        let e = export(ConfigArgs::default());
        assert_eq!(
            e.signal_endpoint(Signal::Traces),
            "http://localhost:4318/v1/traces"
        );
    }

    #[test]
    fn a_signal_endpoint_wins_over_the_generic_one_and_is_used_as_is() {
        let e = export(ConfigArgs {
            otlp_endpoint: Some("http://collector:4318".into()),
            otlp_traces_endpoint: Some("http://tempo:4318/custom/traces".into()),
            ..Default::default()
        });
        assert_eq!(
            e.signal_endpoint(Signal::Traces),
            "http://tempo:4318/custom/traces"
        );
        assert_eq!(
            e.signal_endpoint(Signal::Metrics),
            "http://collector:4318/v1/metrics"
        );
        // Without the generic one too.
        let e = export(ConfigArgs {
            otlp_metrics_endpoint: Some("http://vm:8428/opentelemetry/v1/metrics".into()),
            ..Default::default()
        });
        assert_eq!(
            e.signal_endpoint(Signal::Metrics),
            "http://vm:8428/opentelemetry/v1/metrics"
        );
        assert_eq!(
            e.signal_endpoint(Signal::Traces),
            "http://localhost:4318/v1/traces"
        );
    }

    #[test]
    fn grpc_endpoints_get_no_path() {
        let e = export(ConfigArgs {
            otlp_protocol: Some(OtlpProtocol::Grpc),
            otlp_endpoint: Some("http://collector:4317".into()),
            otlp_metrics_endpoint: Some("https://metrics:4317".into()),
            ..Default::default()
        });
        assert_eq!(e.signal_endpoint(Signal::Traces), "http://collector:4317");
        assert_eq!(e.signal_endpoint(Signal::Metrics), "https://metrics:4317");
    }

    #[test]
    fn a_signal_certificate_wins_over_the_generic_one() {
        let dir = std::env::temp_dir().join(format!("inferscope-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (all, traces) = (dir.join("all.pem"), dir.join("traces.pem"));
        for path in [&all, &traces] {
            std::fs::write(path, "-----BEGIN CERTIFICATE-----\n").unwrap();
        }
        let e = export(ConfigArgs {
            otlp_certificate: Some(all.clone()),
            otlp_traces_certificate: Some(traces.clone()),
            ..Default::default()
        });
        assert_eq!(e.signal_ca(Signal::Metrics).unwrap().path, all);
        assert_eq!(e.signal_ca(Signal::Traces).unwrap().path, traces);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn headers_are_split_and_percent_decoded() {
        let headers = parse_headers(Some("Authorization=Basic%20abc, x-team = ml ")).unwrap();
        assert_eq!(
            headers,
            vec![
                ("authorization".into(), "Basic abc".into()),
                ("x-team".into(), "ml".into())
            ]
        );
    }

    #[test]
    fn file_values_apply_under_flags() {
        let dir = std::env::temp_dir().join(format!("inferscope-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inferscope.toml");
        std::fs::write(&path, "shards = 3\nmax_models = 7\n").unwrap();
        let config = Config::resolve(ConfigArgs {
            config: Some(path.clone()),
            max_models: Some(9),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((config.shards, config.max_models), (3, 9));

        std::fs::write(&path, "shardz = 3\n").unwrap();
        let err = Config::resolve(ConfigArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("shardz"), "{err}");
    }

    #[test]
    fn file_keys_are_the_flag_names_for_every_kind_of_setting() {
        let dir = std::env::temp_dir().join(format!("inferscope-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inferscope.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\notlp_protocol = \"grpc\"\nno_traces = true\n\
             windows = \"1m\"\nlabel_ttl_seconds = 30.0\n",
        )
        .unwrap();
        let resolve = |path: &Path| {
            Config::resolve(ConfigArgs {
                config: Some(path.to_owned()),
                ..Default::default()
            })
        };
        let config = resolve(&path).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.export.endpoint, DEFAULT_OTLP_GRPC_ENDPOINT);
        assert!(config.export.metrics && !config.export.traces);
        assert_eq!(config.quality.windows.len(), 1);
        assert_eq!(config.quality.label_ttl, Duration::from_secs(30));

        // The path of the file is a flag only.
        std::fs::write(&path, "config = \"other.toml\"\n").unwrap();
        let err = resolve(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `config`"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn anomaly_settings_come_from_the_file_per_model() {
        let dir = std::env::temp_dir().join(format!("inferscope-anomaly-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inferscope.toml");
        std::fs::write(
            &path,
            "[anomaly]\nlatency_factor = 4.0\n[anomaly.models.\"fraud\"]\nhst_trees = 0\n",
        )
        .unwrap();
        let resolve = |path: &std::path::Path| {
            Config::resolve(ConfigArgs {
                config: Some(path.to_owned()),
                ..Default::default()
            })
        };
        let config = resolve(&path).unwrap();
        assert_eq!(config.anomaly.for_model("fraud").hst_trees, 0);
        assert_eq!(config.anomaly.for_model("fraud").latency_factor, 4.0);
        assert_eq!(config.anomaly.for_model("other").hst_trees, 10);

        std::fs::write(&path, "[anomaly]\nhst_window = 5\n").unwrap();
        let err = resolve(&path).unwrap_err().to_string();
        assert!(err.contains("anomaly.hst_window"), "{err}");
        std::fs::write(&path, "[anomaly]\nhst_tress = 5\n").unwrap();
        let err = resolve(&path).unwrap_err().to_string();
        assert!(err.contains("hst_tress"), "{err}");
    }
}
