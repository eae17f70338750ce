//! The delayed-label join of one shard, behind one type: predictions waiting for their label
//! (the pending store), labels waiting for their prediction (the early store), and the request
//! ids recently resolved, which tell a duplicate or late label from an unknown one.
//!
//! Both stores are shared by the shard's models under one capacity, so an insert may push out
//! another model's entry, and expiry goes through every model's: those departures are handed
//! back as [`Departed`] for the shard to count on the owner ([`JoinStats::departed`]). The model
//! a record or label belongs to is passed in as its [`ModelQuality`], whose join counters are
//! updated here.
//!
//! Generations wait for evaluations like predictions for labels, with one difference: several
//! evaluations (of different names) can join one generation, so joining one leaves it in the
//! pending store, and it leaves only by TTL or capacity. One that got at least one evaluation is
//! then not counted unlabelled ([`Departed::GenerationEvaluated`]). Evaluations that come before
//! their generation share one early entry per request id (at most [`MAX_EVALUATION_NAMES`]).
//! With a shared label store, generations still wait here, in the shard's memory.

use super::{
    delay_seconds,
    evaluation::MAX_EVALUATION_NAMES,
    join::{JoinKey, JoinStore, RecentKeys},
    state::{Prediction, Truth},
    JoinStats, ModelQuality, QualitySettings, Unmatched,
};
use crate::{
    events::{InternalEvent, PendingLabelsEvicted},
    pb,
};
use std::hash::{BuildHasher, Hasher};

/// Most request ids remembered as resolved, per shard.
pub const RESOLVED_SLOTS: usize = 1 << 16;

/// A prediction waiting for its label.
#[derive(Debug)]
pub struct PendingPrediction {
    pub model: u32,
    /// Prediction time, Unix nanoseconds.
    pub at_unix_ns: u64,
    pub prediction: Prediction,
}

impl PendingPrediction {
    /// How it counts when it leaves the store unjoined (`evicted`: to make room, else by TTL).
    fn departed(&self, evicted: bool) -> Departed {
        match &self.prediction {
            Prediction::Generation(names) if names.any() => {
                Departed::GenerationEvaluated(self.model)
            }
            _ if evicted => Departed::PredictionEvicted(self.model),
            _ => Departed::PredictionExpired(self.model),
        }
    }
}

/// A label waiting for its prediction, kept as sent: it is resolved against the class table only
/// if its prediction comes.
#[derive(Debug)]
pub struct EarlyLabel {
    pub model: u32,
    pub at_unix_ns: u64,
    pub label: pb::Label,
    /// Further evaluations of the same generation that came before it too, with their times
    /// (only evaluations share an entry; empty, unallocated, for every other label).
    pub more: Vec<(u64, pb::Label)>,
}

impl EarlyLabel {
    /// Labels the entry holds.
    fn labels(&self) -> u32 {
        1 + self.more.len() as u32
    }

    /// Whether `label`, an evaluation, can share this entry: `Ok(true)` if there is room,
    /// `Ok(false)` if the entry is full, `Err(Duplicate)` if it holds an evaluation of the same
    /// name, `Err(Duplicate)` too if the entry is not of evaluations (a second label).
    fn has_room_for(&self, label: &pb::Label) -> Result<bool, Unmatched> {
        let name = |l: &pb::Label| match &l.value {
            Some(pb::label::Value::Evaluation(e)) => Some(e.name.clone()),
            _ => None,
        };
        let (Some(new), Some(first)) = (name(label), name(&self.label)) else {
            return Err(Unmatched::Duplicate);
        };
        let mut held = std::iter::once(first).chain(self.more.iter().filter_map(|(_, l)| name(l)));
        if held.any(|n| n == new) {
            return Err(Unmatched::Duplicate);
        }
        Ok((self.labels() as usize) < MAX_EVALUATION_NAMES)
    }
}

/// How a request id's label story ended, remembered for a while to classify late labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Labelled,
    Expired,
}

