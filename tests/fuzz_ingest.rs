//! Decode, validate and aggregate under arbitrary bytes: every input of the corpus
//! (`tests/data/fuzz/`, plus seeds built here) is decoded as a `RecordBatch` and, when it
//! decodes, taken through ingest and a real shard; then, for `INFERSCOPE_FUZZ_SECONDS` (2 by
//! default, so that `cargo test` stays quick), random mutations of the corpus (byte flips,
//! truncations, insertions, splices) go the same way. Nothing may panic, and every ack must
//! account for its batch exactly.
//!
//! Not coverage-guided: cargo-fuzz needs a nightly toolchain, which this project's machines do
//! not have. `tools/fuzz.sh SECONDS` runs it longer; an input that makes it fail is left in
//! `target/fuzz-current.bin`, for the script to add to the corpus, so that `cargo test` replays
//! it from then on.

use inferscope::{
    config::Config, ingest::Ingest, pb, pipeline::Pipeline, self_metrics::SelfStats,
    server::shard_settings, state::Registries,
};
use prost::Message;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz")
}

/// Structured seeds: the load generator's batch, a declared batch with every prediction kind,
/// labels, NaN and infinite features, over-long strings, a bad traceparent, a record that is not
/// UTF-8.
fn seeds() -> Vec<Vec<u8>> {
    let load = inferscope::demo::load_test_batch(0, 20, 8);
    let mut odd = load.clone();
    odd.records[0].numeric_features[0] = f64::NAN;
    odd.records[1].numeric_features[1] = f64::INFINITY;
    odd.records[2].latency_seconds = Some(1.7e308);
    odd.records[3].traceparent = "00-zz".into();
    odd.records[4].request_id = "r".repeat(5000);
    odd.records[5].label = Some(pb::Label {
        value: Some(pb::label::Value::ClassName("nope".into())),
    });
    odd.records[6].prediction = Some(pb::inference_record::Prediction::Regression(
        pb::Regression { value: 1.0 },
    ));
    odd.records[7].prediction = Some(pb::inference_record::Prediction::Generation(
        pb::Generation {
            input_tokens: 10,
            output_tokens: 0,
            ..Default::default()
        },
    ));
    let mut named = pb::RecordBatch {
        model: "named".into(),
        ..Default::default()
    };
    for i in 0..10 {
        named.records.push(pb::InferenceRecord {
            request_id: format!("n{i}"),
            named_features: vec![pb::NamedFeature {
                name: format!("f{i}"),
                value: Some(pb::named_feature::Value::Category("x".into())),
            }],
            ..Default::default()
        });
    }
    let mut seeds: Vec<Vec<u8>> = [load, odd, named]
        .iter()
        .map(|b| b.encode_to_vec())
        .collect();
    seeds.push(inferscope::demo::encoded_with_invalid_utf8(9, 10, 4).1);
    seeds
}

/// One random change to `input` (or a splice with `other`).
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    match rng.random_range(0..5) {
        0 if !out.is_empty() => {
            let i = rng.random_range(0..out.len());
            out[i] ^= 1 << rng.random_range(0..8);
        }
        1 if !out.is_empty() => {
            let i = rng.random_range(0..out.len());
            out[i] = rng.random();
        }
        2 if !out.is_empty() => out.truncate(rng.random_range(0..out.len())),
        3 => {
            let i = rng.random_range(0..=out.len());
            let n = rng.random_range(1..16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            out.splice(i..i, bytes);
        }
        _ => {
            let cut = rng.random_range(0..=out.len());
            let from = rng.random_range(0..=other.len());
            out.truncate(cut);
            out.extend_from_slice(&other[from..]);
        }
    }
    out
}

/// Takes one input through decode, ingest and a shard; checks the ack accounts for it.
async fn run_one(ingest: &Ingest, bytes: &[u8]) {
    let Ok(batch) = pb::RecordBatch::decode(bytes) else {
        return; // the transport answers a bad message; tests/reliability.rs covers that
    };
    let n = batch.records.len();
    // A whole batch refused (too large, a bad declaration, shed) has nothing to account.
    if let Ok(pending) = ingest.accept_batch(batch) {
        let ack = pending.resolve().await;
        assert_eq!(ack.accepted as usize + ack.rejects.len(), n, "{ack:?}");
        let mut seen: Vec<u32> = ack.rejects.iter().map(|r| r.index).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), ack.rejects.len(), "a record rejected twice");
        assert!(seen.iter().all(|&i| (i as usize) < n));
        assert!(ack.flags.iter().all(|f| (f.index as usize) < n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_bytes_never_crash_and_every_ack_accounts_for_its_batch() {
    let config = Config {
        shards: 1,
        ..Config::default()
    };
    let registries = Registries::new(&config);
    let pipeline = Arc::new(Pipeline::start(
        1,
        64,
        shard_settings(&config, &registries),
        None,
        Arc::new(SelfStats::default()),
    ));
    let ingest = Ingest::new(
        pipeline.clone(),
        &registries,
        &config,
        CancellationToken::new(),
    );
    let mut corpus = seeds();
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            corpus.push(std::fs::read(&path).unwrap());
        }
    }
    for input in &corpus {
        run_one(&ingest, input).await;
    }
    let seconds: f64 = std::env::var("INFERSCOPE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let current = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-current.bin");
    let seed = std::env::var("INFERSCOPE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = StdRng::seed_from_u64(seed);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut runs = 0u64;
    while Instant::now() < until {
        let a = &corpus[rng.random_range(0..corpus.len())];
        let b = &corpus[rng.random_range(0..corpus.len())];
        let mut input = mutate(&mut rng, a, b);
        for _ in 0..rng.random_range(0..4) {
            input = mutate(&mut rng, &input, b);
        }
        // Left behind if this input makes the test fail, for tools/fuzz.sh to keep.
        std::fs::write(&current, &input).unwrap();
        run_one(&ingest, &input).await;
        runs += 1;
    }
    let _ = std::fs::remove_file(&current);
    eprintln!("{runs} mutated inputs in {seconds} s (seed {seed})");
    assert!(runs > 0 || seconds == 0.0);
    pipeline.drain().await;
}
