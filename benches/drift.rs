//! Drift's per-record cost: one bin lookup per numeric feature into the live window state, for
//! 16, 64 and 256 features (records and the reference profile are built before timing), with the
//! profile-based anomaly checks (range, category, robust z) and with or without the Half-Space
//! Trees; the profile-free anomaly detectors (latency, confidence) per record; and one fine-bin
//! lookup, the binary search against the grid index, on uniform and on log-normal references.
//!
//! cargo bench --bench drift

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use inferscope::{
    anomaly::{features::FeatureDetectors, AnomalySettings, RecordDetectors},
    demo::load_test_batch,
    drift::{
        bins::BinIndex,
        model::{DriftSettings, ModelDrift},
        profile::{bin_of, FeatureProfile, NumericColumn, Profile, ProfileSettings, FORMAT},
    },
    models::{Declaration, ModelKey},
};
use std::{hint::black_box, sync::Arc};

fn drift(c: &mut Criterion) {
    let mut group = c.benchmark_group("drift_per_record");
    for (features, trees) in [(16, 0), (16, 10), (32, 0), (32, 10), (64, 10), (256, 10)] {
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
        let anomaly = Arc::new(AnomalySettings {
            hst_trees: trees,
            ..Default::default()
        });
        let key = ModelKey::new("loadgen", "1");
        let model = || {
            let mut m = ModelDrift::new(&DriftSettings::default(), key.clone());
            m.declare(declaration.clone());
            m.set_profile(profile.clone(), 0);
            let mut checks = FeatureDetectors::new(anomaly.clone());
            checks.declare(&declaration);
            checks.set_profile(profile.clone(), &key, m.max_features());
            (m, checks)
        };
        group.throughput(Throughput::Elements(load.records.len() as u64));
        let name = match trees {
            0 => format!("{features}_features"),
            t => format!("{features}_features_hst_{t}_trees"),
        };
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                model,
                |(m, checks)| {
                    let mut flags = Vec::new();
                    for r in &load.records {
                        black_box(m.update(black_box(r), 1, &mut checks.observer(&mut flags)));
                        flags.clear();
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn record_detectors(c: &mut Criterion) {
    let mut group = c.benchmark_group("anomaly_per_record");
    let load = load_test_batch(0, 1000, 32);
    group.throughput(Throughput::Elements(load.records.len() as u64));
    group.bench_function("record_detectors", |b| {
        b.iter_batched_ref(
            || {
                // Warmed up: the latency quantile is estimated and flags can be raised.
                let mut d = RecordDetectors::new(Arc::new(AnomalySettings::default()));
                let mut flags = Vec::new();
                for _ in 0..2 {
                    for r in &load.records {
                        d.check(r, &mut flags);
                    }
                }
                d
            },
            |d| {
                let mut flags = Vec::new();
                for r in &load.records {
                    d.check(black_box(r), &mut flags);
                    flags.clear();
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// 1000 values looked up among the fine edges of a reference of the same distribution: the
/// load generator's uniform values, and a log-normal (σ = 1.5) whose quantiles bunch near 0.
fn bin_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("bin_lookup");
    let uniform: Vec<f64> = load_test_batch(0, 4000, 1)
        .records
        .iter()
        .map(|r| r.numeric_features[0])
        .collect();
    // A standardised sum of four uniforms is near normal (variance 4/12 before scaling).
    let log_normal: Vec<f64> = uniform
        .chunks(4)
        .map(|c| (1.5 * (c.iter().sum::<f64>() / 10.0 - 2.0) * 3f64.sqrt()).exp())
        .collect();
    for (name, values) in [
        ("uniform", &uniform[..1000]),
        ("log_normal", &log_normal[..]),
    ] {
        let mut column = NumericColumn::default();
        for &v in values {
            column.push(Some(v));
        }
        let edges = column
            .finish("x", ProfileSettings::default(), 1)
            .fine_edges
            .clone();
        let index = BinIndex::new(&edges);
        let probes: Vec<f64> = values.iter().rev().copied().collect();
        group.throughput(Throughput::Elements(probes.len() as u64));
        group.bench_function(format!("{name}_binary_search"), |b| {
            b.iter(|| {
                probes
                    .iter()
                    .map(|&v| bin_of(black_box(&edges), v))
                    .sum::<usize>()
            })
        });
        group.bench_function(format!("{name}_grid"), |b| {
            b.iter(|| {
                probes
                    .iter()
                    .map(|&v| black_box(&index).bin(v))
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, drift, record_detectors, bin_lookup);
criterion_main!(benches);
