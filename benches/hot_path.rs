//! The per-record hot path in the shard and in ingest: validating a record and accounting it in
//! its model's operational state. Inputs are built before timing.
//!
//! cargo bench --bench hot_path

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use inferscope::{demo::load_test_batch, models::Declaration, operational::ModelOps, validation};
use std::hint::black_box;

fn hot_path(c: &mut Criterion) {
    let load = load_test_batch(0, 1000, 32);
    let batch = &load.records;
    let declaration = Declaration::from_pb(&load.declarations[0]);
    let limits = validation::Limits::default();
    let mut group = c.benchmark_group("per_record");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("validate_32_features", |b| {
        b.iter(|| {
            for r in batch {
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
                for r in batch {
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
