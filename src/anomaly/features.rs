//! The feature checks of one model version: missing and non-finite values (no profile needed),
//! and against its reference profile, values outside the reference range, categories the
//! reference never kept, robust outliers, and the Half-Space Trees score of the whole record.
//!
//! The profile-based checks are compiled beside drift's bins, feature for feature in the
//! profile's order, and run from drift's single pass over a record's features
//! ([`crate::drift::model::FeatureObserver`]): each value is read once per record, whatever
//! analyses it feeds.

use super::{range_distance, robust::RobustScale, AnomalyKind, AnomalySettings, Flag};
use crate::{
    drift::{
        model::{tracked_features, FeatureObserver},
        profile::{FeatureProfile, Profile, PREDICTION},
    },
    models::{Declaration, ModelKey},
    pb,
    stats::half_space_trees::{reference_scale, HalfSpaceTrees, MassRule},
};
use std::sync::Arc;

/// The checks of one profile feature.
enum FeatureCheck {
    Numeric {
        min: f64,
        max: f64,
        /// Robust z-scores against the reference sample, with this model's threshold.
        robust: RobustScale,
        /// `(x − hst_origin)·hst_scale` is the Half-Space Trees input
        /// ([`crate::stats::half_space_trees::reference_scale`]).
        hst_origin: f64,
        hst_scale: f64,
        /// The feature's dimension in the Half-Space Trees input (not the prediction).
        dim: Option<usize>,
    },
    Categorical {
        /// The profile kept every category it saw (`other` is 0): only then is a category
        /// missing from the profile unseen rather than rare.
        complete: bool,
    },
}

/// The Half-Space Trees of a model version, their input row, and the recent median mass that
/// flags are relative to.
struct Hst {
    trees: HalfSpaceTrees,
    /// One record's numeric features scaled to [0, 1] by the reference range (NaN = missing).
    input: Vec<f64>,
    rule: MassRule,
}

/// The feature checks of one model version.
pub struct FeatureDetectors {
    settings: Arc<AnomalySettings>,
    /// Names of the declared numeric features, for the subjects of missing-value flags.
    numeric_names: Vec<String>,
    /// The profile the checks were compiled from (its feature names are the flags' subjects).
    profile: Option<Arc<Profile>>,
    checks: Vec<FeatureCheck>,
    /// Built with each profile from its numeric features, when `hst_trees` > 0.
    hst: Option<Hst>,
}

impl FeatureDetectors {
    pub fn new(settings: Arc<AnomalySettings>) -> Self {
        Self {
            settings,
            numeric_names: Vec::new(),
            profile: None,
            checks: Vec::new(),
            hst: None,
        }
    }

    /// Whether these checks can raise `kind` for this model: it is on and the model has what it
    /// looks at (numeric features for missing and non-finite values; a profile with numeric or
    /// categorical features for the reference checks; the trees).
    pub fn can_raise(&self, kind: AnomalyKind) -> bool {
        let s = &*self.settings;
        let profiled = |numeric: bool| {
            self.profile.as_ref().is_some_and(|p| {
                p.features.iter().any(|f| {
                    matches!(f, crate::drift::profile::FeatureProfile::Numeric(_)) == numeric
                })
            })
        };
        match kind {
            AnomalyKind::MissingFeature => {
                s.missing_feature && (!self.numeric_names.is_empty() || profiled(true))
            }
            AnomalyKind::NonFiniteFeature => {
                s.non_finite_feature && (!self.numeric_names.is_empty() || profiled(true))
            }
            AnomalyKind::OutOfReferenceRange => s.out_of_range_margin >= 0.0 && profiled(true),
            AnomalyKind::FeatureOutlier => s.feature_outlier_z > 0.0 && profiled(true),
            AnomalyKind::UnseenCategory => s.unseen_category && profiled(false),
            AnomalyKind::MultivariateOutlier => self.hst.is_some(),
            _ => false,
        }
    }

