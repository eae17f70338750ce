//! KServe's payload logger in: an HTTP endpoint (`--cloudevents-listen`) that takes the
//! CloudEvents KServe's InferenceLogger posts for each inference request and response, joins the
//! two by `ce-id`, and hands each pair to ingest as records (ARCHITECTURE.md §6c: the same
//! `Ingest::accept_batch` as gRPC, so validation, declarations, routing and counting are the
//! same).
//!
//! What KServe sends (`docs/no-code-capture-sources.md` F): one POST per event, binary mode
//! (`ce-*` headers, the body the model server's raw JSON), `ce-type`
//! `org.kubeflow.serving.inference.request` / `.response`, the same `ce-id` on both, the
//! InferenceService's name in `ce-inferenceservicename`; the response event only when the
//! model answered 200, and possibly before its request (the logger's workers race). Structured
//! mode (`application/cloudevents+json`, `data` or `data_base64`) is taken too: the Python SDK
//! sends it. Header values are percent-decoded (the Python SDK's HTTP binding encodes them;
//! sdk-go writes them raw, which decoding leaves alone unless they hold `%XX`).
//!
//! The join store is bounded (`join_capacity` halves, each kept `join_ttl`): a full store pushes
//! out its oldest half (counted, `inferscope.cloudevents.evicted`); a half whose partner does
//! not come within the TTL is recorded with what it has (a request: features and error type
//! `no_response`, since KServe sends no response event unless the model answered 200; a
//! response: the prediction alone) and counted in `inferscope.cloudevents.expired`. Bodies are
//! parsed and mapped when they arrive, so a malformed one is refused with its own POST.
//!
//! The endpoint answers at once (a tap never waits on a shard queue): 202 when the event is
//! taken, 4xx with `{"error", "reason"}` when it is refused (counted in
//! `inferscope.cloudevents.rejected`, logged the first time), 503 when the pipeline sheds the
//! pair's records and 429 when the ingest memory budget is full (both counted in
//! `inferscope.records.shed`; KServe's logger does not retry).

pub mod tensors;

use crate::{
    events::{CloudEventsEvicted, CloudEventsExpired, CloudEventsReceived, CloudEventsRejected},
    ingest::{Ingest, IngestError},
    models::DeclarationRegistry,
    pb,
    self_metrics::{SelfCounter, SelfStats},
};
use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::Duration,
};
use tensors::{LoggerMode, MapError, ModelMapping, RequestRows, ResponseRows, Schema};
use tokio::{net::TcpListener, time::Instant};
use tokio_util::sync::CancellationToken;

/// Halves (a request or a response event) waiting for their partner, at most.
pub const DEFAULT_JOIN_CAPACITY: usize = 10_000;
/// How long a half waits for its partner: KServe's logger sends both within milliseconds of
/// each other unless its queue (100 events) backs up.
pub const DEFAULT_JOIN_TTL: Duration = Duration::from_secs(60);
/// The records' model version when the mapping gives none: KServe's events carry no version.
pub const DEFAULT_MODEL_VERSION: &str = "1";
/// `ce-type` of a request event (`kserve/kserve pkg/logger/types.go`).
pub const REQUEST_TYPE: &str = "org.kubeflow.serving.inference.request";
/// `ce-type` of a response event.
pub const RESPONSE_TYPE: &str = "org.kubeflow.serving.inference.response";
/// The error type of a request whose response never came.
pub const NO_RESPONSE: &str = "no_response";

/// `[capture.kserve]` of the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KserveFile {
    /// Halves waiting for their partner, at most [default: 10000].
    pub join_capacity: Option<usize>,
    /// Seconds a half waits for its partner [default: 60].
    pub join_ttl_seconds: Option<f64>,
    /// Per InferenceService name.
    pub models: HashMap<String, ModelMapping>,
}

/// The endpoint's settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct KserveSettings {
    /// `--cloudevents-listen`; `None`: the endpoint is off.
    pub listen: Option<SocketAddr>,
    pub join_capacity: usize,
    pub join_ttl: Duration,
    pub models: HashMap<String, ModelMapping>,
}

impl Default for KserveSettings {
    fn default() -> Self {
        Self {
            listen: None,
            join_capacity: DEFAULT_JOIN_CAPACITY,
            join_ttl: DEFAULT_JOIN_TTL,
            models: HashMap::new(),
        }
    }
}

