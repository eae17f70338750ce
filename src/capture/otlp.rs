//! OTLP traces and logs in: an OTLP/gRPC receiver (`TraceService/Export`, `LogsService/Export`)
//! and an OTLP/HTTP one (`POST /v1/traces`, `POST /v1/logs`; protobuf or OTLP/JSON), each off unless an
//! address is given, so that LLM servers (vLLM `--otlp-traces-endpoint`) and instrumented apps
//! (OpenLLMetry, OpenInference) can point their traces, and their evaluators the
//! `gen_ai.evaluation.result` events, at the sidecar and get monitoring without code.
//!
//! One traces request, whichever receiver took it ([`TraceReceiver::receive`]):
//! 1. decoded (undecodable: INVALID_ARGUMENT / HTTP 400, counted in `inferscope.otlp.rejected`);
//! 2. its GenAI spans become generation records ([`super::genai`]), remembered by span id in the
//!    [`GenerationIndex`] for evaluations sent as log records, and go through
//!    [`Ingest::accept_batch`], the same validation, routing and all-or-nothing dispatch as gRPC
//!    records: a full shard queue answers UNAVAILABLE / HTTP 503, which OTLP exporters retry,
//!    and then nothing of the request was taken or forwarded;
//! 3. the request's bytes, unchanged, are queued for the forwarder ([`Forwarder`]), which sends
//!    them to the sidecar's own traces endpoint, so the sidecar can be the pod's only OTLP
//!    endpoint: a bounded queue ([`FORWARD_QUEUE`]), never waited on, a full one drops and
//!    counts; nothing is forwarded with traces export off (`--no-traces`);
//! 4. its `gen_ai.evaluation.result` span events go through [`Ingest::accept_labels`] as
//!    evaluation labels of their generations.
//!
//! One logs request ([`TraceReceiver::receive_logs`]): decoded as a traces request is; its
//! `gen_ai.evaluation.result` events become evaluation labels of the generations they name
//! ([`super::logs`]) through [`Ingest::accept_labels`] (a full shard queue: UNAVAILABLE / HTTP
//! 503, retried by the exporter); every other log record is counted and dropped (the sidecar
//! exports no logs to forward them to).
//!
//! The gRPC service is written as tonic's generated one is, but with a codec that hands over the
//! request's bytes ([`RawCodec`]): so an undecodable request is answered INVALID_ARGUMENT
//! (tonic's prost codec says INTERNAL) and counted, and the bytes are forwarded as they came,
//! without being encoded again. There is no TLS and no token on these receivers: they listen on
//! loopback for the pod's own processes, and warn when bound beyond it.

use super::{
    genai::{self, GenAiMapping},
    generations::{self, GenerationIndex},
    logs,
};
use crate::{
    config::{ExportConfig, OtlpProtocol, Signal},
    events::{
        OtlpEvaluationsCaptured, OtlpEvaluationsUnresolved, OtlpGenerationsEvicted,
        OtlpLogRecordsIgnored, OtlpLogRecordsReceived, OtlpRecordsCaptured, OtlpRequestRejected,
        OtlpSpansReceived, Outage, SpansForwardFailed, SpansForwardRecovered, SpansNotForwarded,
    },
    export::ExportError,
    ingest::{Ingest, IngestError},
    listener::{BoundedListener, ConnectionSlots},
    pb,
    self_metrics::{SelfCounter, SelfStats},
};
use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{any_value::Value, AnyValue, KeyValue},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::{bytes::Bytes, Message};
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::{http, BoxFuture, Service, StdError},
    server::{NamedService, UnaryService},
    Status,
};

/// Requests waiting for the forwarder; past it a request is dropped and its spans counted in
/// `inferscope.otlp.forward.dropped`. 256 requests of up to 512 spans (the Python SDK's batch)
/// ride out a backend pause of a few seconds at thousands of spans per second.
pub const FORWARD_QUEUE: usize = 256;
/// The gRPC method of OTLP trace export.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The gRPC method of OTLP log export.
const LOGS_EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// `--otlp-receive-grpc`, `--otlp-receive-http` and `[capture.otlp]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtlpReceive {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub mapping: GenAiMapping,
}

