//! The Open Inference Protocol tap: a gRPC server of `inference.GRPCInferenceService` (Triton,
//! MLServer, KServe and Seldon speak it) that sits in front of a model server, forwards every call
//! to it unchanged and answers with its answer unchanged, and records each `ModelInfer` call as
//! inference records, so a model server is monitored without a line of inferscope code in it.
//!
//! The caller's call is never delayed or failed by recording: the pair (request, response or
//! error, latency) is handed to a bounded queue with `try_reserve` (full: the pair is dropped and
//! counted in `inferscope.tap.dropped`), and one task turns pairs into records
//! ([`records`]) and submits them through [`Ingest::accept_batch`], the path gRPC ingest takes.
//! The only work on the call's path is a copy of the request (its tensors) when the queue has room.
//!
//! Assumes unary calls; the protocol's streaming extension (Triton's `ModelStreamInfer`) and
//! services other than `inference.GRPCInferenceService` are not served (UNIMPLEMENTED).

pub mod records;

use crate::{
    ingest::Ingest,
    oip::{
        grpc_inference_service_client::GrpcInferenceServiceClient,
        grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer},
        *,
    },
    pb,
    self_metrics::{SelfCounter, SelfStats},
};
use serde::Deserialize;
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime},
};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{transport::Channel, Request, Response, Status};

/// Calls waiting to be recorded: beyond this the tap drops pairs rather than hold memory.
pub const DEFAULT_QUEUE: usize = 1024;
/// The largest message the tap forwards either way: model inputs and outputs (images, embeddings)
/// are larger than ingest batches, so this is not `--max-message-bytes`.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Model names (and mapped model versions) the recorder remembers at most: names come from
/// callers, so the memory they take is bounded (past it, failed calls of a new model get no
/// version and a mapping's declaration is sent with every batch).
const REMEMBERED_MODELS: usize = 1024;
/// Pairs turned into one ingest batch at most.
const BATCH_CALLS: usize = 64;

/// `[tap]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TapFile {
    /// Calls waiting to be recorded at most [default: 1024].
    pub queue: Option<usize>,
    /// `[tap.models.<name>]`: how a model's tensors become predictions.
    pub models: HashMap<String, TapModel>,
}

/// How one model's outputs become predictions (`[tap.models.<name>]`). Without a mapping a
/// model's records carry features only.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TapModel {
    /// The version records are counted under; default the request's `model_version`, else the
    /// response's.
    pub version: Option<String>,
    /// Class names in the model's order: the records are classifications (binary with two,
    /// multiclass with more). None: regressions from `prediction_output`.
    pub class_names: Vec<String>,
    /// For binary classification: the class whose probability is the score (default the second).
    pub positive_class: Option<String>,
    /// The output holding each row's predicted class (a label or an index into `class_names`) or
    /// regression value.
    pub prediction_output: Option<String>,
    /// The output holding each row's class probabilities, in `class_names` order.
    pub probabilities_output: Option<String>,
    /// Numeric inputs whose values are categories (BYTES inputs always are).
    pub categorical_inputs: Vec<String>,
}

impl TapModel {
    /// Checks that the mapping's classes make a declaration that gRPC ingest would accept.
    pub fn check(&self, model: &str) -> Result<(), crate::validation::FieldError> {
        let version = self.version.as_deref().unwrap_or_default();
        match self.declaration(model, version) {
            Some(d) => crate::validation::check_declaration(&d, &Default::default()),
            None => Ok(()),
        }
    }

    /// The declaration the mapping makes (classes and task), if it names classes.
    fn declaration(&self, model: &str, version: &str) -> Option<pb::ModelDeclaration> {
        if self.class_names.is_empty() {
            return None;
        }
        let task = if self.class_names.len() == 2 {
            pb::TaskType::BinaryClassification
        } else {
            pb::TaskType::MulticlassClassification
        };
        Some(pb::ModelDeclaration {
            model: model.to_owned(),
            version: version.to_owned(),
            task: task as i32,
            class_names: self.class_names.clone(),
            positive_class: self.positive_class.clone().unwrap_or_default(),
            ..Default::default()
        })
    }
}

