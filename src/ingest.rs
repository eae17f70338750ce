//! The gRPC ingest service: decodes batches, validates records, hands them to the shards and
//! answers with acks. This is the one place where errors become `tonic::Status`.
//!
//! With a shared label store (`--label-store`) ingest also runs the label retry
//! (`docs/fleet-design.md`, decision 2): a delayed label whose prediction the store did not have
//! when it came (the sidecar that saw the prediction had not stored it yet, or the lookup
//! failed) is looked up again every second, all such labels in one round trip, until its
//! shard's early-label hold is nearly over; a prediction found then is joined by the shard that
//! holds the label.

use crate::{
    clock::unix_nanos,
    config::Config,
    drift::registry::ProfileRegistry,
    events::{
        AckFlagsDropped, AcksUnread, BatchesRejected, ClientRecordsDropped, DeclarationsEvicted,
        IngestBudgetFull, LabelLookupsFailed, RecordsShed, StreamFailed,
    },
    label_store::LabelStore,
    models::{Declaration, DeclarationRegistry, ModelKey},
    pb::{self, ingest_service_server::IngestService},
    pipeline::{Pipeline, RejectedRecord, ShardWork, Shed},
    quality::{label_join::at_or_received, QualitySettings},
    self_metrics::{SelfCounter, SelfStats},
    state::{Registries, StateStore},
    validation::{self, BatchError, FieldError, Limits},
};
use futures_util::Stream;
use std::{
    pin::Pin,
    sync::{
        atomic::{
            AtomicUsize,
            Ordering::{AcqRel, Acquire, Relaxed},
        },
        Arc,
    },
    time::{Duration, SystemTime},
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Why a whole batch was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Shed(#[from] Shed),
    #[error("inferscope is shutting down; reconnect to another instance or retry")]
    ShuttingDown,
    #[error(
        "inferscope's ingest memory budget (--max-ingest-bytes) is full: batches and acks in \
         flight, some of them perhaps on a stream whose client is not reading its acks; retry \
         with backoff"
    )]
    OverBudget,
    /// A field of a request other than a batch.
    #[error(transparent)]
    Field(#[from] crate::validation::FieldError),
}

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Batch(_) | IngestError::Field(_) => {
                Status::invalid_argument(e.to_string())
            }
            IngestError::Shed(_) | IngestError::ShuttingDown => Status::unavailable(e.to_string()),
            IngestError::OverBudget => Status::resource_exhausted(e.to_string()),
        }
    }
}

/// The service; cheap to clone (everything shared is behind an `Arc`).
#[derive(Clone)]
pub struct Ingest {
    pipeline: Arc<Pipeline>,
    declarations: Arc<DeclarationRegistry>,
    /// Reference profiles (for `ExportReference`).
    profiles: Arc<ProfileRegistry>,
    /// Where declarations are saved to survive a restart (`--state-dir`), if anywhere.
    state: Option<StateStore>,
    /// The fleet's shared store of predictions waiting for labels, if any.
    label_store: Option<LabelStore>,
    /// With a label store: where labels it did not have the prediction of are retried. `None`
    /// in the retry task's own copy.
    label_retry: Option<LabelRetry>,
    limits: Arc<Limits>,
    null_sink: bool,
    max_inflight: usize,
    /// Largest encoded ack: the gRPC message limit.
    ack_limit: usize,
    /// How long a stream may wait for room for its next ack (its client not reading) before it
    /// is ended.
    ack_timeout: std::time::Duration,
    /// Bytes of batches and acks in flight, across every stream and call.
    budget: Arc<MemoryBudget>,
    shutdown: CancellationToken,
}

/// The ingest memory budget (`--max-ingest-bytes`): the encoded size of every batch from when
/// it is taken until its ack is handed to the transport. Decoded batches and built acks take
/// a few times their encoded size; the budget bounds them all together, whatever the number of
/// streams and connections.
pub struct MemoryBudget {
    used: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            used: std::sync::atomic::AtomicUsize::new(0),
            limit,
        }
    }

    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    /// `bytes` of the budget whether or not they fit: for what is already built (an ack).
    fn force(self: &Arc<Self>, bytes: usize) -> Reservation {
        self.used.fetch_add(bytes, Relaxed);
        Reservation {
            budget: self.clone(),
            bytes,
        }
    }

    /// `bytes` of the budget, held until the returned reservation is dropped; `None` when they
    /// do not fit.
    fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut used = self.used.load(Relaxed);
        loop {
            let next = used.checked_add(bytes).filter(|&n| n <= self.limit)?;
            match self
                .used
                .compare_exchange_weak(used, next, Relaxed, Relaxed)
            {
                Ok(_) => {
                    return Some(Reservation {
                        budget: self.clone(),
                        bytes,
                    })
                }
                Err(now) => used = now,
            }
        }
    }
}