/// Why a request was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the body is not an OTLP {message} in protobuf: {error}")]
    Undecodable {
        /// `ExportTraceServiceRequest` or `ExportLogsServiceRequest`.
        message: &'static str,
        #[source]
        error: prost::DecodeError,
    },
    #[error("the body is not an OTLP {message} in OTLP/JSON: {error}")]
    UndecodableJson {
        message: &'static str,
        #[source]
        error: serde_json::Error,
    },
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("inferscope is shutting down; send to another instance or retry")]
    ShuttingDown,
}

impl From<ReceiveError> for Status {
    fn from(e: ReceiveError) -> Self {
        match e {
            ReceiveError::Undecodable { .. } | ReceiveError::UndecodableJson { .. } => {
                Status::invalid_argument(e.to_string())
            }
            ReceiveError::Ingest(e) => e.into(),
            ReceiveError::ShuttingDown => Status::unavailable(e.to_string()),
        }
    }
}

impl ReceiveError {
    /// OTLP/HTTP's answer: 400 for bad input, 429 over the memory budget, 503 when the queues
    /// are full or the sidecar stops (the last two retried by OTLP exporters).
    fn http_status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::Undecodable { .. }
            | Self::UndecodableJson { .. }
            | Self::Ingest(IngestError::Batch(_) | IngestError::Field(_)) => {
                StatusCode::BAD_REQUEST
            }
            Self::Ingest(IngestError::OverBudget) => StatusCode::TOO_MANY_REQUESTS,
            Self::Ingest(IngestError::Shed(_)) | Self::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Ingest(IngestError::ShuttingDown) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// What both receivers do with a request; cheap to clone.
#[derive(Clone)]
pub struct TraceReceiver {
    ingest: Ingest,
    mapping: Arc<GenAiMapping>,
    /// The generations of received spans by span id, for evaluations sent as log records; filled
    /// by [`receive`](Self::receive), read by [`receive_logs`](Self::receive_logs), each holding
    /// the lock for one request's inserts or lookups.
    generations: Arc<Mutex<GenerationIndex>>,
    /// The forwarder's queue; `None` with traces export off.
    forward: Option<mpsc::Sender<Bytes>>,
    stats: Arc<SelfStats>,
    shutdown: CancellationToken,
}

impl TraceReceiver {
    pub fn new(
        ingest: Ingest,
        mapping: GenAiMapping,
        forward: Option<mpsc::Sender<Bytes>>,
        stats: Arc<SelfStats>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            ingest,
            mapping: Arc::new(mapping),
            generations: Arc::default(),
            forward,
            stats,
            shutdown,
        }
    }

    /// Takes one encoded `ExportTraceServiceRequest` (module doc for the steps).
    pub async fn receive(&self, body: Bytes) -> Result<(), ReceiveError> {
        if self.shutdown.is_cancelled() {
            return Err(ReceiveError::ShuttingDown);
        }
        let request = ExportTraceServiceRequest::decode(body.as_ref()).map_err(|error| {
            self.rejected("undecodable", &error.to_string());
            ReceiveError::Undecodable {
                message: "ExportTraceServiceRequest",
                error,
            }
        })?;
        let captured = genai::capture(&request, &self.mapping);
        drop(request);
        self.stats.emit(&OtlpSpansReceived {
            spans: captured.spans,
        });
        let records = captured.records.len() as u64;
        if records > 0 {
            // Before ingest takes the records: a refused request is sent again, and its spans
            // then replace their own entries.
            self.remember(&captured.records, &captured.span_ids);
            // The ack is not awaited: a receiver has no flags to answer with, and a dropped ack
            // loses nothing (ARCHITECTURE.md §6c).
            self.ingest.accept_batch(pb::RecordBatch {
                records: captured.records,
                ..Default::default()
            })?;
            self.stats.emit(&OtlpRecordsCaptured { records });
        }
        if let Some(queue) = &self.forward {
            if queue.try_send(body).is_err() {
                self.stats.emit(&SpansNotForwarded {
                    spans: captured.spans,
                });
            }
        }
        if captured.unresolved > 0 {
            self.stats.emit(&OtlpEvaluationsUnresolved {
                evaluations: captured.unresolved,
            });
        }
        if !captured.evaluations.is_empty() {
            self.stats.emit(&OtlpEvaluationsCaptured {
                evaluations: captured.evaluations.len() as u64,
            });
            // Refused only when a shard queue is full (counted in inferscope.batches.shed) or a
            // label is invalid (counted per model): the records are taken, so the request is not
            // answered with an error that would make the exporter send them again.
            let labels = pb::LabelBatch {
                labels: captured.evaluations,
                ..Default::default()
            };
            if let Err(error) = self.ingest.accept_labels(labels).await {
                tracing::debug!(target: "inferscope::capture", %error, "evaluations not taken");
            }
        }
        Ok(())
    }

