//! The background side: one Rust thread running a single-threaded tokio runtime that takes records
//! (already encoded) from the bounded queue, a batch's worth at a time, frames them as
//! `RecordBatch`es and streams them to the sidecar over
//! `StreamRecords`, and sends delayed labels with `SubmitLabels`. It never takes the interpreter
//! lock, except to log a warning (rate-limited) or to call the user's `on_ack`.
//!
//! The behaviour is the pure-Python client's (deploy/python/inferscope_client/client.py): at most
//! `max_inflight` batches wait for their acks; a stream that fails with a retryable status is
//! reopened with jittered exponential backoff and its unacknowledged batches are resent, each at
//! most `max_resends` times; declarations go out first on every new stream; records dropped on
//! this side are reported in the next batch's `client_dropped_records`.

use crate::pb::{self, ingest_service_client::IngestServiceClient};
use bytes::{Bytes, BytesMut};
use prost::encoding::{self, DecodeContext, WireType};
use pyo3::types::PyAnyMethods;
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Condvar, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::sync::{mpsc, watch, Notify};
use tonic::{transport::Channel, Code, Status};

/// A `RecordBatch` already encoded, in three parts that are sent one after the other: `head`
/// (sequence, model, version, declarations), `records` (the `records` fields as the queue holds
/// them, [`RecordQueue`]) and `tail` (`client_dropped_records`). The generated client sends these
/// bytes as they are, so a batch is encoded once, its records are never copied into a batch
/// buffer of their own, and the same bytes are resent (build.rs maps the proto's `RecordBatch`
/// here). The parts are in field-number order, as prost would write them.
#[derive(Clone, Default, PartialEq, Debug)]
pub struct EncodedBatch {
    pub head: Bytes,
    pub records: Bytes,
    pub tail: Bytes,
}

impl EncodedBatch {
    /// The whole batch in one buffer (for `on_ack` and the reject log, not for sending).
    pub fn to_vec(&self) -> Vec<u8> {
        [&self.head[..], &self.records[..], &self.tail[..]].concat()
    }
}

impl prost::Message for EncodedBatch {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.head);
        buf.put_slice(&self.records);
        buf.put_slice(&self.tail);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // A client never decodes a RecordBatch.
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.head.len() + self.records.len() + self.tail.len()
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Records waiting to be sent, each already encoded as one `records` field of a `RecordBatch`
/// (field 5: key, length, the `InferenceRecord`'s bytes; crate::encode writes them), kept in
/// chunks of at most `batch_size` records. A chunk is one batch's records: the sender takes the
/// oldest chunk whole and sends its bytes as they are ([`EncodedBatch::records`]), so a record
/// costs no allocation of its own, and its bytes are copied once on this side (from the caller's
/// scratch buffer into the chunk).
#[derive(Debug, Default)]
pub struct RecordQueue {
    /// Oldest first; only the last one may hold fewer than `batch_size` records.
    chunks: VecDeque<Chunk>,
    /// Records in `chunks`: `record` drops past `max_queue`.
    len: usize,
    /// The capacity to give a new chunk: the size of the last chunk that was filled, so that a
    /// chunk rarely grows while it fills.
    chunk_capacity: usize,
}

/// One batch's records, encoded.
#[derive(Debug, Default)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub records: usize,
}

impl RecordQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends one record's field: `key` (its key and length) and `record` (its bytes).
    pub fn push(&mut self, key: &[u8], record: &[u8], batch_size: usize) {
        let size = key.len() + record.len();
        let capacity = self.chunk_capacity.max(size * batch_size.min(64));
        let chunk = match self.chunks.back_mut() {
            Some(c) if c.records < batch_size => c,
            _ => {
                self.chunks.push_back(Chunk {
                    bytes: Vec::with_capacity(capacity),
                    records: 0,
                });
                self.chunks.back_mut().unwrap()
            }
        };
        chunk.bytes.extend_from_slice(key);
        chunk.bytes.extend_from_slice(record);
        chunk.records += 1;
        if chunk.records == batch_size {
            self.chunk_capacity = self.chunk_capacity.max(chunk.bytes.len());
        }
        self.len += 1;
    }

    /// Takes the oldest chunk: `batch_size` records, or all of them when fewer are queued.
    pub fn take(&mut self) -> Option<Chunk> {
        let chunk = self.chunks.pop_front()?;
        self.len -= chunk.records;
        Some(chunk)
    }

    /// Empties the queue; returns how many records it held.
    pub fn clear(&mut self) -> usize {
        self.chunks.clear();
        std::mem::take(&mut self.len)
    }
}

