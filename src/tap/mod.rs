//! The Open Inference Protocol tap: a proxy in front of a model server (Triton, MLServer, KServe and
//! Seldon speak the protocol) that forwards every call to it unchanged and answers with its answer
//! unchanged, and records each inference as inference records, so a model server is monitored
//! without a line of inferscope code in it. Two sides, each on when its pair of settings is given:
//!
//! - gRPC (`--tap-listen`, `--tap-upstream`): `inference.GRPCInferenceService/ModelInfer` is served
//!   by a tonic service that forwards the decoded call and records it; every other path (the
//!   protocol's other calls, `ModelStreamInfer`, the model repository, health, reflection, any
//!   unknown service or method) is forwarded as opaque HTTP/2 by [`proxy`], messages and trailers
//!   streamed both ways; `ModelStreamInfer`'s messages are also recorded as request/response pairs.
//! - REST/JSON (`--tap-http-listen`, `--tap-http-upstream`): an HTTP/1.1 reverse proxy ([`rest`])
//!   that streams every request through and records `POST /v2/models/{name}[/versions/{v}]/infer`.
//!
//! The caller's call is never delayed or failed by recording: the pair (request, response or
//! error, latency) is handed to a bounded queue with `try_reserve` (full: the pair is dropped and
//! counted in `inferscope.tap.dropped`), and one task turns pairs into records
//! ([`records`], the model's schema from [`schema`]) and submits them through
//! [`Ingest::accept_batch`], the path gRPC ingest takes. The only work on the call's path is a
//! copy of the request and response (a clone of the decoded `ModelInfer` messages; reference-counted
//! handles on the REST bodies' and stream messages' bytes) when the queue has room.

pub mod body;
pub mod proxy;
pub mod records;
pub mod rest;
pub mod schema;

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
use axum::body::Bytes;
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
    /// A request header (gRPC metadata or HTTP header, e.g. `x-request-id`) whose value is the
    /// call's request id, before the request parameter and the request's `id`.
    pub request_id_header: Option<String>,
    /// A request parameter (`parameters` of the request, a string or an integer) whose value is
    /// the call's request id, before the request's `id`.
    pub request_id_parameter: Option<String>,
    /// Read each model's schema from the server's `ModelMetadata` [default: true].
    pub read_metadata: Option<bool>,
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

/// The tap's settings, resolved: `--tap-listen`, `--tap-upstream`, `--tap-http-listen`,
/// `--tap-http-upstream` and `[tap]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TapSettings {
    pub listen: Option<SocketAddr>,
    /// The model server's OIP gRPC endpoint, e.g. `http://127.0.0.1:8081`.
    pub upstream: Option<String>,
    /// Where the REST/JSON side listens.
    pub http_listen: Option<SocketAddr>,
    /// The model server's OIP REST endpoint, e.g. `http://127.0.0.1:8080`.
    pub http_upstream: Option<String>,
    pub queue: usize,
    pub models: HashMap<String, TapModel>,
    /// Lowercase.
    pub request_id_header: Option<String>,
    pub request_id_parameter: Option<String>,
    pub read_metadata: bool,
}

impl Default for TapSettings {
    fn default() -> Self {
        TapSettings {
            listen: None,
            upstream: None,
            http_listen: None,
            http_upstream: None,
            queue: DEFAULT_QUEUE,
            models: HashMap::new(),
            request_id_header: None,
            request_id_parameter: None,
            read_metadata: true,
        }
    }
}