/// Part of the memory budget, given back when dropped.
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Relaxed);
    }
}

/// A dispatched batch whose ack is complete once every shard it went to has answered.
pub struct PendingAck {
    sequence: u64,
    accepted: u32,
    rejects: Vec<pb::RecordReject>,
    waits: Vec<oneshot::Receiver<Vec<pb::RecordFlags>>>,
    /// Largest encoded ack (see [`fit_ack`]).
    limit: usize,
    stats: Option<Arc<SelfStats>>,
    /// The batch's part of the memory budget, until its ack is handed to the transport.
    _reservation: Reservation,
}

impl PendingAck {
    pub async fn resolve(self) -> pb::BatchAck {
        let mut flags = Vec::new();
        for wait in self.waits {
            // A shard that stopped without answering has still accounted the records (it drains
            // its queue before stopping); it only could not send flags.
            if let Ok(mut shard_flags) = wait.await {
                flags.append(&mut shard_flags);
            }
        }
        flags.sort_by_key(|f| f.index);
        let mut ack = pb::BatchAck {
            sequence: self.sequence,
            accepted: self.accepted,
            rejects: self.rejects,
            flags,
            flags_dropped: 0,
        };
        let dropped = fit_ack(&mut ack, self.limit);
        if dropped > 0 {
            if let Some(stats) = &self.stats {
                stats.emit(&AckFlagsDropped {
                    flags: dropped,
                    limit: self.limit,
                });
            }
        }
        ack
    }
}

/// Room an ack leaves under the message limit for the gRPC frame and the response's own fields.
const ACK_MARGIN_BYTES: usize = 1024;

/// Makes `ack` fit in `limit` encoded bytes, so that the client always gets it: a batch was
/// counted when it was dispatched, and an ack that cannot be sent would make a retrying client
/// count it twice. Flags go first, from the last flagged record back (`flags_dropped` says how
/// many); then, if the rejects alone are too large, their messages (index, field and reason
/// stay). Returns the flags dropped.
fn fit_ack(ack: &mut pb::BatchAck, limit: usize) -> u64 {
    use prost::Message;
    let limit = limit.saturating_sub(ACK_MARGIN_BYTES);
    let mut size = ack.encoded_len();
    if size <= limit {
        return 0;
    }
    let mut dropped = 0u64;
    while size > limit {
        let Some(last) = ack.flags.pop() else { break };
        size -= prost::length_delimiter_len(last.encoded_len()) + 1 + last.encoded_len();
        dropped += last.anomalies.len() as u64;
    }
    // The counter field grows the ack by a few bytes: checked again below.
    ack.flags_dropped = dropped.min(u32::MAX as u64) as u32;
    if ack.encoded_len() > limit {
        for reject in &mut ack.rejects {
            reject.message.clear();
        }
    }
    dropped
}

fn reject_of(index: usize, e: FieldError) -> (pb::RecordReject, RejectedRecord) {
    let usable = e.field != "model" && e.field != "version";
    (
        pb::RecordReject {
            index: index as u32,
            field: e.field.to_owned(),
            reason: e.reason as i32,
            message: e.message,
        },
        RejectedRecord {
            index: index as u32,
            reason: e.reason,
            model_usable: usable,
        },
    )
}

/// Per-shard work collected while validating one batch.
#[derive(Default)]
struct ShardShare {
    accepted: Vec<u32>,
    rejected: Vec<RejectedRecord>,
    declarations: Vec<(ModelKey, Arc<Declaration>)>,
    /// Labels only, with a shared label store: the stored prediction of each accepted label.
    stored: Vec<Option<Vec<u8>>>,
}

impl ShardShare {
    fn is_empty(&self) -> bool {
        self.accepted.is_empty() && self.rejected.is_empty() && self.declarations.is_empty()
    }
}

/// Remembers the last model seen in a batch, so that consecutive items of one model (the usual
/// case) cost a string comparison instead of a hash and a registry lookup.
struct ModelCache<'a> {
    model: &'a str,
    version: &'a str,
    shard: usize,
    declaration: Option<Arc<Declaration>>,
}

/// Equal strings; true at once for the same slice (an item without its own model borrows the
/// batch's), which saves a `memcmp` call per item.
#[inline]
fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// Sorts the validated items (records or labels) of one batch into per-shard shares.
struct Sorter<'a> {
    ingest: &'a Ingest,
    shares: Vec<ShardShare>,
    rejects: Vec<pb::RecordReject>,
    cache: Option<ModelCache<'a>>,
}

