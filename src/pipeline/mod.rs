//! Routing and shard workers. Ingest hands each batch's records to the shard that owns their
//! (model, version) over a bounded channel; each shard owns its models' state alone, so nothing
//! on the per-record path is shared or locked. Export asks shards for snapshots over a separate
//! control channel, so a full data queue never hides the control messages for long.
//!
//! Full queue policy: a batch is dispatched only if *every* shard it touches has room (permits are
//! reserved first), so a batch is processed whole or not at all; otherwise it is shed, counted,
//! and ingest answers UNAVAILABLE.

mod model;
pub mod shard;
pub mod spans;
mod table;

pub use spans::SpanJob;

use crate::{
    anomaly::{AnomalyConfig, AnomalySnapshot},
    config::Sampling,
    drift::{
        model::{DriftSettings, DriftSnapshot},
        registry::ProfileRegistry,
    },
    events::BatchesShed,
    models::{Declaration, DeclarationRegistry, ModelKey},
    operational::ModelOps,
    pb,
    quality::{QualitySettings, QualitySnapshot},
    self_metrics::SelfStats,
};
use rand::{rngs::SmallRng, SeedableRng};
use shard::{Control, Shard};
use std::{
    hash::{Hash, Hasher},
    sync::{
        atomic::{AtomicUsize, Ordering::AcqRel, Ordering::Acquire},
        Arc,
    },
    time::{Duration, SystemTime},
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// One record the ingest layer rejected, for counting by the shard of its model.
#[derive(Debug, Clone, Copy)]
pub struct RejectedRecord {
    pub index: u32,
    pub reason: pb::RejectReason,
    /// False when the model or version itself was the problem: counted in the invalid slot
    /// ([`crate::models::SlotKind::Invalid`]).
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
        /// With a shared label store: the stored prediction of each accepted label, in order
        /// (taken out of the store for this shard to score); empty when there is no store or it
        /// did not answer in time.
        stored: Vec<Option<Vec<u8>>>,
        /// Labels back from ingest's retry of the shared store with their predictions: counted
        /// as received when they first came (and held as early labels since).
        retried: bool,
        done: oneshot::Sender<()>,
    },
}

/// The state a shard publishes for export.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub models: Vec<(ModelKey, ModelOps)>,
    /// Quality of the models that have any (not the overflow or invalid models).
    pub quality: Vec<(ModelKey, QualitySnapshot)>,
    /// Drift of the own models (without a reference profile: only the overflow count).
    pub drift: Vec<(ModelKey, DriftSnapshot)>,
    /// Anomaly rates, change detections and series points (not the overflow or invalid models).
    pub anomaly: Vec<(ModelKey, AnomalySnapshot)>,
    /// Records counted under the overflow model because `--max-models` was reached.
    pub models_overflow: u64,
    /// Predictions waiting for a label in this shard, and the shard's capacity for them.
    pub pending: usize,
    pub pending_capacity: usize,
}

/// The batch could not be queued: a shard it needs is full (or shutting down).
#[derive(Debug, thiserror::Error)]
#[error("inferscope is at capacity (shard queue full); retry with backoff")]
pub struct Shed;

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
    /// `--max-models`, shared by every shard's clone of these settings.
    pub max_models: ModelBudget,
    /// A model version with no records or labels for this long is forgotten.
    pub model_idle_expiry: Duration,
    pub max_error_types: usize,
    pub sampling: Sampling,
    pub quality: QualitySettings,
    /// Where a model state created without its declaration in hand (a version that expired and
    /// came back, or left `__other__`) finds the declaration ingest keeps.
    pub declarations: Option<Arc<DeclarationRegistry>>,
    pub drift: DriftSettings,
    /// Reference profiles, loaded or captured.
    pub profiles: Arc<ProfileRegistry>,
    /// Where captured profiles are saved (`--state-dir`), if anywhere.
    pub state: Option<crate::state::StateStore>,
    /// The fleet's shared store of predictions waiting for labels (`--label-store`), if any.
    pub label_store: Option<crate::label_store::LabelStore>,
    /// Anomaly detector settings, per model name.
    pub anomaly: AnomalyConfig,
    /// How often each shard closes an interval of its models' change-detector series (the
    /// metric export interval, so that one exported point is one interval).
    pub series_interval: Duration,
}

/// `--max-models` for the whole process: the model states of client versions (not the shared
/// `__other__` and `__invalid__` slots) that all shards hold together. A shard takes a slot when
/// it creates a state and gives it back when the state expires, so versions that hash unevenly
/// across shards still get every slot. One atomic, touched only when a version appears or
/// expires, never per record.
#[derive(Debug, Clone)]
pub struct ModelBudget {
    max: usize,
    /// Own states held across all shards.
    tracked: Arc<AtomicUsize>,
}

impl ModelBudget {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            tracked: Arc::default(),
        }
    }

    /// Takes a slot for a new state, if one is free.
    pub fn take(&self) -> bool {
        self.tracked
            .fetch_update(AcqRel, Acquire, |n| (n < self.max).then_some(n + 1))
            .is_ok()
    }

    /// Gives back the slots of `n` expired states.
    pub fn give_back(&self, n: usize) {
        self.tracked.fetch_sub(n, AcqRel);
    }

    /// Own states held now, across all shards.
    pub fn tracked(&self) -> usize {
        self.tracked.load(Acquire)
    }
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
            let sampler = spans::Sampler::new(
                settings.sampling,
                SmallRng::seed_from_u64(0x1f5c_0b5e ^ id as u64),
            );
            let shard = Shard::new(settings.clone(), spans.clone(), stats.clone(), sampler);
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
                    self.stats.emit(&BatchesShed);
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

    /// Every shard's current state (shards that have stopped are skipped). Only looks: the
    /// change detectors' intervals are closed by each shard's own timer.
    pub async fn snapshot(&self) -> Vec<ShardSnapshot> {
        let replies = self.ask(Control::Snapshot).await;
        let mut snapshots = Vec::with_capacity(replies.len());
        for rx in replies {
            if let Ok(snapshot) = rx.await {
                snapshots.push(snapshot);
            }
        }
        snapshots
    }

    /// Makes every shard close an interval of its change detectors now, as its timer does every
    /// `series_interval`. For tests and tools that drive intervals themselves.
    #[doc(hidden)]
    pub async fn close_interval(&self) {
        for rx in self.ask(Control::CloseInterval).await {
            let _ = rx.await;
        }
    }

    /// Sends every shard a control message with a reply channel; returns the replies to await.
    async fn ask<T>(
        &self,
        message: impl Fn(oneshot::Sender<T>) -> Control,
    ) -> Vec<oneshot::Receiver<T>> {
        let mut replies = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            if shard.control.send(message(tx)).await.is_ok() {
                replies.push(rx);
            }
        }
        replies
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

#[cfg(test)]
mod tests;