impl KserveSettings {
    /// The mapping of `model`, or the empty one (everything read from the bodies and any
    /// declaration).
    pub fn mapping(&self, model: &str) -> &ModelMapping {
        static NONE: std::sync::OnceLock<ModelMapping> = std::sync::OnceLock::new();
        self.models
            .get(model)
            .unwrap_or_else(|| NONE.get_or_init(ModelMapping::default))
    }
}

/// Why an event was refused: its HTTP status, a reason (a short fixed word) and a message.
#[derive(Debug)]
pub struct Rejection {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

fn reject(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        reason,
        message: message.into(),
    }
}

fn bad_request(reason: &'static str, message: impl Into<String>) -> Rejection {
    reject(StatusCode::BAD_REQUEST, reason, message)
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.message, "reason": self.reason});
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<MapError> for Rejection {
    fn from(e: MapError) -> Self {
        match e {
            MapError::Json(_) => bad_request("malformed", e.to_string()),
            MapError::Shape(_) => bad_request("shape", e.to_string()),
        }
    }
}

/// Which half of an inference an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

/// The CloudEvent attributes the receiver uses, and the event's data.
#[derive(Debug)]
struct Event {
    id: String,
    kind: Kind,
    /// `inferenceservicename`, else the path's last segment.
    model: String,
    /// `time`, as Unix nanoseconds.
    time_unix_nano: u64,
    /// The distributed-tracing extension, when valid.
    traceparent: Option<String>,
    /// KServe's `metadata` extension: the request headers its `metadataHeaders` names, as JSON
    /// `{"Header-Name": ["value", ...]}` (request events only).
    metadata: Option<String>,
    data: Bytes,
}

/// A header's value, percent-decoded (CloudEvents HTTP binding §3.1.3.2).
fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let raw = headers.get(name)?.as_bytes();
    Some(percent_decode(raw))
}

fn percent_decode(raw: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a media type is JSON (`application/json`, parameters allowed).
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

const STRUCTURED: &str = "application/cloudevents+json";

/// The model when the event does not name it: the request path's last segment.
fn model_of_path(path: &str) -> Option<String> {
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .map(|s| percent_decode(s.as_bytes()))
}

/// The attributes every event needs, whatever its mode.
struct Attributes {
    id: Option<String>,
    kind: Option<String>,
    specversion: Option<String>,
    source: Option<String>,
    model: Option<String>,
    time: Option<String>,
    traceparent: Option<String>,
    metadata: Option<String>,
}

impl Attributes {
    fn into_event(self, path: &str, data: Bytes) -> Result<Event, Rejection> {
        let missing = |what: &str| {
            bad_request(
                "missing_attribute",
                format!("the event has no {what} (CloudEvents requires it)"),
            )
        };
        let id = self
            .id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("id"))?;
        let kind = self.kind.ok_or_else(|| missing("type"))?;
        let specversion = self.specversion.ok_or_else(|| missing("specversion"))?;
        self.source.ok_or_else(|| missing("source"))?;
        if specversion != "1.0" {
            return Err(bad_request(
                "specversion",
                format!("specversion {specversion:?}: only CloudEvents 1.0 is read"),
            ));
        }
        let kind = match kind.as_str() {
            REQUEST_TYPE => Kind::Request,
            RESPONSE_TYPE => Kind::Response,
            other => {
                return Err(bad_request(
                    "unknown_type",
                    format!(
                        "type {other:?} is neither {REQUEST_TYPE} nor {RESPONSE_TYPE} (KServe's \
                         InferenceLogger)"
                    ),
                ))
            }
        };
        let model = self
            .model
            .filter(|m| !m.is_empty())
            .or_else(|| model_of_path(path))
            .ok_or_else(|| {
                bad_request(
                    "missing_model",
                    "no inferenceservicename attribute and no path segment to name the model",
                )
            })?;
        Ok(Event {
            id,
            kind,
            model,
            time_unix_nano: self
                .time
                .as_deref()
                .and_then(crate::label_import::parse_rfc3339)
                .unwrap_or(0),
            traceparent: self
                .traceparent
                .filter(|t| crate::tracecontext::TraceParent::parse(t).is_ok()),
            metadata: self.metadata,
            data,
        })
    }
}