impl<'a> Sorter<'a> {
    fn new(ingest: &'a Ingest) -> Self {
        Self {
            ingest,
            shares: (0..ingest.pipeline.shard_count())
                .map(|_| ShardShare::default())
                .collect(),
            rejects: Vec::new(),
            cache: None,
        }
    }

    /// The shard and declaration of a model version.
    fn model(&mut self, model: &'a str, version: &'a str) -> &ModelCache<'a> {
        let hit = self
            .cache
            .as_ref()
            .is_some_and(|c| same(c.model, model) && same(c.version, version));
        if !hit {
            self.cache = Some(ModelCache {
                model,
                version,
                shard: self.ingest.pipeline.shard_of(model, version),
                declaration: self.ingest.declarations.get(model, version),
            });
        }
        self.cache.as_ref().expect("set above")
    }

    /// Checks item `index` of the batch against its model's declaration and files it under its
    /// shard, accepted or rejected. A reject whose model is itself unusable goes to shard 0, to
    /// be counted under `__invalid__`.
    fn sort(
        &mut self,
        index: usize,
        model: &'a str,
        version: &'a str,
        check: impl FnOnce(Option<&Declaration>) -> Result<(), FieldError>,
    ) {
        let cached = self.model(model, version);
        let shard = cached.shard;
        let checked = check(cached.declaration.as_deref());
        match checked {
            Ok(()) => self.shares[shard].accepted.push(index as u32),
            Err(e) => {
                let (reject, rejected) = reject_of(index, e);
                let shard = if rejected.model_usable { shard } else { 0 };
                self.shares[shard].rejected.push(rejected);
                self.rejects.push(reject);
            }
        }
    }

    /// The shares and the rejects; ends the borrow of the batch.
    fn finish(self) -> (Vec<ShardShare>, Vec<pb::RecordReject>) {
        (self.shares, self.rejects)
    }
}

impl Ingest {
    /// The service; with a label store, also starts the label retry task (until `shutdown`).
    pub fn new(
        pipeline: Arc<Pipeline>,
        registries: &Registries,
        config: &Config,
        shutdown: CancellationToken,
    ) -> Self {
        let mut ingest = Self {
            budget: Arc::new(MemoryBudget::new(config.max_ingest_bytes)),
            pipeline,
            declarations: registries.declarations.clone(),
            profiles: registries.profiles.clone(),
            state: registries.state.clone(),
            label_store: registries.label_store.clone(),
            label_retry: None,
            limits: Arc::new(config.limits.clone()),
            null_sink: config.null_sink,
            max_inflight: config.max_inflight_batches,
            ack_limit: config.max_message_bytes,
            ack_timeout: config.ack_timeout,
            shutdown,
        };
        if let Some(store) = &ingest.label_store {
            ingest.label_retry = LabelRetry::start(ingest.clone(), store.clone(), &config.quality);
        }
        ingest
    }

    /// Bytes of batches and acks in flight now, and the budget (for export).
    pub fn memory(&self) -> (usize, usize) {
        (self.budget.used(), self.budget.limit)
    }

    /// With a shared label store: fills each share's `stored`, the stored prediction of each
    /// accepted label, taken out of the store in one round trip. Left empty without a store or
    /// when it does not answer in time (the labels then take the in-memory path, counted in
    /// `inferscope.label_store.lookup_failures`). Returns the accepted labels whose prediction
    /// the store did not give, for the retry (evaluations aside: they are never looked up).
    async fn take_stored_predictions(
        &self,
        batch: &pb::LabelBatch,
        shares: &mut [ShardShare],
    ) -> Vec<u32> {
        let Some(store) = &self.label_store else {
            return Vec::new();
        };
        // Evaluations are not looked up: generations wait in the shard that saw them, never in
        // the store (`quality::label_join`), and a GETDEL would take a classifier's prediction
        // stored under the same request id.
        let looked_up = |i: &u32| !is_evaluation(&batch.labels[*i as usize]);
        let labels: Vec<(&str, &str, &str)> = shares
            .iter()
            .flat_map(|share| &share.accepted)
            .filter(|i| looked_up(i))
            .map(|&i| {
                let (truth, model, version) = label_of(batch, i);
                (model, version, truth.request_id.as_str())
            })
            .collect();
        let Some(found) = store.take(&labels).await else {
            self.pipeline.stats.emit(&LabelLookupsFailed {
                labels: labels.len(),
            });
            let accepted = shares.iter().flat_map(|s| &s.accepted);
            return accepted.filter(|i| looked_up(i)).copied().collect();
        };
        let mut found = found.into_iter();
        let mut missed = Vec::new();
        for share in shares {
            share.stored = share
                .accepted
                .iter()
                .map(|i| {
                    if looked_up(i) {
                        found.next().flatten()
                    } else {
                        None
                    }
                })
                .collect();
            let stored = share.accepted.iter().zip(&share.stored);
            missed.extend(
                stored
                    .filter(|(i, p)| p.is_none() && looked_up(i))
                    .map(|(&i, _)| i),
            );
        }
        missed
    }

