//! One shard worker: the loop that owns a set of model versions and routes each piece of work
//! to their states. Records and labels come over the bounded data queue; snapshots, interval
//! closes and test holds over a small control queue; timers drive the idle sweep and the change
//! detectors' intervals (on the shard's own clock, not the export's).

use super::{
    model::{ModelState, Observed},
    spans::{RecordSpan, Sampler, SpanJob},
    table::ModelTable,
    RejectedRecord, ShardSettings, ShardSnapshot, ShardWork,
};
use crate::{
    anomaly::Flag,
    clock::unix_nanos,
    drift::model::DEFAULT_REFERENCE_RECORDS,
    events::{ModelsExpired, SpansDropped},
    models::SlotKind,
    pb,
    quality::LabelJoin,
    self_metrics::SelfStats,
    tracecontext::TraceParent,
    validation::model_of,
};
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// Messages that bypass the data queue.
pub(super) enum Control {
    /// The shard's state. Closes no interval and emits nothing; like any work item it first
    /// applies what is due (expiries, profile changes).
    Snapshot(oneshot::Sender<ShardSnapshot>),
    /// Close an interval of the change detectors now (tests; the timer does it otherwise).
    CloseInterval(oneshot::Sender<()>),
    /// Stop processing until the sender is dropped or fires: lets tests fill a queue
    /// deterministically.
    Hold(oneshot::Receiver<()>),
}

/// What woke the shard loop.
enum Wake {
    Sweep,
    Interval,
    Control(Control),
    Work(ShardWork),
}

impl Wake {
    /// What the work is and how many records or labels it holds, for the slow-work log.
    fn what(&self) -> (&'static str, usize) {
        match self {
            Wake::Sweep => ("idle sweep", 0),
            Wake::Interval => ("interval close", 0),
            Wake::Control(Control::Snapshot(_)) => ("snapshot", 0),
            Wake::Control(Control::CloseInterval(_)) => ("interval close", 0),
            Wake::Control(Control::Hold(_)) => ("hold", 0),
            Wake::Work(ShardWork::Records { accepted, .. }) => ("records", accepted.len()),
            Wake::Work(ShardWork::Labels { accepted, .. }) => ("labels", accepted.len()),
            Wake::Work(ShardWork::Capture { .. }) => ("capture", 0),
        }
    }
}

/// Work that holds the shard longer than this is logged at DEBUG, with what it was: every batch
/// queued behind it waits as long (BENCHMARKS.md, "Ack latency (issue 15)").
const SLOW_WORK: Duration = Duration::from_millis(1);

/// How often shards look for idle models: a quarter of the expiry, at most once a minute.
fn sweep_period(expiry: Duration) -> Duration {
    (expiry / 4).clamp(Duration::from_millis(10), Duration::from_secs(60))
}

/// One shard worker's state: the models it owns and the label join they share.
pub(super) struct Shard {
    table: ModelTable,
    join: LabelJoin,
    /// Zero of the millisecond clock that windows and the join store run on.
    epoch: Instant,
    /// When the work item being processed arrived (one clock read per batch, not per record).
    now: Instant,
    /// `now` in milliseconds since `epoch`, the clock of windows and the join store.
    now_ms: u64,
    /// The profile registry generation the models' drift states were last synced with.
    profiles_seen: u64,
    settings: ShardSettings,
    spans: Option<mpsc::Sender<SpanJob>>,
    stats: Arc<SelfStats>,
    sampler: Sampler,
}

impl Shard {
    pub(super) fn new(
        settings: ShardSettings,
        spans: Option<mpsc::Sender<SpanJob>>,
        stats: Arc<SelfStats>,
        sampler: Sampler,
    ) -> Self {
        let now = Instant::now();
        Self {
            table: ModelTable::new(),
            join: LabelJoin::new(&settings.quality),
            epoch: now,
            now,
            now_ms: 0,
            profiles_seen: 0,
            settings,
            spans,
            stats,
            sampler,
        }
    }

