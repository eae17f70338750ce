//! The state of one model version in its shard, and the stages a record goes through in it:
//! operational counts, drift (with the profile-based anomaly checks in the same pass over the
//! features), the label join, the profile-free anomaly detectors, and the per-record flag cap.
//! Shared slots ([`SlotKind::Overflow`], [`SlotKind::Invalid`]) mix several models' records and
//! keep the operational counts only.

use super::ShardSettings;
use crate::{
    anomaly::{series::Detection, Flag, ModelAnomaly},
    drift::{
        model::{DriftChange, DriftSnapshot, ModelDrift},
        profile::Profile,
        registry::ProfileRegistry,
    },
    models::{Declaration, ModelKey},
    operational::ModelOps,
    pb,
    quality::{Departed, LabelJoin, ModelQuality, QualitySnapshot},
};
use std::sync::Arc;
use tokio::time::Instant;

/// The analyses of a model version's own state.
struct Analyses {
    quality: ModelQuality,
    drift: ModelDrift,
    anomaly: ModelAnomaly,
}

impl Analyses {
    /// Uses `profile` from now on: drift's windows restart, the feature checks are compiled
    /// from it.
    fn set_profile(&mut self, profile: Arc<Profile>, key: &ModelKey, now_ms: u64) {
        self.anomaly
            .features
            .set_profile(profile.clone(), key, self.drift.max_features());
        self.drift.set_profile(profile, now_ms);
    }
}

/// A model version's state.
pub struct ModelState {
    pub key: ModelKey,
    pub ops: ModelOps,
    /// `None` for the shared slots.
    analyses: Option<Analyses>,
    /// When the shard last saw anything for this model; idle states expire.
    pub last_seen: Instant,
}

/// What one record left behind in its model's state, for the shard to act on.
#[derive(Default)]
pub struct Observed {
    /// A reference profile whose live capture this record completed.
    pub captured: Option<Arc<Profile>>,
    /// Another entry the label join pushed out to make room.
    pub departed: Option<Departed>,
}

/// What one model version's state holds now, for export.
pub struct ModelSnapshot {
    pub ops: ModelOps,
    pub quality: Option<QualitySnapshot>,
    pub drift: Option<DriftSnapshot>,
    pub anomaly: Option<crate::anomaly::AnomalySnapshot>,
}

/// What closing an interval found in one model version.
pub struct IntervalFindings {
    pub drift_change: Option<DriftChange>,
    pub detections: Vec<Detection>,
}

impl ModelState {
    /// A fresh state; `quality_id` names the model in the label join (own states only). The
    /// declaration ingest keeps and the reference profile, if any, are taken at once.
    pub fn new(
        key: ModelKey,
        quality_id: u32,
        settings: &ShardSettings,
        now: Instant,
        now_ms: u64,
    ) -> Self {
        let analyses = key.is_own().then(|| {
            let anomaly_settings = settings.anomaly.for_model(&key.model);
            let mut analyses = Analyses {
                quality: ModelQuality::new(quality_id, &settings.quality, now_ms),
                anomaly: ModelAnomaly::new(anomaly_settings, &settings.quality.windows, now_ms),
                drift: ModelDrift::new(&settings.drift, key.clone()),
            };
            if let Some(profile) = settings.profiles.get(&key.model, &key.version) {
                analyses.set_profile(profile, &key, now_ms);
            }
            analyses
        });
        let mut state = Self {
            ops: ModelOps::new(settings.max_error_types),
            key,
            analyses,
            last_seen: now,
        };
        if state.key.is_own() {
            if let Some(declaration) = settings
                .declarations
                .as_ref()
                .and_then(|r| r.get(&state.key.model, &state.key.version))
            {
                state.declare(&declaration);
            }
        }
        state
    }

    /// The model's id in the label join, for own states.
    pub fn quality_id(&self) -> Option<u32> {
        self.analyses.as_ref().map(|a| a.quality.id)
    }

    pub fn quality_mut(&mut self) -> Option<&mut ModelQuality> {
        self.analyses.as_mut().map(|a| &mut a.quality)
    }

    /// Predictions of this model waiting for a label now.
    pub fn pending_labels(&self) -> u64 {
        self.analyses.as_ref().map_or(0, |a| a.quality.join.pending)
    }

    /// The reference profile in use, if any.
    pub fn profile(&self) -> Option<&Arc<Profile>> {
        self.analyses.as_ref().and_then(|a| a.drift.profile())
    }

    pub fn declare(&mut self, declaration: &Arc<Declaration>) {
        self.ops.declare(declaration);
        if let Some(a) = &mut self.analyses {
            a.quality.declare(declaration);
            a.drift.declare(declaration.clone());
            a.anomaly.features.declare(declaration);
        }
    }

