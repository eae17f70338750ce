//! Drift instruments: per feature and window, the scores the shards computed at snapshot time;
//! per model and window, the drifted-feature count and the dataset drift flag; per model, the
//! feature names past `--max-features-per-model` (from the model's start, profile or not).
//! Undefined scores (no values of the feature in the window) are left out.

use super::{
    builder::{model_attributes, model_since, with, MetricsBuilder, Point},
    snapshot::SidecarSnapshot,
};

/// (name, unit, description) of each per-feature gauge, in the order of `values` below.
const FEATURE_GAUGES: [(&str, &str, &str); 15] = [
    ("inferscope.drift.psi", "", "Population stability index against the reference's decile bins (empty bins 1e-4)."),
    ("inferscope.drift.js_distance", "1", "Jensen–Shannon distance (base 2) against the reference: decile bins for numeric features, categories for categorical ones."),
    ("inferscope.drift.ks_statistic", "", "Two-sample Kolmogorov–Smirnov statistic against the reference (exact for small windows, else from percentile bins)."),
    ("inferscope.drift.ks_statistic.error_bound", "", "Largest possible difference between inferscope.drift.ks_statistic and the exact statistic (0 when exact)."),
    ("inferscope.drift.ks_pvalue", "1", "p-value of the KS statistic: exact as scipy.stats.ks_2samp for exact windows, asymptotic (Kolmogorov) for binned ones."),
    ("inferscope.drift.wasserstein", "", "First Wasserstein distance to the reference, in the feature's unit (exact for small windows, else from percentile bins)."),
    ("inferscope.drift.wasserstein.error_bound", "", "Largest possible difference between inferscope.drift.wasserstein and the exact distance (0 when exact)."),
    ("inferscope.drift.chi_square", "", "Pearson chi-square of the window's category counts against the reference shares."),
    ("inferscope.drift.chi_square_pvalue", "1", "p-value of the chi-square statistic."),
    ("inferscope.drift.unseen", "1", "Share of categorical values outside the reference's kept categories."),
    ("inferscope.drift.missing", "1", "Share of the feature's values that were missing (absent or NaN)."),
    ("inferscope.drift.non_finite", "1", "Share of the feature's values that were infinite."),
    ("inferscope.drift.out_of_range", "1", "Share of finite values outside the reference's [min, max]."),
    ("inferscope.drift.sample_size", "{value}", "Values of the feature in the window."),
    ("inferscope.drift.detected", "", "1 when the feature has drifted in the window (PSI or JS distance at or above its threshold), else 0."),
];

pub(super) fn encode(b: &mut MetricsBuilder, snapshot: &SidecarSnapshot) {
    let mut per_feature: Vec<Vec<Point<Option<f64>>>> = vec![Vec::new(); FEATURE_GAUGES.len()];
    let mut drifted = Vec::new();
    let mut dataset = Vec::new();
    let mut overflow = Vec::new();
    let mut reference = Vec::new();
    let mut created = Vec::new();
    for (key, drift) in &snapshot.drift {
        let since = model_since(snapshot, key, b.start);
        let base = model_attributes(key);
        overflow.push((since, base.clone(), drift.features_overflowed as i64));
        if !drift.source.is_empty() {
            let at = with(base.clone(), "source", &drift.source);
            reference.push((since, at.clone(), Some(1.0)));
            created.push((since, at, Some(drift.reference_created as f64)));
        }
        for window in &drift.windows {
            let at = with(base.clone(), "window", &window.window);
            drifted.push((since, at.clone(), Some(window.drifted_features as f64)));
            dataset.push((
                since,
                at.clone(),
                Some(if window.dataset_drift { 1.0 } else { 0.0 }),
            ));
            for f in &window.features {
                let attributes = with(at.clone(), "feature", &f.name);
                let values: [Option<f64>; 15] = [
                    f.psi,
                    f.js_distance,
                    f.ks.map(|e| e.value),
                    f.ks.map(|e| e.error_bound),
                    f.ks_pvalue,
                    f.wasserstein.map(|e| e.value),
                    f.wasserstein.map(|e| e.error_bound),
                    f.chi_square.map(|c| c.0),
                    f.chi_square.map(|c| c.1),
                    f.unseen_share,
                    f.missing_rate,
                    f.non_finite_rate,
                    f.out_of_range_rate,
                    Some(f.values as f64),
                    (f.psi.is_some() || f.js_distance.is_some()).then_some(if f.drifted {
                        1.0
                    } else {
                        0.0
                    }),
                ];
                for (points, value) in per_feature.iter_mut().zip(values) {
                    points.push((since, attributes.clone(), value));
                }
            }
        }
    }
    for ((name, unit, description), points) in FEATURE_GAUGES.iter().zip(per_feature) {
        b.gauge_double(name, unit, description, points);
    }
    b.gauge_double(
        "inferscope.drift.drifted_features",
        "{feature}",
        "Features that have drifted in the window.",
        drifted,
    );
    b.gauge_double(
        "inferscope.drift.dataset_drift",
        "",
        "1 when the share of drifted features is at or above --dataset-drift-share (Evidently's dataset drift), else 0.",
        dataset,
    );
    b.gauge_double(
        "inferscope.drift.reference.info",
        "",
        "1 for the reference profile a model version's drift is measured against, with its source (the profile file's, or live:first-N for a live capture and CaptureReference).",
        reference,
    );
    b.gauge_double(
        "inferscope.drift.reference.created_time",
        "s",
        "When the reference profile in use was built or captured, Unix seconds.",
        created,
    );
    b.sum(
        "inferscope.drift.features_overflow",
        "{value}",
        "Feature names not tracked because --max-features-per-model was reached: each occurrence a live capture met, and each feature of a loaded profile past the bound.",
        true,
        overflow,
    );
}