/// Why the tap could not start.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot listen on --tap-listen {0}: {1}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("--tap-upstream {0} is not a URL: {1}")]
    Upstream(String, #[source] tonic::codegen::http::uri::InvalidUri),
    #[error("cannot listen on --tap-http-listen {0}: {1}")]
    HttpListen(SocketAddr, #[source] std::io::Error),
    #[error("the tap's HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// What one forwarded inference carried, as it went through.
// Unary ModelInfer, the large variant, is the common one: boxing it would cost each call an
// allocation for the rarer ones' sake.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Exchange {
    /// A unary `ModelInfer`, decoded by tonic; the upstream's answer or its gRPC code.
    Grpc {
        request: ModelInferRequest,
        outcome: Result<ModelInferResponse, tonic::Code>,
    },
    /// One request of a `ModelStreamInfer` stream and its answer (protobuf bytes), or the code
    /// the stream ended with before it was answered.
    Stream {
        request: Bytes,
        outcome: Result<Bytes, tonic::Code>,
    },
    /// A REST infer call.
    Rest(RestHalf),
}

/// A REST infer call's bodies (each with its `Inference-Header-Content-Length`), as far as they
/// were copied.
pub(crate) struct RestHalf {
    model: String,
    version: String,
    request: Option<(Bytes, Option<usize>)>,
    status: u16,
    response: Option<(Bytes, Option<usize>)>,
}

/// One forwarded inference, waiting to be recorded.
pub(crate) struct Call {
    exchange: Exchange,
    started: SystemTime,
    latency: Duration,
    traceparent: String,
    tracestate: String,
    /// The value of `[tap] request_id_header`, when the call had it.
    header_id: Option<String>,
}

/// The gRPC service of `ModelInfer`: forwards to `upstream`, queues pairs on `calls`.
#[derive(Clone)]
pub struct Tap {
    upstream: GrpcInferenceServiceClient<Channel>,
    calls: mpsc::Sender<Call>,
    stats: Arc<SelfStats>,
    id_header: Option<String>,
}

/// After shutdown, gRPC streams still open are waited for this long.
const GRACE: Duration = Duration::from_secs(5);

/// A running tap: where it listens and the tasks that end with the sidecar's shutdown.
pub struct RunningTap {
    /// The gRPC side's address, when on.
    pub addr: Option<SocketAddr>,
    /// The REST side's address, when on.
    pub http_addr: Option<SocketAddr>,
    /// The server; ends when the shutdown token is cancelled.
    pub server: JoinHandle<()>,
    /// The recorder; ends once the server has ended and the queue is drained into ingest.
    pub recorder: JoinHandle<()>,
}

/// Starts the tap when `--tap-listen` or `--tap-http-listen` is set (the config check requires
/// each side's upstream with it).
pub async fn start(
    settings: &TapSettings,
    ingest: Ingest,
    stats: Arc<SelfStats>,
    shutdown: CancellationToken,
) -> Result<Option<RunningTap>, TapError> {
    let grpc = settings.listen.zip(settings.upstream.clone());
    let http = settings.http_listen.zip(settings.http_upstream.clone());
    if grpc.is_none() && http.is_none() {
        return Ok(None);
    }
    let (tx, rx) = mpsc::channel(settings.queue.max(1));
    let mut servers = Vec::new();
    let mut source = schema::Source::Off;
    let mut addr = None;
    if let Some((listen, upstream)) = grpc {
        let channel = Channel::from_shared(upstream.clone())
            .map_err(|e| TapError::Upstream(upstream.clone(), e))?
            // The caller's latency is the model's: no Nagle delay on the hop to it.
            .tcp_nodelay(true)
            .connect_lazy();
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| TapError::Listen(listen, e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| TapError::Listen(listen, e))?;
        let client = GrpcInferenceServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        source = schema::Source::Grpc(client.clone());
        let tap = Tap {
            upstream: client,
            calls: tx.clone(),
            stats: stats.clone(),
            id_header: settings.request_id_header.clone(),
        };
        let service = GrpcInferenceServiceServer::new(tap)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let routes = tonic::service::Routes::from(proxy::router(
            service,
            channel,
            tx.clone(),
            stats.clone(),
        ));
        let shutdown = shutdown.clone();
        servers.push(tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    // No Nagle delay on the caller's side either: a forwarded answer's headers,
                    // messages and trailers are written as they come from the upstream.
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    shutdown.clone().cancelled_owned(),
                );
            // A stream that does not end (a client that keeps ModelStreamInfer open) may not
            // hold the drain: after GRACE the tap stops waiting for it.
            let cut = async {
                shutdown.cancelled().await;
                tokio::time::sleep(GRACE).await;
            };
            tokio::select! {
                served = served => if let Err(e) = served {
                    tracing::error!(error = %e, "the OIP tap's gRPC server failed");
                },
                _ = cut => tracing::warn!("gRPC calls through the tap still open after shutdown: no longer waited for"),
            }
        }));
        tracing::info!(listen = %bound, upstream, "Open Inference Protocol tap forwarding gRPC");
        addr = Some(bound);
    }
    let mut http_addr = None;
    if let Some((listen, upstream)) = http {
        let client = reqwest::Client::builder()
            // The tap forwards what the server answers: no redirects followed, no proxy.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .map_err(TapError::HttpClient)?;
        let base = upstream.trim_end_matches('/').to_owned();
        if matches!(source, schema::Source::Off) {
            source = schema::Source::Rest(client.clone(), base.clone());
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| TapError::HttpListen(listen, e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| TapError::HttpListen(listen, e))?;
        let rest = rest::RestTap {
            client,
            upstream: base,
            calls: tx.clone(),
            stats: stats.clone(),
            id_header: settings
                .request_id_header
                .as_deref()
                .and_then(|h| h.parse().ok()),
        };
        servers.push(tokio::spawn(rest::serve(listener, rest, shutdown.clone())));
        tracing::info!(listen = %bound, upstream, "Open Inference Protocol tap forwarding REST");
        http_addr = Some(bound);
    }
    // Only the servers hold senders: the recorder ends once both are gone.
    drop(tx);
    if !settings.read_metadata {
        source = schema::Source::Off;
    }
    let servers_done = CancellationToken::new();
    let recorder = tokio::spawn(record(
        rx,
        servers_done.clone(),
        ingest,
        Recorder {
            models: settings.models.clone(),
            id_parameter: settings.request_id_parameter.clone(),
            schemas: schema::Schemas::new(source, stats.clone()),
        },
        stats,
    ));
    let server = tokio::spawn(async move {
        for server in servers {
            let _ = server.await;
        }
        servers_done.cancel();
    });
    Ok(Some(RunningTap {
        addr,
        http_addr,
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
        let traced = permit.as_ref().map(|_| {
            (
                header("traceparent"),
                header("tracestate"),
                self.id_header
                    .as_deref()
                    .map(header)
                    .filter(|v| !v.is_empty()),
            )
        });
        let copy = permit.as_ref().map(|_| request.get_ref().clone());
        let started = SystemTime::now();
        let clock = Instant::now();
        let result = self.upstream.clone().model_infer(forward(request)).await;
        let latency = clock.elapsed();
        if let (Some(permit), Some(request), Some((traceparent, tracestate, header_id))) =
            (permit, copy, traced)
        {
            permit.send(Call {
                exchange: Exchange::Grpc {
                    request,
                    outcome: match &result {
                        Ok(response) => Ok(response.get_ref().clone()),
                        Err(status) => Err(status.code()),
                    },
                },
                started,
                latency,
                traceparent,
                tracestate,
                header_id,
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

/// What the recorder knows besides the calls.
struct Recorder {
    models: HashMap<String, TapModel>,
    id_parameter: Option<String>,
    schemas: schema::Schemas,
}

/// A call read back from its wire form (gRPC messages, stream bytes, REST JSON).
struct Decoded {
    model: String,
    /// The version the request asked for (its `model_version`, the REST path's).
    request_version: String,
    /// The version the model answered with.
    response_version: String,
    id: String,
    response_id: String,
    parameter_id: Option<String>,
    inputs: Result<Vec<records::Tensor>, records::TensorError>,
    /// `None`: the call failed.
    outputs: Result<Option<Vec<records::Tensor>>, records::TensorError>,
    error_type: Option<String>,
}

fn grpc_parameter(parameters: &HashMap<String, InferParameter>, name: &str) -> Option<String> {
    use infer_parameter::ParameterChoice;
    match parameters.get(name)?.parameter_choice.as_ref()? {
        ParameterChoice::StringParam(s) => Some(s.clone()),
        ParameterChoice::Int64Param(i) => Some(i.to_string()),
        ParameterChoice::BoolParam(_) => None,
    }
}

/// A `ModelStreamInfer` answer: MLServer's `ModelInferResponse`, or Triton's
/// `ModelStreamInferResponse` (a response, or an error message).
fn stream_response(
    bytes: &[u8],
) -> Result<Result<ModelInferResponse, String>, records::TensorError> {
    use prost::Message;
    let bad = |e: prost::DecodeError| records::TensorError::Message(e.to_string());
    if let Ok(plain) = ModelInferResponse::decode(bytes) {
        if !plain.outputs.is_empty()
            || !plain.raw_output_contents.is_empty()
            || !plain.id.is_empty()
        {
            return Ok(Ok(plain));
        }
    }
    let streamed = ModelStreamInferResponse::decode(bytes).map_err(bad)?;
    Ok(match streamed.infer_response {
        Some(response) => Ok(response),
        None if !streamed.error_message.is_empty() => Err(streamed.error_message),
        None => Ok(ModelInferResponse::decode(bytes).map_err(bad)?),
    })
}

fn decode_grpc(
    request: ModelInferRequest,
    outcome: Result<ModelInferResponse, String>,
    id_parameter: Option<&str>,
) -> Decoded {
    let response = outcome.as_ref().ok();
    Decoded {
        model: if request.model_name.is_empty() {
            response.map(|r| r.model_name.clone()).unwrap_or_default()
        } else {
            request.model_name.clone()
        },
        request_version: request.model_version.clone(),
        response_version: response
            .map(|r| r.model_version.clone())
            .unwrap_or_default(),
        id: request.id.clone(),
        response_id: response.map(|r| r.id.clone()).unwrap_or_default(),
        parameter_id: id_parameter.and_then(|p| grpc_parameter(&request.parameters, p)),
        inputs: records::inputs(&request),
        outputs: response.map(records::outputs).transpose(),
        error_type: outcome.err(),
    }
}

/// Reads a call back; `Err`: it cannot be recorded at all.
fn decode(exchange: Exchange, id_parameter: Option<&str>) -> Result<Decoded, records::TensorError> {
    use prost::Message;
    match exchange {
        Exchange::Grpc { request, outcome } => Ok(decode_grpc(
            request,
            outcome.map_err(|c| code_name(c).to_owned()),
            id_parameter,
        )),
        Exchange::Stream { request, outcome } => {
            let request = ModelInferRequest::decode(request)
                .map_err(|e| records::TensorError::Message(e.to_string()))?;
            let outcome = match outcome {
                Ok(bytes) => stream_response(&bytes)?
                    // Triton reports a request's failure in the stream, as a message.
                    .map_err(|_| "STREAM_ERROR".to_owned()),
                Err(code) => Err(code_name(code).to_owned()),
            };
            Ok(decode_grpc(request, outcome, id_parameter))
        }
        Exchange::Rest(call) => {
            let request = call
                .request
                .as_ref()
                .map(|(body, header)| rest::parse(body, *header, "inputs"));
            let failed = call.status >= 400;
            let response = match (&call.response, failed) {
                (Some((body, header)), false) => Some(rest::parse(body, *header, "outputs")?),
                _ => None,
            };
            if !failed && response.is_none() {
                return Err(records::TensorError::Json(
                    "the response was not copied".into(),
                ));
            }
            let (id, parameter_id, inputs) = match request {
                Some(Ok(r)) => (
                    r.id,
                    id_parameter.and_then(|p| rest::id_of(r.parameters.get(p))),
                    r.tensors,
                ),
                Some(Err(e)) => (String::new(), None, Err(e)),
                None => (
                    String::new(),
                    None,
                    Err(records::TensorError::Json(
                        "the request was not copied".into(),
                    )),
                ),
            };
            Ok(Decoded {
                model: call.model,
                request_version: call.version,
                response_version: response
                    .as_ref()
                    .map(|r| r.model_version.clone())
                    .unwrap_or_default(),
                id,
                response_id: response.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
                parameter_id,
                inputs,
                outputs: response.map(|r| r.tensors).transpose(),
                // The HTTP status, as OpenTelemetry names an HTTP error's type.
                error_type: failed.then(|| call.status.to_string()),
            })
        }
    }
}

/// A call's request id: `[tap] request_id_header`'s value, else `request_id_parameter`'s, else
/// the request's `id`, else the response's (a server that names calls itself, as MLServer does).
fn request_id(
    header: Option<String>,
    parameter: Option<String>,
    id: String,
    response_id: String,
) -> String {
    header
        .or(parameter)
        .or(Some(id).filter(|i| !i.is_empty()))
        .unwrap_or(response_id)
}

/// The recorder: pairs → records → ingest, until the servers are gone (every sender dropped, or
/// `servers_done`) and the queue is empty.
async fn record(
    mut calls: mpsc::Receiver<Call>,
    servers_done: CancellationToken,
    ingest: Ingest,
    mut recorder: Recorder,
    stats: Arc<SelfStats>,
) {
    // Declarations sent once per (model, version); the sidecar keeps them.
    let mut declared: HashSet<(String, String)> = HashSet::new();
    // The version each model last answered with (its own `model_version`), for failed calls.
    let mut last_version: HashMap<String, String> = HashMap::new();
    let mut buffer = Vec::with_capacity(BATCH_CALLS);
    let mut sequence = 0;
    let unreadable = |stats: &SelfStats, model: &str, e: &records::TensorError| {
        stats
            .counter(SelfCounter::TapUnreadable)
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(model, error = %e, "a call through the tap was not recorded");
    };
    loop {
        let taken = tokio::select! {
            biased;
            n = calls.recv_many(&mut buffer, BATCH_CALLS) => n,
            // The servers are gone, but a connection cut after the shutdown's grace may still
            // hold a sender: what is queued is recorded, then the recorder ends.
            _ = servers_done.cancelled() => {
                while buffer.len() < BATCH_CALLS {
                    match calls.try_recv() {
                        Ok(call) => buffer.push(call),
                        Err(_) => break,
                    }
                }
                buffer.len()
            }
        };
        if taken == 0 {
            break;
        }
        let calls_in_batch = buffer.len();
        let mut batch = pb::RecordBatch {
            sequence,
            ..Default::default()
        };
        sequence += 1;
        for call in buffer.drain(..) {
            let d = match decode(call.exchange, recorder.id_parameter.as_deref()) {
                Ok(d) => d,
                Err(e) => {
                    unreadable(&stats, "", &e);
                    continue;
                }
            };
            let model = d.model.as_str();
            let mapping = recorder.models.get(model);
            if !d.response_version.is_empty()
                && last_version.get(model) != Some(&d.response_version)
                && (last_version.len() < REMEMBERED_MODELS || last_version.contains_key(model))
            {
                last_version.insert(model.to_owned(), d.response_version.clone());
            }
            // The version the server knows the model by (for its metadata).
            let served = Some(d.request_version.as_str())
                .filter(|v| !v.is_empty())
                .or(Some(d.response_version.as_str()).filter(|v| !v.is_empty()))
                .unwrap_or_default()
                .to_owned();
            // A failed call has no response: its version is the one the model last answered with.
            let version = mapping
                .and_then(|m| m.version.clone())
                .or(Some(served.clone()).filter(|v| !v.is_empty()))
                .or(last_version.get(model).cloned())
                .unwrap_or_default();
            // Only a call the model answered leads to reading its schema.
            let schema = if matches!(d.outputs, Ok(Some(_))) {
                recorder.schemas.get(model, &served).await
            } else {
                recorder.schemas.cached(model)
            };
            let id = request_id(call.header_id, d.parameter_id, d.id, d.response_id);
            let ctx = records::CallContext {
                model,
                version: &version,
                mapping,
                time_unix_nano: call
                    .started
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                latency_seconds: call.latency.as_secs_f64(),
                error_type: d.error_type.as_deref(),
                traceparent: &call.traceparent,
                tracestate: &call.tracestate,
                request_id: Some(&id),
                schema: schema.as_deref(),
            };
            match records::records_of(d.inputs, d.outputs, &id, &ctx) {
                Ok(records) => {
                    if let Some(m) = mapping {
                        let key = (model.to_owned(), version.clone());
                        if !declared.contains(&key) {
                            batch.declarations.extend(m.declaration(model, &version));
                            if declared.len() < REMEMBERED_MODELS {
                                declared.insert(key);
                            }
                        }
                    }
                    batch.records.extend(records);
                }
                Err(e) => unreadable(&stats, model, &e),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_a_call_before_the_parameter_and_the_ids() {
        let id = |h: Option<&str>, p: Option<&str>, i: &str, r: &str| {
            request_id(h.map(Into::into), p.map(Into::into), i.into(), r.into())
        };
        assert_eq!(id(Some("h"), Some("p"), "i", "r"), "h");
        assert_eq!(id(None, Some("p"), "i", "r"), "p");
        assert_eq!(id(None, None, "i", "r"), "i");
        assert_eq!(id(None, None, "", "r"), "r");
    }

    #[test]
    fn id_parameters_are_read_from_grpc_and_rest_requests() {
        let mut request = ModelInferRequest::default();
        request.parameters.insert(
            "request_id".into(),
            InferParameter {
                parameter_choice: Some(infer_parameter::ParameterChoice::Int64Param(42)),
            },
        );
        let d = decode(
            Exchange::Grpc {
                request,
                outcome: Err(tonic::Code::Internal),
            },
            Some("request_id"),
        )
        .unwrap();
        assert_eq!(d.parameter_id.as_deref(), Some("42"));
        assert_eq!(d.error_type.as_deref(), Some("INTERNAL"));
        let body = br#"{"id":"r","parameters":{"request_id":"p7"},"inputs":[]}"#;
        let d = decode(
            Exchange::Rest(RestHalf {
                model: "m".into(),
                version: "2".into(),
                request: Some((Bytes::from_static(body), None)),
                status: 422,
                response: None,
            }),
            Some("request_id"),
        )
        .unwrap();
        assert_eq!(
            (d.id.as_str(), d.parameter_id.as_deref()),
            ("r", Some("p7"))
        );
        assert_eq!(d.request_version, "2");
        assert_eq!(d.error_type.as_deref(), Some("422"));
        assert!(matches!(d.outputs, Ok(None)));
    }

    #[test]
    fn stream_answers_are_read_in_mlserver_and_triton_form() {
        use prost::Message;
        let plain = ModelInferResponse {
            id: "a".into(),
            model_version: "1".into(),
            ..Default::default()
        };
        assert_eq!(
            stream_response(&plain.encode_to_vec()).unwrap(),
            Ok(plain.clone())
        );
        let triton = ModelStreamInferResponse {
            error_message: String::new(),
            infer_response: Some(plain.clone()),
        };
        assert_eq!(stream_response(&triton.encode_to_vec()).unwrap(), Ok(plain));
        let failed = ModelStreamInferResponse {
            error_message: "bad input".into(),
            infer_response: None,
        };
        assert_eq!(
            stream_response(&failed.encode_to_vec()).unwrap(),
            Err("bad input".into())
        );
    }
}