    /// Takes one encoded `ExportLogsServiceRequest` (module doc).
    pub async fn receive_logs(&self, body: Bytes) -> Result<(), ReceiveError> {
        if self.shutdown.is_cancelled() {
            return Err(ReceiveError::ShuttingDown);
        }
        let request = ExportLogsServiceRequest::decode(body.as_ref()).map_err(|error| {
            self.rejected("undecodable", &error.to_string());
            ReceiveError::Undecodable {
                message: "ExportLogsServiceRequest",
                error,
            }
        })?;
        let captured = {
            let mut index = self.generations.lock().expect("generation index lock");
            logs::capture_logs(&request, &self.mapping, &mut index, Instant::now())
        };
        drop(request);
        self.stats.emit(&OtlpLogRecordsReceived {
            log_records: captured.log_records,
        });
        if captured.ignored > 0 {
            self.stats.emit(&OtlpLogRecordsIgnored {
                log_records: captured.ignored,
            });
        }
        if captured.unresolved > 0 {
            self.stats.emit(&OtlpEvaluationsUnresolved {
                evaluations: captured.unresolved,
            });
        }
        if captured.evaluations.is_empty() {
            return Ok(());
        }
        let evaluations = captured.evaluations.len() as u64;
        // Nothing else of the request is taken: a full shard queue is answered with an error the
        // exporter retries on; invalid labels are counted per model, as from SubmitLabels.
        self.ingest
            .accept_labels(pb::LabelBatch {
                labels: captured.evaluations,
                ..Default::default()
            })
            .await?;
        self.stats.emit(&OtlpEvaluationsCaptured { evaluations });
        Ok(())
    }

    /// Indexes the generations just made by their spans' ids.
    fn remember(&self, records: &[pb::InferenceRecord], span_ids: &[Option<[u8; 8]>]) {
        let now = Instant::now();
        let mut evicted = 0;
        {
            let mut index = self.generations.lock().expect("generation index lock");
            for (record, span_id) in records.iter().zip(span_ids) {
                if let Some(span_id) = span_id {
                    evicted += index.insert(
                        *span_id,
                        &record.model,
                        &record.version,
                        &record.request_id,
                        now,
                    );
                }
            }
        }
        if evicted > 0 {
            self.stats.emit(&OtlpGenerationsEvicted {
                generations: evicted,
                capacity: generations::CAPACITY,
            });
        }
    }

    fn rejected(&self, reason: &'static str, error: &str) {
        self.stats.emit(&OtlpRequestRejected { reason, error });
    }
}

/// Hands the gRPC message's bytes over as they are, and encodes the (empty) response bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use prost::bytes::BufMut;
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Which OTLP export a gRPC service or an HTTP route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    Traces,
    Logs,
}