/// An entry that left a store without being joined, to be counted on the model (quality id)
/// that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departed {
    /// A pending prediction, past the TTL.
    PredictionExpired(u32),
    /// A pending prediction, the oldest of a full store.
    PredictionEvicted(u32),
    /// A generation that got at least one evaluation, past the TTL or the oldest of a full
    /// store: its story ended joined, so it is not counted unlabelled.
    GenerationEvaluated(u32),
    /// An early entry (one label, or several evaluations of one generation), past its hold or
    /// the oldest of a full store.
    EarlyLabels { model: u32, labels: u32 },
}

impl Departed {
    /// The quality id of the model the entry belonged to.
    pub fn model(self) -> u32 {
        match self {
            Self::PredictionExpired(m)
            | Self::PredictionEvicted(m)
            | Self::GenerationEvaluated(m)
            | Self::EarlyLabels { model: m, .. } => m,
        }
    }
}

impl JoinStats {
    /// Counts an entry of this model that left a store unjoined.
    pub fn departed(&mut self, how: Departed) {
        match how {
            Departed::PredictionExpired(_) => {
                self.pending -= 1;
                self.unlabeled[0] += 1;
            }
            Departed::PredictionEvicted(_) => {
                self.pending -= 1;
                self.unlabeled[1] += 1;
            }
            Departed::GenerationEvaluated(_) => self.pending -= 1,
            Departed::EarlyLabels { labels, .. } => {
                self.early -= u64::from(labels);
                self.unmatched[Unmatched::UnknownRequest as usize] += u64::from(labels);
            }
        }
    }
}

/// A shard's join state: pending predictions, early labels, and recently resolved request ids.
pub struct LabelJoin {
    pending: JoinStore<PendingPrediction>,
    early: JoinStore<EarlyLabel>,
    /// Request ids recently labelled or expired, so that a second label is counted as a
    /// duplicate and a late one as expired, not unknown. [`RESOLVED_SLOTS`] slots at most (512
    /// KiB): its writes are one cache miss per resolved prediction, and at high rates any
    /// bounded memory of old ids covers only a short history anyway.
    resolved: RecentKeys,
    /// Two independently seeded hashers: together a 128-bit key.
    hashers: (
        foldhash::fast::SeedableRandomState,
        foldhash::fast::SeedableRandomState,
    ),
    /// Predictions the full pending store pushed out, for logging the first (each is counted on
    /// its model as unlabelled for capacity).
    evicted: u64,
    /// With a shared store: the predictions of the current batch that wait for a label, as
    /// `(model id, request id, encoded prediction)`, for the shard to hand to the store.
    shared: Option<Vec<(u32, String, Vec<u8>)>>,
}

impl LabelJoin {
    pub fn new(settings: &QualitySettings) -> Self {
        Self {
            pending: JoinStore::new(settings.max_pending, settings.label_ttl.as_millis() as u64),
            early: JoinStore::new(
                settings.max_early_labels,
                settings.early_label_hold.as_millis() as u64,
            ),
            resolved: RecentKeys::new(settings.max_pending.clamp(1024, RESOLVED_SLOTS)),
            hashers: (
                foldhash::fast::SeedableRandomState::random(),
                foldhash::fast::SeedableRandomState::random(),
            ),
            evicted: 0,
            shared: settings.shared_store.then(Vec::new),
        }
    }

