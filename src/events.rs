//! Internal events: the things the sidecar tells its operator about itself, each a named struct
//! that pairs its log line with the counter it bumps.
//!
//! Every bound the sidecar keeps (queues, `--max-models`, `--max-classes`, the pending-label
//! store, per-model label caps, `--max-features-per-model`) is hit either never or very often, so its policy is the same
//! everywhere: log the first time, count every time. That policy is written once, in
//! [`InternalEvent::emit`], and works on either kind of counter: a plain `u64` in the state a
//! shard owns (no atomics on the per-record path) or a process-wide atomic of
//! [`SelfStats`](crate::self_metrics::SelfStats) (see [`SelfEvent`]). An export backend that is
//! down fails at every interval; [`Outage`] logs such failures once when the outage starts and
//! once when it ends.
//!
//! Each event keeps the tracing target of the module that used to log it, so that
//! `INFERSCOPE_LOG` filters written for those modules keep working.

use crate::{
    models::ModelKey,
    self_metrics::{SelfCounter, SelfStats},
};
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// When an event's log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// The first time its counter moves from zero; the counter tells the rest.
    First,
    /// Every time (events that are rare by nature).
    Every,
    /// Never: the event is only counted (the client already hears about it in its answer).
    Never,
}

/// An event with a log line and a counter.
pub trait InternalEvent {
    /// When the log line is written by [`emit`](Self::emit).
    const LOGGED: Logged = Logged::First;

    /// Writes the event's log line (level, target, message, fields).
    fn log(&self);

    /// How much the event adds to its counter: 1 unless it stands for several things.
    fn amount(&self) -> u64 {
        1
    }

    /// Counts the event and writes its log line when [`LOGGED`](Self::LOGGED) says so.
    #[inline]
    fn emit(&self, counter: impl Count) {
        let before = counter.add(self.amount());
        let due = match Self::LOGGED {
            Logged::First => before == 0,
            Logged::Every => true,
            Logged::Never => false,
        };
        if due {
            self.log();
        }
    }
}

/// A process-wide event: counted in its own row of [`SelfStats`].
pub trait SelfEvent: InternalEvent {
    const COUNTER: SelfCounter;
}

impl SelfStats {
    /// Counts a process-wide event on its counter (logging it as the event says).
    #[inline]
    pub fn emit<E: SelfEvent>(&self, event: &E) {
        event.emit(self.counter(E::COUNTER));
    }
}

/// Somewhere an event is counted.
pub trait Count {
    /// Adds `n`; returns the value before.
    fn add(self, n: u64) -> u64;
}

/// A counter in state one task owns.
impl Count for &mut u64 {
    #[inline]
    fn add(self, n: u64) -> u64 {
        let before = *self;
        *self += n;
        before
    }
}

/// A counter shared between tasks.
impl Count for &AtomicU64 {
    #[inline]
    fn add(self, n: u64) -> u64 {
        self.fetch_add(n, Relaxed)
    }
}

/// No counter: for events that no metric counts (span export failures).
#[derive(Debug, Clone, Copy)]
pub struct Uncounted;

impl Count for Uncounted {
    fn add(self, _: u64) -> u64 {
        0
    }
}

/// Whether a backend is down, so that an outage is logged when it starts and when it ends, not
/// at every failed attempt in between.
#[derive(Debug, Default)]
pub struct Outage {
    down: AtomicBool,
}

impl Outage {
    /// Counts a failed attempt; logs it if it starts an outage.
    pub fn failed(&self, event: &impl InternalEvent, counter: impl Count) {
        counter.add(event.amount());
        if !self.down.swap(true, Relaxed) {
            event.log();
        }
    }

    /// Notes a successful attempt; logs `event` if it ends an outage.
    pub fn recovered(&self, event: &impl InternalEvent) {
        if self.down.swap(false, Relaxed) {
            event.log();
        }
    }
}

// Process-wide events.

/// A batch was refused with UNAVAILABLE because a shard queue it needed was full.
#[derive(Debug)]
pub struct BatchesShed;

impl InternalEvent for BatchesShed {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::pipeline",
            "a shard queue is full: batches are refused with UNAVAILABLE \
             (counted in inferscope.batches.shed; see --shard-queue-batches)"
        );
    }
}

impl SelfEvent for BatchesShed {
    const COUNTER: SelfCounter = SelfCounter::BatchesShed;
}

/// The records of a batch refused with UNAVAILABLE (logged by [`BatchesShed`]).
#[derive(Debug)]
pub struct RecordsShed {
    pub records: usize,
}

