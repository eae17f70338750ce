//! Drift statistics and reference profiles against NumPy and SciPy: the vectors of
//! `tests/data/drift.json` (written by `tests/oracles/drift.py`). Exact statistics within 1e-12
//! (1e-9 relative for p-values), binned KS and Wasserstein within the bound they report, and the
//! profile of a real CSV (scikit-learn's wine data) bin for bin.

mod common;

use common::golden::floats;
use inferscope::drift::{
    build::{build_profile, BuildOptions},
    profile::{bin_of, quantile_edges, FeatureProfile, ProfileSettings},
};
use inferscope::stats::drift;
use serde_json::Value;

fn data() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/drift.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("run tests/oracles/drift.py"))
        .unwrap()
}

fn counts(edges: &[f64], values: &[f64]) -> Vec<f64> {
    let mut c = vec![0.0; edges.len() + 1];
    for &v in values {
        c[bin_of(edges, v)] += 1.0;
    }
    c
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * b.abs().max(1.0)
}

#[test]
fn numeric_statistics_match_scipy() {
    let data = data();
    for case in data["numeric"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (reference, current) = (floats(&case["reference"]), floats(&case["current"]));
        let mut sorted = reference.clone();
        sorted.sort_by(f64::total_cmp);
        // Bins: NumPy's quantile edges, bit for bit.
        let (edges, fine) = (quantile_edges(&sorted, 10), quantile_edges(&sorted, 100));
        assert_eq!(edges, floats(&case["edges"]), "{name}: coarse edges");
        assert_eq!(fine, floats(&case["fine_edges"]), "{name}: fine edges");
        let (rc, cc) = (counts(&edges, &reference), counts(&edges, &current));
        let e = &case["expected"];
        if e.is_null() {
            assert_eq!(drift::psi(&rc, &cc), None, "{name}");
            assert_eq!(drift::js_distance(&rc, &cc), None, "{name}");
            assert_eq!(drift::ks_statistic(&reference, &current), None, "{name}");
            continue;
        }
        let want = |k: &str| e[k].as_f64().unwrap();
        let psi = drift::psi(&rc, &cc).unwrap();
        assert!(close(psi, want("psi"), 1e-12), "{name}: psi {psi}");
        let js = drift::js_distance(&rc, &cc).unwrap();
        assert!(close(js, want("js_distance"), 1e-12), "{name}: js {js}");
        let d = drift::ks_statistic(&reference, &current).unwrap();
        assert!(close(d, want("ks_statistic"), 1e-12), "{name}: ks {d}");
        let (n, m) = (reference.len() as f64, current.len() as f64);
        let p = drift::ks_pvalue(d, n, m);
        assert!(
            (p - want("ks_pvalue")).abs() <= 1e-9 * want("ks_pvalue").max(1e-300),
            "{name}: ks p {p} vs {}",
            want("ks_pvalue")
        );
        let w = drift::wasserstein(&reference, &current).unwrap();
        assert!(close(w, want("wasserstein"), 1e-12), "{name}: w {w}");
        // Binned forms on the fine bins: within their bounds of the exact values.
        let (rf, cf) = (counts(&fine, &reference), counts(&fine, &current));
        let ks = drift::ks_binned(&rf, &cf).unwrap();
        assert!(
            ks.value <= d + 1e-12 && d <= ks.value + ks.error_bound + 1e-12,
            "{name}: binned ks {ks:?} vs {d}"
        );
        let lo = reference
            .iter()
            .chain(&current)
            .copied()
            .fold(f64::INFINITY, f64::min);
        let hi = reference
            .iter()
            .chain(&current)
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let wb = drift::wasserstein_binned(&fine, lo, hi, &rf, &cf).unwrap();
        assert!(
            (wb.value - w).abs() <= wb.error_bound + 1e-9,
            "{name}: binned wasserstein {wb:?} vs {w}"
        );
    }
}