    /// Stores the batch's declarations; returns them for the shards that own their models.
    fn register_declarations(
        &self,
        batch: &pb::RecordBatch,
    ) -> Result<Vec<(ModelKey, Arc<Declaration>)>, BatchError> {
        let mut stored = Vec::with_capacity(batch.declarations.len());
        for (index, decl) in batch.declarations.iter().enumerate() {
            let as_batch_error = |error| BatchError::Declaration { index, error };
            validation::check_declaration(decl, &self.limits).map_err(as_batch_error)?;
            let key = ModelKey::new(&decl.model, &decl.version);
            let declaration = Declaration::from_pb(decl);
            let unchanged = self
                .declarations
                .get(&decl.model, &decl.version)
                .is_some_and(|kept| *kept == declaration);
            let (declaration, evicted) = self.declarations.put(key.clone(), declaration);
            if let Some(old) = evicted {
                self.pipeline
                    .stats
                    .emit(&DeclarationsEvicted { evicted: &old });
                if let Some(state) = &self.state {
                    state.forget_declaration(&old);
                }
            }
            if let (Some(state), false) = (&self.state, unchanged) {
                state.save_declaration(decl);
            }
            stored.push((key, declaration));
        }
        Ok(stored)
    }

    /// Queues each non-empty share on its shard (all or nothing); returns the shards' replies.
    fn dispatch<T>(
        &self,
        shares: Vec<ShardShare>,
        mut work: impl FnMut(ShardShare, oneshot::Sender<T>) -> ShardWork,
    ) -> Result<Vec<oneshot::Receiver<T>>, Shed> {
        let mut items = Vec::new();
        let mut waits = Vec::new();
        for (shard, share) in shares.into_iter().enumerate() {
            if share.is_empty() {
                continue;
            }
            let (done, wait) = oneshot::channel();
            waits.push(wait);
            items.push((shard, work(share, done)));
        }
        self.pipeline.dispatch(items)?;
        Ok(waits)
    }

    /// Validates and dispatches one batch, and counts the records its client reports dropped
    /// (`client_dropped_records`) unless the batch is shed: a client sends a shed batch again.
    pub fn accept_batch(&self, batch: pb::RecordBatch) -> Result<PendingAck, IngestError> {
        let dropped = batch.client_dropped_records;
        let taken = self.take_batch(batch);
        let shed = matches!(
            taken,
            Err(IngestError::Shed(_) | IngestError::OverBudget | IngestError::ShuttingDown)
        );
        if dropped > 0 && !shed {
            self.pipeline
                .stats
                .emit(&ClientRecordsDropped { records: dropped });
        }
        taken
    }

    /// Validates and dispatches one batch.
    fn take_batch(&self, batch: pb::RecordBatch) -> Result<PendingAck, IngestError> {
        let n = batch.records.len();
        let reservation = self.reserve(batch.wire_len(), n)?;
        if self.null_sink {
            return Ok(PendingAck {
                sequence: batch.sequence,
                accepted: n as u32,
                rejects: Vec::new(),
                waits: Vec::new(),
                limit: self.ack_limit,
                stats: None,
                _reservation: reservation,
            });
        }
        if n > self.limits.max_batch_records {
            self.pipeline.stats.emit(&BatchesRejected);
            return Err(BatchError::TooLarge {
                records: n,
                limit: self.limits.max_batch_records,
            }
            .into());
        }
        let declarations = match self.register_declarations(&batch) {
            Ok(d) => d,
            Err(e) => {
                self.pipeline.stats.emit(&BatchesRejected);
                return Err(e.into());
            }
        };

        let mut sorter = Sorter::new(self);
        for (key, declaration) in declarations {
            let shard = self.pipeline.shard_of(&key.model, &key.version);
            sorter.shares[shard].declarations.push((key, declaration));
        }
        let mut malformed = batch.malformed.iter().peekable();
        for (index, record) in batch.records.iter().enumerate() {
            let (model, version) =
                validation::model_of(&record.model, &record.version, &batch.model, &batch.version);
            let undecoded = malformed.next_if(|(i, _)| *i as usize == index);
            sorter.sort(index, model, version, |declaration| match undecoded {
                None => validation::check_record(record, model, version, declaration, &self.limits),
                // Counted under the batch's model; without one, under `__invalid__`.
                Some((_, error)) => validation::check_model(model, version, &self.limits)
                    .and(Err(validation::malformed("records", error))),
            });
        }
        let (shares, rejects) = sorter.finish();
        let accepted = (n - rejects.len()) as u32;
        let sequence = batch.sequence;
        let batch = Arc::new(batch);
        let received = SystemTime::now();
        let waits = self
            .dispatch(shares, |share, done| ShardWork::Records {
                batch: batch.clone(),
                declarations: share.declarations,
                accepted: share.accepted,
                rejected: share.rejected,
                received,
                done,
            })
            .inspect_err(|_| self.pipeline.stats.emit(&RecordsShed { records: n }))?;
        Ok(PendingAck {
            sequence,
            accepted,
            rejects,
            waits,
            limit: self.ack_limit,
            stats: Some(self.pipeline.stats.clone()),
            _reservation: reservation,
        })
    }