impl InternalEvent for RecordsShed {
    const LOGGED: Logged = Logged::Never;

    fn log(&self) {}

    fn amount(&self) -> u64 {
        self.records as u64
    }
}

impl SelfEvent for RecordsShed {
    const COUNTER: SelfCounter = SelfCounter::RecordsShed;
}

/// A whole batch was refused with INVALID_ARGUMENT (too large, bad declaration); the client
/// gets the reason.
#[derive(Debug)]
pub struct BatchesRejected;

impl InternalEvent for BatchesRejected {
    const LOGGED: Logged = Logged::Never;

    fn log(&self) {}
}

impl SelfEvent for BatchesRejected {
    const COUNTER: SelfCounter = SelfCounter::BatchesRejected;
}

/// A span was dropped because the span queue was full.
#[derive(Debug)]
pub struct SpansDropped;

impl InternalEvent for SpansDropped {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::pipeline::shard",
            "the span queue is full: spans are dropped (counted in inferscope.spans.dropped)"
        );
    }
}

impl SelfEvent for SpansDropped {
    const COUNTER: SelfCounter = SelfCounter::SpansDropped;
}

/// A shard forgot model versions idle for longer than the expiry.
#[derive(Debug)]
pub struct ModelsExpired {
    pub expired: usize,
    pub expiry: Duration,
}

impl InternalEvent for ModelsExpired {
    /// A sweep runs at most once a minute and rarely finds anything.
    const LOGGED: Logged = Logged::Every;

    fn log(&self) {
        tracing::info!(
            target: "inferscope::pipeline::shard",
            expired = self.expired,
            expiry = ?self.expiry,
            "forgot idle model versions"
        );
    }

    fn amount(&self) -> u64 {
        self.expired as u64
    }
}

impl SelfEvent for ModelsExpired {
    const COUNTER: SelfCounter = SelfCounter::ModelsExpired;
}

/// A declaration was evicted from the full declaration registry to make room for a new one.
#[derive(Debug)]
pub struct DeclarationsEvicted<'a> {
    pub evicted: &'a ModelKey,
}

impl InternalEvent for DeclarationsEvicted<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::ingest",
            evicted = ?self.evicted,
            "--max-models declarations are stored: the oldest is evicted for each new \
             one (counted in inferscope.declarations.evicted)"
        );
    }
}

impl SelfEvent for DeclarationsEvicted<'_> {
    const COUNTER: SelfCounter = SelfCounter::DeclarationsEvicted;
}

/// The shared label store failed a request; emitted through an [`Outage`] (logged when an
/// outage starts).
#[derive(Debug)]
pub struct LabelStoreDown<'a> {
    pub redis: &'a str,
    pub error: &'a str,
}

impl InternalEvent for LabelStoreDown<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::label_store",
            redis = %self.redis,
            error = %self.error,
            "the label store failed: until it answers again predictions are not stored \
             (counted in inferscope.label_store.dropped), and labels whose lookup fails \
             (counted in inferscope.label_store.lookup_failures) are held in memory and \
             looked up again until their hold ends"
        );
    }
}

/// Delayed labels whose lookup in the shared label store failed when they arrived; logged by
/// the store's [`Outage`] ([`LabelStoreDown`]), so only counted here.
#[derive(Debug)]
pub struct LabelLookupsFailed {
    pub labels: usize,
}

impl InternalEvent for LabelLookupsFailed {
    const LOGGED: Logged = Logged::Never;

    fn log(&self) {}

    fn amount(&self) -> u64 {
        self.labels as u64
    }
}

impl SelfEvent for LabelLookupsFailed {
    const COUNTER: SelfCounter = SelfCounter::LabelStoreLookupFailures;
}

/// The shared label store answers again.
#[derive(Debug)]
pub struct LabelStoreRecovered<'a> {
    pub redis: &'a str,
}

impl InternalEvent for LabelStoreRecovered<'_> {
    fn log(&self) {
        tracing::info!(target: "inferscope::label_store", redis = %self.redis, "the label store answers again");
    }
}

/// A fleet-wide quality update failed; emitted through an [`Outage`] (logged when an outage
/// starts).
#[derive(Debug)]
pub struct FleetUpdateFailed<'a> {
    pub redis: &'a str,
    pub error: &'a str,
}