/// The constructor's arguments, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: String,
    pub model: String,
    pub version: String,
    pub max_queue: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_inflight: usize,
    pub max_resends: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub max_label_queue: usize,
    pub label_batch_size: usize,
    pub rpc_timeout: Duration,
}

/// The client's counters (records unless the name says labels), as `ClientStats` reports them.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub rejected: AtomicU64,
    pub flagged: AtomicU64,
    pub dropped: AtomicU64,
    pub resent: AtomicU64,
    pub stream_errors: AtomicU64,
    pub labels_sent: AtomicU64,
    pub labels_acked: AtomicU64,
    pub labels_rejected: AtomicU64,
    pub labels_dropped: AtomicU64,
    /// Records queued, in a batch being built, or in flight: `flush` waits for zero.
    pub unfinished: AtomicI64,
    pub labels_unfinished: AtomicI64,
}

/// Declared model versions: all of them go out at the start of every stream, new ones with the
/// next batch.
#[derive(Debug, Default)]
pub struct Declarations {
    pub all: Vec<pb::ModelDeclaration>,
    pub pending: Vec<pb::ModelDeclaration>,
}

/// What the caller's side and the background thread share.
pub struct Shared {
    pub settings: Settings,
    /// Records waiting, encoded, at most `max_queue`.
    pub queue: Mutex<RecordQueue>,
    /// The queue's length, read without its lock (`record` drops without encoding when the
    /// queue is full; the sender's polling; `stats`). Written under the lock.
    pub queued: AtomicUsize,
    pub labels: Mutex<VecDeque<pb::GroundTruth>>,
    pub declarations: Mutex<Declarations>,
    pub counters: Counters,
    /// A full batch is queued, or flush() or close() was called.
    pub wake: Notify,
    pub label_wake: Notify,
    pub flush_requested: AtomicBool,
    /// The sender polls the queue often enough to take each batch as it fills (see
    /// [`Records::poll_after`]): `record` then need not wake it, which would cost the caller a
    /// system call (an eventfd write) every `batch_size` records.
    pub polling: AtomicBool,
    /// A record stream is open: labels are taken from their queue only then, so that an absent
    /// sidecar costs retries, not labels (they wait in their bounded queue).
    pub connected: AtomicBool,
    /// close() was called: send what is left, then stop.
    pub closing: AtomicBool,
    /// close() gave up waiting: stop now. A watch, so that every await can be cut short.
    pub abort: watch::Sender<bool>,
    /// Signalled when `unfinished` or `labels_unfinished` goes down, for flush() and close().
    pub progress: (Mutex<()>, Condvar),
    /// The user's `on_ack(ack, batch)`, called with the generated Python messages.
    pub on_ack: Option<pyo3::Py<pyo3::PyAny>>,
    /// Why the last record given to `record` could not be read (logged by the background thread,
    /// so that the caller's thread never logs).
    pub invalid: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(settings: Settings, on_ack: Option<pyo3::Py<pyo3::PyAny>>) -> Self {
        Self {
            settings,
            queue: Mutex::new(RecordQueue::default()),
            queued: AtomicUsize::new(0),
            labels: Mutex::new(VecDeque::new()),
            declarations: Mutex::new(Declarations::default()),
            counters: Counters::default(),
            wake: Notify::new(),
            label_wake: Notify::new(),
            flush_requested: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            abort: watch::channel(false).0,
            progress: (Mutex::new(()), Condvar::new()),
            on_ack,
            invalid: Mutex::new(None),
        }
    }