    /// The memory budget's share for a batch of `items`: its encoded size (`wire_len`).
    fn reserve(&self, bytes: usize, items: usize) -> Result<Reservation, IngestError> {
        self.budget.reserve(bytes).ok_or_else(|| {
            self.pipeline.stats.emit(&IngestBudgetFull {
                limit: self.budget.limit,
            });
            self.pipeline.stats.emit(&RecordsShed { records: items });
            IngestError::OverBudget
        })
    }

    /// Validates and dispatches delayed labels; waits until their shards have them. With a
    /// label store, the labels whose prediction it did not have go to the retry.
    pub async fn accept_labels(&self, batch: pb::LabelBatch) -> Result<pb::LabelAck, IngestError> {
        let n = batch.labels.len();
        let _reservation = self.reserve(batch.wire_len(), 0)?;
        if n > self.limits.max_batch_records {
            self.pipeline.stats.emit(&BatchesRejected);
            return Err(BatchError::TooLarge {
                records: n,
                limit: self.limits.max_batch_records,
            }
            .into());
        }
        let (mut shares, rejects) = self.sort_labels(&batch, true);
        let received = std::time::SystemTime::now();
        let arrived = Instant::now();
        let missed = self.take_stored_predictions(&batch, &mut shares).await;
        let sequence = batch.sequence;
        let batch = Arc::new(batch);
        let waits = self.dispatch_labels(batch.clone(), shares, received, false)?;
        for wait in waits {
            let _ = wait.await;
        }
        // Held as early labels by their shards now: a prediction the retry finds joins them.
        if let Some(retry) = &self.label_retry {
            retry.hand_over(&batch, &missed, received, arrived);
        }
        Ok(pb::LabelAck {
            sequence,
            accepted: (n - rejects.len()) as u32,
            rejects,
        })
    }

    /// Sorts a label batch into per-shard shares. `validate`: each label is checked against its
    /// model's declaration (retried labels were, when they came).
    fn sort_labels(
        &self,
        batch: &pb::LabelBatch,
        validate: bool,
    ) -> (Vec<ShardShare>, Vec<pb::RecordReject>) {
        let mut sorter = Sorter::new(self);
        let mut malformed = batch.malformed.iter().peekable();
        for (index, truth) in batch.labels.iter().enumerate() {
            let (model, version) =
                validation::model_of(&truth.model, &truth.version, &batch.model, &batch.version);
            let undecoded = malformed.next_if(|(i, _)| *i as usize == index);
            sorter.sort(index, model, version, |declaration| match undecoded {
                None if !validate => Ok(()),
                None => {
                    validation::check_ground_truth(truth, model, version, declaration, &self.limits)
                }
                // Counted under the batch's model; without one, under `__invalid__`.
                Some((_, error)) => validation::check_model(model, version, &self.limits)
                    .and(Err(validation::malformed("labels", error))),
            });
        }
        sorter.finish()
    }

    /// Queues the shares of a label batch on their shards (all or nothing). `retried`: labels
    /// back from the retry with their predictions (counted as received when they came).
    fn dispatch_labels(
        &self,
        batch: Arc<pb::LabelBatch>,
        shares: Vec<ShardShare>,
        received: SystemTime,
        retried: bool,
    ) -> Result<Vec<oneshot::Receiver<()>>, Shed> {
        self.dispatch(shares, |share, done| ShardWork::Labels {
            batch: batch.clone(),
            stored: share.stored,
            accepted: share.accepted,
            rejected: share.rejected,
            received,
            retried,
            done,
        })
    }