impl InternalEvent for FleetUpdateFailed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::fleet",
            redis = %self.redis,
            error = %self.error,
            "fleet-wide quality update failed: this sidecar's windows are not shared, or the \
             fleet's are not merged (counted in inferscope.fleet.updates.failed); retried at \
             the next export"
        );
    }
}

impl SelfEvent for FleetUpdateFailed<'_> {
    const COUNTER: SelfCounter = SelfCounter::FleetUpdatesFailed;
}

/// Fleet-wide quality updates work again.
#[derive(Debug)]
pub struct FleetUpdatesRecovered<'a> {
    pub redis: &'a str,
}

impl InternalEvent for FleetUpdatesRecovered<'_> {
    fn log(&self) {
        tracing::info!(target: "inferscope::fleet", redis = %self.redis, "fleet-wide quality updates work again");
    }
}

/// Predictions waiting for a label could not be handed to the shared label store.
#[derive(Debug)]
pub struct PredictionsNotStored {
    pub predictions: usize,
    pub why: &'static str,
}

impl InternalEvent for PredictionsNotStored {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::label_store",
            why = self.why,
            "predictions not stored in the label store: their delayed labels will count as \
             unknown_request (counted in inferscope.label_store.dropped)"
        );
    }

    fn amount(&self) -> u64 {
        self.predictions as u64
    }
}

impl SelfEvent for PredictionsNotStored {
    const COUNTER: SelfCounter = SelfCounter::LabelStoreDropped;
}

/// An entry of the label stream that is not a label this sidecar can read; acknowledged and
/// skipped (`crate::label_stream`).
#[derive(Debug)]
pub struct LabelEntriesMalformed<'a> {
    pub id: &'a str,
    pub error: &'a str,
}

impl InternalEvent for LabelEntriesMalformed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::label_stream",
            entry = self.id,
            error = self.error,
            "an entry of the label stream is not a label: skipped (counted in \
             inferscope.label_stream.malformed); write labels with `inferscope labels`"
        );
    }
}

impl SelfEvent for LabelEntriesMalformed<'_> {
    const COUNTER: SelfCounter = SelfCounter::LabelStreamMalformed;
}

/// The label stream cannot be read; emitted through an [`Outage`] (logged when an outage
/// starts).
#[derive(Debug)]
pub struct LabelStreamDown<'a> {
    pub redis: &'a str,
    pub error: &'a str,
}

impl InternalEvent for LabelStreamDown<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::label_stream",
            redis = %self.redis,
            error = %self.error,
            "cannot read the label stream: labels from `inferscope labels` wait in Redis until \
             it answers again (retrying with backoff)"
        );
    }
}

/// The label stream is read again.
#[derive(Debug)]
pub struct LabelStreamRecovered<'a> {
    pub redis: &'a str,
}

impl InternalEvent for LabelStreamRecovered<'_> {
    fn log(&self) {
        tracing::info!(target: "inferscope::label_stream", redis = %self.redis, "the label stream answers again");
    }
}

/// A change to the state directory was not written.
#[derive(Debug)]
pub struct StateWriteFailed<'a> {
    pub dir: &'a std::path::Path,
    pub error: &'a dyn std::error::Error,
}

impl InternalEvent for StateWriteFailed<'_> {
    fn log(&self) {
        tracing::error!(
            target: "inferscope::state",
            dir = %self.dir.display(),
            error = %self.error,
            "a declaration or reference profile could not be saved to --state-dir: it will not \
             survive a restart (counted in inferscope.state.writes.failed)"
        );
    }
}

impl SelfEvent for StateWriteFailed<'_> {
    const COUNTER: SelfCounter = SelfCounter::StateWritesFailed;
}

/// A metrics export request failed; emitted through an [`Outage`].
#[derive(Debug)]
pub struct ExportFailed<'a> {
    /// Where the metrics went (the transport's description).
    pub to: &'a str,
    pub error: &'a dyn std::error::Error,
}

impl InternalEvent for ExportFailed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::export",
            to = %self.to,
            error = %self.error,
            "metrics export failed; still serving and counting, will retry every interval and \
             say when it recovers"
        );
    }
}

impl SelfEvent for ExportFailed<'_> {
    const COUNTER: SelfCounter = SelfCounter::ExportFailures;
}

/// A metrics export succeeded after an outage; emitted through an [`Outage`], not counted.
#[derive(Debug)]
pub struct ExportRecovered<'a> {
    pub to: &'a str,
}

impl InternalEvent for ExportRecovered<'_> {
    fn log(&self) {
        tracing::info!(
            target: "inferscope::export",
            to = %self.to,
            "metrics export recovered; totals are cumulative, nothing was lost"
        );
    }
}

