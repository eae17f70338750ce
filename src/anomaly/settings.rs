//! Anomaly detector settings: defaults for every model, overridden per model name in the config
//! file (`[anomaly]` and `[anomaly.models."<model>"]`). Each default says why it was chosen.

use serde::Deserialize;
use std::{collections::HashMap, sync::Arc};

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
/// model's recent median mass. 0.4 on the evaluation streams of BENCHMARKS.md (2 % anomalies):
/// 0.05 % of ordinary records flagged, a third of the anomalies, 93 % of flags right; 0.5 finds
/// half of them but flags 8 times as many ordinary records (precision 71 %).
pub const DEFAULT_HST_MASS_RATIO: f64 = 0.4;
/// Intervals (metric exports) that fix the in-control level of a series before its change
/// detectors run: 10 is 2.5 minutes at the default 15 s export.
pub const DEFAULT_CHANGE_WARMUP: u64 = 10;
/// Records (or labelled pairs, for accuracy and MAE) an interval needs to give a point of a
/// series: fewer make rates too noisy to compare.
pub const DEFAULT_CHANGE_MIN_RECORDS: u64 = 30;

/// The detectors of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySettings {
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
}

impl Default for AnomalySettings {
    fn default() -> Self {
        Self {
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
        let s = AnomalySettings {
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
        };
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
