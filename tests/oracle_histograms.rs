//! `ExplicitHistogram` against golden vectors from NumPy (`tests/oracles/histograms.py`, pinned in
//! `tests/oracles/requirements.txt`): bucket counts with upper-inclusive buckets, count, sum,
//! min and max, for every bound set the exporter uses.

use inferscope::{operational as ops, stats::ExplicitHistogram};
use serde_json::Value;

fn bounds_named(name: &str) -> &'static [f64] {
    match name {
        "LATENCY_BOUNDS" => ops::LATENCY_BOUNDS,
        "GEN_AI_REQUEST_DURATION_BOUNDS" => ops::GEN_AI_REQUEST_DURATION_BOUNDS,
        "GEN_AI_TTFT_BOUNDS" => ops::GEN_AI_TTFT_BOUNDS,
        "GEN_AI_TPOT_BOUNDS" => ops::GEN_AI_TPOT_BOUNDS,
        "GEN_AI_TOKEN_BOUNDS" => ops::GEN_AI_TOKEN_BOUNDS,
        other => panic!("golden data names unknown bounds {other}"),
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn histograms_match_numpy() {
    let golden: Value =
        serde_json::from_str(include_str!("data/histograms.json")).expect("golden json");
    // The generator's bound sets are the crate's: a changed constant must regenerate the data.
    for (name, bounds) in golden["bounds"].as_object().unwrap() {
        assert_eq!(bounds_named(name), floats(bounds).as_slice(), "{name}");
    }
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 30);
    for case in cases {
        let label = format!("{} / {}", case["bounds"], case["dataset"]);
        let mut h = ExplicitHistogram::new(bounds_named(case["bounds"].as_str().unwrap()));
        for v in floats(&case["values"]) {
            h.update(v);
        }
        let counts: Vec<u64> = case["bucket_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        assert_eq!(h.bucket_counts(), counts.as_slice(), "{label}");
        assert_eq!(h.count(), case["count"].as_u64().unwrap(), "{label}");
        let want = case["sum"].as_f64().unwrap();
        // NumPy sums pairwise, the histogram sequentially: equal up to rounding.
        assert!(
            (h.sum() - want).abs() <= 1e-12 * want.abs().max(1.0),
            "{label}: {} vs {want}",
            h.sum()
        );
        assert_eq!(h.min(), case["min"].as_f64(), "{label}");
        assert_eq!(h.max(), case["max"].as_f64(), "{label}");
    }
}