    pub fn declare(&mut self, declaration: &Declaration) {
        self.numeric_names = declaration.numeric_features.clone();
    }

    /// Compiles the checks of `profile` (the features drift tracks, at most `max_features` and
    /// the prediction, in the same order); the trees start afresh. `key` seeds them, so that
    /// replicas of a sidecar flag alike.
    pub fn set_profile(&mut self, profile: Arc<Profile>, key: &ModelKey, max_features: usize) {
        let features = tracked_features(&profile, max_features);
        let mut dims = 0;
        self.checks = features
            .iter()
            .map(|f| match f {
                FeatureProfile::Numeric(n) => {
                    let dim = (f.name() != PREDICTION).then(|| {
                        dims += 1;
                        dims - 1
                    });
                    let (hst_origin, hst_scale) =
                        reference_scale(n.min.unwrap_or(0.0), n.max.unwrap_or(1.0));
                    FeatureCheck::Numeric {
                        min: n.min.unwrap_or(f64::NEG_INFINITY),
                        max: n.max.unwrap_or(f64::INFINITY),
                        robust: RobustScale::from_sample(
                            &n.sample,
                            self.settings.feature_outlier_z,
                        ),
                        hst_origin,
                        hst_scale,
                        dim,
                    }
                }
                FeatureProfile::Categorical(c) => FeatureCheck::Categorical {
                    complete: c.other == 0,
                },
            })
            .collect();
        let s = &self.settings;
        self.hst = (s.hst_trees > 0 && dims > 0).then(|| Hst {
            trees: HalfSpaceTrees::new(
                dims,
                s.hst_trees,
                s.hst_height,
                s.hst_window,
                std::hash::BuildHasher::hash_one(
                    &foldhash::quality::FixedState::with_seed(0),
                    (&key.model, &key.version),
                ),
            ),
            input: vec![f64::NAN; dims],
            rule: MassRule::new(s.hst_mass_ratio),
        });
        self.profile = Some(profile);
    }

    /// No profile any more: only the profile-free checks run.
    pub fn clear_profile(&mut self) {
        self.profile = None;
        self.checks.clear();
        self.hst = None;
    }

    /// True when the Half-Space Trees (if any) are past their first window and warm-up.
    pub fn settled(&self) -> bool {
        self.hst
            .as_ref()
            .is_none_or(|h| h.trees.is_scoring() && h.rule.settled())
    }

    /// Missing (NaN) and non-finite numeric features of a record, named by the declaration
    /// (or `numeric_features[i]`): no profile needed.
    pub fn missing_flags(&self, record: &pb::InferenceRecord, flags: &mut Vec<Flag>) {
        let (missing, non_finite) = (
            self.settings.missing_feature,
            self.settings.non_finite_feature,
        );
        if !missing && !non_finite {
            return;
        }
        let name = |position: usize| -> String {
            self.numeric_names
                .get(position)
                .cloned()
                .unwrap_or_else(|| format!("numeric_features[{position}]"))
        };
        // Almost every record has only finite values: one branch-free pass over them (which the
        // compiler vectorises) tells, instead of two tests per value.
        let all_finite = record
            .numeric_features
            .iter()
            .fold(true, |finite, v| finite & v.is_finite());
        if !all_finite {
            for (position, &v) in record.numeric_features.iter().enumerate() {
                if v.is_nan() && missing {
                    flags.push(AnomalyKind::MissingFeature.flag(&name(position), 1.0));
                } else if v.is_infinite() && non_finite {
                    flags.push(AnomalyKind::NonFiniteFeature.flag(&name(position), 1.0));
                }
            }
        }
        for f in &record.named_features {
            if let Some(pb::named_feature::Value::Number(v)) = f.value {
                if v.is_nan() && missing {
                    flags.push(AnomalyKind::MissingFeature.flag(&f.name, 1.0));
                } else if v.is_infinite() && non_finite {
                    flags.push(AnomalyKind::NonFiniteFeature.flag(&f.name, 1.0));
                }
            }
        }
    }