impl Export {
    fn grpc_path(self) -> &'static str {
        match self {
            Self::Traces => EXPORT_PATH,
            Self::Logs => LOGS_EXPORT_PATH,
        }
    }

    /// An OTLP/JSON body as the protobuf request it stands for.
    fn json_to_protobuf(self, body: &[u8]) -> Result<Bytes, ReceiveError> {
        let json =
            |message: &'static str| move |error| ReceiveError::UndecodableJson { message, error };
        let encoded = match self {
            Self::Traces => serde_json::from_slice::<ExportTraceServiceRequest>(body)
                .map_err(json("ExportTraceServiceRequest"))?
                .encode_to_vec(),
            Self::Logs => serde_json::from_slice::<ExportLogsServiceRequest>(body)
                .map_err(json("ExportLogsServiceRequest"))?
                .encode_to_vec(),
        };
        Ok(encoded.into())
    }

    async fn receive(self, receiver: &TraceReceiver, body: Bytes) -> Result<(), ReceiveError> {
        match self {
            Self::Traces => receiver.receive(body).await,
            Self::Logs => receiver.receive_logs(body).await,
        }
    }
}

/// An OTLP/gRPC export service: `LOGS` false, the trace service
/// (`opentelemetry.proto.collector.trace.v1.TraceService`); true, the logs service
/// (`opentelemetry.proto.collector.logs.v1.LogsService`). Two types because tonic routes by a
/// service's [`NamedService::NAME`].
#[derive(Clone)]
pub struct GrpcExportService<const LOGS: bool> {
    receiver: TraceReceiver,
    max_message_bytes: usize,
}

pub type GrpcTraceService = GrpcExportService<false>;
pub type GrpcLogsService = GrpcExportService<true>;

impl NamedService for GrpcTraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl NamedService for GrpcLogsService {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

impl<const LOGS: bool> GrpcExportService<LOGS> {
    const EXPORT: Export = if LOGS { Export::Logs } else { Export::Traces };
}

/// One `Export` call.
struct ExportCall(TraceReceiver, Export);

impl UnaryService<Bytes> for ExportCall {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (receiver, export) = (self.0.clone(), self.1);
        Box::pin(async move {
            export.receive(&receiver, request.into_inner()).await?;
            // An empty Export*ServiceResponse: everything accepted.
            Ok(tonic::Response::new(Bytes::new()))
        })
    }
}

impl<B, const LOGS: bool> Service<http::Request<B>> for GrpcExportService<LOGS>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let export = Self::EXPORT;
            if request.uri().path() != export.grpc_path() {
                return Ok(Status::unimplemented("only the Export method").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_max_message_size_config(Some(this.max_message_bytes), None);
            let call = ExportCall(this.receiver.clone(), export);
            let mut response = grpc.unary(call, request).await;
            // Over --max-message-bytes tonic answers OUT_OF_RANGE before the call: said as
            // gRPC ingest says it (RESOURCE_EXHAUSTED), and counted.
            let status = response.headers().get(Status::GRPC_STATUS);
            if status.is_some_and(|s| s.as_bytes() == b"11") {
                this.receiver
                    .rejected("too_large", "over --max-message-bytes");
                response.headers_mut().insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::ResourceExhausted as i32).into(),
                );
            }
            Ok(response)
        })
    }
}

/// `POST /v1/traces`.
async fn http_traces(
    axum::extract::State((receiver, limit)): axum::extract::State<(TraceReceiver, usize)>,
    headers: http::HeaderMap,
    body: axum::body::Body,
) -> HttpAnswer {
    http_export(Export::Traces, receiver, limit, headers, body).await
}

/// `POST /v1/logs`.
async fn http_logs(
    axum::extract::State((receiver, limit)): axum::extract::State<(TraceReceiver, usize)>,
    headers: http::HeaderMap,
    body: axum::body::Body,
) -> HttpAnswer {
    http_export(Export::Logs, receiver, limit, headers, body).await
}

