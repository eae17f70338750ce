//! Routing and shard workers. Ingest hands each batch's records to the shard that owns their
//! (model, version) over a bounded channel; each shard owns its models' state alone, so nothing
//! on the per-record path is shared or locked. Export asks shards for snapshots over a separate
//! control channel, so a full data queue never hides the control messages for long.
//!
//! Full queue policy: a batch is dispatched only if *every* shard it touches has room (permits are
//! reserved first), so a batch is processed whole or not at all; otherwise it is shed, counted,
//! and ingest answers UNAVAILABLE.

use crate::{
    config::Sampling,
    drift::{
        model::{DriftSettings, DriftSnapshot, ModelDrift},
        registry::ProfileRegistry,
    },
    export::unix_nanos,
    models::{Declaration, ModelKey, OVERFLOW_MODEL},
    operational::ModelOps,
    pb,
    quality::{
        delay_seconds, EarlyLabel, LabelJoin, ModelQuality, PendingPrediction, QualitySettings,
        QualitySnapshot, Resolution, Unmatched,
    },
    validation::model_of,
};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, SystemTime},
};
use tokio::time::Instant;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// Model key under which rejects are counted when the record's own model is missing or unusable.
pub const INVALID_MODEL: &str = "__invalid__";

/// Counters about the sidecar itself, shared by ingest, shards and export. Touched per batch or
/// per rare event, never per record.
#[derive(Debug, Default)]
pub struct SelfStats {
    pub streams_active: AtomicI64,
    pub batches_shed: AtomicU64,
    pub records_shed: AtomicU64,
    /// Whole batches refused (over the size limit, bad declaration).
    pub batches_rejected: AtomicU64,
    pub spans_dropped: AtomicU64,
    /// Model versions forgotten after `--model-idle-expiry-seconds` without traffic.
    pub models_expired: AtomicU64,
    /// Declarations evicted from the full declaration registry.
    pub declarations_evicted: AtomicU64,
    pub export_failures: AtomicU64,
}

/// How often shards look for idle models: a quarter of the expiry, at most once a minute.
fn sweep_period(expiry: Duration) -> Duration {
    (expiry / 4).clamp(Duration::from_millis(10), Duration::from_secs(60))
}

/// One record the ingest layer rejected, for counting by the shard of its model.
#[derive(Debug, Clone, Copy)]
pub struct RejectedRecord {
    pub index: u32,
    pub reason: pb::RejectReason,
    /// False when the model or version itself was the problem: counted under [`INVALID_MODEL`].
    pub model_usable: bool,
}

/// What a shard is asked to do.
#[derive(Debug)]
pub enum ShardWork {
    Records {
        batch: Arc<pb::RecordBatch>,
        /// Declarations of models this shard owns that arrived with the batch.
        declarations: Vec<(ModelKey, Arc<Declaration>)>,
        accepted: Vec<u32>,
        rejected: Vec<RejectedRecord>,
        /// When ingest received the batch; stands in for records without `time_unix_nano`.
        received: SystemTime,
        /// Answered with this shard's anomaly flags once the records are accounted.
        done: oneshot::Sender<Vec<pb::RecordFlags>>,
    },
    /// Capture the model version's next records into a new reference profile; answered with the
    /// number of records the capture takes (0 when the version has no drift state of its own).
    Capture {
        key: ModelKey,
        records: Option<usize>,
        done: oneshot::Sender<usize>,
    },
    Labels {
        batch: Arc<pb::LabelBatch>,
        accepted: Vec<u32>,
        rejected: Vec<RejectedRecord>,
        /// When ingest received the batch; stands in for labels without `time_unix_nano`.
        received: SystemTime,
        done: oneshot::Sender<()>,
    },
}

/// The state a shard publishes for export.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub models: Vec<(ModelKey, ModelOps)>,
    /// Quality of the models that have any (not the overflow or invalid models).
    pub quality: Vec<(ModelKey, QualitySnapshot)>,
    /// Drift of the models that have a reference profile.
    pub drift: Vec<(ModelKey, DriftSnapshot)>,
    /// Anomaly rates, change detections and series points (not the overflow or invalid models).
    pub anomaly: Vec<(ModelKey, crate::anomaly::AnomalySnapshot)>,
    /// Records counted under the overflow model because `--max-models` was reached.
    pub models_overflow: u64,
    /// Predictions waiting for a label in this shard, and the shard's capacity for them.
    pub pending: usize,
    pub pending_capacity: usize,
}

/// A record chosen for a span, with what the span needs; built only for sampled records.
#[derive(Debug, Clone)]
pub struct SpanJob {
    /// The span name: [`crate::export::traces::SPAN_NAME`] for records.
    pub name: &'static str,
    pub model: String,
    pub version: String,
    pub request_id: String,
    pub traceparent: String,
    pub tracestate: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub error_type: String,
    pub attributes: Vec<(String, String)>,
    /// Span events (drift changes now, anomaly flags later).
    pub events: Vec<SpanEvent>,
}