/// Reads one HTTP request as a CloudEvent, binary or structured.
fn read_event(path: &str, headers: &HeaderMap, body: Bytes) -> Result<Event, Rejection> {
    let content_type = header_value(headers, "content-type").unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(STRUCTURED) {
        return structured_event(path, &body);
    }
    if !is_json(&content_type) {
        return Err(reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            format!(
                "content type {content_type:?}: the payload logger's events are read as \
                 application/json (binary mode) or {STRUCTURED}"
            ),
        ));
    }
    let ce = |name: &str| header_value(headers, name);
    Attributes {
        id: ce("ce-id"),
        kind: ce("ce-type"),
        specversion: ce("ce-specversion"),
        source: ce("ce-source"),
        model: ce("ce-inferenceservicename"),
        time: ce("ce-time"),
        traceparent: ce("ce-traceparent"),
        metadata: ce("ce-metadata"),
    }
    .into_event(path, body)
}

/// A structured-mode event: the attributes and the data in one JSON object.
fn structured_event(path: &str, body: &[u8]) -> Result<Event, Rejection> {
    use base64::Engine;
    let malformed = |m: String| bad_request("malformed", m);
    let mut event: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("a structured event must be a JSON object: {e}")))?;
    let text = |key: &str| match event.get(key) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let attributes = Attributes {
        id: text("id"),
        kind: text("type"),
        specversion: text("specversion"),
        source: text("source"),
        model: text("inferenceservicename"),
        time: text("time"),
        traceparent: text("traceparent"),
        metadata: text("metadata"),
    };
    let content_type = text("datacontenttype");
    // The attributes first, so that an event without them is told so.
    let mut checked = attributes.into_event(path, Bytes::new())?;
    if let Some(content_type) = content_type.filter(|c| !is_json(c)) {
        return Err(reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            format!("datacontenttype {content_type:?}: the payloads are read as application/json"),
        ));
    }
    let data = match (event.remove("data"), event.remove("data_base64")) {
        // A string holds the payload's text (an SDK given JSON as a `str`).
        (Some(serde_json::Value::String(text)), None) => Bytes::from(text),
        (Some(data), None) => Bytes::from(data.to_string()),
        (None, Some(serde_json::Value::String(encoded))) => {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map(Bytes::from)
                .map_err(|e| malformed(format!("data_base64 is not base64: {e}")))?
        }
        (None, Some(_)) => return Err(malformed("data_base64 must be a string".into())),
        (Some(_), Some(_)) => return Err(malformed("data and data_base64 both given".into())),
        (None, None) => return Err(malformed("the event has no data".into())),
    };
    checked.data = data;
    Ok(checked)
}

/// One half of an inference, mapped when it arrived.
#[derive(Debug)]
enum Half {
    Request {
        rows: RequestRows,
        time_unix_nano: u64,
        traceparent: Option<String>,
    },
    Response {
        rows: ResponseRows,
        time_unix_nano: u64,
    },
}

/// The model version and the id of the event, with its half.
#[derive(Debug)]
struct Pending {
    model: String,
    version: String,
    id: String,
    half: Half,
    /// The half's place in the store's insertion order (oldest first).
    seq: u64,
    deadline: Instant,
}

/// Halves waiting for their partner, by (model, ce-id); bounded in number and age.
#[derive(Debug)]
pub struct JoinStore {
    entries: HashMap<(String, String), Pending>,
    /// Insertion order (= deadline order: the TTL is one for all).
    order: BTreeMap<u64, (String, String)>,
    next: u64,
    capacity: usize,
    ttl: Duration,
}

/// What offering a half to the store did.
#[derive(Debug)]
enum Offered {
    /// The partner was waiting: both halves (request first).
    Paired(Box<(Pending, Pending)>),
    /// Stored; the halves pushed out to make room (the oldest, or one with the same key and
    /// kind).
    Stored(Vec<Pending>),
}

