//! Drift's per-record cost: one bin lookup per numeric feature into the live window state, for
//! 16, 64 and 256 features (records and the reference profile are built before timing).
//!
//! cargo bench --bench drift

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use inferscope::{
    demo::load_test_batch,
    drift::{
        model::{DriftSettings, ModelDrift},
        profile::{FeatureProfile, NumericColumn, Profile, ProfileSettings, FORMAT},
    },
    models::{Declaration, ModelKey},
};
use std::{hint::black_box, sync::Arc};

fn drift(c: &mut Criterion) {
    let mut group = c.benchmark_group("drift_per_record");
    for features in [16, 64, 256] {
        let load = load_test_batch(0, 1000, features);
        let declaration = Arc::new(Declaration::from_pb(&load.declarations[0]));
        // The reference: the same generator's values, profiled as the CLI would.
        let mut columns = vec![NumericColumn::default(); features];
        for r in &load.records {
            for (column, &v) in columns.iter_mut().zip(&r.numeric_features) {
                column.push(Some(v));
            }
        }
        let profile = Arc::new(Profile {
            format: FORMAT.into(),
            model: "loadgen".into(),
            version: "1".into(),
            source: "bench".into(),
            created_unix_seconds: 0,
            records: 1000,
            features: columns
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    FeatureProfile::Numeric(c.finish(
                        &format!("f{i}"),
                        ProfileSettings::default(),
                        1,
                    ))
                })
                .collect(),
        });
        let model = || {
            let mut m = ModelDrift::new(&DriftSettings::default(), ModelKey::new("loadgen", "1"));
            m.declare(declaration.clone());
            m.set_profile(profile.clone(), 0);
            m
        };
        group.throughput(Throughput::Elements(load.records.len() as u64));
        group.bench_function(format!("{features}_features"), |b| {
            b.iter_batched_ref(
                model,
                |m| {
                    let mut flags = Vec::new();
                    for r in &load.records {
                        black_box(m.update(black_box(r), 1, &mut flags));
                        flags.clear();
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, drift);
criterion_main!(benches);