    /// The checks for drift's pass over one record, adding to `flags`. What every value needs
    /// is borrowed once here, not looked up per value.
    pub fn observer<'a>(&'a mut self, flags: &'a mut Vec<Flag>) -> Checking<'a> {
        let hst = self.hst.as_mut().map(|h| HstRun {
            input: &mut h.input,
            trees: &mut h.trees,
            rule: &mut h.rule,
        });
        Checking {
            checks: &self.checks,
            profile: self.profile.as_deref(),
            margin: self.settings.out_of_range_margin,
            unseen: self.settings.unseen_category,
            hst,
            flags,
        }
    }
}

/// The Half-Space Trees' parts, borrowed for one record.
struct HstRun<'a> {
    input: &'a mut [f64],
    trees: &'a mut HalfSpaceTrees,
    rule: &'a mut MassRule,
}

/// The feature checks of one record in progress.
pub struct Checking<'a> {
    checks: &'a [FeatureCheck],
    profile: Option<&'a Profile>,
    /// The model's out-of-range margin (negative: off) and unseen-category switch.
    margin: f64,
    unseen: bool,
    hst: Option<HstRun<'a>>,
    flags: &'a mut Vec<Flag>,
}

impl Checking<'_> {
    /// The flag subject of profile feature `feature`.
    fn name(&self, feature: usize) -> &str {
        self.profile.map_or("", |p| p.features[feature].name())
    }
}