#[test]
fn categorical_statistics_match_scipy() {
    let data = data();
    for case in data["categorical"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (r, c) = (floats(&case["reference"]), floats(&case["current"]));
        let e = &case["expected"];
        let (stat, p) = drift::chi_square(&r, &c).unwrap();
        match &e["chi_square"] {
            Value::String(s) if s == "inf" => assert!(stat.is_infinite(), "{name}"),
            v => assert!(
                close(stat, v.as_f64().unwrap(), 1e-12),
                "{name}: chi2 {stat}"
            ),
        }
        let want_p = e["chi_square_pvalue"].as_f64().unwrap();
        assert!(
            (p - want_p).abs() <= 1e-9 * want_p.max(1e-300),
            "{name}: p {p} vs {want_p}"
        );
        let js = drift::js_distance(&r, &c).unwrap();
        assert!(
            close(js, e["js_distance"].as_f64().unwrap(), 1e-12),
            "{name}: js"
        );
    }
}

#[test]
fn the_profile_of_a_real_csv_matches_numpy() {
    let data = data();
    let wine = &data["wine"];
    let options = BuildOptions {
        input: concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/wine.csv").into(),
        model: "wine".into(),
        version: "1".into(),
        categorical: Vec::new(),
        ignore: Vec::new(),
        prediction: None,
        settings: ProfileSettings::default(),
    };
    let mut last = 0;
    let profile = build_profile(&options, &mut |bytes| last = bytes).unwrap();
    assert_eq!(
        last,
        std::fs::metadata(&options.input).unwrap().len(),
        "progress reaches the end"
    );
    assert_eq!(profile.records, wine["records"].as_u64().unwrap());
    for expected in wine["numeric"].as_array().unwrap() {
        let name = expected["name"].as_str().unwrap();
        let Some(FeatureProfile::Numeric(n)) = profile.feature(name) else {
            panic!("{name} is not a numeric feature of the profile");
        };
        assert_eq!(n.edges, floats(&expected["edges"]), "{name}");
        assert_eq!(n.fine_edges, floats(&expected["fine_edges"]), "{name}");
        let ints = |v: &Value| floats(v).iter().map(|&x| x as u64).collect::<Vec<_>>();
        assert_eq!(n.counts, ints(&expected["counts"]), "{name}");
        assert_eq!(n.fine_counts, ints(&expected["fine_counts"]), "{name}");
        assert_eq!(n.min, expected["min"].as_f64());
        assert_eq!(n.max, expected["max"].as_f64());
        assert!(close(
            n.mean.unwrap(),
            expected["mean"].as_f64().unwrap(),
            1e-12
        ));
        assert!(close(
            n.std.unwrap(),
            expected["std"].as_f64().unwrap(),
            1e-12
        ));
        assert!(n.sample_complete && n.sample.len() as u64 == n.count);
    }
    let Some(FeatureProfile::Categorical(c)) = profile.feature("cultivar") else {
        panic!("cultivar is categorical");
    };
    let got: Vec<(String, u64)> = c
        .categories
        .iter()
        .map(|k| (k.value.clone(), k.count))
        .collect();
    let want: Vec<(String, u64)> = wine["categorical"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k[0].as_str().unwrap().to_owned(), k[1].as_u64().unwrap()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn exact_ks_pvalues_match_ks_2samp() {
    let data = data();
    for case in data["numeric"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let e = &case["expected"];
        if e.is_null() {
            continue;
        }
        let (r, c) = (floats(&case["reference"]), floats(&case["current"]));
        let d = drift::ks_statistic(&r, &c).unwrap();
        let p = drift::ks_exact_pvalue(d, r.len(), c.len()).unwrap();
        let want = e["ks_2samp_pvalue"].as_f64().unwrap();
        assert!(
            (p - want).abs() <= 1e-9 * want.max(1e-300),
            "{name}: exact p {p} vs ks_2samp {want}"
        );
    }
}
