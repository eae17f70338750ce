//! Pushes 3 + BATCHES batches of 1000 inline-labelled records of 32 numeric features (the load
//! generator's) through one shard on a current-thread runtime: the first 2000 records capture the
//! reference profile, so drift, every anomaly detector (Half-Space Trees included) and quality
//! run on the rest. Every batch is built before the first is sent. `shard-cost BATCHES setup`
//! builds the same batches and sends only the first 3; the difference of the two runs under
//! callgrind, divided by 1000 × BATCHES, is the shard's instructions per record, building the
//! records left out (tools/count-instructions.sh).
//!
//! Env: `RECORD_FEATURES=N` sends N numeric features instead of 32; `NO_DRIFT=1` captures no
//! reference profile (no drift, no profile-based checks).
use inferscope::{demo::load_test_batch, models::Declaration, models::ModelKey, pb, pipeline::*};
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::sync::oneshot;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let batches: u64 = args.next().expect("BATCHES").parse().expect("BATCHES");
    let setup_only = match args.next().as_deref() {
        None => false,
        Some("setup") => true,
        Some(other) => panic!("unknown argument {other} (usage: shard-cost BATCHES [setup])"),
    };
    let features: usize = std::env::var("RECORD_FEATURES").map_or(32, |n| n.parse().unwrap());
    let settings = ShardSettings {
        max_models: ModelBudget::new(64),
        model_idle_expiry: Duration::from_secs(3600),
        max_error_types: 32,
        sampling: inferscope::config::Sampling {
            ratio: 0.0,
            parent_based: false,
        },
        quality: Default::default(),
        declarations: None,
        drift: inferscope::drift::model::DriftSettings {
            reference_records: if std::env::var_os("NO_DRIFT").is_some() {
                0
            } else {
                2000
            },
            ..Default::default()
        },
        profiles: Arc::new(inferscope::drift::registry::ProfileRegistry::new()),
        state: None,
        label_store: None,
        anomaly: Default::default(),
        series_interval: Duration::from_secs(3600),
    };
    let built: Vec<Arc<pb::RecordBatch>> = (0..(3 + batches))
        .map(|seq| {
            let mut batch = load_test_batch(seq, 1000, features);
            for (i, r) in batch.records.iter_mut().enumerate() {
                r.label = Some(pb::Label {
                    value: Some(pb::label::Value::ClassIndex((i % 3 % 2) as u32)),
                });
            }
            Arc::new(batch)
        })
        .collect();
    let send = if setup_only { 3 } else { built.len() };
    let stats = Default::default();
    let pipeline = Pipeline::start(1, 64, settings, None, stats);
    // The first 3 batches capture the profile and fill the trees' first window.
    for (seq, batch) in built.into_iter().enumerate() {
        if seq >= send {
            // Freed here instead of in the shard, as the shard frees a batch it has processed.
            drop(batch);
            continue;
        }
        let declarations = if seq == 0 {
            let declaration = Declaration::from_pb(&batch.declarations[0]);
            vec![(ModelKey::new("loadgen", "1"), Arc::new(declaration))]
        } else {
            Vec::new()
        };
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