impl JoinStore {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            capacity: capacity.max(1),
            ttl,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn offer(&mut self, mut pending: Pending, now: Instant) -> Offered {
        let key = (pending.model.clone(), pending.id.clone());
        let mut pushed = Vec::new();
        if let Some(waiting) = self.entries.remove(&key) {
            self.order.remove(&waiting.seq);
            let same_kind = matches!(
                (&waiting.half, &pending.half),
                (Half::Request { .. }, Half::Request { .. })
                    | (Half::Response { .. }, Half::Response { .. })
            );
            if !same_kind {
                return match waiting.half {
                    Half::Request { .. } => Offered::Paired(Box::new((waiting, pending))),
                    Half::Response { .. } => Offered::Paired(Box::new((pending, waiting))),
                };
            }
            // A second event of the same kind and id: the newer one waits instead.
            pushed.push(waiting);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            pushed.extend(self.entries.remove(&oldest));
        }
        pending.seq = self.next;
        pending.deadline = now + self.ttl;
        self.next += 1;
        self.order.insert(pending.seq, key.clone());
        self.entries.insert(key, pending);
        Offered::Stored(pushed)
    }

    /// Takes out the halves whose deadline passed (all of them with `everything`).
    fn expire(&mut self, now: Instant, everything: bool) -> Vec<Pending> {
        let mut expired = Vec::new();
        while let Some(entry) = self.order.first_entry() {
            let due = self
                .entries
                .get(entry.get())
                .is_none_or(|p| everything || p.deadline <= now);
            if !due {
                break;
            }
            let key = entry.remove();
            expired.extend(self.entries.remove(&key));
        }
        expired
    }
}

/// Starts the endpoint when `--cloudevents-listen` is set: binds, and serves until `shutdown`
/// (open connections get a quarter of the shutdown budget to finish; then the halves still
/// waiting are recorded). Returns the bound address and the task, which ends
/// once those records are dispatched: await it before the shards drain.
pub async fn start(
    config: &crate::config::Config,
    ingest: Ingest,
    declarations: Arc<DeclarationRegistry>,
    stats: Arc<SelfStats>,
    shutdown: CancellationToken,
) -> std::io::Result<Option<(SocketAddr, tokio::task::JoinHandle<()>)>> {
    let Some(listen) = config.kserve.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            target: "inferscope::capture",
            listen = %addr,
            "the CloudEvents endpoint listens beyond loopback: it has no TLS and no token, so \
             payloads (features, predictions) cross the network readable and anyone who \
             reaches it can post records; KServe's logger runs in the same pod, so listen on \
             127.0.0.1"
        );
    }
    let receiver = KserveReceiver::new(
        ingest,
        declarations,
        stats,
        config.kserve.clone(),
        config.max_message_bytes,
        config.limits.max_batch_records,
    );
    tracing::info!(target: "inferscope::capture", listen = %addr, "KServe payload-logger endpoint (CloudEvents) serving");
    let grace = config.shutdown_budget / 4;
    let task = tokio::spawn(receiver.serve(listener, config.max_connections, shutdown, grace));
    Ok(Some((addr, task)))
}

/// The receiver: cheap to clone.
#[derive(Clone)]
pub struct KserveReceiver {
    inner: Arc<Inner>,
}

struct Inner {
    ingest: Ingest,
    declarations: Arc<DeclarationRegistry>,
    stats: Arc<SelfStats>,
    settings: KserveSettings,
    max_body: usize,
    /// `--max-batch-records`: the most records one dispatched batch holds.
    max_batch_records: usize,
    store: Mutex<JoinStore>,
}

impl KserveReceiver {
    pub fn new(
        ingest: Ingest,
        declarations: Arc<DeclarationRegistry>,
        stats: Arc<SelfStats>,
        settings: KserveSettings,
        max_body: usize,
        max_batch_records: usize,
    ) -> Self {
        let store = Mutex::new(JoinStore::new(settings.join_capacity, settings.join_ttl));
        Self {
            inner: Arc::new(Inner {
                ingest,
                declarations,
                stats,
                settings,
                max_body,
                max_batch_records,
                store,
            }),
        }
    }

    /// Halves waiting for their partner now.
    pub fn pending(&self) -> usize {
        self.store().len()
    }

    /// Sets `inferscope.cloudevents.pending` to the store's size, under the store's lock, so
    /// that it never reads more than the store holds (a gauge, like `streams.active`, not an
    /// event).
    fn publish_pending(&self, store: &JoinStore) {
        let pending = self.inner.stats.counter(SelfCounter::CloudEventsPending);
        pending.store(store.len() as u64, Relaxed);
    }