    /// Takes the registry's profile for this version if it was added or replaced (its drift
    /// windows restart), or stops drift if it was removed.
    pub fn sync_profile(&mut self, profiles: &ProfileRegistry, now_ms: u64) {
        let Some(a) = &mut self.analyses else { return };
        match profiles.get(&self.key.model, &self.key.version) {
            Some(profile) if !a.drift.profile().is_some_and(|p| Arc::ptr_eq(p, &profile)) => {
                a.set_profile(profile, &self.key, now_ms);
            }
            None if a.drift.profile().is_some() => {
                a.drift.clear_profile();
                a.anomaly.features.clear_profile();
            }
            _ => {}
        }
    }

    /// Starts capturing the next `records` records into a new reference profile; false for
    /// shared slots, which have no drift state.
    pub fn start_capture(&mut self, records: usize) -> bool {
        match &mut self.analyses {
            Some(a) => {
                a.drift.start_capture(records);
                true
            }
            None => false,
        }
    }

    /// Moves the windows to `now_ms`; once per batch and model, before its records.
    #[inline]
    pub fn advance(&mut self, now_ms: u64) {
        if let Some(a) = &mut self.analyses {
            a.quality.advance(now_ms);
            a.drift.advance(now_ms);
            a.anomaly.advance(now_ms);
        }
    }

    /// One accepted record through every stage. Its anomaly flags are left in `flags` (at most
    /// the per-record cap; the rest counted).
    #[inline]
    pub fn observe(
        &mut self,
        record: &pb::InferenceRecord,
        join: &mut LabelJoin,
        now_ms: u64,
        received_ns: u64,
        flags: &mut Vec<Flag>,
    ) -> Observed {
        self.ops.update(record);
        let Some(a) = &mut self.analyses else {
            return Observed::default();
        };
        let mut observed = Observed::default();
        a.anomaly.features.missing_flags(record, flags);
        observed.captured = a
            .drift
            .update(record, now_ms, &mut a.anomaly.features.observer(flags));
        if let Some(profile) = &observed.captured {
            a.anomaly
                .features
                .set_profile(profile.clone(), &self.key, a.drift.max_features());
        }
        if record.prediction.is_some() {
            observed.departed = join.on_prediction(&mut a.quality, record, now_ms, received_ns);
        }
        a.anomaly.detectors.check(record, flags);
        a.anomaly.close_record(flags, &self.key);
        observed
    }

    /// One accepted delayed label, with its prediction when the shared label store gave it back;
    /// returns the entry the label join pushed out, if any. A `retried` label (its prediction
    /// found by a later lookup) was counted as received when it came.
    pub fn observe_label(
        &mut self,
        truth: &pb::GroundTruth,
        stored: Option<&[u8]>,
        retried: bool,
        join: &mut LabelJoin,
        now_ms: u64,
        received_ns: u64,
    ) -> Option<Departed> {
        if !retried {
            self.ops.labels_accepted += 1;
        }
        let a = self.analyses.as_mut()?;
        match stored {
            // Its prediction, from the shared label store.
            Some(bytes) => join.on_stored_label(&mut a.quality, truth, bytes, now_ms, received_ns),
            None => join.on_label(&mut a.quality, truth, now_ms, received_ns),
        }
    }

    /// Closes an interval of the change detectors: drift changes of the first window and
    /// detections on the per-interval series.
    pub fn close_interval(&mut self, now_ms: u64) -> IntervalFindings {
        let Some(a) = &mut self.analyses else {
            return IntervalFindings {
                drift_change: None,
                detections: Vec::new(),
            };
        };
        let (drift_change, drift_score) = a.drift.close_interval(now_ms).unwrap_or((None, None));
        let quality = a.quality.since_start(now_ms);
        let detections = a.anomaly.close_interval(
            &self.ops,
            Some(quality),
            drift_score,
            a.drift.profile_changes(),
            a.drift.capturing(),
        );
        IntervalFindings {
            drift_change,
            detections,
        }
    }

    /// What the state holds now; changes nothing that can be observed.
    pub fn snapshot(&mut self, now_ms: u64) -> ModelSnapshot {
        let (quality, drift, anomaly) = match &mut self.analyses {
            Some(a) => (
                Some(a.quality.snapshot(now_ms)),
                Some(a.drift.snapshot(now_ms)),
                Some(a.anomaly.snapshot(now_ms)),
            ),
            None => (None, None, None),
        };
        ModelSnapshot {
            ops: self.ops.clone(),
            quality,
            drift,
            anomaly,
        }
    }
}