type HttpAnswer = (
    http::StatusCode,
    [(http::HeaderName, &'static str); 1],
    Vec<u8>,
);

/// OTLP/HTTP, uncompressed, with a protobuf body (`application/x-protobuf`) or an OTLP/JSON one
/// (`application/json`). A JSON body is decoded by opentelemetry-proto's `with-serde` types
/// (hex trace and span ids, 64-bit integers as strings or numbers, enums as integers, as the
/// OTLP specification's "JSON Protobuf Encoding" says) and encoded to protobuf once, so that the
/// rest (mapping, forwarding) is the protobuf path's: a JSON request costs a second decode.
async fn http_export(
    export: Export,
    receiver: TraceReceiver,
    limit: usize,
    headers: http::HeaderMap,
    body: axum::body::Body,
) -> HttpAnswer {
    use http::{header, StatusCode};
    let plain = |status, text: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text.into_bytes(),
        )
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = if content_type.starts_with("application/x-protobuf") {
        false
    } else if content_type.starts_with("application/json") {
        true
    } else {
        receiver.rejected("content_type", content_type);
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {content_type:?} is not taken: send OTLP/HTTP as \
                 application/x-protobuf or application/json"
            ),
        );
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    if encoding != "identity" {
        receiver.rejected("content_encoding", encoding);
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content encoding {encoding:?} is not taken: send uncompressed bodies"),
        );
    }
    let too_large = || {
        receiver.rejected("too_large", "over --max-message-bytes");
        plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over --max-message-bytes ({limit} bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let Ok(mut body) = axum::body::to_bytes(body, limit).await else {
        return too_large();
    };
    if json {
        match export.json_to_protobuf(&body) {
            Ok(encoded) => body = encoded,
            Err(e) => {
                receiver.rejected("undecodable", &e.to_string());
                return plain(StatusCode::BAD_REQUEST, e.to_string());
            }
        }
    }
    match export.receive(&receiver, body).await {
        // An empty Export*ServiceResponse, in the request's encoding.
        Ok(()) if json => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            b"{}".to_vec(),
        ),
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::new(),
        ),
        Err(e) => plain(e.http_status(), e.to_string()),
    }
}

/// The receivers that run, with the addresses they listen on.
pub struct Receivers {
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    forwarder: Option<JoinHandle<()>>,
}

impl Receivers {
    /// Waits until the receivers have ended (they stop on the shutdown token, finishing the
    /// requests in hand), at most `within`, then stops waiting for them.
    pub async fn stopped(&mut self, within: Duration) {
        for task in &mut self.tasks {
            if tokio::time::timeout(within, &mut *task).await.is_err() {
                task.abort();
            }
        }
    }

    /// Waits until the forwarder has sent what is queued (after [`stopped`](Self::stopped)),
    /// at most `within`.
    pub async fn forwarded(&mut self, within: Duration) {
        if let Some(task) = &mut self.forwarder {
            if tokio::time::timeout(within, &mut *task).await.is_err() {
                task.abort();
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for OTLP on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot forward received spans: {0}")]
    Forward(#[from] ExportError),
}

/// Starts the receivers the configuration asks for (none: `Ok(None)`), and the forwarder when
/// traces export is on.
pub async fn start(
    config: &crate::config::Config,
    ingest: Ingest,
    stats: Arc<SelfStats>,
    shutdown: CancellationToken,
) -> Result<Option<Receivers>, StartError> {
    let settings = &config.otlp_receive;
    if settings.grpc.is_none() && settings.http.is_none() {
        return Ok(None);
    }
    let (forward, forwarder) = if config.export.traces {
        let forwarder = Forwarder::new(&config.export, stats.clone())?;
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        (Some(tx), Some(tokio::spawn(forwarder.run(rx))))
    } else {
        (None, None)
    };
    let receiver = TraceReceiver::new(
        ingest,
        settings.mapping.clone(),
        forward,
        stats.clone(),
        shutdown.clone(),
    );
    let mut receivers = Receivers {
        grpc_addr: None,
        http_addr: None,
        tasks: Vec::new(),
        forwarder,
    };
    let bind = |addr: SocketAddr| async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| StartError::Bind(addr, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| StartError::Bind(addr, e))?;
        warn_if_exposed(local);
        Ok::<_, StartError>((listener, local))
    };
    if let Some(addr) = settings.grpc {
        let (listener, local) = bind(addr).await?;
        receivers.grpc_addr = Some(local);
        let traces = GrpcTraceService {
            receiver: receiver.clone(),
            max_message_bytes: config.max_message_bytes,
        };
        let logs = GrpcLogsService {
            receiver: receiver.clone(),
            max_message_bytes: config.max_message_bytes,
        };
        let slots = ConnectionSlots::new(config.max_connections);
        let stop = shutdown.clone();
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(traces)
            .add_service(logs)
            .serve_with_incoming_shutdown(
                crate::listener::incoming(listener, slots, stats.clone()),
                stop.cancelled_owned(),
            );
        receivers.tasks.push(tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(target: "inferscope::capture", %error, "the OTLP/gRPC receiver failed");
            }
        }));
        tracing::info!(target: "inferscope::capture", listen = %local, "OTLP/gRPC traces and logs receiver");
    }
    if let Some(addr) = settings.http {
        let (listener, local) = bind(addr).await?;
        receivers.http_addr = Some(local);
        let router = axum::Router::new()
            .route("/v1/traces", axum::routing::post(http_traces))
            .route("/v1/logs", axum::routing::post(http_logs))
            .with_state((receiver.clone(), config.max_message_bytes));
        let listener = BoundedListener::new(
            listener,
            ConnectionSlots::new(config.max_connections),
            stats.clone(),
        );
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        receivers.tasks.push(tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(target: "inferscope::capture", %error, "the OTLP/HTTP receiver failed");
            }
        }));
        tracing::info!(target: "inferscope::capture", listen = %local, "OTLP/HTTP traces and logs receiver");
    }
    Ok(Some(receivers))
}