    fn store(&self) -> std::sync::MutexGuard<'_, JoinStore> {
        self.inner.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves on `listener` until `shutdown`, then records every half still waiting (as if it
    /// had expired) so that the shards drain them.
    pub async fn serve(
        self,
        listener: TcpListener,
        max_connections: usize,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        use std::future::IntoFuture;
        let incoming = crate::listener::BoundedListener::new(
            listener,
            crate::listener::ConnectionSlots::new(max_connections),
            self.inner.stats.clone(),
        );
        let router = axum::Router::new()
            .fallback(receive)
            .with_state(self.clone());
        let sweeper_stop = CancellationToken::new();
        let sweeper = tokio::spawn(self.clone().sweep(sweeper_stop.clone()));
        let served = axum::serve(incoming, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();
        // A connection that does not close (a client that never finishes its request) may not
        // hold the drain: after `grace` the endpoint stops waiting for it.
        let cut = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = served => if let Err(e) = served {
                tracing::error!(target: "inferscope::capture", error = %e, "the CloudEvents endpoint failed");
            },
            _ = cut => tracing::warn!(
                target: "inferscope::capture",
                ?grace,
                "CloudEvents connections still open after the shutdown's grace: no longer waited for"
            ),
        }
        sweeper_stop.cancel();
        let _ = sweeper.await;
        self.expire(true);
    }

    /// Every `ttl / 4` (at most a second): records the halves whose partner did not come.
    async fn sweep(self, shutdown: CancellationToken) {
        let period = (self.inner.settings.join_ttl / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut ticks = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => self.expire(false),
            }
        }
    }

    fn expire(&self, everything: bool) {
        let expired = {
            let mut store = self.store();
            let expired = store.expire(Instant::now(), everything);
            self.publish_pending(&store);
            expired
        };
        if expired.is_empty() {
            return;
        }
        self.inner.stats.emit(&CloudEventsExpired {
            events: expired.len() as u64,
            ttl: self.inner.settings.join_ttl,
        });
        // One batch per model version (as many as the batch limit asks), not one per half: a
        // sweep may hold thousands, more than the shard queues take as separate batches.
        let mut batches: HashMap<(String, String), Vec<pb::InferenceRecord>> = HashMap::new();
        for half in expired {
            let (model, version, id) = (half.model, half.version, half.id);
            let records = match half.half {
                Half::Request {
                    rows,
                    time_unix_nano,
                    traceparent,
                } => request_records(&id, rows, time_unix_nano, traceparent, Some(NO_RESPONSE)),
                Half::Response {
                    rows,
                    time_unix_nano,
                } => response_records(&id, rows, time_unix_nano),
            };
            batches.entry((model, version)).or_default().extend(records);
        }
        for ((model, version), mut records) in batches {
            while !records.is_empty() {
                let rest = records.split_off(records.len().min(self.inner.max_batch_records));
                // A shed batch is counted by ingest (inferscope.records.shed); no one to answer.
                let _ = self.dispatch(&model, &version, std::mem::replace(&mut records, rest));
            }
        }
    }

    /// Validates and dispatches a pair's (or a lone half's) records.
    fn dispatch(
        &self,
        model: &str,
        version: &str,
        records: Vec<pb::InferenceRecord>,
    ) -> Result<(), IngestError> {
        if records.is_empty() {
            return Ok(());
        }
        let mapping = self.inner.settings.mapping(model);
        let declarations = match mapping.declaration(model, version) {
            Some(d) if self.inner.declarations.get(model, version).is_none() => vec![d],
            _ => Vec::new(),
        };
        let batch = pb::RecordBatch {
            model: model.to_owned(),
            version: version.to_owned(),
            declarations,
            records,
            ..Default::default()
        };
        // The ack is not awaited: a tap answers first (ARCHITECTURE.md §6c); record rejects
        // are counted per model by the shards.
        self.inner.ingest.accept_batch(batch).map(drop)
    }