/// A span export batch failed; emitted through an [`Outage`], not counted (spans are
/// best-effort).
#[derive(Debug)]
pub struct SpanExportFailed<'a> {
    pub error: &'a dyn std::error::Error,
}

impl InternalEvent for SpanExportFailed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::export",
            error = %self.error,
            "span export failed; spans are best-effort and will be dropped until the backend answers"
        );
    }
}

/// A span export succeeded after an outage; emitted through an [`Outage`].
#[derive(Debug)]
pub struct SpanExportRecovered;

impl InternalEvent for SpanExportRecovered {
    fn log(&self) {
        tracing::info!(target: "inferscope::export", "span export recovered");
    }
}

// Per-model events, counted in plain integers of the state a shard owns.

/// A record of a model version beyond `--max-models` was counted under `__other__`.
#[derive(Debug)]
pub struct ModelsOverflowed<'a> {
    pub model: &'a str,
    pub version: &'a str,
}

impl InternalEvent for ModelsOverflowed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::pipeline::table",
            model = self.model,
            version = self.version,
            "--max-models reached: records of further model versions are counted \
             under __other__ (and in inferscope.models.overflow)"
        );
    }
}

/// A class occurrence beyond a model's `--max-classes` was counted as `__other__`.
#[derive(Debug)]
pub struct ClassesOverflowed<'a> {
    pub class: &'a str,
    pub cap: usize,
}

impl InternalEvent for ClassesOverflowed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::quality",
            class = self.class,
            cap = self.cap,
            "--max-classes reached for a model: further classes are counted as __other__ \
             (inferscope.classes.overflow)"
        );
    }
}

/// An evaluation name past a model version's [`MAX_EVALUATION_NAMES`] was counted as
/// `__other__`.
///
/// [`MAX_EVALUATION_NAMES`]: crate::quality::evaluation::MAX_EVALUATION_NAMES
#[derive(Debug)]
pub struct EvaluationNamesOverflowed<'a> {
    pub name: &'a str,
    pub cap: usize,
}

impl InternalEvent for EvaluationNamesOverflowed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::quality",
            name = self.name,
            cap = self.cap,
            "a model's evaluation names reached their cap: further names are counted as \
             gen_ai.evaluation.name=\"__other__\" (inferscope.evaluation.names.overflow)"
        );
    }
}

/// The fleet's merge folded evaluation names or labels that the sidecars saw past one sidecar's
/// caps into `__other__` (`src/fleet.rs`).
#[derive(Debug)]
pub struct FleetEvaluationsFolded {
    /// Names and label values folded in one merge.
    pub folded: u64,
}

impl InternalEvent for FleetEvaluationsFolded {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::fleet",
            folded = self.folded,
            "the fleet's sidecars saw more evaluation names (16 a model version) or labels \
             (--max-classes a name) than fit: the rest are merged as __other__ in \
             inferscope.fleet.evaluation.* (counted in inferscope.fleet.evaluations.folded)"
        );
    }

    fn amount(&self) -> u64 {
        self.folded
    }
}

impl SelfEvent for FleetEvaluationsFolded {
    const COUNTER: SelfCounter = SelfCounter::FleetEvaluationsFolded;
}

/// A label value of an evaluation name past `--max-classes` was counted as `__other__`.
#[derive(Debug)]
pub struct EvaluationLabelsOverflowed<'a> {
    pub name: &'a str,
    pub label: &'a str,
    pub cap: usize,
}

impl InternalEvent for EvaluationLabelsOverflowed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::quality",
            name = self.name,
            label = self.label,
            cap = self.cap,
            "an evaluation name's label values reached --max-classes: further values are \
             counted as __other__ (inferscope.evaluation.labels.overflow)"
        );
    }
}

/// Feature names of a model version past its `--max-features-per-model` were not tracked: a
/// new name a live capture met (each occurrence), or the features of a loaded profile past the
/// bound (all of them at once).
#[derive(Debug)]
pub struct FeaturesOverflowed<'a> {
    pub model: &'a str,
    pub version: &'a str,
    /// The (first) name not tracked.
    pub feature: &'a str,
    pub cap: usize,
    /// Names not tracked.
    pub names: u64,
}

impl InternalEvent for FeaturesOverflowed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::drift",
            model = self.model,
            version = self.version,
            feature = self.feature,
            cap = self.cap,
            "--max-features-per-model reached: further feature names of this model version \
             are not tracked for drift or feature anomalies \
             (counted in inferscope.drift.features_overflow)"
        );
    }

    fn amount(&self) -> u64 {
        self.names
    }
}