    /// The label retry task: takes the labels ingest hands over, and every
    /// [`LABEL_RETRY_PERIOD`] looks up all those it holds in one round trip. Ends with ingest's
    /// shutdown, after handing over the predictions it has found.
    async fn retry_labels(
        self,
        store: LabelStore,
        mut handed: mpsc::Receiver<Vec<RetriedLabel>>,
        held: Arc<AtomicUsize>,
    ) {
        let mut waiting = Vec::new();
        let mut ticks = tokio::time::interval(LABEL_RETRY_PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let before = waiting.len();
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.dispatch_found(&mut waiting);
                    break;
                }
                labels = handed.recv() => match labels {
                    Some(labels) => waiting.extend(labels),
                    None => break,
                },
                _ = ticks.tick() => {
                    self.retry_round(&store, &mut waiting).await;
                    held.fetch_sub(before - waiting.len(), AcqRel);
                }
            }
        }
    }

    /// One round of the retry: forgets the labels whose time is up (their shards count them
    /// `unknown_request` when the hold ends), looks the others up, and hands those found to
    /// their shards.
    async fn retry_round(&self, store: &LabelStore, waiting: &mut Vec<RetriedLabel>) {
        let now = Instant::now();
        waiting.retain(|label| label.until > now);
        let found = {
            let keys: Vec<(&str, &str, &str)> = waiting
                .iter()
                .filter(|label| label.stored.is_none())
                .map(|label| {
                    let t = &label.truth;
                    (t.model.as_str(), t.version.as_str(), t.request_id.as_str())
                })
                .collect();
            store.take(&keys).await
        };
        // Nothing found when the store does not answer: the next round asks again.
        if let Some(found) = found {
            let looked_up = waiting.iter_mut().filter(|label| label.stored.is_none());
            for (label, stored) in looked_up.zip(found) {
                label.stored = stored;
            }
        }
        self.dispatch_found(waiting);
    }

    /// Hands the retried labels whose prediction was found to their shards, as label work with
    /// the stored bytes. When a shard queue is full they stay for the next round: their
    /// predictions are out of the store, nobody else has them.
    fn dispatch_found(&self, waiting: &mut Vec<RetriedLabel>) {
        let (found, rest): (Vec<_>, Vec<_>) = std::mem::take(waiting)
            .into_iter()
            .partition(|label| label.stored.is_some());
        *waiting = rest;
        if found.is_empty() {
            return;
        }
        let batch = pb::LabelBatch {
            labels: found.iter().map(|label| label.truth.clone()).collect(),
            ..Default::default()
        };
        let (mut shares, _) = self.sort_labels(&batch, false);
        for share in &mut shares {
            share.stored = share
                .accepted
                .iter()
                .map(|&i| found[i as usize].stored.clone())
                .collect();
        }
        // Each retried label carries its own time (the time it was received, if it had none).
        if self
            .dispatch_labels(Arc::new(batch), shares, SystemTime::now(), true)
            .is_err()
        {
            waiting.extend(found);
        }
    }
}

/// How often the labels whose prediction the shared store did not have are looked up again.
const LABEL_RETRY_PERIOD: Duration = Duration::from_secs(1);
/// Retrying stops this long before the shard's early-label hold ends, so that a label joined by
/// a retry never races the expiry that counts it `unknown_request`.
const LABEL_RETRY_MARGIN: Duration = Duration::from_secs(1);

/// Ingest's end of the label retry: hands labels to the retry task without waiting.
#[derive(Clone)]
struct LabelRetry {
    handed: mpsc::Sender<Vec<RetriedLabel>>,
    /// Labels handed over and not yet joined or given up, at most `max` (`--max-early-labels`,
    /// in total): past it a label is not retried. Its shard holds it all the same, and counts it
    /// `unknown_request` when its hold ends unless its prediction reaches this sidecar.
    held: Arc<AtomicUsize>,
    max: usize,
    /// How long a label is retried: the early-label hold less [`LABEL_RETRY_MARGIN`].
    lasts: Duration,
}

/// A label in the retry.
struct RetriedLabel {
    /// The label as accepted, with its model, version and time (when it was received, if it
    /// had none) filled in: it stands alone in a batch of retried labels.
    truth: pb::GroundTruth,
    /// When retrying it stops.
    until: Instant,
    /// Its prediction once found, kept until its shard's queue has room.
    stored: Option<Vec<u8>>,
}

impl LabelRetry {
    /// Starts the retry task; `None` when labels are not held (`--max-early-labels 0`, a hold
    /// of a second or less) or the delayed join is off.
    fn start(ingest: Ingest, store: LabelStore, quality: &QualitySettings) -> Option<Self> {
        let lasts = quality
            .early_label_hold
            .checked_sub(LABEL_RETRY_MARGIN)
            .filter(|lasts| !lasts.is_zero())?;
        let max = quality.max_early_labels;
        if max == 0 || quality.max_pending == 0 {
            return None;
        }
        // Every message holds at least one counted label: the queue is never full while
        // `held` has room.
        let (handed, labels) = mpsc::channel(max);
        let held = Arc::new(AtomicUsize::new(0));
        tokio::spawn(ingest.retry_labels(store, labels, held.clone()));
        Some(Self {
            handed,
            held,
            max,
            lasts,
        })
    }

