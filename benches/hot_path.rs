//! The per-record hot path in the shard and in ingest: validating a record and accounting it in
//! its model's operational state. Inputs are built before timing.
//!
//! cargo bench --bench hot_path

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use inferscope::{
    demo::load_test_batch,
    models::Declaration,
    operational::ModelOps,
    pb,
    quality::{LabelJoin, ModelQuality, QualitySettings},
    validation,
};
use std::hint::black_box;

/// `RecordBatch` as prost generates it (decoded all or nothing): the baseline for
/// `src/wire.rs`'s record-by-record decoding.
#[derive(Clone, PartialEq, prost::Message)]
struct GeneratedBatch {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(string, tag = "2")]
    model: String,
    #[prost(string, tag = "3")]
    version: String,
    #[prost(message, repeated, tag = "4")]
    declarations: Vec<pb::ModelDeclaration>,
    #[prost(message, repeated, tag = "5")]
    records: Vec<pb::InferenceRecord>,
}

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
    // The ingest memory budget's share of a batch: its encoded size, once per batch.
    group.bench_function("batch_encoded_len", |b| {
        use prost::Message;
        b.iter(|| black_box(&load).encoded_len())
    });
    // Decoding a batch, record by record (src/wire.rs) and as prost generates it.
    let encoded = prost::Message::encode_to_vec(&load);
    group.bench_function("decode_batch", |b| {
        use prost::Message;
        b.iter(|| pb::RecordBatch::decode(black_box(encoded.as_slice())).unwrap())
    });
    group.bench_function("decode_batch_generated", |b| {
        use prost::Message;
        b.iter(|| GeneratedBatch::decode(black_box(encoded.as_slice())).unwrap())
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
    let settings = QualitySettings::default();
    let quality = || {
        let mut q = ModelQuality::new(0, &settings, 0);
        q.declare(&declaration);
        q
    };
    let mut labelled = load.records.clone();
    for (i, r) in labelled.iter_mut().enumerate() {
        r.label = Some(pb::Label {
            value: Some(pb::label::Value::ClassIndex((i % 3 % 2) as u32)),
        });
    }
    // A record with its label: prediction, truth, confusion matrix, score curve, losses.
    group.bench_function("quality_inline_label", |b| {
        b.iter_batched_ref(
            quality,
            |q| {
                for r in &labelled {
                    let p = q.prediction(black_box(r)).unwrap();
                    q.count_prediction(&p);
                    let t = q.truth(&p, r.label.as_ref().unwrap()).unwrap();
                    q.observe(&p, t).unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    // A record whose label comes later, into a full pending store (the steady state when labels
    // never come), through the shard's own join: prediction, key hashing, the early-label lookup,
    // one insert, one eviction.
    let full = |capacity: usize| {
        let settings = QualitySettings {
            max_pending: capacity,
            ..QualitySettings::default()
        };
        let mut join = LabelJoin::new(&settings);
        let mut q = quality();
        let mut warm = load.records[0].clone();
        for i in 0..capacity {
            warm.request_id = format!("warm-{i}");
            join.on_prediction(&mut q, &warm, 0, 0);
        }
        (join, q)
    };
    group.bench_function("quality_pending_full_store_100k", |b| {
        b.iter_batched_ref(
            || full(100_000),
            |(join, q)| {
                for r in batch {
                    black_box(join.on_prediction(q, black_box(r), 1, 0));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
