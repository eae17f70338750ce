//! Drift through the real pipeline against SciPy: the cases of `tests/data/drift.json` (written
//! by `tests/oracles/drift.py`) become reference profiles in a `--profiles-dir` and streams of
//! records to a real sidecar; the exported drift scores for each window equal SciPy's on the same
//! values (exact within 1e-12, p-values within 1e-9 relative), or lie within their reported bound
//! where the window is too large for the exact computation.

mod common;

use common::golden::floats;
use inferscope::{
    drift::profile::{
        CategoricalProfile, CategoryCount, FeatureProfile, NumericColumn, Profile, ProfileSettings,
        FORMAT,
    },
    pb,
};
use serde_json::Value;

fn data() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/drift.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn profile(model: &str, feature: FeatureProfile, records: u64) -> Profile {
    Profile {
        format: FORMAT.into(),
        model: model.into(),
        version: "1".into(),
        source: "tests/data/drift.json".into(),
        created_unix_seconds: 0,
        records,
        features: vec![feature],
    }
}

fn declaration(model: &str, kind: pb::FeatureKind, name: &str) -> pb::ModelDeclaration {
    pb::ModelDeclaration {
        model: model.into(),
        version: "1".into(),
        features: vec![pb::FeatureSpec {
            name: name.into(),
            kind: kind as i32,
        }],
        ..Default::default()
    }
}

const CATEGORIES: [&str; 3] = ["red", "green", "blue"];