impl FeatureObserver for Checking<'_> {
    #[inline]
    fn begin(&mut self) {
        if let Some(h) = &mut self.hst {
            h.input.fill(f64::NAN);
        }
    }

    #[inline(always)]
    fn numeric(&mut self, feature: usize, value: f64, outside: bool) {
        let Some(FeatureCheck::Numeric {
            min,
            max,
            robust,
            hst_origin,
            hst_scale,
            dim,
        }) = self.checks.get(feature)
        else {
            return;
        };
        if let (Some(d), Some(h)) = (dim, self.hst.as_mut()) {
            h.input[*d] = (value - hst_origin) * hst_scale;
        }
        if outside && value.is_finite() && self.margin >= 0.0 {
            let distance = range_distance(value, *min, *max);
            if distance > self.margin {
                let flag = AnomalyKind::OutOfReferenceRange.flag(self.name(feature), distance);
                self.flags.push(flag);
            }
        }
        if let Some(z) = robust.outlier(value) {
            let flag = AnomalyKind::FeatureOutlier.flag(self.name(feature), z);
            self.flags.push(flag);
        }
    }

    #[inline]
    fn categorical(&mut self, feature: usize, known: bool) {
        if !known && self.unseen {
            if let Some(FeatureCheck::Categorical { complete: true }) = self.checks.get(feature) {
                let flag = AnomalyKind::UnseenCategory.flag(self.name(feature), 1.0);
                self.flags.push(flag);
            }
        }
    }

    #[inline]
    fn end(&mut self) {
        let Some(h) = &mut self.hst else {
            return;
        };
        // Non-finite values were flagged already; for the trees they are missing.
        for x in h.input.iter_mut() {
            if x.is_infinite() {
                *x = f64::NAN;
            }
        }
        let scoring = h.trees.is_scoring();
        let score = h.trees.score_learn(h.input);
        if let Some(s) = h.rule.check(score, scoring) {
            self.flags
                .push(AnomalyKind::MultivariateOutlier.flag("half_space_trees", s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{
        model::{DriftSettings, ModelDrift},
        profile::{NumericColumn, ProfileSettings, FORMAT},
    };
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Two tight clusters in 4 dimensions.
    fn clustered(rng: &mut StdRng) -> Vec<f64> {
        let centre = if rng.random::<bool>() { 0.3 } else { 0.7 };
        (0..4)
            .map(|_| centre + 0.03 * (rng.random::<f64>() - 0.5))
            .collect()
    }

    fn record(values: Vec<f64>) -> pb::InferenceRecord {
        pb::InferenceRecord {
            numeric_features: values,
            ..Default::default()
        }
    }

    #[test]
    fn half_space_trees_flag_a_record_between_the_clusters_and_not_the_clusters() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut columns = vec![NumericColumn::default(); 4];
        for _ in 0..2000 {
            for (c, v) in columns.iter_mut().zip(clustered(&mut rng)) {
                c.push(Some(v));
            }
        }
        let names: Vec<String> = (0..4).map(|i| format!("x{i}")).collect();
        let profile = Arc::new(Profile {
            format: FORMAT.into(),
            model: "m".into(),
            version: "1".into(),
            source: "test".into(),
            created_unix_seconds: 0,
            records: 2000,
            features: columns
                .into_iter()
                .zip(&names)
                .map(|(c, n)| FeatureProfile::Numeric(c.finish(n, ProfileSettings::default(), 1)))
                .collect(),
        });
        let key = ModelKey::new("m", "1");
        let mut drift = ModelDrift::new(
            &DriftSettings {
                reference_records: 0,
                ..Default::default()
            },
            key.clone(),
        );
        let mut checks = FeatureDetectors::new(Arc::new(AnomalySettings::default()));
        let declaration = Arc::new(Declaration::from_pb(&pb::ModelDeclaration {
            features: names
                .iter()
                .map(|n| pb::FeatureSpec {
                    name: n.clone(),
                    kind: pb::FeatureKind::Numeric as i32,
                })
                .collect(),
            ..Default::default()
        }));
        drift.declare(declaration.clone());
        checks.declare(&declaration);
        checks.set_profile(profile.clone(), &key, drift.max_features());
        drift.set_profile(profile, 0);
        let mut flags = Vec::new();
        let mut flagged_ordinary = 0;
        for i in 0..3000 {
            drift.update(
                &record(clustered(&mut rng)),
                0,
                &mut checks.observer(&mut flags),
            );
            if i == 1200 {
                assert!(!checks.settled(), "the trees are still warming up");
            }
            flagged_ordinary += flags.len();
            flags.clear();
        }
        assert!(checks.settled());
        // No flag of any kind on ordinary records (the features are bimodal: their MAD is one
        // cluster's spread, their IQR spans both).
        assert!(
            flagged_ordinary <= 3,
            "{flagged_ordinary} flags on ordinary records"
        );
        // Inside every feature's range, far from both clusters.
        drift.update(
            &record(vec![0.3, 0.7, 0.3, 0.7]),
            0,
            &mut checks.observer(&mut flags),
        );
        let kinds: Vec<&str> = flags.iter().map(|f| f.kind.name()).collect();
        assert_eq!(kinds, ["multivariate_outlier"], "{flags:?}");
        assert!(flags[0].score > 1.0 - DEFAULT_HST_RATIO_FOR_TEST);
    }

    /// The score of a flag is 1 − mass / median; a flag means mass < ratio × median.
    const DEFAULT_HST_RATIO_FOR_TEST: f64 = super::super::settings::DEFAULT_HST_MASS_RATIO;

    /// The trees are seeded as before model keys carried their slot kind: a hash of (model,
    /// version), so that an upgraded sidecar flags as the one it replaces.
    #[test]
    fn the_trees_seed_is_the_hash_of_model_and_version() {
        #[derive(Hash)]
        struct Before {
            model: String,
            version: String,
        }
        let state = foldhash::quality::FixedState::with_seed(0);
        let key = ModelKey::new("m", "1");
        let before = Before {
            model: "m".into(),
            version: "1".into(),
        };
        assert_eq!(
            std::hash::BuildHasher::hash_one(&state, (&key.model, &key.version)),
            std::hash::BuildHasher::hash_one(&state, &before)
        );
    }
}
