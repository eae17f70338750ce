//! What one export reads: every shard's snapshot merged, with the process-wide counters.

use crate::{
    anomaly::AnomalySnapshot,
    drift::model::DriftSnapshot,
    models::ModelKey,
    operational::ModelOps,
    pipeline::{Pipeline, ShardSnapshot},
    quality::QualitySnapshot,
    self_metrics::SelfValues,
};
use std::collections::BTreeMap;

/// Everything exported at one collection, merged across shards.
#[derive(Debug, Clone, Default)]
pub struct SidecarSnapshot {
    pub models: BTreeMap<ModelKey, ModelOps>,
    /// Quality by model version (shards own disjoint models; the overflow model has none).
    pub quality: BTreeMap<ModelKey, QualitySnapshot>,
    /// Drift by model version, for every own one (windows only with a reference profile).
    pub drift: BTreeMap<ModelKey, DriftSnapshot>,
    /// Anomaly rates, change detections and series points by model version.
    pub anomaly: BTreeMap<ModelKey, AnomalySnapshot>,
    pub models_overflow: u64,
    /// Predictions waiting for delayed labels in all shards, and the total capacity.
    pub pending_labels: usize,
    pub pending_capacity: usize,
    /// The process-wide counters of [`crate::self_metrics::SELF_METRICS`], indexed by
    /// [`crate::self_metrics::SelfCounter`].
    pub self_metrics: SelfValues,
    pub queue_depths: Vec<usize>,
    pub queue_capacity: usize,
    /// The fleet's merged quality, on the sidecar holding the fleet lease (`src/fleet.rs`).
    pub fleet: Option<std::sync::Arc<crate::fleet::FleetView>>,
}

impl SidecarSnapshot {
    /// Merges shard snapshots (model keys are disjoint across shards except the overflow key)
    /// with the process-wide counters.
    pub fn assemble(shards: Vec<ShardSnapshot>, pipeline: &Pipeline) -> Self {
        let mut snapshot = SidecarSnapshot {
            self_metrics: pipeline.stats.load(),
            queue_depths: pipeline.queue_depths(),
            queue_capacity: pipeline.queue_capacity(),
            ..Default::default()
        };
        for shard in shards {
            snapshot.models_overflow += shard.models_overflow;
            snapshot.pending_labels += shard.pending;
            snapshot.pending_capacity += shard.pending_capacity;
            snapshot.quality.extend(shard.quality);
            snapshot.drift.extend(shard.drift);
            snapshot.anomaly.extend(shard.anomaly);
            for (key, ops) in shard.models {
                match snapshot.models.get_mut(&key) {
                    Some(existing) => existing.merge(&ops),
                    None => {
                        snapshot.models.insert(key, ops);
                    }
                }
            }
        }
        snapshot
    }

    /// One model version's part of the snapshot (its entries cloned), without the process-wide
    /// values: what [`super::metrics::Requests`] encodes a version at a time from.
    pub fn part(&self, key: &ModelKey) -> Self {
        fn one<T: Clone>(map: &BTreeMap<ModelKey, T>, key: &ModelKey) -> BTreeMap<ModelKey, T> {
            map.get_key_value(key)
                .map(|(k, v)| (k.clone(), v.clone()))
                .into_iter()
                .collect()
        }
        SidecarSnapshot {
            models: one(&self.models, key),
            quality: one(&self.quality, key),
            drift: one(&self.drift, key),
            anomaly: one(&self.anomaly, key),
            ..Default::default()
        }
    }

    /// Collects a fresh snapshot from the running shards.
    pub async fn collect(pipeline: &Pipeline) -> Self {
        let shards = pipeline.snapshot().await;
        Self::assemble(shards, pipeline)
    }
}