    /// Handles one POST.
    async fn receive(&self, request: Request) -> Result<StatusCode, Rejection> {
        if request.method() != Method::POST {
            return Err(reject(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "the payload logger's events are POSTed",
            ));
        }
        let path = request.uri().path().to_owned();
        let (parts, body) = request.into_parts();
        let body = self.read_body(&parts.headers, body).await?;
        let event = read_event(&path, &parts.headers, body)?;
        self.inner.stats.emit(&CloudEventsReceived);

        let mapping = self.inner.settings.mapping(&event.model);
        let version = mapping
            .version
            .clone()
            .unwrap_or_else(|| DEFAULT_MODEL_VERSION.to_owned());
        let declaration = self.inner.declarations.get(&event.model, &version);
        let schema = Schema {
            mapping,
            declaration: declaration.as_deref(),
        };
        let body = tensors::parse(&event.data)?;
        let half = match event.kind {
            Kind::Request => Half::Request {
                rows: with_header_id(
                    tensors::request_rows(&body, &schema)?,
                    mapping,
                    event.metadata.as_deref(),
                ),
                time_unix_nano: event.time_unix_nano,
                traceparent: event.traceparent,
            },
            Kind::Response => Half::Response {
                rows: tensors::response_rows(&body, &schema)?,
                time_unix_nano: event.time_unix_nano,
            },
        };
        let records = match (mapping.logger_mode, half) {
            (
                LoggerMode::Request,
                Half::Request {
                    rows,
                    time_unix_nano,
                    traceparent,
                },
            ) => request_records(&event.id, rows, time_unix_nano, traceparent, None),
            (
                LoggerMode::Response,
                Half::Response {
                    rows,
                    time_unix_nano,
                },
            ) => response_records(&event.id, rows, time_unix_nano),
            (_, half) => {
                let pending = Pending {
                    model: event.model,
                    version,
                    id: event.id,
                    half,
                    seq: 0,
                    deadline: Instant::now(),
                };
                let offered = {
                    let mut store = self.store();
                    let offered = store.offer(pending, Instant::now());
                    self.publish_pending(&store);
                    offered
                };
                match offered {
                    Offered::Stored(pushed) => {
                        if !pushed.is_empty() {
                            self.inner.stats.emit(&CloudEventsEvicted {
                                events: pushed.len() as u64,
                                capacity: self.inner.settings.join_capacity,
                            });
                        }
                        return Ok(StatusCode::ACCEPTED);
                    }
                    Offered::Paired(pair) => {
                        let (request, response) = *pair;
                        let (model, version) = (request.model.clone(), request.version.clone());
                        let records = pair_records(request, response)?;
                        return self.answer(&model, &version, records);
                    }
                }
            }
        };
        let version = mapping.version.as_deref().unwrap_or(DEFAULT_MODEL_VERSION);
        self.answer(&event.model, version, records)
    }

    fn answer(
        &self,
        model: &str,
        version: &str,
        records: Vec<pb::InferenceRecord>,
    ) -> Result<StatusCode, Rejection> {
        match self.dispatch(model, version, records) {
            Ok(()) => Ok(StatusCode::ACCEPTED),
            Err(e @ IngestError::Batch(_)) => Err(bad_request("records", e.to_string())),
            Err(e @ IngestError::OverBudget) => Err(reject(
                StatusCode::TOO_MANY_REQUESTS,
                "over_budget",
                e.to_string(),
            )),
            Err(e) => Err(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "shed",
                e.to_string(),
            )),
        }
    }

    /// The body, at most `--max-message-bytes`.
    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, Rejection> {
        let limit = self.inner.max_body;
        let too_large = || {
            reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over --max-message-bytes ({limit} bytes)"),
            )
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        axum::body::to_bytes(body, limit).await.map_err(|e| {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.to_string().contains("length limit"));
            if over {
                too_large()
            } else {
                bad_request("unreadable", format!("cannot read the body: {e}"))
            }
        })
    }

    fn rejected(&self, rejection: &Rejection) {
        self.inner.stats.emit(&CloudEventsRejected {
            reason: rejection.reason,
            message: &rejection.message,
        });
    }
}

/// The axum handler: every path, every method (others than POST are refused).
async fn receive(State(receiver): State<KserveReceiver>, request: Request) -> Response {
    match receiver.receive(request).await {
        Ok(status) => status.into_response(),
        Err(rejection) => {
            // Refusals for want of room are counted by ingest (inferscope.records.shed).
            let full = [
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::TOO_MANY_REQUESTS,
            ];
            if !full.contains(&rejection.status) {
                receiver.rejected(&rejection);
            }
            rejection.into_response()
        }
    }
}