/// A label value (error type, GenAI operation) beyond a model's cap was counted as `_OTHER`.
#[derive(Debug)]
pub struct LabelValuesOverflowed<'a> {
    pub value: &'a str,
    pub cap: usize,
}

impl InternalEvent for LabelValuesOverflowed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::operational",
            value = self.value,
            cap = self.cap,
            "a per-model label cap is reached: this and further new values are counted as _OTHER"
        );
    }
}

/// The full pending-label store dropped its oldest prediction, unlabelled.
#[derive(Debug)]
pub struct PendingLabelsEvicted {
    pub capacity: usize,
}

impl InternalEvent for PendingLabelsEvicted {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::quality::label_join",
            capacity = self.capacity,
            "the pending-label store is full: the oldest predictions are dropped \
             unlabelled (inferscope.predictions.unlabeled{{reason=\"capacity\"}}; \
             see --max-pending-labels)"
        );
    }
}

/// A record raised more anomaly flags than an ack carries; the flags past the cap are counted.
#[derive(Debug)]
pub struct FlagsTruncated<'a> {
    pub key: &'a ModelKey,
    /// The flags the record raised.
    pub flags: usize,
    /// How many an ack carries.
    pub cap: usize,
}

impl InternalEvent for FlagsTruncated<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::anomaly",
            model = %self.key.model,
            version = %self.key.version,
            flags = self.flags,
            cap = self.cap,
            "a record raised more anomaly flags than an ack carries; \
             the rest are counted (inferscope.anomaly.flags_truncated)"
        );
    }

    fn amount(&self) -> u64 {
        self.flags.saturating_sub(self.cap) as u64
    }
}

/// A record stream ended with an error status because a message could not be read.
#[derive(Debug)]
pub struct StreamFailed<'a> {
    pub status: &'a tonic::Status,
}

impl InternalEvent for StreamFailed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::ingest",
            code = ?self.status.code(),
            message = self.status.message(),
            "a record stream sent a message that cannot be read and was ended with an error \
             status (counted in inferscope.streams.failed)"
        );
    }
}

impl SelfEvent for StreamFailed<'_> {
    const COUNTER: SelfCounter = SelfCounter::StreamsFailed;
}

/// Shutdown cut the streams still open after their grace.
#[derive(Debug)]
pub struct ConnectionsCut {
    pub connections: u64,
    pub after: Duration,
}

impl InternalEvent for ConnectionsCut {
    /// Once per process: shutdown happens once.
    const LOGGED: Logged = Logged::Every;

    fn log(&self) {
        tracing::warn!(
            target: "inferscope::server",
            connections = self.connections,
            after = ?self.after,
            "connections did not close in time (a client not reading its acks?): cut, so that \
             the drain and the final export keep the rest of the shutdown budget"
        );
    }

    fn amount(&self) -> u64 {
        self.connections
    }
}

impl SelfEvent for ConnectionsCut {
    const COUNTER: SelfCounter = SelfCounter::ConnectionsCut;
}

/// Flags were left out of an ack that would not fit in one gRPC message.
#[derive(Debug)]
pub struct AckFlagsDropped {
    pub flags: u64,
    pub limit: usize,
}

impl InternalEvent for AckFlagsDropped {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::ingest",
            flags = self.flags,
            limit = self.limit,
            "an ack would exceed the message limit: anomaly flags of its last records are left \
             out (BatchAck.flags_dropped; counted in inferscope.ack.flags_dropped)"
        );
    }

    fn amount(&self) -> u64 {
        self.flags
    }
}

impl SelfEvent for AckFlagsDropped {
    const COUNTER: SelfCounter = SelfCounter::AckFlagsDropped;
}

/// A client reported records it dropped before sending (`RecordBatch.client_dropped_records`).
#[derive(Debug)]
pub struct ClientRecordsDropped {
    pub records: u64,
}

impl InternalEvent for ClientRecordsDropped {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::ingest",
            records = self.records,
            "a client reports records it dropped before sending (its queue full, a record it \
             could not encode, or a batch it gave up resending): raise its queue or find what \
             slows the sidecar (counted in inferscope.client.records.dropped)"
        );
    }

    fn amount(&self) -> u64 {
        self.records
    }
}

impl SelfEvent for ClientRecordsDropped {
    const COUNTER: SelfCounter = SelfCounter::ClientRecordsDropped;
}

