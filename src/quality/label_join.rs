//! The delayed-label join of one shard, behind one type: predictions waiting for their label
//! (the pending store), labels waiting for their prediction (the early store), and the request
//! ids recently resolved, which tell a duplicate or late label from an unknown one.
//!
//! Both stores are shared by the shard's models under one capacity, so an insert may push out
//! another model's entry, and expiry goes through every model's: those departures are handed
//! back as [`Departed`] for the shard to count on the owner ([`JoinStats::departed`]). The model
//! a record or label belongs to is passed in as its [`ModelQuality`], whose join counters are
//! updated here.

use super::{
    delay_seconds,
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

/// A label waiting for its prediction, kept as sent: it is resolved against the class table only
/// if its prediction comes.
#[derive(Debug)]
pub struct EarlyLabel {
    pub model: u32,
    pub at_unix_ns: u64,
    pub label: pb::Label,
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
    /// An early label, past its hold or the oldest of a full store.
    EarlyLabel(u32),
}

impl Departed {
    /// The quality id of the model the entry belonged to.
    pub fn model(self) -> u32 {
        match self {
            Self::PredictionExpired(m) | Self::PredictionEvicted(m) | Self::EarlyLabel(m) => m,
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
            Departed::EarlyLabel(_) => {
                self.early -= 1;
                self.unmatched[Unmatched::UnknownRequest as usize] += 1;
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
            .expire(now_ms, |key, p| expired.push((key, p.model)));
        for (key, model) in expired {
            self.resolve(key, Resolution::Expired);
            departed(Departed::PredictionExpired(model));
        }
        self.early.expire(now_ms, |_, label| {
            departed(Departed::EarlyLabel(label.model))
        });
    }

    /// Quality for one accepted record with a prediction: scored now if it carries its label,
    /// joined with a label that came early, or kept until its label arrives. Returns the entry
    /// a full store pushed out, if any.
    pub fn on_prediction(
        &mut self,
        q: &mut ModelQuality,
        record: &pb::InferenceRecord,
        now_ms: u64,
        received_ns: u64,
    ) -> Option<Departed> {
        let prediction = q.prediction(record)?;
        q.count_prediction(&prediction);
        let at_unix_ns = at_or_received(record.time_unix_nano, received_ns);
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
            return None;
        }
        // `--max-pending-labels 0` turns the delayed-label join off.
        if record.request_id.is_empty() || self.pending.capacity() == 0 {
            return None;
        }
        let key = self.key(q.id, &record.request_id);
        if let Some((_, early)) = self.early.take(&key) {
            q.join.early -= 1;
            match q.truth(&prediction, &early.label) {
                Ok(truth) => {
                    score(q, &prediction, truth, at_unix_ns, early.at_unix_ns);
                    self.resolve(key, Resolution::Labelled);
                    return None;
                }
                // The early label does not fit: counted, and the prediction waits for another.
                Err(reason) => q.join.unmatched[reason as usize] += 1,
            }
        }
        if let Some(shared) = &mut self.shared {
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
                Some(Departed::PredictionEvicted(old.model))
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
        let Some((prediction, predicted_ns)) = q.decode_shared(stored) else {
            return self.on_label(q, truth, now_ms, received_ns);
        };
        q.advance(now_ms);
        let key = self.key(q.id, &truth.request_id);
        if self.early.take(&key).is_some() {
            q.join.early -= 1;
        }
        let at_unix_ns = at_or_received(truth.time_unix_nano, received_ns);
        match q.truth(&prediction, label) {
            Ok(resolved) => {
                score(q, &prediction, resolved, predicted_ns, at_unix_ns);
                self.resolve(key, Resolution::Labelled);
            }
            Err(reason) => q.join.unmatched[reason as usize] += 1,
        }
        None
    }

    /// One delayed label: joined with its pending prediction, or classified as a duplicate or
    /// late, or held briefly in case its prediction is still on the way. A label that does not
    /// fit its prediction (kind, class index) is counted and leaves the prediction waiting.
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
        let unmatched = if let Some(pending) = self.pending.get(&key) {
            match q.truth(&pending.prediction, label) {
                Ok(resolved) => {
                    let (_, pending) = self.pending.take(&key).expect("present");
                    q.join.pending -= 1;
                    score(
                        q,
                        &pending.prediction,
                        resolved,
                        pending.at_unix_ns,
                        at_unix_ns,
                    );
                    self.resolve(key, Resolution::Labelled);
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
                    };
                    match self.early.insert(key, now_ms, early) {
                        Ok(evicted) => {
                            q.join.early += 1;
                            departed = evicted.map(|(_, old)| Departed::EarlyLabel(old.model));
                            None
                        }
                        Err(_) => Some(Unmatched::Duplicate),
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

/// Scores a joined delayed pair and records the label delay.
fn score(
    q: &mut ModelQuality,
    prediction: &Prediction,
    truth: Truth,
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
        assert_eq!(departed, vec![Departed::EarlyLabel(1)]);
    }
}
