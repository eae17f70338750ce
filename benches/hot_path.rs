//! The per-record hot path in the shard and in ingest: validating a record and accounting it in
//! its model's operational state. Inputs are built before timing.
//!
//! cargo bench --bench hot_path

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use inferscope::{models::Declaration, operational::ModelOps, pb, validation};
use std::hint::black_box;

fn records(n: usize, features: usize) -> Vec<pb::InferenceRecord> {
    (0..n)
        .map(|i| pb::InferenceRecord {
            request_id: format!("req-{i}"),
            latency_seconds: Some(0.001 + (i % 100) as f64 * 0.0005),
            error_type: if i % 100 == 0 {
                "timeout".into()
            } else {
                String::new()
            },
            numeric_features: (0..features).map(|f| (i * f) as f64 * 0.01).collect(),
            prediction: Some(pb::inference_record::Prediction::Classification(
                pb::Classification {
                    predicted_class_index: Some((i % 2) as u32),
                    class_probabilities: vec![0.3, 0.7],
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .collect()
}

fn declaration(features: usize) -> Declaration {
    Declaration {
        task: pb::TaskType::BinaryClassification,
        class_names: vec!["neg".into(), "pos".into()],
        positive_class: Some("pos".into()),
        numeric_features: (0..features).map(|f| format!("f{f}")).collect(),
        categorical_features: Vec::new(),
        gen_ai_provider: None,
    }
}

fn hot_path(c: &mut Criterion) {
    let batch = records(1000, 32);
    let declaration = declaration(32);
    let limits = validation::Limits::default();
    let mut group = c.benchmark_group("per_record");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("validate_32_features", |b| {
        b.iter(|| {
            for r in &batch {
                black_box(validation::check_record(
                    r,
                    "m",
                    "1",
                    Some(&declaration),
                    &limits,
                ))
                .ok();
            }
        })
    });
    group.bench_function("operational_update", |b| {
        b.iter_batched_ref(
            || ModelOps::new(32),
            |ops| {
                for r in &batch {
                    ops.update(black_box(r));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