/// A connection was closed at once: `--max-connections` were open.
#[derive(Debug)]
pub struct ConnectionsRefused {
    pub limit: usize,
}

impl InternalEvent for ConnectionsRefused {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::listener",
            limit = self.limit,
            "--max-connections connections are open: further ones are closed at once \
             (counted in inferscope.connections.refused)"
        );
    }
}

impl SelfEvent for ConnectionsRefused {
    const COUNTER: SelfCounter = SelfCounter::ConnectionsRefused;
}

/// Accepting a connection failed (descriptors exhausted, most often).
#[derive(Debug)]
pub struct AcceptFailed<'a> {
    pub error: &'a std::io::Error,
}

impl InternalEvent for AcceptFailed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::listener",
            error = %self.error,
            "accepting a connection failed (out of file descriptors?); retrying after a pause \
             (counted in inferscope.connections.accept_failures)"
        );
    }
}

impl SelfEvent for AcceptFailed<'_> {
    const COUNTER: SelfCounter = SelfCounter::AcceptFailures;
}

/// A batch did not fit in the ingest memory budget.
#[derive(Debug)]
pub struct IngestBudgetFull {
    pub limit: usize,
}

impl InternalEvent for IngestBudgetFull {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::ingest",
            limit = self.limit,
            "the ingest memory budget is full: batches are refused with RESOURCE_EXHAUSTED \
             (counted in inferscope.batches.over_budget; see --max-ingest-bytes)"
        );
    }
}

impl SelfEvent for IngestBudgetFull {
    const COUNTER: SelfCounter = SelfCounter::BatchesOverBudget;
}

/// A stream's client left an ack unread for too long: its batches are no longer read.
#[derive(Debug)]
pub struct AcksUnread {
    pub after: Duration,
}

impl InternalEvent for AcksUnread {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::ingest",
            after = ?self.after,
            "a record stream's client did not read its acks: the stream is ended \
             (counted in inferscope.streams.unread; see --ack-timeout-seconds)"
        );
    }
}

impl SelfEvent for AcksUnread {
    const COUNTER: SelfCounter = SelfCounter::StreamsUnread;
}

// No-code capture: OTLP traces in (`crate::capture::otlp`).

/// Spans received by an OTLP receiver; only counted.
#[derive(Debug)]
pub struct OtlpSpansReceived {
    pub spans: u64,
}

impl InternalEvent for OtlpSpansReceived {
    const LOGGED: Logged = Logged::Never;

    fn log(&self) {}

    fn amount(&self) -> u64 {
        self.spans
    }
}

impl SelfEvent for OtlpSpansReceived {
    const COUNTER: SelfCounter = SelfCounter::OtlpSpansReceived;
}

/// Generation records made from GenAI spans; only counted.
#[derive(Debug)]
pub struct OtlpRecordsCaptured {
    pub records: u64,
}

impl InternalEvent for OtlpRecordsCaptured {
    const LOGGED: Logged = Logged::Never;

    fn log(&self) {}

    fn amount(&self) -> u64 {
        self.records
    }
}

impl SelfEvent for OtlpRecordsCaptured {
    const COUNTER: SelfCounter = SelfCounter::OtlpRecordsCaptured;
}

/// Log records received by an OTLP logs receiver; only counted.
#[derive(Debug)]
pub struct OtlpLogRecordsReceived {
    pub log_records: u64,
}

impl InternalEvent for OtlpLogRecordsReceived {
    const LOGGED: Logged = Logged::Never;

    fn log(&self) {}

    fn amount(&self) -> u64 {
        self.log_records
    }
}

impl SelfEvent for OtlpLogRecordsReceived {
    const COUNTER: SelfCounter = SelfCounter::OtlpLogRecordsReceived;
}

/// Received log records that are not evaluation events, dropped.
#[derive(Debug)]
pub struct OtlpLogRecordsIgnored {
    pub log_records: u64,
}

impl InternalEvent for OtlpLogRecordsIgnored {
    fn log(&self) {
        tracing::info!(
            target: "inferscope::capture",
            log_records = self.log_records,
            "OTLP log records that are not gen_ai.evaluation.result events are taken and dropped: \
             the sidecar exports no logs (counted in inferscope.otlp.log_records.ignored; logged \
             once)"
        );
    }

    fn amount(&self) -> u64 {
        self.log_records
    }
}

impl SelfEvent for OtlpLogRecordsIgnored {
    const COUNTER: SelfCounter = SelfCounter::OtlpLogRecordsIgnored;
}