#[tokio::test]
async fn drift_scores_match_scipy_through_the_pipeline() {
    let data = data();
    let dir = std::env::temp_dir().join(format!("inferscope-drift-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let numeric: Vec<&Value> = data["numeric"].as_array().unwrap().iter().collect();
    let categorical: Vec<&Value> = data["categorical"].as_array().unwrap().iter().collect();
    for case in &numeric {
        let name = case["name"].as_str().unwrap();
        let mut column = NumericColumn::default();
        for v in floats(&case["reference"]) {
            column.push(Some(v));
        }
        let n = case["reference"].as_array().unwrap().len() as u64;
        let p = profile(
            name,
            FeatureProfile::Numeric(column.finish("x", ProfileSettings::default(), 7)),
            n,
        );
        std::fs::write(
            dir.join(format!("{name}.json")),
            serde_json::to_string(&p).unwrap(),
        )
        .unwrap();
    }
    for case in &categorical {
        let name = case["name"].as_str().unwrap();
        let r = floats(&case["reference"]);
        let feature = FeatureProfile::Categorical(CategoricalProfile {
            name: "color".into(),
            count: r.iter().sum::<f64>() as u64,
            missing: 0,
            categories: CATEGORIES
                .iter()
                .zip(&r)
                .map(|(c, &n)| CategoryCount {
                    value: (*c).into(),
                    count: n as u64,
                })
                .collect(),
            other: r[3] as u64,
            drift_threshold: None,
        });
        let p = profile(name, feature, r.iter().sum::<f64>() as u64);
        std::fs::write(
            dir.join(format!("{name}.json")),
            serde_json::to_string(&p).unwrap(),
        )
        .unwrap();
    }

    let mut config = common::config();
    config.profiles_dir = Some(dir.clone());
    config.drift.reference_records = 0;
    let sidecar = common::start(config).await;
    let mut client = sidecar.client().await;
    for case in &numeric {
        let name = case["name"].as_str().unwrap();
        let values = floats(&case["current"]);
        let mut first = common::batch(0, name, Vec::new());
        first.declarations = vec![declaration(name, pb::FeatureKind::Numeric, "x")];
        client.submit_records(first).await.unwrap();
        for (k, chunk) in values.chunks(1000).enumerate() {
            let records = chunk
                .iter()
                .map(|&v| pb::InferenceRecord {
                    numeric_features: vec![v],
                    ..Default::default()
                })
                .collect();
            let ack = client
                .submit_records(common::batch(1 + k as u64, name, records))
                .await
                .unwrap()
                .into_inner();
            assert!(ack.rejects.is_empty(), "{name}: {:?}", ack.rejects);
        }
    }
    for case in &categorical {
        let name = case["name"].as_str().unwrap();
        let c = floats(&case["current"]);
        let mut first = common::batch(0, name, Vec::new());
        first.declarations = vec![declaration(name, pb::FeatureKind::Categorical, "color")];
        client.submit_records(first).await.unwrap();
        // The last count is "other": a category the reference never kept.
        let values: Vec<&str> = CATEGORIES
            .iter()
            .chain(&["purple"])
            .zip(&c)
            .flat_map(|(cat, &n)| std::iter::repeat_n(*cat, n as usize))
            .collect();
        let records = values
            .iter()
            .map(|v| pb::InferenceRecord {
                categorical_features: vec![(*v).into()],
                ..Default::default()
            })
            .collect();
        client
            .submit_records(common::batch(1, name, records))
            .await
            .unwrap();
    }
    let (request, _) = sidecar.stop().await;
    let _ = std::fs::remove_dir_all(&dir);

    let mut failures = Vec::new();
    let mut check = |model: &str,
                     window: &str,
                     feature: &str,
                     metric: &str,
                     want: Option<f64>,
                     tolerance: f64| {
        let got = common::point(
            &request,
            metric,
            &[
                ("inferscope.model.name", model),
                ("inferscope.model.version", "1"),
                ("window", window),
                ("feature", feature),
            ],
        );
        let ok = match (got, want) {
            (Some(g), Some(w)) if w.is_infinite() => g == w,
            (Some(g), Some(w)) => {
                (g - w).abs()
                    <= tolerance * w.abs().max(if tolerance < 1e-10 { 1.0 } else { 1e-300 })
            }
            (None, None) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{model} {window} {metric}: inferscope {got:?}, scipy {want:?}"
            ));
        }
        got
    };
    for window in ["5m", "all"] {
        for case in &numeric {
            let name = case["name"].as_str().unwrap();
            let e = &case["expected"];
            if e.is_null() {
                // No values in the window: no scores.
                check(name, window, "x", "inferscope.drift.psi", None, 0.0);
                continue;
            }
            let want = |k: &str| e[k].as_f64();
            check(
                name,
                window,
                "x",
                "inferscope.drift.psi",
                want("psi"),
                1e-12,
            );
            check(
                name,
                window,
                "x",
                "inferscope.drift.js_distance",
                want("js_distance"),
                1e-12,
            );
            if name == "large_window" {
                // 5000 values, over the exact cap: binned, within the reported bound.
                let at = |metric: &str| {
                    let attrs = [
                        ("inferscope.model.name", name),
                        ("inferscope.model.version", "1"),
                        ("window", window),
                        ("feature", "x"),
                    ];
                    common::point(&request, metric, &attrs).unwrap()
                };
                let ks = at("inferscope.drift.ks_statistic");
                let bound = at("inferscope.drift.ks_statistic.error_bound");
                let exact = want("ks_statistic").unwrap();
                assert!(
                    ks <= exact + 1e-12 && exact <= ks + bound + 1e-12 && bound > 0.0,
                    "{name}: {ks} ± {bound} vs {exact}"
                );
                let w = at("inferscope.drift.wasserstein");
                let wb = at("inferscope.drift.wasserstein.error_bound");
                let exact = want("wasserstein").unwrap();
                assert!(
                    (w - exact).abs() <= wb + 1e-9,
                    "{name}: {w} ± {wb} vs {exact}"
                );
                continue;
            }
            check(
                name,
                window,
                "x",
                "inferscope.drift.ks_statistic",
                want("ks_statistic"),
                1e-12,
            );
            check(
                name,
                window,
                "x",
                "inferscope.drift.ks_statistic.error_bound",
                Some(0.0),
                1e-12,
            );
            check(
                name,
                window,
                "x",
                "inferscope.drift.ks_pvalue",
                want("ks_2samp_pvalue"), // exact windows: ks_2samp's own exact p-value
                1e-9,
            );
            check(
                name,
                window,
                "x",
                "inferscope.drift.wasserstein",
                want("wasserstein"),
                1e-12,
            );
        }
        for case in &categorical {
            let name = case["name"].as_str().unwrap();
            let e = &case["expected"];
            let chi = match &e["chi_square"] {
                Value::String(s) if s == "inf" => Some(f64::INFINITY),
                v => v.as_f64(),
            };
            check(
                name,
                window,
                "color",
                "inferscope.drift.chi_square",
                chi,
                1e-12,
            );
            check(
                name,
                window,
                "color",
                "inferscope.drift.chi_square_pvalue",
                e["chi_square_pvalue"].as_f64(),
                1e-9,
            );
            check(
                name,
                window,
                "color",
                "inferscope.drift.js_distance",
                e["js_distance"].as_f64(),
                1e-12,
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