/// The tap's settings, resolved: `--tap-listen`, `--tap-upstream` and `[tap]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TapSettings {
    pub listen: Option<SocketAddr>,
    /// The model server's OIP gRPC endpoint, e.g. `http://127.0.0.1:8081`.
    pub upstream: Option<String>,
    pub queue: usize,
    pub models: HashMap<String, TapModel>,
}

/// Why the tap could not start.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot listen on --tap-listen {0}: {1}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("--tap-upstream {0} is not a URL: {1}")]
    Upstream(String, #[source] tonic::codegen::http::uri::InvalidUri),
}

/// One forwarded `ModelInfer` call, waiting to be recorded.
struct Call {
    request: ModelInferRequest,
    /// The upstream's answer, or the name of its gRPC code.
    outcome: Result<ModelInferResponse, tonic::Code>,
    started: SystemTime,
    latency: Duration,
    traceparent: String,
    tracestate: String,
}

/// The gRPC service: forwards to `upstream`, queues `ModelInfer` pairs on `calls`.
#[derive(Clone)]
pub struct Tap {
    upstream: GrpcInferenceServiceClient<Channel>,
    calls: mpsc::Sender<Call>,
    stats: Arc<SelfStats>,
}

/// A running tap: where it listens and the tasks that end with the sidecar's shutdown.
pub struct RunningTap {
    pub addr: SocketAddr,
    /// The server; ends when the shutdown token is cancelled.
    pub server: JoinHandle<()>,
    /// The recorder; ends once the server has ended and the queue is drained into ingest.
    pub recorder: JoinHandle<()>,
}

/// Starts the tap when `--tap-listen` is set (the config check requires `--tap-upstream` with it).
pub async fn start(
    settings: &TapSettings,
    ingest: Ingest,
    stats: Arc<SelfStats>,
    shutdown: CancellationToken,
) -> Result<Option<RunningTap>, TapError> {
    let (Some(listen), Some(upstream)) = (settings.listen, settings.upstream.clone()) else {
        return Ok(None);
    };
    let channel = Channel::from_shared(upstream.clone())
        .map_err(|e| TapError::Upstream(upstream.clone(), e))?
        // The caller's latency is the model's: no Nagle delay on the hop to it.
        .tcp_nodelay(true)
        .connect_lazy();
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| TapError::Listen(listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| TapError::Listen(listen, e))?;
    let (tx, rx) = mpsc::channel(settings.queue.max(1));
    let tap = Tap {
        upstream: GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        calls: tx,
        stats: stats.clone(),
    };
    let service = GrpcInferenceServiceServer::new(tap)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let server = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the OIP tap's server failed");
        }
    });
    let recorder = tokio::spawn(record(rx, ingest, settings.models.clone(), stats));
    tracing::info!(listen = %addr, upstream, "Open Inference Protocol tap forwarding");
    Ok(Some(RunningTap {
        addr,
        server,
        recorder,
    }))
}

/// Forwards a request with the caller's metadata (`traceparent` included); tonic drops the
/// headers that belong to the hop (content-type, te, grpc-*) when it sends.
fn forward<T>(request: Request<T>) -> Request<T> {
    let (metadata, _, message) = request.into_parts();
    Request::from_parts(metadata, Default::default(), message)
}

/// The upstream's answer with its metadata, unchanged.
fn answer<T>(response: Response<T>) -> Response<T> {
    let (metadata, message, _) = response.into_parts();
    Response::from_parts(metadata, message, Default::default())
}

#[tonic::async_trait]
impl GrpcInferenceService for Tap {
    async fn server_live(
        &self,
        request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        self.upstream
            .clone()
            .server_live(forward(request))
            .await
            .map(answer)
    }