    /// Hands the labels of `batch` at `missed` to the retry task, as many as there is room
    /// for; never waits.
    fn hand_over(
        &self,
        batch: &pb::LabelBatch,
        missed: &[u32],
        received: SystemTime,
        arrived: Instant,
    ) {
        let before = self
            .held
            .fetch_update(AcqRel, Acquire, |held| {
                Some(held + missed.len().min(self.max.saturating_sub(held)))
            })
            .unwrap_or_else(|held| held);
        let taken = missed.len().min(self.max.saturating_sub(before));
        if taken == 0 {
            return;
        }
        let received_ns = unix_nanos(received);
        let until = arrived + self.lasts;
        let labels = missed[..taken]
            .iter()
            .map(|&i| {
                let (truth, model, version) = label_of(batch, i);
                RetriedLabel {
                    truth: pb::GroundTruth {
                        model: model.to_owned(),
                        version: version.to_owned(),
                        time_unix_nano: at_or_received(truth.time_unix_nano, received_ns),
                        ..truth.clone()
                    },
                    until,
                    stored: None,
                }
            })
            .collect();
        if self.handed.try_send(labels).is_err() {
            // The task has stopped (shutdown).
            self.held.fetch_sub(taken, AcqRel);
        }
    }
}

/// Whether a delayed label is an evaluation of a generation.
fn is_evaluation(truth: &pb::GroundTruth) -> bool {
    matches!(
        truth.label.as_ref().and_then(|l| l.value.as_ref()),
        Some(pb::label::Value::Evaluation(_))
    )
}

/// Label `i` of `batch`, with its model and version (the batch's where it names none).
fn label_of(batch: &pb::LabelBatch, i: u32) -> (&pb::GroundTruth, &str, &str) {
    let truth = &batch.labels[i as usize];
    let (model, version) =
        validation::model_of(&truth.model, &truth.version, &batch.model, &batch.version);
    (truth, model, version)
}

/// Keeps `inferscope.streams.active` right however a stream ends.
struct ActiveStream(Arc<SelfStats>);