    fn aborted(&self) -> bool {
        *self.abort.borrow()
    }

    fn closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    /// Records or labels finished (acked, rejected or dropped): wakes flush() and close().
    pub fn finished(&self, records: i64, labels: i64) {
        if records != 0 {
            self.counters.unfinished.fetch_sub(records, Relaxed);
        }
        if labels != 0 {
            self.counters.labels_unfinished.fetch_sub(labels, Relaxed);
        }
        let _guard = self.progress.0.lock().unwrap();
        self.progress.1.notify_all();
    }

    /// Waits (without the interpreter lock: the caller released it) until nothing is
    /// unfinished, or until `deadline`; true if nothing is.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let idle = || {
            self.counters.unfinished.load(Relaxed) <= 0
                && self.counters.labels_unfinished.load(Relaxed) <= 0
        };
        let mut guard = self.progress.0.lock().unwrap();
        while !idle() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // A bounded wait: counters move outside this mutex, so a wake-up can be missed.
            let wait = (deadline - now).min(Duration::from_millis(20));
            guard = self.progress.1.wait_timeout(guard, wait).unwrap().0;
        }
        true
    }
}

/// Status codes after which the unacknowledged batches are sent again (as the pure-Python
/// client's `_RETRYABLE`).
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Cancelled
            | Code::Internal
            | Code::Unknown
    )
}

/// A batch sent and not yet acknowledged.
struct Inflight {
    sequence: u64,
    batch: EncodedBatch,
    records: usize,
    /// Its `client_dropped_records`: reported again if this batch is lost.
    reported: u64,
    attempts: u32,
}

/// Log levels of Python's `logging`.
const DEBUG: i32 = 10;
const INFO: i32 = 20;
const WARNING: i32 = 30;
const ERROR: i32 = 40;

/// Seconds between repeated warnings of one kind (the pure-Python client's `_WARN_EVERY`).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Logs on the `inferscope_client` logger, taking the interpreter lock for the call.
fn log(level: i32, message: &str) {
    pyo3::Python::attach(|py| {
        let logger = py
            .import("logging")
            .and_then(|logging| logging.call_method1("getLogger", ("inferscope_client",)));
        if let Ok(logger) = logger {
            let _ = logger.call_method1("log", (level, message));
        }
    });
}

/// Warnings of one kind at most every [`WARN_EVERY`]; the others at DEBUG.
#[derive(Default)]
struct Warnings {
    next: std::collections::HashMap<&'static str, Instant>,
}

impl Warnings {
    /// Whether a warning of this kind is due now (and then not for [`WARN_EVERY`]).
    fn due(&mut self, kind: &'static str) -> bool {
        let now = Instant::now();
        match self.next.get(kind) {
            Some(next) if now < *next => false,
            _ => {
                self.next.insert(kind, now + WARN_EVERY);
                true
            }
        }
    }

    fn warn(&mut self, kind: &'static str, level: i32, message: &str) {
        if self.due(kind) {
            return log(level, message);
        }
        let debug = pyo3::Python::attach(|py| {
            py.import("logging")
                .and_then(|l| l.call_method1("getLogger", ("inferscope_client",)))
                .and_then(|l| l.call_method1("isEnabledFor", (DEBUG,)))
                .and_then(|b| b.extract::<bool>())
                .unwrap_or(false)
        });
        if debug {
            log(DEBUG, message);
        }
    }
}

/// A small xorshift for backoff jitter (no need for a random crate).
fn jitter(backoff: Duration) -> Duration {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut x = seed;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let fraction = 0.5 + (x % 1000) as f64 / 2000.0; // uniform in [backoff/2, backoff)
    backoff.mul_f64(fraction)
}

