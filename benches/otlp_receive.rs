//! The OTLP traces receiver's own work per span (`src/capture`): decoding an
//! `ExportTraceServiceRequest` and mapping its spans to generation records and evaluation labels
//! (`genai::capture`). What follows (validation, dispatch, the shard) is the per-record path that
//! `hot_path` and `examples/loadgen.rs` measure; `examples/otlp_load.rs` measures the whole path
//! through a running sidecar. Inputs are built before timing.
//!
//! cargo bench --bench otlp_receive

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use inferscope::capture::{
    genai::{self, GenAiMapping},
    otlp::load_test_request,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::hint::black_box;

fn otlp_receive(c: &mut Criterion) {
    const SPANS: usize = 512;
    let request = load_test_request(1, SPANS);
    let bytes = request.encode_to_vec();
    let mapping = GenAiMapping::default();
    let mut group = c.benchmark_group("otlp_receive");
    group.throughput(Throughput::Elements(SPANS as u64));
    group.bench_function("decode_512_vllm_spans", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(bytes.as_slice())).unwrap())
    });
    group.bench_function("capture_512_vllm_spans", |b| {
        b.iter(|| genai::capture(black_box(&request), &mapping))
    });
    group.bench_function("decode_and_capture_512_vllm_spans", |b| {
        b.iter(|| {
            let request = ExportTraceServiceRequest::decode(black_box(bytes.as_slice())).unwrap();
            genai::capture(&request, &mapping)
        })
    });
    group.finish();
}

criterion_group!(benches, otlp_receive);
criterion_main!(benches);
