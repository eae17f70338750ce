//! Anomaly detector settings: defaults for every model, overridden per model name in the config
//! file (`[anomaly]` and `[anomaly.models."<model>"]`). Each default says why it was chosen.

use serde::Deserialize;
use std::{collections::HashMap, sync::Arc};

/// Range widths past the reference's [min, max] before a value is flagged out of range. 0.25: a
/// fresh value of a continuous feature lands just outside the range of n reference values with
/// probability 2/(n + 1) (0.1 % at n = 2 000, so 3 % of the records of a 32-feature model); a
/// quarter width past it, a Gaussian feature's value is over 5σ out (3·10⁻⁷).
pub const DEFAULT_OUT_OF_RANGE_MARGIN: f64 = 0.25;
/// Robust z-score over which a numeric feature is an outlier: |x − median| / (1.4826·MAD) of the
/// reference. 5 rather than Iglewicz & Hoaglin's 3.5: at 3.5 a Gaussian feature flags about
/// 1 value in 2 000, so a record of 32 such features would be flagged 1.5 % of the time; at 5 it
/// is about 1 in 1.7 million per feature.
pub const DEFAULT_FEATURE_OUTLIER_Z: f64 = 5.0;
/// Margin between the two most probable classes under which a prediction has low confidence.
/// 0.05: a coin toss between two classes; wider margins flag a large share of the records of any
/// model that is unsure by design, and every flagged record costs a span.
pub const DEFAULT_LOW_CONFIDENCE_MARGIN: f64 = 0.05;
/// Upper quantile of the model's own recent latency, output tokens and time per output token
/// that the factors below multiply. p99: stable with a few thousand values (the estimate
/// covers 10 000 to 20 000), yet in the tail.
pub const DEFAULT_TAIL_QUANTILE: f64 = 0.99;
/// A latency over 3 × the model's own p99 is an outlier: a healthy long tail stays under it
/// (p99.9 is commonly 1.5–2.5 × p99), a stall or a retry storm does not.
pub const DEFAULT_LATENCY_FACTOR: f64 = 3.0;
/// The same rule for output tokens (runaway generations).
pub const DEFAULT_OUTPUT_TOKENS_FACTOR: f64 = 3.0;
/// The same rule for time per output token (a slow decode, a saturated GPU).
pub const DEFAULT_TIME_PER_TOKEN_FACTOR: f64 = 3.0;
/// Values per epoch of the streaming quantiles: the estimate covers the last 1 to 2 epochs, so it
/// follows a model whose latency moves over minutes at production rates.
pub const DEFAULT_TAIL_EPOCH: u32 = 10_000;
/// Values seen before tail outliers are flagged: a p99 from fewer than 1 000 values rests on
/// fewer than 10 of them.
pub const DEFAULT_TAIL_WARMUP: u64 = 1_000;
/// Half-Space Trees: river's defaults (10 trees of height 8, windows of 250 records), which the
/// evaluation in BENCHMARKS.md measures; the cost grows linearly with trees and height + 1.
pub const DEFAULT_HST_TREES: usize = 10;
pub const DEFAULT_HST_HEIGHT: u32 = 8;
pub const DEFAULT_HST_WINDOW: u32 = 250;
/// A record is a multivariate outlier when its Half-Space Trees mass is under this share of the
/// model's recent median mass. 0.4 on the evaluation streams of BENCHMARKS.md (2 % anomalies,
/// the rule as the sidecar runs it): 0.05 % of ordinary records flagged, 31 % of the anomalies,
/// 93 % of flags right; 0.5 finds 42 % but flags 8 times as many ordinary records (68 % right).
pub const DEFAULT_HST_MASS_RATIO: f64 = 0.4;
/// Intervals (metric exports) that fix the in-control level of a series before its change
/// detectors run: 30 (7.5 minutes at the default 15 s export) keeps the error of the robust σ
/// estimate near 20 %; with 10 points one warm-up in six would underestimate σ by 30 %.
pub const DEFAULT_CHANGE_WARMUP: u64 = 30;
/// Records (or labelled pairs, for accuracy and MAE) an interval needs to give a point of a
/// series: fewer make rates too noisy to compare.
pub const DEFAULT_CHANGE_MIN_RECORDS: u64 = 30;
/// The change detectors watch each series standardised by its warm-up (median, and MAD with a
/// floor per series), so their parameters are in σ. Chosen with `tools/calibrate-change.py`
/// (river 0.22 for Page-Hinkley and ADWIN; NumPy for the charts) for about 10 000 in-control
/// points between false alarms of one detector (two days at a 15 s export) while a 3σ shift is
/// caught in 3 to 6 points (median delays: CUSUM 4, EWMA 3, Page-Hinkley 6, ADWIN 10). CUSUM:
/// k = 0.5 (fastest on a 1σ shift), h = 8 (the textbook h = 5 alarms every ~500 points: two
/// hours).
pub const DEFAULT_CUSUM_K: f64 = 0.5;
pub const DEFAULT_CUSUM_H: f64 = 8.0;
/// EWMA weight and limit width: λ = 0.2, L = 4 (the textbook L = 3 alarms every ~600 points).
pub const DEFAULT_EWMA_LAMBDA: f64 = 0.2;
pub const DEFAULT_EWMA_L: f64 = 4.0;
/// Page-Hinkley: δ = 0.5 (as CUSUM's k), λ = 15.
pub const DEFAULT_PAGE_HINKLEY_DELTA: f64 = 0.5;
pub const DEFAULT_PAGE_HINKLEY_THRESHOLD: f64 = 15.0;
/// ADWIN's confidence (river's default): no false alarm in 40 000 calm points; slower (10 points
/// for a 3σ shift), it catches gradual changes the others miss.
pub const DEFAULT_ADWIN_DELTA: f64 = 0.002;
/// Flags returned per record (in its ack entry and span): past it the rest are counted in
/// `inferscope.anomaly.flags_truncated` only, so that a batch of broken records cannot make an
/// ack larger than a gRPC message (10 000 records × 8 flags ≈ 5 MB).
pub const MAX_FLAGS_PER_RECORD: usize = 8;
/// Half-Space Trees nodes per model version at most (trees × (2^(height+1) − 1)): 16 MB.
pub const MAX_HST_NODES: usize = 1 << 20;