    pub(super) async fn run(
        mut self,
        mut work: mpsc::Receiver<ShardWork>,
        mut control: mpsc::Receiver<Control>,
        stop: CancellationToken,
    ) -> ShardSnapshot {
        let mut sweep = tokio::time::interval(sweep_period(self.settings.model_idle_expiry));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let every = self.settings.series_interval;
        let mut intervals = tokio::time::interval_at(Instant::now() + every, every);
        intervals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = tokio::select! {
                biased;
                _ = sweep.tick() => Wake::Sweep,
                _ = intervals.tick() => Wake::Interval,
                Some(message) = control.recv() => Wake::Control(message),
                item = work.recv() => match item {
                    Some(item) => Wake::Work(item),
                    None => break,
                },
                _ = stop.cancelled() => break,
            };
            let began = std::time::Instant::now();
            let what = wake.what();
            match wake {
                Wake::Sweep => {
                    self.read_clock();
                    self.expire_idle();
                    self.expire_joins();
                }
                Wake::Interval => self.close_interval(),
                Wake::Control(Control::Snapshot(reply)) => {
                    let _ = reply.send(self.snapshot());
                }
                Wake::Control(Control::CloseInterval(reply)) => {
                    self.close_interval();
                    let _ = reply.send(());
                }
                Wake::Control(Control::Hold(release)) => {
                    let _ = release.await;
                    continue;
                }
                Wake::Work(item) => self.process(item),
            }
            let took = began.elapsed();
            if took >= SLOW_WORK {
                tracing::debug!(
                    work = what.0,
                    items = what.1,
                    took_us = took.as_micros() as u64,
                    "the shard was busy with one piece of work for over 1 ms"
                );
            }
        }
        if stop.is_cancelled() {
            // Refuse new work, finish what is queued.
            work.close();
            while let Some(item) = work.recv().await {
                self.process(item);
            }
        }
        // The last interval ends with the shard.
        self.close_interval();
        self.snapshot()
    }

    /// Reads the clock once for the work item at hand.
    fn read_clock(&mut self) {
        self.now = Instant::now();
        self.now_ms = self.now.duration_since(self.epoch).as_millis() as u64;
    }

    /// Milliseconds since the shard started, on the clock of `now`.
    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The position of a model version's state (see [`ModelTable::model`]).
    fn model(&mut self, model: &str, version: &str) -> usize {
        let now_ms = self.now_ms();
        self.table
            .model(model, version, &self.settings, self.now, now_ms)
    }

    /// The state a reject is counted in: its model's, or the invalid slot's when the model name
    /// itself was the problem.
    fn reject_model(&mut self, reject: &RejectedRecord, model: &str, version: &str) -> usize {
        if reject.model_usable {
            self.model(model, version)
        } else {
            let now_ms = self.now_ms();
            self.table
                .shared(SlotKind::Invalid, &self.settings, self.now, now_ms)
        }
    }

    fn process(&mut self, item: ShardWork) {
        self.read_clock();
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
                if tracing::enabled!(tracing::Level::TRACE) {
                    let waited = SystemTime::now()
                        .duration_since(received)
                        .unwrap_or_default();
                    tracing::trace!(
                        records = accepted.len(),
                        waited_us = waited.as_micros() as u64,
                        "a record batch leaves the shard's queue"
                    );
                }
                for (key, declaration) in declarations {
                    let m = self.model(&key.model, &key.version);
                    self.table.get_mut(m).declare(&declaration);
                }
                self.sync_profiles();
                let flags = self.records(&batch, &accepted, received);
                self.hand_to_store();
                self.rejects(
                    &batch.records,
                    &batch.model,
                    &batch.version,
                    rejected,
                    |s, r| s.ops.record_reject(r),
                );
                let _ = done.send(flags);
            }
            ShardWork::Capture { key, records, done } => {
                let m = self.model(&key.model, &key.version);
                let records = records.unwrap_or(match self.settings.drift.reference_records {
                    0 => DEFAULT_REFERENCE_RECORDS,
                    n => n,
                });
                let state = self.table.get_mut(m);
                // A version folded into the overflow slot has no drift state of its own.
                let taken = if state.key == key && state.start_capture(records) {
                    tracing::info!(
                        model = %key.model,
                        version = %key.version,
                        records,
                        "reference capture requested"
                    );
                    records
                } else {
                    0
                };
                let _ = done.send(taken);
            }
            ShardWork::Labels {
                batch,
                accepted,
                rejected,
                received,
                stored,
                retried,
                done,
            } => {
                let now_ms = self.now_ms();
                let received_ns = unix_nanos(received);
                for (j, &i) in accepted.iter().enumerate() {
                    let truth = &batch.labels[i as usize];
                    let (model, version) =
                        model_of(&truth.model, &truth.version, &batch.model, &batch.version);
                    let m = self.model(model, version);
                    let departed = self.table.get_mut(m).observe_label(
                        truth,
                        stored.get(j).and_then(Option::as_deref),
                        retried,
                        &mut self.join,
                        now_ms,
                        received_ns,
                    );
                    self.settle(departed);
                }
                self.rejects(
                    &batch.labels,
                    &batch.model,
                    &batch.version,
                    rejected,
                    |s, r| s.ops.record_label_reject(r),
                );
                let _ = done.send(());
            }
        }
    }

    /// The accepted records of a batch through their models' states; returns their flags.
    fn records(
        &mut self,
        batch: &pb::RecordBatch,
        accepted: &[u32],
        received: SystemTime,
    ) -> Vec<pb::RecordFlags> {
        let now_ms = self.now_ms();
        let received_ns = unix_nanos(received);
        let mut advanced = usize::MAX;
        let mut batch_flags = Vec::new();
        let mut flags = Vec::new();
        for &i in accepted {
            let record = &batch.records[i as usize];
            let (model, version) =
                model_of(&record.model, &record.version, &batch.model, &batch.version);
            let m = self.model(model, version);
            let state: &mut ModelState = self.table.get_mut(m);
            if advanced != m {
                state.advance(now_ms);
                advanced = m;
            }
            let Observed { captured, departed } =
                state.observe(record, &mut self.join, now_ms, received_ns, &mut flags);
            if let Some(profile) = captured {
                tracing::info!(
                    model,
                    version,
                    records = profile.records,
                    "reference profile captured from the first records"
                );
                if let Some(state) = &self.settings.state {
                    state.save_reference(profile.clone());
                }
                self.settings.profiles.put(profile);
            }
            self.settle(departed);
            self.trace(record, model, version, received, &flags);
            if !flags.is_empty() {
                batch_flags.push(pb::RecordFlags {
                    index: i,
                    anomalies: flags.iter().map(Flag::to_pb).collect(),
                });
                flags.clear();
            }
        }
        batch_flags
    }

    /// Counts the rejected records (or labels) of a batch on their models.
    fn rejects<T: HasModel>(
        &mut self,
        items: &[T],
        batch_model: &str,
        batch_version: &str,
        rejected: Vec<RejectedRecord>,
        count: impl Fn(&mut ModelState, pb::RejectReason),
    ) {
        for r in rejected {
            let item = &items[r.index as usize];
            let (model, version) =
                model_of(item.model(), item.version(), batch_model, batch_version);
            let m = self.reject_model(&r, model, version);
            count(self.table.get_mut(m), r.reason);
        }
    }

    /// Hands the batch's predictions that wait for a label to the shared store, if there is one.
    fn hand_to_store(&mut self) {
        let shared = self.join.take_shared();
        let Some(store) = &self.settings.label_store else {
            return;
        };
        if shared.is_empty() {
            return;
        }
        // Runs of one model (a batch is usually one model): its key is cloned once per run.
        let mut runs: Vec<(u32, crate::label_store::StoredPredictions)> = Vec::new();
        for (id, request_id, value) in shared {
            match runs.last_mut() {
                Some((last, run)) if *last == id => run.predictions.push((request_id, value)),
                _ => {
                    let Some(key) = self.table.key_of(id) else {
                        continue;
                    };
                    let run = crate::label_store::StoredPredictions {
                        key: key.clone(),
                        predictions: vec![(request_id, value)],
                    };
                    runs.push((id, run));
                }
            }
        }
        store.put(runs.into_iter().map(|(_, run)| run).collect());
    }

    /// Counts a label-join entry that left unjoined on the model that owns it.
    fn settle(&mut self, departed: Option<crate::quality::Departed>) {
        if let Some(d) = departed {
            if let Some(owner) = self.table.quality_of(d.model()) {
                owner.join.departed(d);
            }
        }
    }

    /// Queues the record's span if it is sampled, failed or flagged.
    fn trace(
        &mut self,
        record: &pb::InferenceRecord,
        model: &str,
        version: &str,
        received: SystemTime,
        flags: &[Flag],
    ) {
        if self.spans.is_none() {
            return;
        }
        // Flagged records always get a span, with one event per flag.
        if flags.is_empty() && !self.sampler.sampled(record) {
            return;
        }
        // Validated by ingest: a present traceparent parses.
        let parent = (!record.traceparent.is_empty())
            .then(|| TraceParent::parse(&record.traceparent).ok())
            .flatten();
        let span = RecordSpan::of(record, model, version, parent, received, flags);
        self.send_span(SpanJob::Record(span));
    }

    /// Queues a span; when the queue is full the span is dropped and counted (logged once).
    fn send_span(&self, job: SpanJob) {
        let Some(spans) = &self.spans else { return };
        if spans.try_send(job).is_err() {
            self.stats.emit(&SpansDropped);
        }
    }

    /// Gives models the profiles added or replaced since the last look (one atomic load when
    /// nothing changed).
    fn sync_profiles(&mut self) {
        let generation = self.settings.profiles.generation();
        if generation == self.profiles_seen {
            return;
        }
        self.profiles_seen = generation;
        let now_ms = self.now_ms();
        for state in self.table.iter_mut() {
            state.sync_profile(&self.settings.profiles, now_ms);
        }
    }

    /// Counts and forgets pending predictions past the TTL and early labels past their hold.
    fn expire_joins(&mut self) {
        let now_ms = self.now_ms();
        let table = &mut self.table;
        self.join.expire(now_ms, |d| {
            if let Some(owner) = table.quality_of(d.model()) {
                owner.join.departed(d);
            }
        });
    }

    /// Forgets model versions idle for longer than the expiry. Their series stop; if a version
    /// comes back it starts again from zero with a new start time.
    fn expire_idle(&mut self) {
        let expiry = self.settings.model_idle_expiry;
        let expired = self
            .table
            .expire_idle(expiry, Instant::now(), &self.settings);
        if expired > 0 {
            self.stats.emit(&ModelsExpired { expired, expiry });
        }
    }

    /// Closes an interval of every model's change detectors; drift changes and detections
    /// become WARN lines and spans (each in a trace of its own, never sampled out).
    fn close_interval(&mut self) {
        self.read_clock();
        self.sync_profiles();
        self.expire_joins();
        let now_ms = self.now_ms();
        let at = SystemTime::now();
        let mut jobs = Vec::new();
        for state in self.table.iter_mut() {
            let found = state.close_interval(now_ms);
            if let Some(change) = found.drift_change {
                jobs.push(SpanJob::DriftChange {
                    key: state.key.clone(),
                    at,
                    change,
                });
            }
            if found.detections.is_empty() {
                continue;
            }
            for d in &found.detections {
                tracing::warn!(
                    model = %state.key.model,
                    version = %state.key.version,
                    series = d.series.name(),
                    detector = d.detector.name(),
                    value = d.value,
                    level = d.level,
                    "change detected in a model's series"
                );
            }
            jobs.push(SpanJob::SeriesChange {
                key: state.key.clone(),
                at,
                detections: found.detections,
            });
        }
        for job in jobs {
            self.send_span(job);
        }
    }

    /// The shard's state for export.
    fn snapshot(&mut self) -> ShardSnapshot {
        self.read_clock();
        // Idle models see a replaced or removed profile too.
        self.sync_profiles();
        self.expire_joins();
        let now_ms = self.now_ms();
        let mut snapshot = ShardSnapshot {
            models_overflow: self.table.overflowed,
            pending: self.join.pending(),
            pending_capacity: self.join.pending_capacity(),
            ..Default::default()
        };
        for state in self.table.iter_mut() {
            let key = state.key.clone();
            let model = state.snapshot(now_ms);
            snapshot.models.push((key.clone(), model.ops));
            if let Some(q) = model.quality {
                snapshot.quality.push((key.clone(), q));
            }
            if let Some(d) = model.drift {
                snapshot.drift.push((key.clone(), d));
            }
            if let Some(a) = model.anomaly {
                snapshot.anomaly.push((key, a));
            }
        }
        snapshot
    }
}

/// The model and version fields that records and labels share.
trait HasModel {
    fn model(&self) -> &str;
    fn version(&self) -> &str;
}

impl HasModel for pb::InferenceRecord {
    fn model(&self) -> &str {
        &self.model
    }
    fn version(&self) -> &str {
        &self.version
    }
}

impl HasModel for pb::GroundTruth {
    fn model(&self) -> &str {
        &self.model
    }
    fn version(&self) -> &str {
        &self.version
    }
}