impl ActiveStream {
    fn open(stats: Arc<SelfStats>) -> Self {
        stats
            .counter(SelfCounter::StreamsActive)
            .fetch_add(1, Relaxed);
        Self(stats)
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.0
            .counter(SelfCounter::StreamsActive)
            .fetch_sub(1, Relaxed);
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<pb::BatchAck, Status>> + Send>>;

/// The status a stream ends with when one of its messages cannot be read: RESOURCE_EXHAUSTED
/// for a message over the limit (tonic reports it as OUT_OF_RANGE), INVALID_ARGUMENT for one
/// that does not decode. `None` when the client went away (nobody is left to tell).
fn unreadable(status: Status) -> Option<Status> {
    use tonic::Code;
    match status.code() {
        Code::OutOfRange | Code::ResourceExhausted => Some(Status::resource_exhausted(format!(
            "a message of this stream is over the limit (--max-message-bytes); the stream is \
             ended after the acks of the batches before it: {}",
            status.message()
        ))),
        Code::Internal | Code::InvalidArgument | Code::DataLoss => {
            Some(Status::invalid_argument(format!(
                "a message of this stream cannot be decoded; the stream is ended after the acks \
                 of the batches before it: {}",
                status.message()
            )))
        }
        _ => None,
    }
}

#[tonic::async_trait]
impl IngestService for Ingest {
    type StreamRecordsStream = AckStream;

    /// Reads batches and dispatches them while earlier acks are still being completed, up to
    /// `max_inflight` batches; past that, reading pauses and HTTP/2 flow control slows the
    /// client. Acks go out in batch order.
    async fn stream_records(
        &self,
        request: Request<Streaming<pb::RecordBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let mut inbound = request.into_inner();
        let (acks, pending) = mpsc::channel::<Result<PendingAck, Status>>(self.max_inflight);
        let ingest = self.clone();
        let active = ActiveStream::open(self.pipeline.stats.clone());
        let unread = CancellationToken::new();
        let ended = unread.clone();
        tokio::spawn(async move {
            let _active = active;
            loop {
                let next = tokio::select! {
                    biased;
                    _ = ingest.shutdown.cancelled() => {
                        // A client that is not reading its acks will not read this either:
                        // never wait for room to say it.
                        let _ = acks.try_send(Err(IngestError::ShuttingDown.into()));
                        break;
                    }
                    next = inbound.message() => next,
                };
                let result = match next {
                    Ok(Some(batch)) => ingest.accept_batch(batch).map_err(Status::from),
                    Ok(None) => break,
                    // A message that cannot be read ends this stream only, with a status that
                    // says why, after the acks of the batches before it.
                    Err(status) => match unreadable(status) {
                        Some(status) => {
                            ingest
                                .pipeline
                                .stats
                                .emit(&StreamFailed { status: &status });
                            Err(status)
                        }
                        None => break,
                    },
                };
                let failed = result.is_err();
                let sent = tokio::select! {
                    sent = acks.send(result) => sent.is_ok(),
                    _ = ingest.shutdown.cancelled() => false,
                    // The client has not read an ack for this long: stop reading its batches.
                    // What it holds stays within the memory budget; the stream is ended with
                    // RESOURCE_EXHAUSTED as soon as the transport takes anything from it, and
                    // its connection closes at --max-connection-age-seconds at the latest.
                    _ = tokio::time::sleep(ingest.ack_timeout) => {
                        ingest.pipeline.stats.emit(&AcksUnread { after: ingest.ack_timeout });
                        unread.cancel();
                        false
                    }
                };
                if !sent || failed {
                    break;
                }
            }
        });
        let timeout = self.ack_timeout;
        let budget = self.budget.clone();
        // The state: the acks to come, and the budget share of the last ack handed over. The
        // transport asks for the next ack only once it has room (HTTP/2 flow control and its
        // send buffer), so an ack counts against the budget until then.
        let out = futures_util::stream::unfold(Some((pending, None)), move |state| {
            let ended = ended.clone();
            let budget = budget.clone();
            async move {
                let (mut pending, last): (_, Option<Reservation>) = state?;
                drop(last);
                let item = tokio::select! {
                    biased;
                    _ = ended.cancelled() => {
                        // The acks waiting here are dropped with the receiver, and with them
                        // their share of the memory budget.
                        let status = Status::resource_exhausted(format!(
                            "this stream's client did not read an ack for {timeout:?}; the \
                             stream is ended (acks of earlier batches may be lost: do not \
                             resend batches sent more than {timeout:?} ago blindly)"
                        ));
                        return Some((Err(status), None));
                    }
                    item = pending.recv() => item?,
                };
                let (item, held) = match item {
                    Ok(ack) => {
                        use prost::Message;
                        let ack = ack.resolve().await;
                        let held = budget.force(ack.encoded_len());
                        (Ok(ack), Some(held))
                    }
                    Err(status) => (Err(status), None),
                };
                Some((item, Some((pending, held))))
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn submit_records(
        &self,
        request: Request<pb::RecordBatch>,
    ) -> Result<Response<pb::BatchAck>, Status> {
        if self.shutdown.is_cancelled() {
            return Err(IngestError::ShuttingDown.into());
        }
        let pending = self.accept_batch(request.into_inner())?;
        Ok(Response::new(pending.resolve().await))
    }

    async fn submit_labels(
        &self,
        request: Request<pb::LabelBatch>,
    ) -> Result<Response<pb::LabelAck>, Status> {
        if self.shutdown.is_cancelled() {
            return Err(IngestError::ShuttingDown.into());
        }
        Ok(Response::new(
            self.accept_labels(request.into_inner()).await?,
        ))
    }

    async fn capture_reference(
        &self,
        request: Request<pb::CaptureReferenceRequest>,
    ) -> Result<Response<pb::CaptureReferenceResponse>, Status> {
        if self.shutdown.is_cancelled() {
            return Err(IngestError::ShuttingDown.into());
        }
        let r = request.into_inner();
        validation::check_model(&r.model, &r.version, &self.limits).map_err(IngestError::from)?;
        let shard = self.pipeline.shard_of(&r.model, &r.version);
        let (done, wait) = oneshot::channel();
        let work = ShardWork::Capture {
            key: ModelKey::new(r.model, r.version),
            records: (r.records > 0).then_some(r.records as usize),
            done,
        };
        self.pipeline
            .dispatch(vec![(shard, work)])
            .map_err(IngestError::from)?;
        let records = wait.await.map_err(|_| IngestError::ShuttingDown)?;
        Ok(Response::new(pb::CaptureReferenceResponse {
            records: records as u32,
        }))
    }

    async fn export_reference(
        &self,
        request: Request<pb::ExportReferenceRequest>,
    ) -> Result<Response<pb::ExportReferenceResponse>, Status> {
        let r = request.into_inner();
        validation::check_model(&r.model, &r.version, &self.limits).map_err(IngestError::from)?;
        let Some(profile) = self.profiles.get(&r.model, &r.version) else {
            return Err(Status::not_found(format!(
                "model {:?} version {:?} has no reference profile (none loaded, and no live \
                 capture complete)",
                r.model, r.version
            )));
        };
        let profile_json = serde_json::to_string_pretty(profile.as_ref())
            .map_err(|e| Status::internal(format!("cannot encode the profile: {e}")))?;
        Ok(Response::new(pb::ExportReferenceResponse { profile_json }))
    }
}