/// Evaluation events made into labels; only counted.
#[derive(Debug)]
pub struct OtlpEvaluationsCaptured {
    pub evaluations: u64,
}

impl InternalEvent for OtlpEvaluationsCaptured {
    const LOGGED: Logged = Logged::Never;

    fn log(&self) {}

    fn amount(&self) -> u64 {
        self.evaluations
    }
}

impl SelfEvent for OtlpEvaluationsCaptured {
    const COUNTER: SelfCounter = SelfCounter::OtlpEvaluationsCaptured;
}

/// Evaluation events whose generation could not be named (or without a name, or failed).
#[derive(Debug)]
pub struct OtlpEvaluationsUnresolved {
    pub evaluations: u64,
}

impl InternalEvent for OtlpEvaluationsUnresolved {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::capture",
            evaluations = self.evaluations,
            "gen_ai.evaluation.result events not taken: without gen_ai.evaluation.name, with \
             error.type, or with neither gen_ai.response.id nor the span id of a generation the \
             receiver remembers (export the generation's span first, or send \
             gen_ai.response.id; counted in inferscope.otlp.evaluations.unresolved; logged once)"
        );
    }

    fn amount(&self) -> u64 {
        self.evaluations
    }
}

impl SelfEvent for OtlpEvaluationsUnresolved {
    const COUNTER: SelfCounter = SelfCounter::OtlpEvaluationsUnresolved;
}

/// Generations pushed out of the full span-id index (`crate::capture::generations`).
#[derive(Debug)]
pub struct OtlpGenerationsEvicted {
    pub generations: u64,
    pub capacity: usize,
}

impl InternalEvent for OtlpGenerationsEvicted {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::capture",
            capacity = self.capacity,
            "the OTLP receivers' span-id index of generations is full: the oldest are forgotten, \
             and an evaluation event of one of them joins only if it carries gen_ai.response.id \
             (counted in inferscope.otlp.generations.evicted; logged once)"
        );
    }

    fn amount(&self) -> u64 {
        self.generations
    }
}

impl SelfEvent for OtlpGenerationsEvicted {
    const COUNTER: SelfCounter = SelfCounter::OtlpGenerationsEvicted;
}

/// An OTLP request refused as bad input (the sender is told why in its answer).
#[derive(Debug)]
pub struct OtlpRequestRejected<'a> {
    /// `undecodable`, `content_type`, `content_encoding` or `too_large`.
    pub reason: &'static str,
    pub error: &'a str,
}

impl InternalEvent for OtlpRequestRejected<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::capture",
            reason = self.reason,
            error = self.error,
            "an OTLP request was refused as bad input (counted in inferscope.otlp.rejected; \
             logged once)"
        );
    }
}

impl SelfEvent for OtlpRequestRejected<'_> {
    const COUNTER: SelfCounter = SelfCounter::OtlpRejected;
}

/// Received spans not forwarded: the forward queue was full.
#[derive(Debug)]
pub struct SpansNotForwarded {
    pub spans: u64,
}

impl InternalEvent for SpansNotForwarded {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::capture",
            spans = self.spans,
            "the span forward queue is full: received spans are dropped instead of forwarded \
             (counted in inferscope.otlp.forward.dropped; logged once)"
        );
    }

    fn amount(&self) -> u64 {
        self.spans
    }
}

impl SelfEvent for SpansNotForwarded {
    const COUNTER: SelfCounter = SelfCounter::OtlpForwardDropped;
}

/// A forward request failed; emitted through an [`Outage`], counted in
/// `inferscope.otlp.forward.failed`.
#[derive(Debug)]
pub struct SpansForwardFailed<'a> {
    pub to: &'a str,
    pub error: &'a dyn std::error::Error,
    pub spans: u64,
}

impl InternalEvent for SpansForwardFailed<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::capture",
            to = %self.to,
            error = %self.error,
            "forwarding received spans failed; they are dropped (counted in \
             inferscope.otlp.forward.failed) until the traces endpoint answers"
        );
    }

    fn amount(&self) -> u64 {
        self.spans
    }
}

/// Forwarding works again after an outage; emitted through an [`Outage`].
#[derive(Debug)]
pub struct SpansForwardRecovered<'a> {
    pub to: &'a str,
}

impl InternalEvent for SpansForwardRecovered<'_> {
    fn log(&self) {
        tracing::info!(target: "inferscope::capture", to = %self.to, "forwarding received spans recovered");
    }
}