impl SpanJob {
    /// A span about a model version at `now`, in a trace of its own (no request caused it).
    fn of_model(name: &'static str, key: &ModelKey, now: SystemTime) -> Self {
        Self {
            name,
            model: key.model.clone(),
            version: key.version.clone(),
            request_id: String::new(),
            traceparent: String::new(),
            tracestate: String::new(),
            start: now,
            end: now,
            error_type: String::new(),
            attributes: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// One span event with its attributes.
#[derive(Debug, Clone)]
pub struct SpanEvent {
    pub name: &'static str,
    pub time: SystemTime,
    pub text: Vec<(&'static str, String)>,
    pub numbers: Vec<(&'static str, f64)>,
}

/// The batch could not be queued: a shard it needs is full (or shutting down).
#[derive(Debug, thiserror::Error)]
#[error("inferscope is at capacity (shard queue full); retry with backoff")]
pub struct Shed;

/// Messages that bypass the data queue.
enum Control {
    /// The shard's state; `true` also closes an interval of the series (see [`Pipeline::peek`]).
    Snapshot(oneshot::Sender<ShardSnapshot>, bool),
    /// Stop processing until the sender is dropped or fires: lets tests fill a queue
    /// deterministically.
    Hold(oneshot::Receiver<()>),
}

struct ShardHandle {
    work: mpsc::Sender<ShardWork>,
    control: mpsc::Sender<Control>,
}

/// The shard workers and the way to reach them.
pub struct Pipeline {
    shards: Vec<ShardHandle>,
    pub stats: Arc<SelfStats>,
    stop: CancellationToken,
    workers: std::sync::Mutex<Vec<JoinHandle<ShardSnapshot>>>,
    queue_capacity: usize,
}

/// Settings a shard worker needs.
#[derive(Debug, Clone)]
pub struct ShardSettings {
    pub max_models_per_shard: usize,
    /// A model version with no records or labels for this long is forgotten.
    pub model_idle_expiry: Duration,
    pub max_error_types: usize,
    pub sampling: Sampling,
    pub quality: QualitySettings,
    /// Where a model state created without its declaration in hand (a version that expired and
    /// came back, or left `__other__`) finds the declaration ingest keeps.
    pub declarations: Option<Arc<crate::models::DeclarationRegistry>>,
    pub drift: DriftSettings,
    /// Reference profiles, loaded or captured.
    pub profiles: Arc<ProfileRegistry>,
    /// Anomaly detector settings, per model name.
    pub anomaly: crate::anomaly::AnomalyConfig,
}

impl Pipeline {
    /// Starts `shards` workers with `queue_capacity` batches of room each. Sampled records go to
    /// `spans` (dropped and counted when it is full).
    pub fn start(
        shards: usize,
        queue_capacity: usize,
        settings: ShardSettings,
        spans: Option<mpsc::Sender<SpanJob>>,
        stats: Arc<SelfStats>,
    ) -> Self {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(shards);
        let mut workers = Vec::with_capacity(shards);
        for id in 0..shards {
            let (work_tx, work_rx) = mpsc::channel(queue_capacity);
            let (control_tx, control_rx) = mpsc::channel(4);
            let now = Instant::now();
            let shard = Shard {
                models: HashMap::new(),
                index: Vec::new(),
                ids: HashMap::new(),
                next_id: 0,
                join: LabelJoin::new(&settings.quality),
                epoch: now,
                now,
                last: None,
                models_overflow: 0,
                evictions_logged: false,
                profiles_seen: 0,
                settings: settings.clone(),
                spans: spans.clone(),
                stats: stats.clone(),
                rng: SmallRng::seed_from_u64(0x1f5c_0b5e ^ id as u64),
            };
            workers.push(tokio::spawn(shard.run(work_rx, control_rx, stop.clone())));
            handles.push(ShardHandle {
                work: work_tx,
                control: control_tx,
            });
        }
        Self {
            shards: handles,
            stats,
            stop,
            workers: std::sync::Mutex::new(workers),
            queue_capacity,
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard that owns a model version.
    pub fn shard_of(&self, model: &str, version: &str) -> usize {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        model.hash(&mut hasher);
        version.hash(&mut hasher);
        (hasher.finish() % self.shards.len() as u64) as usize
    }

    /// Queues work on several shards, all or nothing.
    pub fn dispatch(&self, work: Vec<(usize, ShardWork)>) -> Result<(), Shed> {
        let mut permits = Vec::with_capacity(work.len());
        for (shard, _) in &work {
            match self.shards[*shard].work.try_reserve() {
                Ok(permit) => permits.push(permit),
                Err(_) => {
                    // Logged the first time only; the counter tells the rest.
                    if self.stats.batches_shed.fetch_add(1, Relaxed) == 0 {
                        tracing::warn!(
                            "a shard queue is full: batches are refused with UNAVAILABLE \
                             (counted in inferscope.batches.shed; see --shard-queue-batches)"
                        );
                    }
                    return Err(Shed);
                }
            }
        }
        for (permit, (_, item)) in permits.into_iter().zip(work) {
            permit.send(item);
        }
        Ok(())
    }

    /// Batches waiting, per shard.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|s| self.queue_capacity - s.work.capacity())
            .collect()
    }

    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// Every shard's current state, closing an interval of the change detectors' series (what
    /// each metric export does); shards that have stopped are skipped.
    pub async fn snapshot(&self) -> Vec<ShardSnapshot> {
        self.snapshot_as(true).await
    }

    /// Every shard's current state without closing an interval (the demo's live table).
    pub async fn peek(&self) -> Vec<ShardSnapshot> {
        self.snapshot_as(false).await
    }

    async fn snapshot_as(&self, interval: bool) -> Vec<ShardSnapshot> {
        let mut replies = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            if shard
                .control
                .send(Control::Snapshot(tx, interval))
                .await
                .is_ok()
            {
                replies.push(rx);
            }
        }
        let mut snapshots = Vec::with_capacity(replies.len());
        for rx in replies {
            if let Ok(snapshot) = rx.await {
                snapshots.push(snapshot);
            }
        }
        snapshots
    }

    /// Makes every shard stop processing until the returned guards are dropped. For tests of the
    /// full-queue behaviour.
    #[doc(hidden)]
    pub async fn hold(&self) -> Vec<oneshot::Sender<()>> {
        let mut guards = Vec::new();
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            if shard.control.send(Control::Hold(rx)).await.is_ok() {
                guards.push(tx);
            }
        }
        guards
    }

    /// Stops the shards after they have processed what is queued; returns their final state.
    pub async fn drain(&self) -> Vec<ShardSnapshot> {
        self.stop.cancel();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        let mut finals = Vec::with_capacity(workers.len());
        for worker in workers {
            if let Ok(snapshot) = worker.await {
                finals.push(snapshot);
            }
        }
        finals
    }
}

/// A model version's state in its shard.
struct ModelSlot {
    key: ModelKey,
    ops: ModelOps,
    /// `None` for the overflow and invalid models, whose records mix several models.
    quality: Option<ModelQuality>,
    /// `None` likewise.
    drift: Option<ModelDrift>,
    /// `None` likewise.
    anomaly: Option<crate::anomaly::ModelAnomaly>,
    /// When the shard last saw anything for this model; idle slots expire.
    last_seen: Instant,
}

/// One shard worker's state: the models it owns.
struct Shard {
    models: HashMap<ModelKey, usize>,
    /// Model states; `models` maps keys to positions here.
    index: Vec<ModelSlot>,
    /// Quality ids (see [`ModelQuality::id`]) to positions in `index`.
    ids: HashMap<u32, usize>,
    next_id: u32,
    join: LabelJoin,
    /// Zero of the millisecond clock that windows and the join store run on.
    epoch: Instant,
    /// When the work item being processed arrived (one clock read per batch, not per record).
    now: Instant,
    /// Position of the last model used: consecutive records nearly always share it, and a string
    /// comparison is cheaper than hashing.
    last: Option<usize>,
    models_overflow: u64,
    /// Whether the first capacity eviction of the pending-label store was logged.
    evictions_logged: bool,
    /// The profile registry generation the models' drift states were last synced with.
    profiles_seen: u64,
    settings: ShardSettings,
    spans: Option<mpsc::Sender<SpanJob>>,
    stats: Arc<SelfStats>,
    rng: SmallRng,
}

impl Shard {
    async fn run(
        mut self,
        mut work: mpsc::Receiver<ShardWork>,
        mut control: mpsc::Receiver<Control>,
        stop: CancellationToken,
    ) -> ShardSnapshot {
        let mut sweep = tokio::time::interval(sweep_period(self.settings.model_idle_expiry));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = sweep.tick() => {
                    self.now = Instant::now();
                    self.expire_idle();
                    self.expire_joins();
                }
                Some(message) = control.recv() => match message {
                    Control::Snapshot(reply, interval) => {
                        let _ = reply.send(self.snapshot(interval));
                    }
                    Control::Hold(release) => {
                        let _ = release.await;
                    }
                },
                item = work.recv() => match item {
                    Some(item) => self.process(item),
                    None => break,
                },
                _ = stop.cancelled() => {
                    // Refuse new work, finish what is queued.
                    work.close();
                    while let Some(item) = work.recv().await {
                        self.process(item);
                    }
                    break;
                }
            }
        }
        self.snapshot(true)
    }

    fn snapshot(&mut self, interval: bool) -> ShardSnapshot {
        self.now = Instant::now();
        // Idle models see a replaced or removed profile too.
        self.sync_profiles();
        let now_ms = self.now_ms();
        self.expire_joins();
        let mut snapshot = ShardSnapshot {
            models: self
                .index
                .iter()
                .map(|slot| (slot.key.clone(), slot.ops.clone()))
                .collect(),
            quality: Vec::new(),
            drift: Vec::new(),
            anomaly: Vec::new(),
            models_overflow: self.models_overflow,
            pending: self.join.pending.len(),
            pending_capacity: self.join.pending.capacity(),
        };
        let mut drift_changes = Vec::new();
        let mut detections = Vec::new();
        for slot in &mut self.index {
            let quality = slot.quality.as_mut().map(|q| q.snapshot(now_ms));
            let drift = slot.drift.as_mut().and_then(|d| d.snapshot(now_ms));
            // Filled by the snapshot just taken.
            if let Some(change) = slot.drift.as_mut().and_then(|d| d.take_change()) {
                drift_changes.push((slot.key.clone(), change));
            }
            if let Some(a) = slot.anomaly.as_mut() {
                if interval {
                    let found = a.close_interval(
                        &slot.ops,
                        quality.as_ref(),
                        drift.as_ref(),
                        slot.drift.as_ref(),
                    );
                    if !found.is_empty() {
                        detections.push((slot.key.clone(), found));
                    }
                }
                snapshot
                    .anomaly
                    .push((slot.key.clone(), a.snapshot(now_ms)));
            }
            if let Some(q) = quality {
                snapshot.quality.push((slot.key.clone(), q));
            }
            if let Some(d) = drift {
                snapshot.drift.push((slot.key.clone(), d));
            }
        }
        for (key, change) in drift_changes {
            self.emit_drift_span(&key, change);
        }
        for (key, found) in detections {
            self.emit_change_span(&key, found);
        }
        snapshot
    }

    /// Gives models the profiles added or replaced since the last look (one atomic load when
    /// nothing changed). A replaced profile restarts the model's drift windows.
    fn sync_profiles(&mut self) {
        let generation = self.settings.profiles.generation();
        if generation == self.profiles_seen {
            return;
        }
        self.profiles_seen = generation;
        let now_ms = self.now_ms();
        let profiles = self.settings.profiles.clone();
        for slot in &mut self.index {
            let Some(drift) = &mut slot.drift else {
                continue;
            };
            match profiles.get(&slot.key.model, &slot.key.version) {
                Some(profile) if !drift.profile().is_some_and(|p| Arc::ptr_eq(p, &profile)) => {
                    drift.set_profile(profile, now_ms);
                }
                None if drift.profile().is_some() => drift.clear_profile(),
                _ => {}
            }
        }
    }

    /// Milliseconds since the shard started, on the clock of `now`.
    fn now_ms(&self) -> u64 {
        self.now.duration_since(self.epoch).as_millis() as u64
    }

    /// The quality state of the model with quality id `id`, if it still exists.
    fn quality_of(&mut self, id: u32) -> Option<&mut ModelQuality> {
        let &i = self.ids.get(&id)?;
        self.index[i].quality.as_mut()
    }

    /// Counts and forgets pending predictions past the TTL and early labels past their hold.
    fn expire_joins(&mut self) {
        let now_ms = self.now_ms();
        let mut expired = Vec::new();
        self.join
            .pending
            .expire(now_ms, |key, p| expired.push((key, p.model)));
        for (key, model) in expired {
            self.join.resolve(key, Resolution::Expired);
            if let Some(q) = self.quality_of(model) {
                q.join.pending -= 1;
                q.join.unlabeled[0] += 1;
            }
        }
        let mut expired = Vec::new();
        self.join
            .early
            .expire(now_ms, |_, label| expired.push(label.model));
        for model in expired {
            if let Some(q) = self.quality_of(model) {
                q.join.early -= 1;
                q.join.unmatched[Unmatched::UnknownRequest as usize] += 1;
            }
        }
    }

    /// Forgets model versions idle for longer than the expiry, so that version churn over weeks
    /// neither grows memory nor pushes new versions into `__other__`. Their series stop; if a
    /// version comes back it starts again from zero with a new start time.
    fn expire_idle(&mut self) {
        let expiry = self.settings.model_idle_expiry;
        let now = Instant::now();
        let before = self.index.len();
        // A model whose predictions still wait for labels stays until they expire.
        let profiles = self.settings.profiles.clone();
        self.index.retain(|slot| {
            let keep = now.duration_since(slot.last_seen) < expiry
                || slot.quality.as_ref().is_some_and(|q| q.join.pending > 0);
            // A profile captured live goes with its model version, so that version churn over
            // weeks does not grow the registry (profiles from files stay with their files).
            if !keep {
                let captured = slot.drift.as_ref().and_then(|d| d.profile()).filter(|p| {
                    p.source.starts_with("live:")
                        && profiles
                            .get(&slot.key.model, &slot.key.version)
                            .is_some_and(|r| Arc::ptr_eq(&r, p))
                });
                if captured.is_some() {
                    profiles.remove(&slot.key);
                }
            }
            keep
        });
        let expired = before - self.index.len();
        if expired == 0 {
            return;
        }
        self.stats.models_expired.fetch_add(expired as u64, Relaxed);
        tracing::info!(expired, ?expiry, "forgot idle model versions");
        self.models = self
            .index
            .iter()
            .enumerate()
            .map(|(i, slot)| (slot.key.clone(), i))
            .collect();
        self.ids = self
            .index
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| Some((slot.quality.as_ref()?.id, i)))
            .collect();
        self.last = None;
    }

    /// The state of a model version, created on first sight; past the cap, the overflow model's.
    fn model(&mut self, model: &str, version: &str) -> usize {
        if let Some(i) = self.last {
            if self.index[i].key.matches(model, version) {
                self.index[i].last_seen = self.now;
                return i;
            }
        }
        let key = ModelKey::new(model, version);
        let i = match self.models.get(&key) {
            Some(&i) => i,
            None if self.models.len() < self.settings.max_models_per_shard
                || model == OVERFLOW_MODEL =>
            {
                self.insert(key)
            }
            None => {
                if self.models_overflow == 0 {
                    tracing::warn!(
                        model,
                        version,
                        "--max-models reached: records of further model versions are counted \
                         under __other__ (and in inferscope.models.overflow)"
                    );
                }
                self.models_overflow += 1;
                let overflow = ModelKey::overflow();
                match self.models.get(&overflow) {
                    Some(&i) => i,
                    None => self.insert(overflow),
                }
            }
        };
        // Do not cache the overflow slot for an unknown key: the next record of that key must
        // be counted as overflow again.
        if self.index[i].key.matches(model, version) {
            self.last = Some(i);
        }
        self.index[i].last_seen = self.now;
        i
    }

    /// The state a reject is counted in: its model's, or [`INVALID_MODEL`]'s when the model name
    /// itself was the problem.
    fn reject_model(&mut self, reject: &RejectedRecord, model: &str, version: &str) -> usize {
        if reject.model_usable {
            self.model(model, version)
        } else {
            self.model(INVALID_MODEL, "")
        }
    }

    fn insert(&mut self, key: ModelKey) -> usize {
        let i = self.index.len();
        let quality = (key.model != OVERFLOW_MODEL && key.model != INVALID_MODEL).then(|| {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            self.ids.insert(id, i);
            ModelQuality::new(id, &self.settings.quality, self.now_ms())
        });
        let own = key.model != OVERFLOW_MODEL && key.model != INVALID_MODEL;
        let anomaly_settings = self.settings.anomaly.for_model(&key.model);
        let anomaly = own.then(|| {
            crate::anomaly::ModelAnomaly::new(
                anomaly_settings.clone(),
                &self.settings.quality.windows,
                self.now_ms(),
            )
        });
        let drift = own.then(|| {
            let mut drift = ModelDrift::new(&self.settings.drift, key.clone());
            drift.set_anomaly(anomaly_settings.clone());
            if let Some(profile) = self.settings.profiles.get(&key.model, &key.version) {
                drift.set_profile(profile, self.now_ms());
            }
            drift
        });
        let mut slot = ModelSlot {
            key: key.clone(),
            ops: ModelOps::new(self.settings.max_error_types),
            quality,
            drift,
            anomaly,
            last_seen: self.now,
        };
        if let Some(declaration) = self
            .settings
            .declarations
            .as_ref()
            .and_then(|r| r.get(&key.model, &key.version))
        {
            slot.ops.declare(&declaration);
            if let Some(q) = &mut slot.quality {
                q.declare(&declaration);
            }
            if let Some(d) = &mut slot.drift {
                d.declare(declaration.clone());
            }
        }
        self.index.push(slot);
        self.models.insert(key, i);
        i
    }

    fn process(&mut self, item: ShardWork) {
        self.now = Instant::now();
        // O(1) unless something is due: the oldest entries are at the front.
        self.expire_joins();
        match item {
            ShardWork::Records {
                batch,
                declarations,
                accepted,
                rejected,
                received,
                done,
            } => {
                for (key, declaration) in declarations {
                    let m = self.model(&key.model, &key.version);
                    self.index[m].ops.declare(&declaration);
                    if let Some(q) = &mut self.index[m].quality {
                        q.declare(&declaration);
                    }
                    if let Some(d) = &mut self.index[m].drift {
                        d.declare(declaration.clone());
                    }
                }
                self.sync_profiles();
                let now_ms = self.now_ms();
                let received_ns = unix_nanos(received);
                let mut advanced = usize::MAX;
                let mut batch_flags: Vec<pb::RecordFlags> = Vec::new();
                let mut record_flags: Vec<pb::AnomalyFlag> = Vec::new();
                for &i in &accepted {
                    let record = &batch.records[i as usize];
                    let (model, version) =
                        model_of(&record.model, &record.version, &batch.model, &batch.version);
                    let m = self.model(model, version);
                    self.index[m].ops.update(record);
                    if advanced != m {
                        if let Some(q) = &mut self.index[m].quality {
                            q.advance(now_ms);
                        }
                        if let Some(d) = &mut self.index[m].drift {
                            d.advance(now_ms);
                        }
                        if let Some(a) = &mut self.index[m].anomaly {
                            a.advance(now_ms);
                        }
                        advanced = m;
                    }
                    if let Some(d) = &mut self.index[m].drift {
                        d.missing_flags(record, &mut record_flags);
                        if let Some(captured) = d.update(record, now_ms, &mut record_flags) {
                            tracing::info!(
                                model,
                                version,
                                records = captured.records,
                                "reference profile captured from the first records"
                            );
                            self.settings.profiles.put(captured);
                        }
                    }
                    if record.prediction.is_some() {
                        self.join_prediction(m, record, now_ms, received_ns);
                    }
                    let slot = &mut self.index[m];
                    // Flags come only from models with anomaly state (drift state goes with it).
                    if let Some(a) = &mut slot.anomaly {
                        a.detectors.check(record, &mut record_flags);
                        a.count(&record_flags, &mut slot.ops.anomalies);
                    }
                    let flagged = !record_flags.is_empty();
                    if flagged {
                        // Counted above; past the cap left out of the ack and the span.
                        let cap = crate::anomaly::settings::MAX_FLAGS_PER_RECORD;
                        if record_flags.len() > cap {
                            if slot.ops.flags_truncated == 0 {
                                tracing::warn!(
                                    model,
                                    version,
                                    flags = record_flags.len(),
                                    cap,
                                    "a record raised more anomaly flags than an ack carries; \
                                     the rest are counted (inferscope.anomaly.flags_truncated)"
                                );
                            }
                            slot.ops.flags_truncated += (record_flags.len() - cap) as u64;
                            record_flags.truncate(cap);
                        }
                    }
                    // Flagged records always get a span, with one event per flag.
                    if self.spans.is_some() && (flagged || self.sampled(record)) {
                        self.emit_span(record, model, version, received, &record_flags);
                    }
                    if flagged {
                        batch_flags.push(pb::RecordFlags {
                            index: i,
                            anomalies: std::mem::take(&mut record_flags),
                        });
                    }
                }
                for r in rejected {
                    let record = &batch.records[r.index as usize];
                    let (model, version) =
                        model_of(&record.model, &record.version, &batch.model, &batch.version);
                    let m = self.reject_model(&r, model, version);
                    self.index[m].ops.record_reject(r.reason);
                }
                let _ = done.send(batch_flags);
            }
            ShardWork::Capture { key, records, done } => {
                let m = self.model(&key.model, &key.version);
                let records = records.unwrap_or(match self.settings.drift.reference_records {
                    0 => crate::drift::model::DEFAULT_REFERENCE_RECORDS,
                    n => n,
                });
                // A version folded into `__other__` has no drift state of its own.
                let own = self.index[m].key == key;
                let taken = match &mut self.index[m].drift {
                    Some(d) if own => {
                        d.start_capture(records);
                        tracing::info!(
                            model = %key.model,
                            version = %key.version,
                            records,
                            "reference capture requested"
                        );
                        records
                    }
                    _ => 0,
                };
                let _ = done.send(taken);
            }
            ShardWork::Labels {
                batch,
                accepted,
                rejected,
                received,
                done,
            } => {
                let now_ms = self.now_ms();
                let received_ns = unix_nanos(received);
                for &i in &accepted {
                    let truth = &batch.labels[i as usize];
                    let (model, version) =
                        model_of(&truth.model, &truth.version, &batch.model, &batch.version);
                    let m = self.model(model, version);
                    self.index[m].ops.labels_accepted += 1;
                    self.join_label(m, truth, now_ms, received_ns);
                }
                for r in rejected {
                    let truth = &batch.labels[r.index as usize];
                    let (model, version) =
                        model_of(&truth.model, &truth.version, &batch.model, &batch.version);
                    let m = self.reject_model(&r, model, version);
                    self.index[m].ops.record_label_reject(r.reason);
                }
                let _ = done.send(());
            }
        }
    }

    /// Quality for one accepted record with a prediction: scored now if it carries its label,
    /// joined with a label that came early, or kept until its label arrives.
    fn join_prediction(
        &mut self,
        m: usize,
        record: &pb::InferenceRecord,
        now_ms: u64,
        received_ns: u64,
    ) {
        let Some(q) = &mut self.index[m].quality else {
            return;
        };
        let Some(prediction) = q.prediction(record) else {
            return;
        };
        q.count_prediction(&prediction);
        let at_unix_ns = match record.time_unix_nano {
            0 => received_ns,
            t => t,
        };
        if let Some(label) = &record.label {
            match q.truth(&prediction, label) {
                Ok(truth) => match q.observe(&prediction, truth) {
                    Ok(()) => q.join.joined_inline += 1,
                    Err(_) => q.join.unmatched[Unmatched::KindMismatch as usize] += 1,
                },
                Err(reason) => q.join.unmatched[reason as usize] += 1,
            }
            // Not remembered as resolved: one cache miss per record for a case (a delayed label
            // for an inline-labelled record) that a bounded memory would forget at high rates
            // anyway. Such a label is held as early, then counted as unknown_request.
            return;
        }
        // `--max-pending-labels 0` turns the delayed-label join off.
        if record.request_id.is_empty() || self.join.pending.capacity() == 0 {
            return;
        }
        let key = self.join.key(q.id, &record.request_id);
        if let Some((_, early)) = self.join.early.take(&key) {
            q.join.early -= 1;
            match q.truth(&prediction, &early.label) {
                Ok(truth) => {
                    Self::score(q, &prediction, truth, at_unix_ns, early.at_unix_ns);
                    self.join.resolve(key, Resolution::Labelled);
                    return;
                }
                // The early label does not fit: counted, and the prediction waits for another.
                Err(reason) => q.join.unmatched[reason as usize] += 1,
            }
        }
        let pending = PendingPrediction {
            model: q.id,
            at_unix_ns,
            prediction,
        };
        match self.join.pending.insert(key, now_ms, pending) {
            Ok(evicted) => {
                q.join.pending += 1;
                if let Some((_, old)) = evicted {
                    // Evicted keys are not remembered as resolved: the oldest of a full store is
                    // older than any bounded memory of recent keys could hold at that rate.
                    if !self.evictions_logged {
                        self.evictions_logged = true;
                        tracing::warn!(
                            capacity = self.join.pending.capacity(),
                            "the pending-label store is full: the oldest predictions are dropped \
                             unlabelled (inferscope.predictions.unlabeled{{reason=\"capacity\"}}; \
                             see --max-pending-labels)"
                        );
                    }
                    if let Some(owner) = self.quality_of(old.model) {
                        owner.join.pending -= 1;
                        owner.join.unlabeled[1] += 1;
                    }
                }
            }
            Err(_) => q.join.duplicate_predictions += 1,
        }
    }

    /// Scores a joined delayed pair and records the label delay.
    fn score(
        q: &mut ModelQuality,
        prediction: &crate::quality::state::Prediction,
        truth: crate::quality::state::Truth,
        predicted_ns: u64,
        labelled_ns: u64,
    ) {
        match q.observe(prediction, truth) {
            Ok(()) => {
                q.join.joined_delayed += 1;
                q.join
                    .delay
                    .update(delay_seconds(predicted_ns, labelled_ns));
            }
            Err(_) => q.join.unmatched[Unmatched::KindMismatch as usize] += 1,
        }
    }

    /// One delayed label: joined with its pending prediction, or classified as a duplicate or
    /// late, or held briefly in case its prediction is still on the way. A label that does not
    /// fit its prediction (kind, class index) is counted and leaves the prediction waiting.
    fn join_label(&mut self, m: usize, truth: &pb::GroundTruth, now_ms: u64, received_ns: u64) {
        let Some(q) = &mut self.index[m].quality else {
            return;
        };
        let Some(label) = &truth.label else {
            return;
        };
        q.advance(now_ms);
        let at_unix_ns = match truth.time_unix_nano {
            0 => received_ns,
            t => t,
        };
        let key = self.join.key(q.id, &truth.request_id);
        let unmatched = if let Some(pending) = self.join.pending.get(&key) {
            match q.truth(&pending.prediction, label) {
                Ok(resolved) => {
                    let (_, pending) = self.join.pending.take(&key).expect("present");
                    q.join.pending -= 1;
                    Self::score(
                        q,
                        &pending.prediction,
                        resolved,
                        pending.at_unix_ns,
                        at_unix_ns,
                    );
                    self.join.resolve(key, Resolution::Labelled);
                    None
                }
                Err(reason) => Some(reason),
            }
        } else {
            match self.join.resolution(&key) {
                Some(Resolution::Labelled) => Some(Unmatched::Duplicate),
                Some(Resolution::Expired) => Some(Unmatched::ExpiredRequest),
                None if self.join.pending.capacity() == 0 => Some(Unmatched::JoinDisabled),
                None => {
                    let early = EarlyLabel {
                        model: q.id,
                        at_unix_ns,
                        label: label.clone(),
                    };
                    match self.join.early.insert(key, now_ms, early) {
                        Ok(evicted) => {
                            q.join.early += 1;
                            if let Some((_, old)) = evicted {
                                if let Some(owner) = self.quality_of(old.model) {
                                    owner.join.early -= 1;
                                    owner.join.unmatched[Unmatched::UnknownRequest as usize] += 1;
                                }
                            }
                            None
                        }
                        Err(_) => Some(Unmatched::Duplicate),
                    }
                }
            }
        };
        if let Some(reason) = unmatched {
            if let Some(q) = &mut self.index[m].quality {
                q.join.unmatched[reason as usize] += 1;
            }
        }
    }

    /// The sampling decision for a successful record (error records always get a span). With a
    /// `traceparent`, the ratio applies to its trace id as OpenTelemetry's `TraceIdRatioBased`
    /// does, so the decision agrees with other ratio samplers on the same trace.
    fn sampled(&mut self, record: &pb::InferenceRecord) -> bool {
        if !record.error_type.is_empty() {
            return true;
        }
        let Sampling {
            ratio,
            parent_based,
        } = self.settings.sampling;
        let tp = &record.traceparent;
        if !tp.is_empty() {
            // Validated: 00-<trace id 3..35>-<span id 36..52>-<flags 53..55>.
            if parent_based {
                return u8::from_str_radix(&tp[53..55], 16).is_ok_and(|f| f & 1 == 1);
            }
            if ratio >= 1.0 {
                return true;
            }
            let low = u64::from_str_radix(&tp[19..35], 16).unwrap_or(0);
            return (low >> 1) < (ratio * (1u64 << 63) as f64) as u64;
        }
        ratio >= 1.0 || (ratio > 0.0 && self.rng.random::<f64>() < ratio)
    }

    /// A span for a change in a model's drifted features: one event per feature that started or
    /// stopped drifting, in a trace of its own (no request caused it). Never sampled out.
    fn emit_drift_span(&self, key: &ModelKey, change: crate::drift::model::DriftChange) {
        let Some(spans) = &self.spans else { return };
        let now = SystemTime::now();
        let event = |name, f: &crate::drift::model::FeatureScores| SpanEvent {
            name,
            time: now,
            text: vec![
                ("feature", f.name.clone()),
                (
                    "method",
                    if f.numeric { "psi" } else { "jensenshannon" }.into(),
                ),
            ],
            numbers: f
                .psi
                .or(f.js_distance)
                .map(|score| vec![("score", score)])
                .unwrap_or_default(),
        };
        let mut events: Vec<SpanEvent> = change
            .started
            .iter()
            .map(|f| event("inferscope.drift.detected", f))
            .collect();
        events.extend(
            change
                .stopped
                .iter()
                .map(|f| event("inferscope.drift.resolved", f)),
        );
        let job = SpanJob {
            attributes: vec![
                ("inferscope.drift.window".into(), change.window),
                (
                    "inferscope.drift.drifted_features".into(),
                    change.drifted.to_string(),
                ),
                (
                    "inferscope.drift.dataset_drift".into(),
                    change.dataset_drift.to_string(),
                ),
            ],
            events,
            ..SpanJob::of_model(crate::export::traces::DRIFT_SPAN_NAME, key, now)
        };
        self.send_span(spans, job);
    }

    /// Queues a span; when the queue is full the span is dropped and counted (logged once).
    fn send_span(&self, spans: &mpsc::Sender<SpanJob>, job: SpanJob) {
        if spans.try_send(job).is_err() && self.stats.spans_dropped.fetch_add(1, Relaxed) == 0 {
            tracing::warn!(
                "the span queue is full: spans are dropped (counted in inferscope.spans.dropped)"
            );
        }
    }

    /// Change detections on a model's series: one WARN line each, and one span (in a trace of
    /// its own, never sampled out) with an `inferscope.change.detected` event per detection.
    fn emit_change_span(&self, key: &ModelKey, found: Vec<crate::anomaly::series::Detection>) {
        for d in &found {
            tracing::warn!(
                model = %key.model,
                version = %key.version,
                series = d.series.name(),
                detector = d.detector.name(),
                value = d.value,
                level = d.level,
                "change detected in a model's series"
            );
        }
        let Some(spans) = &self.spans else { return };
        let now = SystemTime::now();
        let job = SpanJob {
            events: found
                .iter()
                .map(|d| SpanEvent {
                    name: "inferscope.change.detected",
                    time: now,
                    text: vec![
                        ("series", d.series.name().into()),
                        ("detector", d.detector.name().into()),
                    ],
                    numbers: vec![("value", d.value), ("level", d.level)],
                })
                .collect(),
            ..SpanJob::of_model(crate::export::traces::CHANGE_SPAN_NAME, key, now)
        };
        self.send_span(spans, job);
    }

    fn emit_span(
        &self,
        record: &pb::InferenceRecord,
        model: &str,
        version: &str,
        received: SystemTime,
        flags: &[pb::AnomalyFlag],
    ) {
        let Some(spans) = &self.spans else { return };
        let end = match record.time_unix_nano {
            0 => received,
            t => SystemTime::UNIX_EPOCH + Duration::from_nanos(t),
        };
        let start = record
            .latency_seconds
            .and_then(|l| Duration::try_from_secs_f64(l).ok())
            .and_then(|l| end.checked_sub(l))
            .unwrap_or(end);
        let job = SpanJob {
            name: crate::export::traces::SPAN_NAME,
            model: model.to_owned(),
            version: version.to_owned(),
            request_id: record.request_id.clone(),
            traceparent: record.traceparent.clone(),
            tracestate: record.tracestate.clone(),
            start,
            end,
            error_type: record.error_type.clone(),
            attributes: record
                .attributes
                .iter()
                .map(|a| (a.key.clone(), a.value.clone()))
                .collect(),
            events: flags
                .iter()
                .map(|f| SpanEvent {
                    name: "inferscope.anomaly",
                    time: end,
                    text: vec![("kind", f.kind.clone()), ("subject", f.subject.clone())],
                    numbers: vec![("score", f.score)],
                })
                .collect(),
        };
        self.send_span(spans, job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(model: &str, n: usize) -> Arc<pb::RecordBatch> {
        Arc::new(pb::RecordBatch {
            model: model.into(),
            records: vec![pb::InferenceRecord::default(); n],
            ..Default::default()
        })
    }

    async fn send(pipeline: &Pipeline, batch: Arc<pb::RecordBatch>) {
        let (done, wait) = oneshot::channel();
        let accepted = (0..batch.records.len() as u32).collect();
        let shard = pipeline.shard_of(&batch.model, &batch.version);
        let work = ShardWork::Records {
            batch,
            declarations: Vec::new(),
            accepted,
            rejected: Vec::new(),
            received: SystemTime::now(),
            done,
        };
        pipeline.dispatch(vec![(shard, work)]).unwrap();
        wait.await.unwrap();
    }

    fn models(snapshots: &[ShardSnapshot]) -> Vec<(String, u64)> {
        let mut all: Vec<_> = snapshots
            .iter()
            .flat_map(|s| &s.models)
            .map(|(k, ops)| (k.model.clone(), ops.records()))
            .collect();
        all.sort();
        all
    }

    #[tokio::test(start_paused = true)]
    async fn idle_models_expire_and_come_back_from_zero() {
        let settings = ShardSettings {
            max_models_per_shard: 4,
            model_idle_expiry: Duration::from_secs(100),
            max_error_types: 4,
            sampling: Sampling {
                ratio: 0.0,
                parent_based: false,
            },
            quality: QualitySettings::default(),
            declarations: None,
            drift: DriftSettings::default(),
            profiles: Arc::new(ProfileRegistry::new()),
            anomaly: Default::default(),
        };
        let stats = Arc::new(SelfStats::default());
        let pipeline = Pipeline::start(1, 8, settings, None, stats.clone());
        send(&pipeline, records("old", 3)).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        send(&pipeline, records("new", 2)).await;
        // "old" idle for 60 + 60 s > 100 s; "new" for 60 s.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(models(&pipeline.snapshot().await), vec![("new".into(), 2)]);
        assert_eq!(stats.models_expired.load(Relaxed), 1);
        // A returning model starts again from zero.
        send(&pipeline, records("old", 1)).await;
        assert_eq!(
            models(&pipeline.snapshot().await),
            vec![("new".into(), 2), ("old".into(), 1)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_frees_model_slots_under_the_cap() {
        let settings = ShardSettings {
            max_models_per_shard: 1,
            model_idle_expiry: Duration::from_secs(10),
            max_error_types: 4,
            sampling: Sampling {
                ratio: 0.0,
                parent_based: false,
            },
            quality: QualitySettings::default(),
            declarations: None,
            drift: DriftSettings::default(),
            profiles: Arc::new(ProfileRegistry::new()),
            anomaly: Default::default(),
        };
        let pipeline = Pipeline::start(1, 8, settings, None, Arc::new(SelfStats::default()));
        send(&pipeline, records("v1", 1)).await;
        send(&pipeline, records("v2", 1)).await; // over the cap: counted under __other__
        tokio::time::sleep(Duration::from_secs(30)).await;
        send(&pipeline, records("v3", 1)).await; // both expired: v3 gets its own slot
        let snapshots = pipeline.snapshot().await;
        assert_eq!(models(&snapshots), vec![("v3".into(), 1)]);
        assert_eq!(snapshots[0].models_overflow, 1);
    }

    fn quality_settings() -> ShardSettings {
        ShardSettings {
            max_models_per_shard: 4,
            model_idle_expiry: Duration::from_secs(3600),
            max_error_types: 4,
            sampling: Sampling {
                ratio: 0.0,
                parent_based: false,
            },
            quality: QualitySettings {
                max_pending: 3,
                label_ttl: Duration::from_secs(100),
                max_early_labels: 2,
                early_label_hold: Duration::from_secs(10),
                ..QualitySettings::default()
            },
            declarations: None,
            drift: DriftSettings::default(),
            profiles: Arc::new(ProfileRegistry::new()),
            anomaly: Default::default(),
        }
    }

    /// Regression predictions with request ids `ids`.
    fn predictions(ids: &[&str]) -> Arc<pb::RecordBatch> {
        Arc::new(pb::RecordBatch {
            model: "m".into(),
            records: ids
                .iter()
                .map(|id| pb::InferenceRecord {
                    request_id: (*id).into(),
                    prediction: Some(pb::inference_record::Prediction::Regression(
                        pb::Regression { value: 1.0 },
                    )),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn label(pipeline: &Pipeline, ids: &[&str], value: pb::label::Value) {
        let (done, wait) = oneshot::channel();
        let batch = Arc::new(pb::LabelBatch {
            model: "m".into(),
            labels: ids
                .iter()
                .map(|id| pb::GroundTruth {
                    request_id: (*id).into(),
                    label: Some(pb::Label {
                        value: Some(value.clone()),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        let work = ShardWork::Labels {
            accepted: (0..batch.labels.len() as u32).collect(),
            batch,
            rejected: Vec::new(),
            received: SystemTime::now(),
            done,
        };
        pipeline.dispatch(vec![(0, work)]).unwrap();
        wait.await.unwrap();
    }

    async fn join_stats(pipeline: &Pipeline) -> crate::quality::JoinStats {
        let mut snapshots = pipeline.snapshot().await;
        snapshots.remove(0).quality.remove(0).1.join
    }

    #[tokio::test(start_paused = true)]
    async fn pending_predictions_expire_by_age_and_by_capacity() {
        let stats = Arc::new(SelfStats::default());
        let pipeline = Pipeline::start(1, 8, quality_settings(), None, stats);
        let y = pb::label::Value::RegressionValue(2.0);
        send(&pipeline, predictions(&["a", "b"])).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        send(&pipeline, predictions(&["c", "d"])).await; // full at 3: "a" is evicted
        let j = join_stats(&pipeline).await;
        assert_eq!((j.pending, j.unlabeled), (3, [0, 1]));
        tokio::time::sleep(Duration::from_secs(50)).await; // "b" is 110 s old: past the TTL
        label(&pipeline, &["a", "b", "c"], y.clone()).await;
        let j = join_stats(&pipeline).await;
        assert_eq!((j.pending, j.unlabeled), (1, [1, 1]));
        assert_eq!(j.joined_delayed, 1, "c joined");
        assert_eq!(
            j.unmatched[Unmatched::ExpiredRequest as usize],
            1,
            "b came too late"
        );
        // An evicted key is not remembered: the label for "a" waits as an early label.
        assert_eq!(j.early, 1);
        // Delays are measured on record and label timestamps (wall clock), which paused tokio
        // time does not move: tests/labels.rs checks their values.
        assert_eq!(j.delay.count(), 1);
        label(&pipeline, &["c"], y).await;
        let j = join_stats(&pipeline).await;
        assert_eq!(j.unmatched[Unmatched::Duplicate as usize], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn early_labels_wait_briefly_for_their_prediction() {
        let pipeline = Pipeline::start(
            1,
            8,
            quality_settings(),
            None,
            Arc::new(SelfStats::default()),
        );
        let y = pb::label::Value::RegressionValue(2.0);
        label(&pipeline, &["x", "y"], y.clone()).await;
        assert_eq!(join_stats(&pipeline).await.early, 2);
        send(&pipeline, predictions(&["x"])).await;
        let j = join_stats(&pipeline).await;
        assert_eq!((j.early, j.joined_delayed, j.pending), (1, 1, 0));
        tokio::time::sleep(Duration::from_secs(11)).await;
        let j = join_stats(&pipeline).await;
        assert_eq!(j.early, 0);
        assert_eq!(
            j.unmatched[Unmatched::UnknownRequest as usize],
            1,
            "y never came"
        );
        // A class label for a regression prediction is counted, not scored.
        send(&pipeline, predictions(&["z"])).await;
        label(&pipeline, &["z"], pb::label::Value::ClassName("cat".into())).await;
        let j = join_stats(&pipeline).await;
        assert_eq!(j.unmatched[Unmatched::KindMismatch as usize], 1);
        assert_eq!(j.joined_delayed, 1);
        // The prediction still waits, and a fitting label joins it.
        assert_eq!(j.pending, 1);
        label(&pipeline, &["z"], pb::label::Value::RegressionValue(3.0)).await;
        assert_eq!(join_stats(&pipeline).await.joined_delayed, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeated_request_id_keeps_the_first_prediction() {
        let pipeline = Pipeline::start(
            1,
            8,
            quality_settings(),
            None,
            Arc::new(SelfStats::default()),
        );
        send(&pipeline, predictions(&["r", "r"])).await;
        let j = join_stats(&pipeline).await;
        assert_eq!((j.pending, j.duplicate_predictions), (1, 1));
    }

    /// Multiclass records: probabilities over `[a, b, c, d]`, labelled inline by class name.
    fn multiclass(labels: &[&str]) -> Arc<pb::RecordBatch> {
        Arc::new(pb::RecordBatch {
            model: "m".into(),
            records: labels
                .iter()
                .map(|l| pb::InferenceRecord {
                    prediction: Some(pb::inference_record::Prediction::Classification(
                        pb::Classification {
                            class_probabilities: vec![0.1, 0.1, 0.1, 0.7],
                            ..Default::default()
                        },
                    )),
                    label: Some(pb::Label {
                        value: Some(pb::label::Value::ClassName((*l).into())),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn abcd() -> crate::models::Declaration {
        crate::models::Declaration::from_pb(&pb::ModelDeclaration {
            task: pb::TaskType::MulticlassClassification as i32,
            class_names: ["a", "b", "c", "d"].map(String::from).to_vec(),
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_model_state_recreated_after_expiry_takes_its_declaration_again() {
        let registry = Arc::new(crate::models::DeclarationRegistry::new(4));
        registry.put(ModelKey::new("m", ""), abcd());
        let settings = ShardSettings {
            model_idle_expiry: Duration::from_secs(10),
            declarations: Some(registry),
            ..quality_settings()
        };
        let pipeline = Pipeline::start(1, 8, settings, None, Arc::new(SelfStats::default()));
        send(&pipeline, multiclass(&["d"])).await;
        tokio::time::sleep(Duration::from_secs(30)).await; // expired
        send(&pipeline, multiclass(&["d", "a"])).await;
        let q = pipeline.snapshot().await.remove(0).quality.remove(0).1;
        assert_eq!(
            q.join.joined_inline, 2,
            "probability-only predictions still scored"
        );
        assert_eq!(q.windows.last().unwrap().1.probabilistic, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_class_name_label_finds_its_own_column_past_the_class_cap() {
        let registry = Arc::new(crate::models::DeclarationRegistry::new(4));
        registry.put(ModelKey::new("m", ""), abcd());
        let mut settings = ShardSettings {
            declarations: Some(registry),
            ..quality_settings()
        };
        settings.quality.max_classes = 2; // c and d share __other__
        let pipeline = Pipeline::start(1, 8, settings, None, Arc::new(SelfStats::default()));
        send(&pipeline, multiclass(&["d"])).await;
        let q = pipeline.snapshot().await.remove(0).quality.remove(0).1;
        let all = &q.windows.last().unwrap().1;
        // -ln(0.7), the probability of d, not of c.
        assert!((all.log_loss().unwrap() + 0.7f64.ln()).abs() < 1e-12);
        // c and d once at the declaration, then the label d: occurrences are counted.
        assert_eq!(q.classes_overflowed, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn labels_are_not_held_when_the_join_is_off() {
        let mut settings = quality_settings();
        settings.quality.max_pending = 0;
        let pipeline = Pipeline::start(1, 8, settings, None, Arc::new(SelfStats::default()));
        send(&pipeline, predictions(&["a"])).await;
        label(&pipeline, &["a"], pb::label::Value::RegressionValue(1.0)).await;
        let j = join_stats(&pipeline).await;
        assert_eq!((j.pending, j.early), (0, 0));
        assert_eq!(j.unmatched[Unmatched::JoinDisabled as usize], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_captured_profile_leaves_the_registry_with_its_expired_model() {
        let profiles = Arc::new(ProfileRegistry::new());
        let mut settings = ShardSettings {
            model_idle_expiry: Duration::from_secs(10),
            profiles: profiles.clone(),
            anomaly: Default::default(),
            ..quality_settings()
        };
        settings.drift.reference_records = 2;
        let pipeline = Pipeline::start(1, 8, settings, None, Arc::new(SelfStats::default()));
        send(&pipeline, predictions(&["a", "b"])).await;
        assert_eq!(profiles.len(), 1, "captured from the first two records");
        // Labels never come: let the pending predictions expire (TTL 100 s), then the model.
        tokio::time::sleep(Duration::from_secs(200)).await;
        pipeline.snapshot().await;
        assert!(profiles.is_empty());
    }
}