/// The receivers have neither TLS nor a token: beyond loopback, anyone on the path can read the
/// prompts' metadata and send spans.
fn warn_if_exposed(addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            target: "inferscope::capture",
            listen = %addr,
            "the OTLP receiver listens beyond loopback, in plaintext and without a token: spans \
             cross the network readable by anyone on the path and anyone who reaches it can send \
             records; listen on 127.0.0.1"
        );
    }
}

/// Sends received requests, as they came, to the sidecar's traces endpoint, one at a time.
pub struct Forwarder {
    transport: ForwardTransport,
    to: String,
    timeout: Duration,
    stats: Arc<SelfStats>,
    outage: Outage,
}

enum ForwardTransport {
    Grpc {
        grpc: tonic::client::Grpc<tonic::transport::Channel>,
        headers: Vec<(String, String)>,
    },
    Http {
        client: reqwest::Client,
        headers: Vec<(String, String)>,
    },
}

impl Forwarder {
    /// The transport the traces export settings ask for (connections are lazy).
    pub fn new(config: &ExportConfig, stats: Arc<SelfStats>) -> Result<Self, ExportError> {
        let to = config.signal_endpoint(Signal::Traces);
        let ca = config.signal_ca(Signal::Traces);
        let headers = config.headers.clone();
        let transport = match config.protocol {
            OtlpProtocol::Grpc => ForwardTransport::Grpc {
                grpc: tonic::client::Grpc::new(crate::export::grpc_channel(
                    &to,
                    ca,
                    config.timeout,
                )?),
                headers,
            },
            OtlpProtocol::HttpProtobuf => ForwardTransport::Http {
                client: crate::export::http_client(&to, ca, config.timeout)?,
                headers,
            },
        };
        Ok(Self {
            transport,
            to,
            timeout: config.timeout,
            stats,
            outage: Outage::default(),
        })
    }

    /// Sends until every sender is gone and the queue is empty.
    pub async fn run(mut self, mut queue: mpsc::Receiver<Bytes>) {
        while let Some(body) = queue.recv().await {
            match self.send(body.clone()).await {
                Ok(()) => self
                    .outage
                    .recovered(&SpansForwardRecovered { to: &self.to }),
                Err(error) => {
                    let spans = spans_in(&body);
                    self.outage.failed(
                        &SpansForwardFailed {
                            to: &self.to,
                            error: &error,
                            spans,
                        },
                        self.stats.counter(SelfCounter::OtlpForwardFailed),
                    );
                }
            }
        }
    }