/// Encodes a `RecordBatch` (proto/inferscope/v1/ingest.proto, fields 1–6) around a chunk of
/// encoded records ([`RecordQueue`]), in the order prost would: the fields before the records
/// and the one after them with prost's own field encoders, the records as they are.
fn encode_batch(
    sequence: u64,
    settings: &Settings,
    declarations: &[pb::ModelDeclaration],
    records: Vec<u8>,
    dropped: u64,
) -> EncodedBatch {
    let mut head = BytesMut::with_capacity(
        32 + settings.model.len()
            + settings.version.len()
            + declarations
                .iter()
                .map(|d| prost::Message::encoded_len(d) + 4)
                .sum::<usize>(),
    );
    encoding::uint64::encode(1, &sequence, &mut head);
    for (tag, text) in [(2, &settings.model), (3, &settings.version)] {
        if !text.is_empty() {
            encoding::string::encode(tag, text, &mut head);
        }
    }
    for declaration in declarations {
        encoding::message::encode(4, declaration, &mut head);
    }
    let mut tail = BytesMut::new();
    if dropped != 0 {
        encoding::uint64::encode(6, &dropped, &mut tail);
    }
    EncodedBatch {
        head: head.freeze(),
        records: Bytes::from(records),
        tail: tail.freeze(),
    }
}

/// Runs the background side until close() (or an abort); called on the client's own thread.
pub fn run(shared: Arc<Shared>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log(
                ERROR,
                &format!("inferscope: cannot start the client's runtime: {e}"),
            );
            return;
        }
    };
    runtime.block_on(async {
        let uri = if shared.settings.target.contains("://") {
            shared.settings.target.clone()
        } else {
            format!("http://{}", shared.settings.target)
        };
        let endpoint = match tonic::transport::Endpoint::from_shared(uri) {
            Ok(e) => e
                .tcp_nodelay(true)
                .connect_timeout(shared.settings.backoff_max.max(Duration::from_secs(1))),
            Err(e) => {
                log(
                    ERROR,
                    &format!("inferscope: bad target {:?}: {e}", shared.settings.target),
                );
                return;
            }
        };
        let labels = endpoint.connect_lazy();
        let records = Records::new(shared.clone(), endpoint);
        tokio::join!(records.run(), run_labels(shared.clone(), labels));
    });
}

/// The record stream's state, kept across streams.
struct Records {
    shared: Arc<Shared>,
    /// Connected anew for each stream, so that records are taken from the queue only once the
    /// sidecar is there: an absent sidecar costs retries, not records.
    endpoint: tonic::transport::Endpoint,
    sequence: u64,
    /// Batches to send first on the next stream, in sequence order.
    resend: VecDeque<Inflight>,
    /// Dropped records already reported in a batch.
    reported: u64,
    warnings: Warnings,
}

/// How one stream ended: `None` when the server closed it cleanly.
type Ending = Option<Status>;

impl Records {
    fn new(shared: Arc<Shared>, endpoint: tonic::transport::Endpoint) -> Self {
        Self {
            shared,
            endpoint,
            sequence: 0,
            resend: VecDeque::new(),
            reported: 0,
            warnings: Warnings::default(),
        }
    }

    fn done(&self) -> bool {
        let s = &self.shared;
        s.aborted() || (s.closing() && s.counters.unfinished.load(Relaxed) <= 0)
    }