/// `rows` named by the request header `request_id_header` of the model's mapping, when KServe's
/// `metadata` extension carries it (the logger's `metadataHeaders` must list it); a header
/// named in any case, its first value; else `rows` as they are.
fn with_header_id(
    mut rows: RequestRows,
    mapping: &ModelMapping,
    metadata: Option<&str>,
) -> RequestRows {
    let (Some(wanted), Some(metadata)) = (&mapping.request_id_header, metadata) else {
        return rows;
    };
    let Ok(headers) = serde_json::from_str::<HashMap<String, Vec<String>>>(metadata) else {
        return rows;
    };
    let value = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
        .and_then(|(_, values)| values.first())
        .filter(|v| !v.is_empty());
    if let Some(value) = value {
        rows.id = Some(value.clone());
    }
    rows
}

/// The request id of row `row` of the request whose id is `base`: always `<base>/<row>`, a
/// single-row request included (`<base>/0`), so that label senders follow one rule.
fn request_id(base: &str, row: usize) -> String {
    format!("{base}/{row}")
}

fn request_records(
    id: &str,
    rows: RequestRows,
    time_unix_nano: u64,
    traceparent: Option<String>,
    error_type: Option<&str>,
) -> Vec<pb::InferenceRecord> {
    let base = rows.id.as_deref().unwrap_or(id);
    rows.rows
        .into_iter()
        .enumerate()
        .map(|(row, features)| pb::InferenceRecord {
            request_id: request_id(base, row),
            time_unix_nano,
            named_features: features,
            traceparent: traceparent.clone().unwrap_or_default(),
            error_type: error_type.unwrap_or_default().to_owned(),
            ..Default::default()
        })
        .collect()
}

fn response_records(id: &str, rows: ResponseRows, time_unix_nano: u64) -> Vec<pb::InferenceRecord> {
    let base = rows.id.as_deref().unwrap_or(id);
    rows.rows
        .into_iter()
        .enumerate()
        .map(|(row, prediction)| pb::InferenceRecord {
            request_id: request_id(base, row),
            time_unix_nano,
            prediction,
            ..Default::default()
        })
        .collect()
}

/// A request and its response as records: row by row, features from the one and the
/// prediction from the other.
fn pair_records(
    request: Pending,
    response: Pending,
) -> Result<Vec<pb::InferenceRecord>, Rejection> {
    let (
        Half::Request {
            rows: features,
            time_unix_nano,
            traceparent,
        },
        Half::Response { rows: outputs, .. },
    ) = (request.half, response.half)
    else {
        unreachable!("JoinStore::offer pairs a request with a response");
    };
    if features.rows.len() != outputs.rows.len() {
        return Err(bad_request(
            "shape",
            format!(
                "the request of event {:?} has {} rows, its response {}",
                request.id,
                features.rows.len(),
                outputs.rows.len()
            ),
        ));
    }
    let mut records = request_records(&request.id, features, time_unix_nano, traceparent, None);
    for (record, prediction) in records.iter_mut().zip(outputs.rows) {
        record.prediction = prediction;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(id: &str, kind: Kind) -> Pending {
        Pending {
            model: "m".into(),
            version: "1".into(),
            id: id.into(),
            half: match kind {
                Kind::Request => Half::Request {
                    rows: RequestRows::default(),
                    time_unix_nano: 0,
                    traceparent: None,
                },
                Kind::Response => Half::Response {
                    rows: ResponseRows::default(),
                    time_unix_nano: 0,
                },
            },
            seq: 0,
            deadline: Instant::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_may_come_first_and_the_store_stays_bounded() {
        let mut store = JoinStore::new(2, Duration::from_secs(60));
        let now = Instant::now();
        assert!(matches!(
            store.offer(half("a", Kind::Response), now),
            Offered::Stored(p) if p.is_empty()
        ));
        let Offered::Paired(pair) = store.offer(half("a", Kind::Request), now) else {
            panic!("not paired");
        };
        let (request, response) = *pair;
        assert!(matches!(request.half, Half::Request { .. }));
        assert!(matches!(response.half, Half::Response { .. }));
        assert!(store.is_empty());
        for id in ["b", "c", "d"] {
            store.offer(half(id, Kind::Request), now);
        }
        assert_eq!(store.len(), 2);
        assert_eq!(store.order.len(), 2);
        let expired = store.expire(now + Duration::from_secs(61), false);
        let ids: Vec<_> = expired.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["c", "d"]);
    }

    #[test]
    fn header_values_are_percent_decoded() {
        assert_eq!(percent_decode(b"a%20b%22"), "a b\"");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"{\"X\":[\"1\"]}"), "{\"X\":[\"1\"]}");
    }
}