    async fn server_ready(
        &self,
        request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        self.upstream
            .clone()
            .server_ready(forward(request))
            .await
            .map(answer)
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        self.upstream
            .clone()
            .model_ready(forward(request))
            .await
            .map(answer)
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        self.upstream
            .clone()
            .server_metadata(forward(request))
            .await
            .map(answer)
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.upstream
            .clone()
            .model_metadata(forward(request))
            .await
            .map(answer)
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        // Room in the queue first: a full queue costs the call nothing, not even the copy.
        let permit = match self.calls.try_reserve() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.stats
                    .counter(SelfCounter::TapDropped)
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let traced = permit
            .as_ref()
            .map(|_| (header("traceparent"), header("tracestate")));
        let copy = permit.as_ref().map(|_| request.get_ref().clone());
        let started = SystemTime::now();
        let clock = Instant::now();
        let result = self.upstream.clone().model_infer(forward(request)).await;
        let latency = clock.elapsed();
        if let (Some(permit), Some(request), Some((traceparent, tracestate))) =
            (permit, copy, traced)
        {
            permit.send(Call {
                request,
                outcome: match &result {
                    Ok(response) => Ok(response.get_ref().clone()),
                    Err(status) => Err(status.code()),
                },
                started,
                latency,
                traceparent,
                tracestate,
            });
        }
        result.map(answer)
    }
}

/// The gRPC code's name, as `error.type` (`INVALID_ARGUMENT`, `UNAVAILABLE`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The recorder: pairs → records → ingest, until the server is gone and the queue is empty.
async fn record(
    mut calls: mpsc::Receiver<Call>,
    ingest: Ingest,
    models: HashMap<String, TapModel>,
    stats: Arc<SelfStats>,
) {
    // Declarations sent once per (model, version); the sidecar keeps them.
    let mut declared: HashSet<(String, String)> = HashSet::new();
    // The version each model last answered with (its own `model_version`), for failed calls.
    let mut last_version: HashMap<String, String> = HashMap::new();
    let mut buffer = Vec::with_capacity(BATCH_CALLS);
    let mut sequence = 0;
    while calls.recv_many(&mut buffer, BATCH_CALLS).await > 0 {
        let calls_in_batch = buffer.len();
        let mut batch = pb::RecordBatch {
            sequence,
            ..Default::default()
        };
        sequence += 1;
        for call in buffer.drain(..) {
            let response = call.outcome.as_ref().ok();
            let model = if call.request.model_name.is_empty() {
                response.map_or("", |r| r.model_name.as_str())
            } else {
                call.request.model_name.as_str()
            };
            let mapping = models.get(model);
            if let Some(r) = response.filter(|r| !r.model_version.is_empty()) {
                if last_version.get(model) != Some(&r.model_version)
                    && (last_version.len() < REMEMBERED_MODELS || last_version.contains_key(model))
                {
                    last_version.insert(model.to_owned(), r.model_version.clone());
                }
            }
            // A failed call has no response: its version is the one the model last answered with.
            let version = mapping
                .and_then(|m| m.version.as_deref())
                .or(Some(call.request.model_version.as_str()).filter(|v| !v.is_empty()))
                .or(response.map(|r| r.model_version.as_str()))
                .or(last_version.get(model).map(String::as_str))
                .unwrap_or_default();
            let ctx = records::CallContext {
                model,
                version,
                mapping,
                time_unix_nano: call
                    .started
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                latency_seconds: call.latency.as_secs_f64(),
                error_type: call.outcome.as_ref().err().map(|&c| code_name(c)),
                traceparent: &call.traceparent,
                tracestate: &call.tracestate,
            };
            match records::records(&call.request, response, &ctx) {
                Ok(records) => {
                    if let Some(m) = mapping {
                        let key = (model.to_owned(), version.to_owned());
                        if !declared.contains(&key) {
                            batch.declarations.extend(m.declaration(model, version));
                            if declared.len() < REMEMBERED_MODELS {
                                declared.insert(key);
                            }
                        }
                    }
                    batch.records.extend(records);
                }
                Err(e) => {
                    stats
                        .counter(SelfCounter::TapUnreadable)
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(model, error = %e, "a ModelInfer call through the tap was not recorded");
                }
            }
        }
        if batch.records.is_empty() && batch.declarations.is_empty() {
            continue;
        }
        if let Err(e) = ingest.accept_batch(batch) {
            // The sidecar's queues are full (or it is stopping): the records are lost as a gRPC
            // client's batch would be refused; counted with the tap's drops. The declarations
            // are sent again with the next batch.
            declared.clear();
            stats
                .counter(SelfCounter::TapDropped)
                .fetch_add(calls_in_batch as u64, Ordering::Relaxed);
            tracing::debug!(error = %e, "records from the tap refused by ingest");
        }
    }
}