    async fn run(mut self) {
        let mut backoff = self.shared.settings.backoff_initial;
        let mut abort = self.shared.abort.subscribe();
        loop {
            if self.done() {
                return;
            }
            self.log_notes();
            let (ending, acks) = self.session(&mut abort).await;
            if self.done() {
                return;
            }
            if ending.is_none() && acks > 0 {
                backoff = self.shared.settings.backoff_initial;
                continue; // the server ended the stream cleanly after acking: reconnect at once
            }
            if acks > 0 {
                backoff = self.shared.settings.backoff_initial;
            }
            let delay = jitter(backoff);
            backoff = (backoff * 2).min(self.shared.settings.backoff_max);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = abort.changed() => {}
                // close() and flush() cut the wait short (a permit is kept if nobody waits).
                _ = self.shared.wake.notified() => {}
            }
        }
    }

    /// Logs what the caller's side noted (an unreadable record) and the drops so far.
    fn log_notes(&mut self) {
        let note = self.shared.invalid.lock().unwrap().take();
        if let Some(note) = note {
            self.warnings.warn("invalid", WARNING, &note);
        }
        let dropped = self.shared.counters.dropped.load(Relaxed);
        let labels = self.shared.counters.labels_dropped.load(Relaxed);
        if dropped > 0 || labels > 0 {
            let message = format!(
                "inferscope: {dropped} records and {labels} labels dropped so far (queue full, \
                 invalid or undeliverable)"
            );
            self.warnings.warn("drops", WARNING, &message);
        }
    }

    /// One `StreamRecords` call, from opening it until it ends; returns how it ended and how
    /// many acks it got.
    async fn session(&mut self, abort: &mut watch::Receiver<bool>) -> (Ending, usize) {
        let settings = self.shared.settings.clone();
        let connected = tokio::select! {
            connected = self.endpoint.connect() => connected,
            _ = abort.changed() => return (Some(Status::cancelled("closed")), 0),
        };
        let channel = match connected {
            Ok(channel) => channel,
            Err(e) => {
                let queued = self.shared.queued.load(Relaxed);
                self.warnings.warn(
                    "connect",
                    INFO,
                    &format!(
                        "inferscope: sidecar at {} not reachable yet ({e}); {queued} records queued",
                        settings.target,
                    ),
                );
                return (Some(Status::unavailable(e.to_string())), 0);
            }
        };
        let mut client = IngestServiceClient::new(channel);
        let (tx, rx) = mpsc::channel::<EncodedBatch>(settings.max_inflight + 1);
        // Batches go out while the call opens: a server may send its response headers only with
        // the first ack (grpcio does).
        let opening = client.stream_records(tokio_stream::wrappers::ReceiverStream::new(rx));
        tokio::pin!(opening);
        let mut inbound: Option<tonic::Streaming<pb::BatchAck>> = None;
        let mut tx = Some(tx);
        let mut inflight: BTreeMap<u64, Inflight> = BTreeMap::new();
        let mut acks = 0;
        self.shared.connected.store(true, Relaxed);
        // Every declaration goes out again on a new stream: with its first batch, or in a batch
        // of their own when batches wait to be resent (they must find their declarations).
        let all = {
            let mut d = self.shared.declarations.lock().unwrap();
            d.pending = d.all.clone();
            if self.resend.is_empty() {
                Vec::new()
            } else {
                std::mem::take(&mut d.pending)
            }
        };
        if !all.is_empty() {
            self.sequence += 1;
            let batch = encode_batch(self.sequence, &settings, &all, Vec::new(), 0);
            let entry = Inflight {
                sequence: self.sequence,
                batch,
                records: 0,
                reported: 0,
                attempts: 0,
            };
            if let Some(tx) = &tx {
                let _ = tx.send(entry.batch.clone()).await;
            }
            inflight.insert(entry.sequence, entry);
        }
        let mut deadline = tokio::time::Instant::now() + settings.flush_interval;
        let mut poll: Option<tokio::time::Instant> = None;
        let mut last_poll = tokio::time::Instant::now();
        let ending: Ending = loop {
            let can_send = tx.is_some() && inflight.len() < settings.max_inflight;
            let wake_at = poll.map_or(deadline, |p| p.min(deadline));
            tokio::select! {
                biased;
                _ = abort.changed() => break Some(Status::cancelled("closed")),
                opened = &mut opening, if inbound.is_none() => match opened {
                    Ok(response) => inbound = Some(response.into_inner()),
                    Err(status) => break Some(status),
                },
                message = async { inbound.as_mut().unwrap().message().await }, if inbound.is_some() => match message {
                    Ok(Some(ack)) => {
                        acks += 1;
                        self.handle_ack(&mut inflight, ack);
                    }
                    Ok(None) => break None,
                    Err(status) => break Some(status),
                },
                _ = self.shared.wake.notified(), if can_send => {
                    poll = self.poll_after(&mut last_poll);
                    self.send_next(&mut tx, &mut inflight, false, &mut deadline).await;
                }
                _ = tokio::time::sleep_until(wake_at), if can_send => {
                    poll = self.poll_after(&mut last_poll);
                    let timed_out = tokio::time::Instant::now() >= deadline;
                    self.send_next(&mut tx, &mut inflight, timed_out, &mut deadline).await;
                    if timed_out {
                        self.log_notes();
                    }
                }
            }
        };
        self.shared.connected.store(false, Relaxed);
        self.end_session(inflight, ending.as_ref());
        (ending, acks)
    }

    /// When to look at the queue next, from the rate records arrived at since the last look:
    /// about when half a batch will have come, between 1 ms and `flush_interval`; `None` (wait
    /// for the flush interval or a wake-up) when nothing came. Sets [`Shared::polling`].
    fn poll_after(&self, last: &mut tokio::time::Instant) -> Option<tokio::time::Instant> {
        let settings = &self.shared.settings;
        let now = tokio::time::Instant::now();
        let elapsed = now.duration_since(*last).as_secs_f64().max(1e-6);
        *last = now;
        let queued = self.shared.queued.load(Relaxed);
        let next = (queued > 0).then(|| {
            let half_batch = settings.batch_size as f64 / 2.0 / (queued as f64 / elapsed);
            let wait =
                Duration::from_secs_f64(half_batch.min(settings.flush_interval.as_secs_f64()))
                    .max(Duration::from_millis(1));
            now + wait
        });
        let polling = next.is_some_and(|p| p - now < settings.flush_interval);
        self.shared.polling.store(polling, Relaxed);
        next
    }

    /// Sends the next batch if one is due: a batch to resend, a full batch, or (when `timed_out`,
    /// or on flush() and close()) whatever is queued. Ends the request stream when closing and
    /// nothing is left.
    async fn send_next(
        &mut self,
        tx: &mut Option<mpsc::Sender<EncodedBatch>>,
        inflight: &mut BTreeMap<u64, Inflight>,
        timed_out: bool,
        deadline: &mut tokio::time::Instant,
    ) {
        let settings = &self.shared.settings;
        let Some(sender) = tx.as_ref() else { return };
        if let Some(mut entry) = self.resend.pop_front() {
            entry.attempts += 1;
            self.shared
                .counters
                .resent
                .fetch_add(entry.records as u64, Relaxed);
            let _ = sender.send(entry.batch.clone()).await;
            inflight.insert(entry.sequence, entry);
            // More may be due at once.
            self.shared.wake.notify_one();
            return;
        }
        let urgent = self.shared.closing() || self.shared.flush_requested.load(Relaxed);
        let chunk = {
            let mut queue = self.shared.queue.lock().unwrap();
            if queue.len() < settings.batch_size && !(timed_out || urgent) {
                return;
            }
            let chunk = queue.take().unwrap_or_default();
            self.shared.queued.store(queue.len(), Relaxed);
            chunk
        };
        *deadline = tokio::time::Instant::now() + settings.flush_interval;
        let declarations = std::mem::take(&mut self.shared.declarations.lock().unwrap().pending);
        let dropped = self.shared.counters.dropped.load(Relaxed);
        let report = dropped.saturating_sub(self.reported);
        if chunk.records == 0 && declarations.is_empty() && report == 0 {
            self.shared.flush_requested.store(false, Relaxed);
            if self.shared.closing() && inflight.is_empty() {
                *tx = None; // half-close: the server acks what is in flight and ends the call
            }
            return;
        }
        self.reported += report;
        self.sequence += 1;
        let records = chunk.records;
        let batch = encode_batch(self.sequence, settings, &declarations, chunk.bytes, report);
        self.shared.counters.sent.fetch_add(records as u64, Relaxed);
        let entry = Inflight {
            sequence: self.sequence,
            batch,
            records,
            reported: report,
            attempts: 0,
        };
        let _ = sender.send(entry.batch.clone()).await;
        inflight.insert(entry.sequence, entry);
        // A full batch may still be waiting behind this one.
        if self.shared.queued.load(Relaxed) >= settings.batch_size || urgent {
            self.shared.wake.notify_one();
        }
    }

    fn handle_ack(&mut self, inflight: &mut BTreeMap<u64, Inflight>, ack: pb::BatchAck) {
        let Some(entry) = inflight.remove(&ack.sequence) else {
            log(
                DEBUG,
                &format!("inferscope: ack for unknown batch {}", ack.sequence),
            );
            return;
        };
        let c = &self.shared.counters;
        c.acked.fetch_add(ack.accepted as u64, Relaxed);
        c.rejected.fetch_add(ack.rejects.len() as u64, Relaxed);
        c.flagged.fetch_add(ack.flags.len() as u64, Relaxed);
        self.shared.finished(entry.records as i64, 0);
        if !ack.rejects.is_empty() || self.shared.on_ack.is_some() {
            let warn = !ack.rejects.is_empty() && self.warnings.due("rejects");
            let rejected = c.rejected.load(Relaxed);
            call_python(&self.shared, &ack, &entry.batch, rejected, warn);
        }
    }

    /// The stream is over: its unacknowledged batches are resent on the next one, or dropped
    /// (and their drops reported again) when the failure is not retryable or they were resent
    /// `max_resends` times already.
    fn end_session(&mut self, inflight: BTreeMap<u64, Inflight>, ending: Option<&Status>) {
        let retry = ending.is_none_or(|s| retryable(s.code())) && !self.shared.aborted();
        let batches = inflight.len();
        let mut lost = 0usize;
        for (_, entry) in inflight {
            if entry.records == 0 && entry.reported == 0 {
                continue; // a declarations batch: the next stream sends them again anyway
            }
            if retry && entry.attempts < self.shared.settings.max_resends {
                self.resend.push_back(entry);
            } else {
                lost += entry.records;
                self.reported -= entry.reported;
            }
        }
        self.resend.make_contiguous().sort_by_key(|e| e.sequence);
        if lost > 0 {
            self.shared.counters.dropped.fetch_add(lost as u64, Relaxed);
            self.shared.finished(lost as i64, 0);
        }
        let Some(status) = ending else { return };
        if self.shared.aborted() {
            return;
        }
        self.shared.counters.stream_errors.fetch_add(1, Relaxed);
        let target = &self.shared.settings.target;
        let (code, details) = (status.code(), status.message());
        if retryable(code) {
            let level = if code == Code::Unavailable {
                INFO
            } else {
                WARNING
            };
            let message = format!(
                "inferscope: stream to {target} ended with {code:?} ({details}); reconnecting, \
                 {batches} batches to resend, {lost} records dropped"
            );
            self.warnings.warn("stream", level, &message);
        } else {
            let message = format!(
                "inferscope: stream to {target} failed with {code:?} ({details}); {lost} \
                 unacknowledged records dropped"
            );
            self.warnings.warn("stream", ERROR, &message);
        }
    }
}