/// The detectors of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySettings {
    pub missing_feature: bool,
    pub non_finite_feature: bool,
    /// Negative: off.
    pub out_of_range_margin: f64,
    pub unseen_category: bool,
    /// 0: off.
    pub feature_outlier_z: f64,
    /// 0: off.
    pub low_confidence_margin: f64,
    pub tail_quantile: f64,
    /// 0: off.
    pub latency_factor: f64,
    /// 0: off.
    pub output_tokens_factor: f64,
    /// 0: off.
    pub time_per_token_factor: f64,
    pub tail_epoch: u32,
    pub tail_warmup: u64,
    pub empty_output: bool,
    /// 0: off.
    pub hst_trees: usize,
    pub hst_height: u32,
    pub hst_window: u32,
    pub hst_mass_ratio: f64,
    pub change_detection: bool,
    pub change_warmup: u64,
    pub change_min_records: u64,
    pub cusum_k: f64,
    pub cusum_h: f64,
    pub ewma_lambda: f64,
    pub ewma_l: f64,
    pub page_hinkley_delta: f64,
    pub page_hinkley_threshold: f64,
    pub adwin_delta: f64,
    /// Which of `page_hinkley`, `adwin`, `cusum`, `ewma` run.
    pub change_detectors: Vec<String>,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        Self {
            missing_feature: true,
            non_finite_feature: true,
            out_of_range_margin: DEFAULT_OUT_OF_RANGE_MARGIN,
            unseen_category: true,
            feature_outlier_z: DEFAULT_FEATURE_OUTLIER_Z,
            low_confidence_margin: DEFAULT_LOW_CONFIDENCE_MARGIN,
            tail_quantile: DEFAULT_TAIL_QUANTILE,
            latency_factor: DEFAULT_LATENCY_FACTOR,
            output_tokens_factor: DEFAULT_OUTPUT_TOKENS_FACTOR,
            time_per_token_factor: DEFAULT_TIME_PER_TOKEN_FACTOR,
            tail_epoch: DEFAULT_TAIL_EPOCH,
            tail_warmup: DEFAULT_TAIL_WARMUP,
            empty_output: true,
            hst_trees: DEFAULT_HST_TREES,
            hst_height: DEFAULT_HST_HEIGHT,
            hst_window: DEFAULT_HST_WINDOW,
            hst_mass_ratio: DEFAULT_HST_MASS_RATIO,
            change_detection: true,
            change_warmup: DEFAULT_CHANGE_WARMUP,
            change_min_records: DEFAULT_CHANGE_MIN_RECORDS,
            cusum_k: DEFAULT_CUSUM_K,
            cusum_h: DEFAULT_CUSUM_H,
            ewma_lambda: DEFAULT_EWMA_LAMBDA,
            ewma_l: DEFAULT_EWMA_L,
            page_hinkley_delta: DEFAULT_PAGE_HINKLEY_DELTA,
            page_hinkley_threshold: DEFAULT_PAGE_HINKLEY_THRESHOLD,
            adwin_delta: DEFAULT_ADWIN_DELTA,
            change_detectors: ["page_hinkley", "adwin", "cusum", "ewma"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Settings for every model: the defaults and the models that override them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnomalyConfig {
    pub defaults: Arc<AnomalySettings>,
    pub models: HashMap<String, Arc<AnomalySettings>>,
}

impl AnomalyConfig {
    pub fn for_model(&self, model: &str) -> Arc<AnomalySettings> {
        self.models.get(model).unwrap_or(&self.defaults).clone()
    }
}

/// `[anomaly]` or `[anomaly.models."<model>"]` of the config file: any subset of the settings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyFile {
    pub missing_feature: Option<bool>,
    pub non_finite_feature: Option<bool>,
    pub out_of_range_margin: Option<f64>,
    pub unseen_category: Option<bool>,
    pub feature_outlier_z: Option<f64>,
    pub low_confidence_margin: Option<f64>,
    pub tail_quantile: Option<f64>,
    pub latency_factor: Option<f64>,
    pub output_tokens_factor: Option<f64>,
    pub time_per_token_factor: Option<f64>,
    pub tail_epoch: Option<u32>,
    pub tail_warmup: Option<u64>,
    pub empty_output: Option<bool>,
    pub hst_trees: Option<usize>,
    pub hst_height: Option<u32>,
    pub hst_window: Option<u32>,
    pub hst_mass_ratio: Option<f64>,
    pub change_detection: Option<bool>,
    pub change_warmup: Option<u64>,
    pub change_min_records: Option<u64>,
    pub cusum_k: Option<f64>,
    pub cusum_h: Option<f64>,
    pub ewma_lambda: Option<f64>,
    pub ewma_l: Option<f64>,
    pub page_hinkley_delta: Option<f64>,
    pub page_hinkley_threshold: Option<f64>,
    pub adwin_delta: Option<f64>,
    pub change_detectors: Option<Vec<String>>,
    /// Per model name; only in `[anomaly]`.
    #[serde(default)]
    pub models: HashMap<String, AnomalyFile>,
}

/// A setting out of its range: the setting's path in the file and what is allowed.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting} = {value}: {fix}")]
pub struct AnomalySettingError {
    pub setting: String,
    pub value: String,
    pub fix: &'static str,
}

impl AnomalyFile {
    /// The defaults overridden by `[anomaly]`, then each model's section over those.
    pub fn resolve(&self) -> Result<AnomalyConfig, AnomalySettingError> {
        let defaults = self.apply(&AnomalySettings::default(), "anomaly")?;
        let mut models = HashMap::new();
        for (name, section) in &self.models {
            let path = format!("anomaly.models.\"{name}\"");
            if !section.models.is_empty() {
                return Err(AnomalySettingError {
                    setting: format!("{path}.models"),
                    value: "…".into(),
                    fix: "per-model sections go directly under [anomaly.models]",
                });
            }
            models.insert(name.clone(), Arc::new(section.apply(&defaults, &path)?));
        }
        Ok(AnomalyConfig {
            defaults: Arc::new(defaults),
            models,
        })
    }

    fn apply(
        &self,
        base: &AnomalySettings,
        path: &str,
    ) -> Result<AnomalySettings, AnomalySettingError> {
        let bad = |name: &str, value: String, fix: &'static str| AnomalySettingError {
            setting: format!("{path}.{name}"),
            value,
            fix,
        };
        let non_negative = |name: &str, v: Option<f64>, base: f64| match v {
            Some(x) if !(x >= 0.0 && x.is_finite()) => Err(bad(
                name,
                x.to_string(),
                "use a finite number ≥ 0 (0 turns the detector off)",
            )),
            Some(x) => Ok(x),
            None => Ok(base),
        };
        let positive = |name: &str, v: Option<f64>, base: f64| match v {
            Some(x) if !(x > 0.0 && x.is_finite()) => {
                Err(bad(name, x.to_string(), "use a finite number > 0"))
            }
            Some(x) => Ok(x),
            None => Ok(base),
        };
        let s = AnomalySettings {
            missing_feature: self.missing_feature.unwrap_or(base.missing_feature),
            non_finite_feature: self.non_finite_feature.unwrap_or(base.non_finite_feature),
            out_of_range_margin: self.out_of_range_margin.unwrap_or(base.out_of_range_margin),
            unseen_category: self.unseen_category.unwrap_or(base.unseen_category),
            feature_outlier_z: non_negative(
                "feature_outlier_z",
                self.feature_outlier_z,
                base.feature_outlier_z,
            )?,
            low_confidence_margin: non_negative(
                "low_confidence_margin",
                self.low_confidence_margin,
                base.low_confidence_margin,
            )?,
            tail_quantile: self.tail_quantile.unwrap_or(base.tail_quantile),
            latency_factor: non_negative(
                "latency_factor",
                self.latency_factor,
                base.latency_factor,
            )?,
            output_tokens_factor: non_negative(
                "output_tokens_factor",
                self.output_tokens_factor,
                base.output_tokens_factor,
            )?,
            time_per_token_factor: non_negative(
                "time_per_token_factor",
                self.time_per_token_factor,
                base.time_per_token_factor,
            )?,
            tail_epoch: self.tail_epoch.unwrap_or(base.tail_epoch),
            tail_warmup: self.tail_warmup.unwrap_or(base.tail_warmup),
            empty_output: self.empty_output.unwrap_or(base.empty_output),
            hst_trees: self.hst_trees.unwrap_or(base.hst_trees),
            hst_height: self.hst_height.unwrap_or(base.hst_height),
            hst_window: self.hst_window.unwrap_or(base.hst_window),
            hst_mass_ratio: non_negative(
                "hst_mass_ratio",
                self.hst_mass_ratio,
                base.hst_mass_ratio,
            )?,
            change_detection: self.change_detection.unwrap_or(base.change_detection),
            change_warmup: self.change_warmup.unwrap_or(base.change_warmup),
            change_min_records: self.change_min_records.unwrap_or(base.change_min_records),
            cusum_k: non_negative("cusum_k", self.cusum_k, base.cusum_k)?,
            cusum_h: positive("cusum_h", self.cusum_h, base.cusum_h)?,
            ewma_lambda: positive("ewma_lambda", self.ewma_lambda, base.ewma_lambda)?,
            ewma_l: positive("ewma_l", self.ewma_l, base.ewma_l)?,
            page_hinkley_delta: non_negative(
                "page_hinkley_delta",
                self.page_hinkley_delta,
                base.page_hinkley_delta,
            )?,
            page_hinkley_threshold: positive(
                "page_hinkley_threshold",
                self.page_hinkley_threshold,
                base.page_hinkley_threshold,
            )?,
            adwin_delta: positive("adwin_delta", self.adwin_delta, base.adwin_delta)?,
            change_detectors: self
                .change_detectors
                .clone()
                .unwrap_or_else(|| base.change_detectors.clone()),
        };
        if let Some(d) = s
            .change_detectors
            .iter()
            .find(|d| !["page_hinkley", "adwin", "cusum", "ewma"].contains(&d.as_str()))
        {
            return Err(bad(
                "change_detectors",
                d.clone(),
                "list any of \"page_hinkley\", \"adwin\", \"cusum\", \"ewma\"",
            ));
        }
        if s.ewma_lambda > 1.0 {
            return Err(bad(
                "ewma_lambda",
                s.ewma_lambda.to_string(),
                "use a weight in (0, 1]",
            ));
        }
        if s.adwin_delta >= 1.0 {
            return Err(bad(
                "adwin_delta",
                s.adwin_delta.to_string(),
                "use a confidence in (0, 1)",
            ));
        }
        if !s.out_of_range_margin.is_finite() {
            return Err(bad(
                "out_of_range_margin",
                s.out_of_range_margin.to_string(),
                "use a finite number of range widths (negative turns the check off)",
            ));
        }
        if s.hst_mass_ratio > 1.0 {
            return Err(bad(
                "hst_mass_ratio",
                s.hst_mass_ratio.to_string(),
                "use a share of the median mass from 0 to 1",
            ));
        }
        if !(s.tail_quantile > 0.0 && s.tail_quantile < 1.0) {
            return Err(bad(
                "tail_quantile",
                s.tail_quantile.to_string(),
                "use a quantile strictly between 0 and 1, such as 0.99",
            ));
        }
        if s.tail_epoch < 256 {
            return Err(bad(
                "tail_epoch",
                s.tail_epoch.to_string(),
                "use at least 256 values",
            ));
        }
        if s.hst_trees > 100 {
            return Err(bad(
                "hst_trees",
                s.hst_trees.to_string(),
                "use at most 100 trees (0 turns Half-Space Trees off)",
            ));
        }
        if !(1..=16).contains(&s.hst_height) {
            return Err(bad(
                "hst_height",
                s.hst_height.to_string(),
                "use a height from 1 to 16",
            ));
        }
        if s.hst_trees * ((1usize << (s.hst_height + 1)) - 1) > MAX_HST_NODES {
            return Err(bad(
                "hst_trees",
                s.hst_trees.to_string(),
                "trees × (2^(height+1) − 1) nodes must stay within 1 048 576 (16 MB per model \
                 version): fewer trees or a lower height",
            ));
        }
        if !(10..=65_535).contains(&s.hst_window) {
            return Err(bad(
                "hst_window",
                s.hst_window.to_string(),
                "use windows of 10 to 65 535 records",
            ));
        }
        if s.change_warmup < 2 {
            return Err(bad(
                "change_warmup",
                s.change_warmup.to_string(),
                "use at least 2 intervals",
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_section_overrides_the_file_defaults_which_override_the_built_in_ones() {
        let file: AnomalyFile = toml::from_str(
            r#"
            latency_factor = 5.0
            [models."fraud"]
            low_confidence_margin = 0.2
            hst_trees = 0
            "#,
        )
        .unwrap();
        let config = file.resolve().unwrap();
        let fraud = config.for_model("fraud");
        assert_eq!(fraud.latency_factor, 5.0);
        assert_eq!(fraud.low_confidence_margin, 0.2);
        assert_eq!(fraud.hst_trees, 0);
        let other = config.for_model("other");
        assert_eq!(other.latency_factor, 5.0);
        assert_eq!(other.low_confidence_margin, DEFAULT_LOW_CONFIDENCE_MARGIN);
        assert_eq!(other.hst_trees, DEFAULT_HST_TREES);
    }

    #[test]
    fn a_bad_value_names_its_setting_and_model() {
        let file: AnomalyFile = toml::from_str(
            r#"
            [models."fraud"]
            tail_quantile = 1.5
            "#,
        )
        .unwrap();
        let e = file.resolve().unwrap_err().to_string();
        assert!(e.contains(r#"anomaly.models."fraud".tail_quantile"#), "{e}");
        let file: AnomalyFile = toml::from_str("latency_factor = -1").unwrap();
        assert!(file
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("anomaly.latency_factor"));
    }
}
