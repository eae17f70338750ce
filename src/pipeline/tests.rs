//! The pipeline driven through its public handle, on paused time: model expiry, the label
//! join's expiry, eviction, early labels and duplicates, declarations taken again after expiry.

use super::*;
use crate::{quality::Unmatched, self_metrics::SelfCounter};

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
        max_models: ModelBudget::new(4),
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
        state: None,
        label_store: None,
        anomaly: Default::default(),
        series_interval: Duration::from_secs(3600),
    };
    let stats = Arc::new(SelfStats::default());
    let pipeline = Pipeline::start(1, 8, settings, None, stats.clone());
    send(&pipeline, records("old", 3)).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    send(&pipeline, records("new", 2)).await;
    // "old" idle for 60 + 60 s > 100 s; "new" for 60 s.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(models(&pipeline.snapshot().await), vec![("new".into(), 2)]);
    assert_eq!(stats.get(SelfCounter::ModelsExpired), 1);
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
        max_models: ModelBudget::new(1),
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
        state: None,
        label_store: None,
        anomaly: Default::default(),
        series_interval: Duration::from_secs(3600),
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
        max_models: ModelBudget::new(4),
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
        state: None,
        label_store: None,
        anomaly: Default::default(),
        series_interval: Duration::from_secs(3600),
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
        stored: Vec::new(),
        retried: false,
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

#[tokio::test(start_paused = true)]
async fn a_model_named_like_the_overflow_slot_keeps_a_state_of_its_own() {
    let mut settings = quality_settings();
    settings.max_models = ModelBudget::new(1);
    let pipeline = Pipeline::start(1, 8, settings, None, Arc::new(SelfStats::default()));
    // The client's own model, named as the overflow slot is exported.
    let mut batch = (*multiclass(&["d"])).clone();
    batch.model = crate::models::OVERFLOW_MODEL.into();
    batch.version = crate::models::OVERFLOW_MODEL.into();
    send(&pipeline, Arc::new(batch)).await;
    // A second model past the cap goes to the real overflow slot.
    send(&pipeline, records("other", 2)).await;
    let snapshot = pipeline.snapshot().await.remove(0);
    let own =
        crate::models::ModelKey::new(crate::models::OVERFLOW_MODEL, crate::models::OVERFLOW_MODEL);
    let quality: Vec<_> = snapshot.quality.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(quality, vec![own.clone()], "the client's model is scored");
    let records: Vec<_> = snapshot
        .models
        .iter()
        .map(|(k, ops)| (k.kind, ops.records()))
        .collect();
    assert_eq!(
        records,
        vec![
            (crate::models::SlotKind::Own, 1),
            (crate::models::SlotKind::Overflow, 2)
        ]
    );
    assert_eq!(snapshot.models_overflow, 2);
}