/// Hands an ack with rejects (to log them as the pure-Python client does) or any ack (for the
/// user's `on_ack`) to `inferscope_client.native._on_ack`, with the generated Python messages
/// decoded there. What the callback raises is logged and ignored.
fn call_python(
    shared: &Shared,
    ack: &pb::BatchAck,
    batch: &EncodedBatch,
    rejected: u64,
    warn: bool,
) {
    use pyo3::types::PyBytes;
    let ack_bytes = prost::Message::encode_to_vec(ack);
    let batch = batch.to_vec();
    pyo3::Python::attach(|py| {
        let called = py.import("inferscope_client.native").and_then(|m| {
            let callback = shared.on_ack.as_ref().map(|c| c.bind(py).clone());
            m.getattr("_on_ack")?.call1((
                PyBytes::new(py, &ack_bytes),
                PyBytes::new(py, &batch),
                rejected,
                warn,
                callback,
            ))
        });
        if let Err(e) = called {
            let _ = py
                .import("logging")
                .and_then(|l| l.call_method1("getLogger", ("inferscope_client",)))
                .and_then(|l| {
                    l.call_method1(
                        "error",
                        (format!("inferscope: on_ack callback failed: {e}"),),
                    )
                });
        }
    });
}

/// Sends delayed labels with `SubmitLabels`, batched as records are.
async fn run_labels(shared: Arc<Shared>, channel: Channel) {
    let settings = shared.settings.clone();
    let mut client = IngestServiceClient::new(channel);
    let mut abort = shared.abort.subscribe();
    let mut sequence = 0u64;
    let mut warnings = Warnings::default();
    loop {
        let deadline = tokio::time::Instant::now() + settings.flush_interval;
        loop {
            let n = shared.labels.lock().unwrap().len();
            if shared.aborted() || (shared.closing() && n == 0) {
                return;
            }
            let urgent = shared.closing() || shared.flush_requested.load(Relaxed);
            let connected = shared.connected.load(Relaxed);
            if connected && (n >= settings.label_batch_size || (n > 0 && urgent)) {
                break;
            }
            if !connected {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    _ = abort.changed() => continue,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => if shared.connected.load(Relaxed) { break },
                _ = shared.label_wake.notified() => {}
                _ = abort.changed() => {}
            }
        }
        let labels: Vec<pb::GroundTruth> = {
            let mut queue = shared.labels.lock().unwrap();
            let n = queue.len().min(settings.label_batch_size);
            queue.drain(..n).collect()
        };
        if labels.is_empty() {
            continue;
        }
        sequence += 1;
        let n = labels.len();
        let batch = pb::LabelBatch {
            sequence,
            model: settings.model.clone(),
            version: settings.version.clone(),
            labels,
        };
        let mut backoff = settings.backoff_initial;
        let mut attempt = 0;
        let (acked, rejected, dropped) = loop {
            let mut request = tonic::Request::new(batch.clone());
            request.set_timeout(settings.rpc_timeout);
            let answer = tokio::select! {
                answer = client.submit_labels(request) => answer,
                _ = abort.changed() => Err(Status::cancelled("closed")),
            };
            match answer {
                Ok(ack) => {
                    let ack = ack.into_inner();
                    if let Some(r) = ack.rejects.first() {
                        let message = format!(
                            "inferscope: {} of {n} labels rejected, e.g. label {} field={}: {}",
                            ack.rejects.len(),
                            r.index,
                            r.field,
                            r.message
                        );
                        warnings.warn("label_rejects", WARNING, &message);
                    }
                    break (ack.accepted as u64, ack.rejects.len() as u64, 0);
                }
                Err(status) => {
                    attempt += 1;
                    if shared.aborted()
                        || !retryable(status.code())
                        || attempt > settings.max_resends + 1
                    {
                        let message = format!(
                            "inferscope: SubmitLabels failed with {:?}; {n} labels dropped",
                            status.code()
                        );
                        warnings.warn("labels", WARNING, &message);
                        break (0, 0, n as u64);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(jitter(backoff)) => {}
                        _ = abort.changed() => {}
                    }
                    backoff = (backoff * 2).min(settings.backoff_max);
                }
            }
        };
        let c = &shared.counters;
        c.labels_sent.fetch_add(n as u64, Relaxed);
        c.labels_acked.fetch_add(acked, Relaxed);
        c.labels_rejected.fetch_add(rejected, Relaxed);
        c.labels_dropped.fetch_add(dropped, Relaxed);
        shared.finished(0, n as i64);
    }
}