/// A CloudEvent was taken by the KServe payload-logger endpoint (`crate::capture::kserve`);
/// only counted.
#[derive(Debug)]
pub struct CloudEventsReceived;

impl InternalEvent for CloudEventsReceived {
    const LOGGED: Logged = Logged::Never;

    fn log(&self) {}
}

impl SelfEvent for CloudEventsReceived {
    const COUNTER: SelfCounter = SelfCounter::CloudEventsReceived;
}

/// A CloudEvent was refused with a 4xx; the sender hears why in the answer.
#[derive(Debug)]
pub struct CloudEventsRejected<'a> {
    /// A short fixed word: `content_type`, `too_large`, `malformed`, `missing_attribute`, ...
    pub reason: &'static str,
    pub message: &'a str,
}

impl InternalEvent for CloudEventsRejected<'_> {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::capture",
            reason = self.reason,
            error = self.message,
            "a CloudEvent was refused (later ones are counted in inferscope.cloudevents.rejected; \
             the sender gets the reason in the HTTP answer)"
        );
    }
}

impl SelfEvent for CloudEventsRejected<'_> {
    const COUNTER: SelfCounter = SelfCounter::CloudEventsRejected;
}

/// Request or response events whose partner did not come within the join TTL: recorded with
/// what they carry.
#[derive(Debug)]
pub struct CloudEventsExpired {
    pub events: u64,
    pub ttl: Duration,
}

impl InternalEvent for CloudEventsExpired {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::capture",
            events = self.events,
            ttl = ?self.ttl,
            "KServe payload-logger events whose request or response did not come within the \
             join TTL: recorded alone (a request with error type no_response), counted in \
             inferscope.cloudevents.expired; a logger in mode request or response needs \
             logger_mode in [capture.kserve.models.<name>]"
        );
    }

    fn amount(&self) -> u64 {
        self.events
    }
}

impl SelfEvent for CloudEventsExpired {
    const COUNTER: SelfCounter = SelfCounter::CloudEventsExpired;
}

/// Events pushed out of the full join store (or replaced by a later event of the same id and
/// kind) before their partner came: lost.
#[derive(Debug)]
pub struct CloudEventsEvicted {
    pub events: u64,
    pub capacity: usize,
}

impl InternalEvent for CloudEventsEvicted {
    fn log(&self) {
        tracing::warn!(
            target: "inferscope::capture",
            capacity = self.capacity,
            "the KServe join store is full: its oldest waiting events are dropped (counted in \
             inferscope.cloudevents.evicted); raise [capture.kserve] join_capacity or lower \
             join_ttl_seconds"
        );
    }

    fn amount(&self) -> u64 {
        self.events
    }
}

impl SelfEvent for CloudEventsEvicted {
    const COUNTER: SelfCounter = SelfCounter::CloudEventsEvicted;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts its log lines instead of writing them.
    struct Probe<'a>(&'a std::cell::Cell<u32>);

    impl InternalEvent for Probe<'_> {
        fn log(&self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn an_event_is_logged_the_first_time_and_counted_every_time() {
        let logged = std::cell::Cell::new(0);
        let mut owned = 0u64;
        let shared = AtomicU64::new(0);
        for _ in 0..3 {
            Probe(&logged).emit(&mut owned);
            Probe(&logged).emit(&shared);
        }
        assert_eq!((owned, shared.load(Relaxed)), (3, 3));
        assert_eq!(logged.get(), 2);
    }

    #[test]
    fn an_outage_is_logged_when_it_starts_and_when_it_ends() {
        let logged = std::cell::Cell::new(0);
        let outage = Outage::default();
        let failures = AtomicU64::new(0);
        outage.recovered(&Probe(&logged));
        assert_eq!(logged.get(), 0);
        for _ in 0..3 {
            outage.failed(&Probe(&logged), &failures);
        }
        assert_eq!((logged.get(), failures.load(Relaxed)), (1, 3));
        outage.recovered(&Probe(&logged));
        outage.recovered(&Probe(&logged));
        assert_eq!(logged.get(), 2);
        outage.failed(&Probe(&logged), Uncounted);
        assert_eq!(logged.get(), 3);
    }

    #[test]
    fn truncated_flags_count_the_flags_past_the_cap() {
        let key = ModelKey::new("m", "1");
        let mut truncated = 0;
        FlagsTruncated {
            key: &key,
            flags: 5,
            cap: 3,
        }
        .emit(&mut truncated);
        assert_eq!(truncated, 2);
    }
}