    /// The predictions for the shared store since the last call.
    pub fn take_shared(&mut self) -> Vec<(u32, String, Vec<u8>)> {
        self.shared.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Predictions waiting for a label now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Most predictions that can wait (0: the delayed join is off).
    pub fn pending_capacity(&self) -> usize {
        self.pending.capacity()
    }

    /// The key of a request id of a model.
    #[inline]
    fn key(&self, model: u32, request_id: &str) -> JoinKey {
        let hash = |state: &foldhash::fast::SeedableRandomState| {
            let mut h = state.build_hasher();
            h.write_u32(model);
            h.write(request_id.as_bytes());
            h.finish()
        };
        (hash(&self.hashers.0), hash(&self.hashers.1))
    }

    fn resolve(&mut self, key: JoinKey, how: Resolution) {
        self.resolved.insert(key, how == Resolution::Labelled);
    }

    /// How the request's story ended, if that is still remembered.
    fn resolution(&self, key: &JoinKey) -> Option<Resolution> {
        self.resolved.get(key).map(|labelled| {
            if labelled {
                Resolution::Labelled
            } else {
                Resolution::Expired
            }
        })
    }

    /// Hands out pending predictions past the TTL and early labels past their hold. O(1) unless
    /// something is due: the oldest entries are at the front.
    pub fn expire(&mut self, now_ms: u64, mut departed: impl FnMut(Departed)) {
        let mut expired = Vec::new();
        self.pending
            .expire(now_ms, |key, p| expired.push((key, p.departed(false))));
        for (key, how) in expired {
            self.resolve(key, Resolution::Expired);
            departed(how);
        }
        self.early.expire(now_ms, |_, label| {
            departed(Departed::EarlyLabels {
                model: label.model,
                labels: label.labels(),
            })
        });
    }

    /// Quality for one accepted record with a prediction: scored now if it carries its label,
    /// joined with a label that came early, or kept until its label arrives. A generation is
    /// kept even after an inline or early evaluation, for the evaluations of other names.
    /// Returns the entry a full store pushed out, if any.
    pub fn on_prediction(
        &mut self,
        q: &mut ModelQuality,
        record: &pb::InferenceRecord,
        now_ms: u64,
        received_ns: u64,
    ) -> Option<Departed> {
        let mut prediction = q.prediction(record)?;
        q.count_prediction(&prediction);
        let at_unix_ns = at_or_received(record.time_unix_nano, received_ns);
        if let Some(label) = &record.label {
            match q
                .truth(&prediction, label)
                .and_then(|truth| pair(q, &mut prediction, truth))
            {
                Ok(()) => q.join.joined_inline += 1,
                Err(reason) => q.join.unmatched[reason as usize] += 1,
            }
            // Not remembered as resolved: one cache miss per record for a case (a delayed label
            // for an inline-labelled record) that a bounded memory would forget at high rates
            // anyway. Such a label is held as early, then counted as unknown_request.
            if !prediction.is_generation() {
                return None;
            }
        }
        // `--max-pending-labels 0` turns the delayed-label join off.
        if record.request_id.is_empty() || self.pending.capacity() == 0 {
            return None;
        }
        let key = self.key(q.id, &record.request_id);
        if let Some((_, early)) = self.early.take(&key) {
            q.join.early -= u64::from(early.labels());
            let held = std::iter::once((early.at_unix_ns, early.label)).chain(early.more);
            for (labelled_ns, label) in held {
                match q.truth(&prediction, &label) {
                    Ok(truth) => {
                        score(q, &mut prediction, truth, at_unix_ns, labelled_ns);
                        if !prediction.is_generation() {
                            self.resolve(key, Resolution::Labelled);
                            return None;
                        }
                    }
                    // The early label does not fit: counted, and the prediction waits for another.
                    Err(reason) => q.join.unmatched[reason as usize] += 1,
                }
            }
        }
        // Generations wait here even with a shared store (README, Running a fleet): the store
        // hands a prediction to one label only.
        if let (Some(shared), false) = (&mut self.shared, prediction.is_generation()) {
            let bytes = q.encode_shared(&prediction, at_unix_ns);
            shared.push((q.id, record.request_id.clone(), bytes));
            return None;
        }
        let pending = PendingPrediction {
            model: q.id,
            at_unix_ns,
            prediction,
        };
        match self.pending.insert(key, now_ms, pending) {
            Ok(evicted) => {
                q.join.pending += 1;
                // Evicted keys are not remembered as resolved: the oldest of a full store is
                // older than any bounded memory of recent keys could hold at that rate.
                let (_, old) = evicted?;
                PendingLabelsEvicted {
                    capacity: self.pending.capacity(),
                }
                .emit(&mut self.evicted);
                Some(old.departed(true))
            }
            Err(_) => {
                q.join.duplicate_predictions += 1;
                None
            }
        }
    }

    /// A delayed label whose prediction the shared store gave back (`stored`, taken out of the
    /// store: no other sidecar scores it): scored here. Bytes that do not decode leave the label
    /// to [`Self::on_label`]; a label that does not fit its prediction is counted.
    ///
    /// The label may also be held as early: ingest's retry found its prediction after the first
    /// lookup missed, or the same label came before and missed. That entry's story ends here,
    /// so that the hold's expiry does not count the label `unknown_request` as well.
    pub fn on_stored_label(
        &mut self,
        q: &mut ModelQuality,
        truth: &pb::GroundTruth,
        stored: &[u8],
        now_ms: u64,
        received_ns: u64,
    ) -> Option<Departed> {
        let label = truth.label.as_ref()?;
        let Some((mut prediction, predicted_ns)) = q.decode_shared(stored) else {
            return self.on_label(q, truth, now_ms, received_ns);
        };
        q.advance(now_ms);
        let key = self.key(q.id, &truth.request_id);
        if let Some((_, held)) = self.early.take(&key) {
            q.join.early -= u64::from(held.labels());
            // Evaluations held with it cannot fit a stored (class or regression) prediction.
            q.join.unmatched[Unmatched::KindMismatch as usize] += held.more.len() as u64;
        }
        let at_unix_ns = at_or_received(truth.time_unix_nano, received_ns);
        match q.truth(&prediction, label) {
            Ok(resolved) => {
                score(q, &mut prediction, resolved, predicted_ns, at_unix_ns);
                self.resolve(key, Resolution::Labelled);
            }
            Err(reason) => q.join.unmatched[reason as usize] += 1,
        }
        None
    }

    /// One delayed label: joined with its pending prediction, or classified as a duplicate or
    /// late, or held briefly in case its prediction is still on the way. A label that does not
    /// fit its prediction (kind, class index) is counted and leaves the prediction waiting. An
    /// evaluation joins its generation without taking it out of the pending store.
    /// Returns the early label a full store pushed out, if any.
    pub fn on_label(
        &mut self,
        q: &mut ModelQuality,
        truth: &pb::GroundTruth,
        now_ms: u64,
        received_ns: u64,
    ) -> Option<Departed> {
        let label = truth.label.as_ref()?;
        q.advance(now_ms);
        let at_unix_ns = at_or_received(truth.time_unix_nano, received_ns);
        let key = self.key(q.id, &truth.request_id);
        let mut departed = None;
        // One lookup of the pending store's index, whether the prediction stays or is taken.
        let unmatched = if let Some(mut found) = self.pending.find(key) {
            let generation = found.value().prediction.is_generation();
            match q.truth(&found.value().prediction, label) {
                Ok(resolved) => {
                    let mut taken;
                    let pending = if generation {
                        // Peeked: the generation waits on for evaluations of other names.
                        found.value()
                    } else {
                        q.join.pending -= 1;
                        taken = found.take().1;
                        self.resolve(key, Resolution::Labelled);
                        &mut taken
                    };
                    let predicted_ns = pending.at_unix_ns;
                    score(
                        q,
                        &mut pending.prediction,
                        resolved,
                        predicted_ns,
                        at_unix_ns,
                    );
                    None
                }
                Err(reason) => Some(reason),
            }
        } else {
            match self.resolution(&key) {
                Some(Resolution::Labelled) => Some(Unmatched::Duplicate),
                Some(Resolution::Expired) => Some(Unmatched::ExpiredRequest),
                None if self.pending.capacity() == 0 => Some(Unmatched::JoinDisabled),
                None => {
                    let early = EarlyLabel {
                        model: q.id,
                        at_unix_ns,
                        label: label.clone(),
                        more: Vec::new(),
                    };
                    match self.early.insert(key, now_ms, early) {
                        Ok(evicted) => {
                            q.join.early += 1;
                            departed = evicted.map(|(_, old)| Departed::EarlyLabels {
                                model: old.model,
                                labels: old.labels(),
                            });
                            None
                        }
                        // Another evaluation of a generation not seen yet shares the entry.
                        Err(early) => {
                            let held = self.early.get_mut(&key).expect("present");
                            match held.has_room_for(&early.label) {
                                Ok(true) => {
                                    held.more.push((at_unix_ns, early.label));
                                    q.join.early += 1;
                                    None
                                }
                                Ok(false) => Some(Unmatched::UnknownRequest),
                                Err(reason) => Some(reason),
                            }
                        }
                    }
                }
            }
        };
        if let Some(reason) = unmatched {
            q.join.unmatched[reason as usize] += 1;
        }
        departed
    }
}

/// A record's or label's own time, or when it was received when it carries none.
pub fn at_or_received(time_unix_nano: u64, received_ns: u64) -> u64 {
    match time_unix_nano {
        0 => received_ns,
        t => t,
    }
}

/// Adds a complete pair to the windows. A generation remembers the names that evaluated it
/// ([`ModelQuality::truth`] finds a second evaluation of a name a duplicate).
fn pair(q: &mut ModelQuality, prediction: &mut Prediction, truth: Truth) -> Result<(), Unmatched> {
    match (prediction, truth) {
        (Prediction::Generation(names), Truth::Evaluation(e)) => {
            names.insert(e.name);
            q.observe_evaluation(e);
            Ok(())
        }
        (prediction, truth) => q
            .observe(prediction, truth)
            .map_err(|_| Unmatched::KindMismatch),
    }
}

/// Scores a joined delayed pair and records the label delay.
fn score(
    q: &mut ModelQuality,
    prediction: &mut Prediction,
    truth: Truth,
    predicted_ns: u64,
    labelled_ns: u64,
) {
    match pair(q, prediction, truth) {
        Ok(()) => {
            q.join.joined_delayed += 1;
            q.join
                .delay
                .update(delay_seconds(predicted_ns, labelled_ns));
        }
        Err(reason) => q.join.unmatched[reason as usize] += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn label(request_id: &str, value: f64) -> pb::GroundTruth {
        pb::GroundTruth {
            request_id: request_id.into(),
            label: Some(pb::Label {
                value: Some(pb::label::Value::RegressionValue(value)),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_stored_prediction_found_for_a_held_label_ends_its_hold() {
        let settings = QualitySettings {
            shared_store: true,
            early_label_hold: Duration::from_secs(60),
            ..QualitySettings::default()
        };
        let mut join = LabelJoin::new(&settings);
        let mut q = ModelQuality::new(1, &settings, 0);
        // The first lookup missed: the label is held.
        assert_eq!(join.on_label(&mut q, &label("r", 2.0), 0, 1), None);
        assert_eq!(q.join.early, 1);
        // A retry found the prediction another sidecar stored meanwhile.
        let stored = q.encode_shared(&Prediction::Value(1.5), 1);
        join.on_stored_label(&mut q, &label("r", 2.0), &stored, 1_000, 1);
        assert_eq!((q.join.joined_delayed, q.join.early), (1, 0));
        // The hold's end finds nothing left to count unknown_request.
        let mut departed = Vec::new();
        join.expire(120_000, |d| departed.push(d));
        assert_eq!(departed, Vec::new());
        assert_eq!(q.join.unmatched, [0; 6]);
        // A label for a request the store had no prediction of is still held and expires.
        join.on_label(&mut q, &label("s", 2.0), 120_000, 1);
        join.expire(200_000, |d| departed.push(d));
        assert_eq!(
            departed,
            vec![Departed::EarlyLabels {
                model: 1,
                labels: 1
            }]
        );
    }

    fn generation(request_id: &str, inline: Option<pb::Label>) -> pb::InferenceRecord {
        pb::InferenceRecord {
            request_id: request_id.into(),
            prediction: Some(pb::inference_record::Prediction::Generation(
                pb::Generation::default(),
            )),
            label: inline,
            ..Default::default()
        }
    }

    fn evaluation(name: &str, score: Option<f64>, label: &str) -> pb::Label {
        pb::Label {
            value: Some(pb::label::Value::Evaluation(pb::Evaluation {
                name: name.into(),
                score,
                label: label.into(),
            })),
        }
    }

    /// A delayed evaluation `e` of `request_id` at `now_ms`.
    fn evaluate(
        join: &mut LabelJoin,
        q: &mut ModelQuality,
        request_id: &str,
        e: pb::Label,
        now_ms: u64,
    ) {
        join.on_label(q, &evaluated(request_id, e), now_ms, 1);
    }

    fn evaluated(request_id: &str, label: pb::Label) -> pb::GroundTruth {
        pb::GroundTruth {
            request_id: request_id.into(),
            label: Some(label),
            ..Default::default()
        }
    }

    /// `(name, evaluations, mean score, label counts)` since start.
    fn since_start(q: &mut ModelQuality, now_ms: u64) -> Vec<(String, u64, Option<f64>, Vec<u64>)> {
        let Some(e) = q.snapshot(now_ms).evaluations else {
            return Vec::new();
        };
        let (_, all) = e.windows.last().unwrap();
        e.names
            .iter()
            .zip(&all.names)
            .map(|(n, s)| (n.clone(), s.count, s.mean_score(), s.labels.clone()))
            .collect()
    }

    fn unmatched(q: &ModelQuality, reason: Unmatched) -> u64 {
        q.join.unmatched[reason as usize]
    }

    #[test]
    fn evaluations_of_several_names_join_one_generation_which_keeps_waiting() {
        let settings = QualitySettings::default();
        let mut join = LabelJoin::new(&settings);
        let mut q = ModelQuality::new(1, &settings, 0);
        assert_eq!(
            join.on_prediction(&mut q, &generation("g", None), 0, 1),
            None
        );
        assert_eq!(q.join.pending, 1);
        for (name, score, label) in [
            ("relevance", Some(0.5), ""),
            ("thumbs", None, "up"),
            ("relevance", Some(1.0), ""), // the same name again: a duplicate
        ] {
            evaluate(&mut join, &mut q, "g", evaluation(name, score, label), 10);
        }
        assert_eq!((q.join.joined_delayed, q.join.pending), (2, 1));
        assert_eq!(unmatched(&q, Unmatched::Duplicate), 1);
        assert_eq!(
            since_start(&mut q, 20),
            [
                ("relevance".to_owned(), 1, Some(0.5), vec![]),
                ("thumbs".to_owned(), 1, None, vec![1]),
            ]
        );
        // A regression label does not fit a generation, nor an evaluation a regression.
        join.on_label(&mut q, &label("g", 1.0), 30, 1);
        assert_eq!(unmatched(&q, Unmatched::KindMismatch), 1);
        join.on_prediction(
            &mut q,
            &{
                let mut r = generation("c", None);
                r.prediction = Some(pb::inference_record::Prediction::Regression(
                    pb::Regression { value: 2.0 },
                ));
                r
            },
            40,
            1,
        );
        evaluate(&mut join, &mut q, "c", evaluation("thumbs", None, "up"), 50);
        assert_eq!(unmatched(&q, Unmatched::KindMismatch), 2);
        // The regression prediction still waits for its own label.
        join.on_label(&mut q, &label("c", 2.5), 60, 1);
        assert_eq!((q.join.joined_delayed, q.join.pending), (3, 1));
    }

    #[test]
    fn evaluations_before_their_generation_are_held_together() {
        let settings = QualitySettings::default();
        let mut join = LabelJoin::new(&settings);
        let mut q = ModelQuality::new(1, &settings, 0);
        for (name, score) in [("a", 1.0), ("b", 2.0), ("a", 3.0)] {
            evaluate(&mut join, &mut q, "g", evaluation(name, Some(score), ""), 0);
        }
        // "a" twice before the generation: the second is a duplicate.
        assert_eq!((q.join.early, unmatched(&q, Unmatched::Duplicate)), (2, 1));
        join.on_prediction(&mut q, &generation("g", None), 1_000, 1);
        assert_eq!(
            (q.join.early, q.join.joined_delayed, q.join.pending),
            (0, 2, 1)
        );
        // Still waiting: "c" joins, a third "a" is a duplicate.
        evaluate(
            &mut join,
            &mut q,
            "g",
            evaluation("c", Some(4.0), ""),
            2_000,
        );
        evaluate(
            &mut join,
            &mut q,
            "g",
            evaluation("a", Some(5.0), ""),
            2_000,
        );
        assert_eq!(q.join.joined_delayed, 3);
        assert_eq!(unmatched(&q, Unmatched::Duplicate), 2);
        let names: Vec<_> = since_start(&mut q, 3_000)
            .into_iter()
            .map(|(n, count, mean, _)| (n, count, mean))
            .collect();
        assert_eq!(
            names,
            [
                ("a".to_owned(), 1, Some(1.0)),
                ("b".to_owned(), 1, Some(2.0)),
                ("c".to_owned(), 1, Some(4.0)),
            ]
        );
        // Held evaluations whose generation never comes: each counted unknown_request.
        evaluate(
            &mut join,
            &mut q,
            "h",
            evaluation("a", Some(1.0), ""),
            3_000,
        );
        evaluate(
            &mut join,
            &mut q,
            "h",
            evaluation("b", Some(1.0), ""),
            3_000,
        );
        let mut departed = Vec::new();
        join.expire(3_000 + 61_000, |d| departed.push(d));
        assert_eq!(
            departed,
            [Departed::EarlyLabels {
                model: 1,
                labels: 2
            }]
        );
        q.join.departed(departed[0]);
        assert_eq!(
            (q.join.early, unmatched(&q, Unmatched::UnknownRequest)),
            (0, 2)
        );
    }

    #[test]
    fn an_inline_evaluation_counts_and_the_generation_waits_for_others() {
        let settings = QualitySettings::default();
        let mut join = LabelJoin::new(&settings);
        let mut q = ModelQuality::new(1, &settings, 0);
        let record = generation("g", Some(evaluation("judge", Some(0.25), "fail")));
        join.on_prediction(&mut q, &record, 0, 1);
        assert_eq!((q.join.joined_inline, q.join.pending), (1, 1));
        evaluate(
            &mut join,
            &mut q,
            "g",
            evaluation("judge", Some(1.0), "pass"),
            5,
        );
        evaluate(
            &mut join,
            &mut q,
            "g",
            evaluation("human", Some(4.0), ""),
            5,
        );
        assert_eq!(unmatched(&q, Unmatched::Duplicate), 1);
        assert_eq!(
            since_start(&mut q, 10),
            [
                ("judge".to_owned(), 1, Some(0.25), vec![1]),
                ("human".to_owned(), 1, Some(4.0), vec![]),
            ]
        );
        // Without a request id it is scored and kept nowhere.
        join.on_prediction(
            &mut q,
            &generation("", Some(evaluation("judge", Some(1.0), ""))),
            10,
            1,
        );
        assert_eq!((q.join.joined_inline, q.join.pending), (2, 1));
    }

    #[test]
    fn an_evaluated_generation_leaving_by_ttl_is_not_unlabelled() {
        let settings = QualitySettings {
            label_ttl: Duration::from_secs(10),
            ..QualitySettings::default()
        };
        let mut join = LabelJoin::new(&settings);
        let mut q = ModelQuality::new(1, &settings, 0);
        join.on_prediction(&mut q, &generation("evaluated", None), 0, 1);
        join.on_prediction(&mut q, &generation("never", None), 0, 1);
        evaluate(
            &mut join,
            &mut q,
            "evaluated",
            evaluation("a", Some(1.0), ""),
            1_000,
        );
        let mut departed = Vec::new();
        join.expire(10_000, |d| departed.push(d));
        assert_eq!(
            departed,
            [
                Departed::GenerationEvaluated(1),
                Departed::PredictionExpired(1)
            ]
        );
        for d in departed {
            q.join.departed(d);
        }
        assert_eq!((q.join.pending, q.join.unlabeled), (0, [1, 0]));
        // A late evaluation of either: expired_request.
        evaluate(
            &mut join,
            &mut q,
            "evaluated",
            evaluation("b", Some(1.0), ""),
            11_000,
        );
        evaluate(
            &mut join,
            &mut q,
            "never",
            evaluation("b", Some(1.0), ""),
            11_000,
        );
        assert_eq!(unmatched(&q, Unmatched::ExpiredRequest), 2);
    }

    #[test]
    fn with_a_shared_store_generations_wait_in_the_shard() {
        let settings = QualitySettings {
            shared_store: true,
            ..QualitySettings::default()
        };
        let mut join = LabelJoin::new(&settings);
        let mut q = ModelQuality::new(1, &settings, 0);
        join.on_prediction(&mut q, &generation("g", None), 0, 1);
        assert!(join.take_shared().is_empty());
        assert_eq!(join.pending(), 1);
        evaluate(&mut join, &mut q, "g", evaluation("a", None, "ok"), 5);
        evaluate(&mut join, &mut q, "g", evaluation("b", None, "ok"), 5);
        assert_eq!((q.join.joined_delayed, q.join.pending), (2, 1));
    }
}
