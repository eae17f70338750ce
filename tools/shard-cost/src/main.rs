//! Pushes 3 + BATCHES batches of 1000 inline-labelled 32-feature records (the load generator's)
//! through one shard on a current-thread runtime: the first 2000 records capture the reference
//! profile, so drift, every anomaly detector (Half-Space Trees included) and quality run on the
//! rest. `shard-cost 0` only sets up; the difference of two runs under callgrind, divided by
//! 1000 × BATCHES, is the shard's instructions per record (tools/count-instructions.sh).
use inferscope::{demo::load_test_batch, models::ModelKey, pipeline::*, pb, models::Declaration};
use std::{sync::Arc, time::{Duration, SystemTime}};
use tokio::sync::oneshot;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let batches: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let settings = ShardSettings {
        max_models_per_shard: 64,
        model_idle_expiry: Duration::from_secs(3600),
        max_error_types: 32,
        sampling: inferscope::config::Sampling { ratio: 0.0, parent_based: false },
        quality: Default::default(),
        declarations: None,
        // NO_DRIFT=1: no reference profile (no drift, no profile-based checks).
        drift: inferscope::drift::model::DriftSettings {
            reference_records: if std::env::var_os("NO_DRIFT").is_some() { 0 } else { 2000 },
            ..Default::default()
        },
        profiles: Arc::new(inferscope::drift::registry::ProfileRegistry::new()),
        anomaly: Default::default(),
        #[cfg(not(feature = "before-series-interval"))]
        series_interval: Duration::from_secs(3600),
    };
    let stats = Default::default();
    let pipeline = Pipeline::start(1, 64, settings, None, stats);
    // Warm-up: capture the profile and fill the trees' first window.
    for seq in 0..(3 + batches) {
        let mut batch = load_test_batch(seq, 1000, 32);
        for (i, r) in batch.records.iter_mut().enumerate() {
            r.label = Some(pb::Label { value: Some(pb::label::Value::ClassIndex((i % 3 % 2) as u32)) });
        }
        let declarations = if seq == 0 {
            vec![(ModelKey::new("loadgen", "1"), Arc::new(Declaration::from_pb(&batch.declarations[0])))]
        } else { Vec::new() };
        let batch = Arc::new(batch);
        let (done, wait) = oneshot::channel();
        let work = ShardWork::Records {
            accepted: (0..1000).collect(),
            batch,
            declarations,
            rejected: Vec::new(),
            received: SystemTime::now(),
            done,
        };
        pipeline.dispatch(vec![(0, work)]).unwrap();
        wait.await.unwrap();
    }
    pipeline.drain().await;
}