    async fn send(&mut self, body: Bytes) -> Result<(), ExportError> {
        match &mut self.transport {
            ForwardTransport::Grpc { grpc, headers } => {
                let mut request = tonic::Request::new(body);
                request.set_timeout(self.timeout);
                crate::export::add_grpc_metadata(request.metadata_mut(), headers);
                let call = async {
                    grpc.ready()
                        .await
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                    grpc.unary::<Bytes, Bytes, _>(
                        request,
                        http::uri::PathAndQuery::from_static(EXPORT_PATH),
                        RawCodec,
                    )
                    .await
                };
                crate::export::grpc_outcome(
                    tokio::time::timeout(self.timeout, call).await,
                    self.timeout,
                )
            }
            ForwardTransport::Http { client, headers } => {
                crate::export::post_protobuf(client, &self.to, headers, body).await
            }
        }
    }
}

/// Spans in an encoded request (for counting a failed forward; it decoded once already).
fn spans_in(body: &[u8]) -> u64 {
    ExportTraceServiceRequest::decode(body).map_or(0, |r| {
        r.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum()
    })
}

fn load_kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// For benchmarks (`examples/otlp_load.rs`, `benches/otlp_receive.rs`): one request of `spans`
/// vLLM `llm_request` spans with the attributes `do_tracing` sets, ids distinct across
/// requests `n`.
#[doc(hidden)]
pub fn load_test_request(n: u64, spans: usize) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans = (0..spans as u64)
        .map(|i| {
            let id = n * 1_000_000 + i + 1;
            Span {
                trace_id: [id.to_be_bytes(), 7u64.to_be_bytes()].concat(),
                span_id: id.to_be_bytes().to_vec(),
                name: "llm_request".into(),
                kind: 2,
                start_time_unix_nano: now,
                end_time_unix_nano: now + 900_000_000,
                attributes: vec![
                    load_kv(
                        "gen_ai.latency.time_to_first_token",
                        Value::DoubleValue(0.05),
                    ),
                    load_kv("gen_ai.latency.e2e", Value::DoubleValue(0.9)),
                    load_kv("gen_ai.latency.time_in_queue", Value::DoubleValue(0.01)),
                    load_kv(
                        "gen_ai.usage.prompt_tokens",
                        Value::IntValue(12 + i as i64 % 50),
                    ),
                    load_kv("gen_ai.usage.completion_tokens", Value::IntValue(40)),
                    load_kv(
                        "gen_ai.request.id",
                        Value::StringValue(format!("cmpl-{id}")),
                    ),
                    load_kv(
                        "gen_ai.response.finish_reasons",
                        Value::StringValue("[\"stop\"]".into()),
                    ),
                    load_kv("gen_ai.request.temperature", Value::DoubleValue(0.7)),
                    load_kv("gen_ai.request.max_tokens", Value::IntValue(256)),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    load_kv("service.name", Value::StringValue("vllm-load".into())),
                    load_kv("service.version", Value::StringValue("1".into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What opentelemetry-proto's serde types take (README, "LLM servers over OTLP").
    #[test]
    fn otlp_json_ignores_unknown_fields_and_refuses_base64_ids() {
        let with_value = |value: &str| {
            format!(
                r#"{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{{"traceId": "0102030405060708090A0B0C0D0E0F10",
                   "spanId": "0102030405060708", "futureField": 1,
                   "attributes": [{{"key": "k", "value": {value}}}]}}]}}]}}]}}"#
            )
        };
        let decoded = |body: String| {
            Export::Traces
                .json_to_protobuf(body.as_bytes())
                .map(|b| ExportTraceServiceRequest::decode(b.as_ref()).unwrap())
        };
        // An unknown field of a message is ignored, as the specification asks.
        let request = decoded(with_value(r#"{"intValue": "7"}"#)).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id, (1..=16).collect::<Vec<u8>>());
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(Value::IntValue(7))
        );
        // An unknown key inside an AnyValue is ignored too: the value is empty.
        let request = decoded(with_value(r#"{"futureValue": 1}"#)).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.attributes[0].value.as_ref().unwrap().value, None);
        // Base64 ids (the plain Protobuf JSON mapping) are not OTLP/JSON.
        let base64 = with_value(r#"{"intValue": 1}"#).replace(
            "0102030405060708090A0B0C0D0E0F10",
            "AQIDBAUGBwgJCgsMDQ4PEA==",
        );
        assert!(decoded(base64).is_err());
    }
}
