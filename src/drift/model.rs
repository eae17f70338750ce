//! Drift of one model version: its reference profile compiled for the hot path (one bin lookup
//! per numeric feature, one hash lookup per categorical one), windows of [`DriftState`], and the
//! scores computed from them at snapshot time. Without a profile, the first records of the
//! version are captured into one (`--reference-records`).

use super::{
    bins::BinIndex,
    profile::{
        bin_of, CategoricalColumn, Column, FeatureProfile, NumericColumn, Profile, ProfileSettings,
        FORMAT, PREDICTION,
    },
    state::{CategoricalCounts, DriftState, FeatureCounts, NumericCounts},
};
use crate::{
    events::{FeaturesOverflowed, InternalEvent},
    models::Declaration,
    pb,
    stats::{drift, Estimate},
    windows::{WindowSpec, Windows},
};
use std::{collections::HashMap, sync::Arc};

/// Default PSI at or above which a numeric feature has drifted (the common "significant shift"
/// rule of thumb: < 0.1 none, 0.1–0.2 moderate, ≥ 0.2 significant).
pub const DEFAULT_PSI_THRESHOLD: f64 = 0.2;
/// Default Jensen–Shannon distance at or above which a categorical feature has drifted
/// (Evidently's default threshold for `jensenshannon`).
pub const DEFAULT_JS_THRESHOLD: f64 = 0.1;
/// Default share of drifted features at or above which the dataset has drifted (Evidently's
/// `drift_share`).
pub const DEFAULT_DATASET_DRIFT_SHARE: f64 = 0.5;
/// Default `--reference-records`: records captured into a profile when none is loaded.
pub const DEFAULT_REFERENCE_RECORDS: usize = 2_000;
/// Default `--exact-drift-max-values`: windows with at most this many values of a feature (and a
/// complete reference sample) get exact KS and Wasserstein.
pub const DEFAULT_EXACT_DRIFT_VALUES: usize = 1_000;
/// Default `--max-features-per-model`: feature names a model version tracks (its prediction
/// comes on top). Every tracked name costs memory and series, and the client chooses the names,
/// so the bound is what one model version can cost at most. A live capture holds up to
/// `--reference-records` values per column: 256 × 2000 × 8 bytes ≈ 4 MB while it captures
/// (categorical columns hold counts instead); the windows then hold about 13 MB (README, "Cost").
/// Each feature exports up to 15 gauges per window: 256 × 15 × (2 default windows + `all`) =
/// 11 520 series. At the former fixed 1024 that was 16 MB and 46 080 series per model, and the
/// names were taken from whatever a client sent. Tabular models rarely have more than 256
/// features; one that does is logged once and counted in `inferscope.drift.features_overflow`,
/// and the setting raises the bound.
pub const DEFAULT_MAX_FEATURES_PER_MODEL: usize = 256;

/// Drift settings shared by every model of a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftSettings {
    pub windows: Vec<WindowSpec>,
    pub exact_values: usize,
    /// 0: no live capture.
    pub reference_records: usize,
    pub psi_threshold: f64,
    pub js_threshold: f64,
    pub dataset_drift_share: f64,
    /// Feature names tracked per model version (`--max-features-per-model`), not counting the
    /// prediction: the columns of a live capture and the features of a loaded profile.
    pub max_features: usize,
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self {
            windows: crate::quality::QualitySettings::default().windows,
            exact_values: DEFAULT_EXACT_DRIFT_VALUES,
            reference_records: DEFAULT_REFERENCE_RECORDS,
            psi_threshold: DEFAULT_PSI_THRESHOLD,
            js_threshold: DEFAULT_JS_THRESHOLD,
            dataset_drift_share: DEFAULT_DATASET_DRIFT_SHARE,
            max_features: DEFAULT_MAX_FEATURES_PER_MODEL,
        }
    }
}

/// A profile feature ready for the hot path.
enum Compiled {
    Numeric {
        /// The fine bins' lookup (O(1), the same bins as `bin_of` on the fine edges).
        fine_bins: BinIndex,
        min: f64,
        max: f64,
        /// Coarse bin of each fine bin (the coarse edges are among the fine ones).
        fine_to_coarse: Vec<usize>,
        coarse: usize,
    },
    Categorical {
        index: HashMap<String, usize>,
    },
}

/// What else looks at a record's features during drift's single pass over them: the anomaly
/// checks compiled from the same profile ([`crate::anomaly::features`]). Features are numbered
/// as in the profile; the prediction is not passed.
pub trait FeatureObserver {
    /// A record's pass starts.
    fn begin(&mut self);
    /// A numeric value of profile feature `feature`; `outside` the reference's [min, max].
    fn numeric(&mut self, feature: usize, value: f64, outside: bool);
    /// A categorical value of profile feature `feature`, `known` to the profile or not.
    fn categorical(&mut self, feature: usize, known: bool);
    /// The record's pass ends.
    fn end(&mut self);
}

/// Nobody else looks.
impl FeatureObserver for () {
    fn begin(&mut self) {}
    fn numeric(&mut self, _: usize, _: f64, _: bool) {}
    fn categorical(&mut self, _: usize, _: bool) {}
    fn end(&mut self) {}
}

/// The features of `profile` a model tracks, in the profile's order: the first `max` feature
/// names, and the prediction wherever it is. Drift's bins and the anomaly checks are both built
/// from this list, so they stay indexed alike.
pub fn tracked_features(profile: &Profile, max: usize) -> Vec<&FeatureProfile> {
    let mut features = 0;
    profile
        .features
        .iter()
        .filter(|f| {
            f.name() == PREDICTION || {
                features += 1;
                features <= max
            }
        })
        .collect()
}

fn compile(feature: &FeatureProfile) -> Compiled {
    match feature {
        FeatureProfile::Numeric(n) => {
            let fine_to_coarse = (0..=n.fine_edges.len())
                .map(|j| match n.fine_edges.get(j) {
                    Some(&upper) => bin_of(&n.edges, upper),
                    None => n.edges.len(),
                })
                .collect();
            Compiled::Numeric {
                fine_bins: BinIndex::new(&n.fine_edges),
                min: n.min.unwrap_or(f64::NEG_INFINITY),
                max: n.max.unwrap_or(f64::INFINITY),
                fine_to_coarse,
                coarse: n.edges.len() + 1,
            }
        }
        FeatureProfile::Categorical(c) => Compiled::Categorical {
            index: c
                .categories
                .iter()
                .enumerate()
                .map(|(i, k)| (k.value.clone(), i))
                .collect(),
        },
    }
}

fn empty_counts(feature: &FeatureProfile) -> FeatureCounts {
    match feature {
        FeatureProfile::Numeric(n) => {
            FeatureCounts::Numeric(NumericCounts::new(n.fine_counts.len()))
        }
        FeatureProfile::Categorical(c) => {
            FeatureCounts::Categorical(CategoricalCounts::new(c.categories.len()))
        }
    }
}

/// Scores of one feature in one window. `None` where undefined (no values in the window).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureScores {
    pub name: String,
    pub numeric: bool,
    /// Values in the window (present, missing and non-finite).
    pub values: u64,
    pub psi: Option<f64>,
    pub js_distance: Option<f64>,
    pub ks: Option<Estimate>,
    pub ks_pvalue: Option<f64>,
    pub wasserstein: Option<Estimate>,
    pub chi_square: Option<(f64, f64)>,
    pub unseen_share: Option<f64>,
    pub missing_rate: Option<f64>,
    pub non_finite_rate: Option<f64>,
    pub out_of_range_rate: Option<f64>,
    pub drifted: bool,
}

/// Scores of all features in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowScores {
    pub window: String,
    pub features: Vec<FeatureScores>,
    pub drifted_features: usize,
    /// Features with values in the window (the denominator of the drifted share).
    pub scored_features: usize,
    pub dataset_drift: bool,
}

/// What export needs of a model's drift. Without a reference profile (none loaded, or a capture
/// under way) `source` is empty and there are no windows.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftSnapshot {
    /// Where the reference in use came from (a file, `live:first-N`); empty without one.
    pub source: String,
    pub reference_records: u64,
    /// When the reference was built or captured (Unix seconds).
    pub reference_created: u64,
    pub windows: Vec<WindowScores>,
    /// Feature names past `--max-features-per-model` since the state started.
    pub features_overflowed: u64,
}

/// Features that started or stopped drifting in the first window since the last interval.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftChange {
    pub window: String,
    /// Started drifting, highest score first.
    pub started: Vec<FeatureScores>,
    pub stopped: Vec<FeatureScores>,
    pub drifted: usize,
    pub dataset_drift: bool,
}

/// A profile being captured from the next records.
struct Capture {
    columns: Vec<(String, Column)>,
    /// Columns that are features (not the prediction), at most `max_features`.
    features: usize,
    records: usize,
    /// Records to take.
    target: usize,
}

/// Drift of one model version.
pub struct ModelDrift {
    profile: Option<Arc<Profile>>,
    compiled: Vec<Compiled>,
    /// Declared numeric / categorical feature position → profile feature.
    numeric_positions: Vec<Option<usize>>,
    categorical_positions: Vec<Option<usize>>,
    by_name: HashMap<String, usize>,
    prediction: Option<usize>,
    windows: Option<Windows<DriftState>>,
    capture: Option<Capture>,
    declaration: Option<Arc<Declaration>>,
    settings: DriftSettings,
    /// Drifted features of the first window at the last interval, to log changes.
    last_drifted: Vec<String>,
    /// Model name and version, for captured profiles and log lines.
    key: crate::models::ModelKey,
    /// Counts profile changes (set or cleared), for the series that depend on the profile.
    profile_changes: u64,
    /// Feature names not tracked because `max_features` were (`FeaturesOverflowed`): each
    /// occurrence a live capture met, and each feature of a loaded profile past the bound.
    features_overflowed: u64,
}

impl ModelDrift {
    pub fn new(settings: &DriftSettings, key: crate::models::ModelKey) -> Self {
        Self {
            profile: None,
            compiled: Vec::new(),
            numeric_positions: Vec::new(),
            categorical_positions: Vec::new(),
            by_name: HashMap::new(),
            prediction: None,
            windows: None,
            capture: (settings.reference_records > 0).then(|| Capture {
                columns: Vec::new(),
                features: 0,
                records: 0,
                target: settings.reference_records,
            }),
            declaration: None,
            settings: settings.clone(),
            last_drifted: Vec::new(),
            key,
            profile_changes: 0,
            features_overflowed: 0,
        }
    }

    /// Feature names past `--max-features-per-model` so far.
    pub fn features_overflowed(&self) -> u64 {
        self.features_overflowed
    }

    /// Feature names tracked at most (not counting the prediction).
    pub fn max_features(&self) -> usize {
        self.settings.max_features
    }

    /// How many times the profile was set or cleared.
    pub fn profile_changes(&self) -> u64 {
        self.profile_changes
    }

    /// True while a live capture is under way.
    pub fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    pub fn profile(&self) -> Option<&Arc<Profile>> {
        self.profile.as_ref()
    }

    /// Uses `profile` from now on (windows start empty). Features past `max_features` are not
    /// tracked (counted and logged).
    pub fn set_profile(&mut self, profile: Arc<Profile>, now_ms: u64) {
        let max = self.settings.max_features;
        let features = tracked_features(&profile, max);
        let dropped = profile.features.len() - features.len();
        if dropped > 0 {
            FeaturesOverflowed {
                model: &self.key.model,
                version: &self.key.version,
                feature: profile
                    .features
                    .iter()
                    .filter(|f| f.name() != PREDICTION)
                    .nth(max)
                    .map_or("", |f| f.name()),
                cap: max,
                names: dropped as u64,
            }
            .emit(&mut self.features_overflowed);
        }
        self.compiled = features.iter().copied().map(compile).collect();
        self.by_name = features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().to_owned(), i))
            .collect();
        self.prediction = self.by_name.get(PREDICTION).copied();
        let empty = DriftState {
            features: features.iter().copied().map(empty_counts).collect(),
        };
        self.windows = Some(Windows::new(
            empty,
            &self.settings.windows,
            self.settings.exact_values,
            now_ms,
        ));
        self.profile = Some(profile);
        self.profile_changes += 1;
        self.capture = None;
        self.last_drifted.clear();
        self.map_positions();
    }

    /// Captures the next `records` records into a profile that replaces the current one when
    /// complete; drift against the current profile goes on meanwhile.
    pub fn start_capture(&mut self, records: usize) {
        self.capture = Some(Capture {
            columns: Vec::new(),
            features: 0,
            records: 0,
            target: records.max(1),
        });
    }

    /// Stops measuring drift (the profile was removed); no new capture starts.
    pub fn clear_profile(&mut self) {
        self.profile = None;
        self.windows = None;
        self.compiled.clear();
        self.by_name.clear();
        self.prediction = None;
        self.numeric_positions.clear();
        self.categorical_positions.clear();
        self.last_drifted.clear();
        self.profile_changes += 1;
    }

    pub fn declare(&mut self, declaration: Arc<Declaration>) {
        self.declaration = Some(declaration);
        self.map_positions();
    }

    fn map_positions(&mut self) {
        let Some(d) = &self.declaration else { return };
        let find = |names: &[String]| names.iter().map(|n| self.by_name.get(n).copied()).collect();
        self.numeric_positions = find(&d.numeric_features);
        self.categorical_positions = find(&d.categorical_features);
    }

    #[inline]
    pub fn advance(&mut self, now_ms: u64) {
        if let Some(w) = &mut self.windows {
            w.advance(now_ms);
        }
    }

    /// One accepted record: its features and prediction into the live window, or into the
    /// capture. `observer` sees every feature value (not the prediction) in the same pass.
    /// Returns the profile a completed live capture produced (in use from the next record).
    pub fn update<O: FeatureObserver>(
        &mut self,
        record: &pb::InferenceRecord,
        now_ms: u64,
        observer: &mut O,
    ) -> Option<Arc<Profile>> {
        if self.capture.is_some() {
            if let Some(captured) = self.capture_record(record, now_ms) {
                // The new profile's windows start with the next record.
                return Some(captured);
            }
        }
        let declaration = self.declaration.clone();
        let prediction = self
            .prediction
            .and_then(|i| Some((i, prediction_value(record, declaration.as_deref())?)));
        let Some(windows) = &mut self.windows else {
            return None;
        };
        let cap = windows.exact_cap();
        let live = windows.live();
        let compiled = &self.compiled;
        observer.begin();
        // One pass per value: its bin and its data-quality counts; the observer sees feature
        // values (`Some` / `observer`), not the prediction (`None` / `()`).
        let categorical = |live: &mut DriftState, i: usize, v: &str, observer: Option<&mut O>| {
            match &compiled[i] {
                Compiled::Categorical { index } if !v.is_empty() => {
                    let k = index.get(v).copied();
                    live.categorical(i, k);
                    if let Some(o) = observer {
                        o.categorical(i, k.is_some());
                    }
                }
                // Empty, or text for a numeric feature: missing.
                _ => live.missing(i),
            }
        };
        for (position, &v) in record.numeric_features.iter().enumerate() {
            if let Some(Some(i)) = self.numeric_positions.get(position) {
                numeric_value(compiled, live, *i, v, cap, &mut *observer);
            }
        }
        for (position, v) in record.categorical_features.iter().enumerate() {
            if let Some(Some(i)) = self.categorical_positions.get(position) {
                categorical(live, *i, v, Some(&mut *observer));
            }
        }
        for f in &record.named_features {
            let Some(&i) = self.by_name.get(&f.name) else {
                continue;
            };
            match &f.value {
                Some(pb::named_feature::Value::Number(v)) => {
                    numeric_value(compiled, live, i, *v, cap, &mut *observer)
                }
                Some(pb::named_feature::Value::Category(v)) => {
                    categorical(live, i, v, Some(&mut *observer))
                }
                None => live.missing(i),
            }
        }
        if let Some((i, value)) = prediction {
            match (value, &compiled[i]) {
                (Value::Number(v), Compiled::Numeric { .. }) => {
                    numeric_value(compiled, live, i, v, cap, &mut ())
                }
                (Value::Text(v), Compiled::Categorical { .. }) => categorical(live, i, v, None),
                _ => {}
            }
        }
        observer.end();
        None
    }

    fn capture_record(
        &mut self,
        record: &pb::InferenceRecord,
        now_ms: u64,
    ) -> Option<Arc<Profile>> {
        let declaration = self.declaration.clone();
        let prediction = prediction_value(record, declaration.as_deref()).map(|v| match v {
            Value::Number(x) => Cell::Number(x),
            Value::Text(t) => Cell::Text(t.to_owned()),
        });
        let capture = self.capture.as_mut()?;
        let (max, key, overflowed) = (
            self.settings.max_features,
            &self.key,
            &mut self.features_overflowed,
        );
        let mut push = |name: &str, cell: Cell| {
            let column = match capture.columns.iter_mut().position(|(n, _)| n == name) {
                Some(i) => &mut capture.columns[i].1,
                None => {
                    if name != PREDICTION {
                        if capture.features >= max {
                            FeaturesOverflowed {
                                model: &key.model,
                                version: &key.version,
                                feature: name,
                                cap: max,
                                names: 1,
                            }
                            .emit(&mut *overflowed);
                            return;
                        }
                        capture.features += 1;
                    }
                    let column = match cell {
                        Cell::Number(_) => Column::Numeric(NumericColumn::default()),
                        Cell::Text(_) => Column::Categorical(CategoricalColumn::default()),
                    };
                    capture.columns.push((name.to_owned(), column));
                    &mut capture.columns.last_mut().expect("pushed").1
                }
            };
            match (column, cell) {
                (Column::Numeric(c), Cell::Number(v)) => c.push(Some(v)),
                (Column::Categorical(c), Cell::Text(t)) => c.push(Some(&t)),
                (Column::Numeric(c), Cell::Text(_)) => c.push(None),
                (Column::Categorical(c), Cell::Number(v)) => c.push(Some(&v.to_string())),
            }
        };
        if let Some(d) = &declaration {
            for (name, &v) in d.numeric_features.iter().zip(&record.numeric_features) {
                push(name, Cell::Number(v));
            }
            for (name, v) in d
                .categorical_features
                .iter()
                .zip(&record.categorical_features)
            {
                push(name, Cell::Text(v.clone()));
            }
        }
        for f in &record.named_features {
            match &f.value {
                Some(pb::named_feature::Value::Number(v)) => push(&f.name, Cell::Number(*v)),
                Some(pb::named_feature::Value::Category(v)) => push(&f.name, Cell::Text(v.clone())),
                None => {}
            }
        }
        if let Some(cell) = prediction {
            push(PREDICTION, cell);
        }
        capture.records += 1;
        if capture.records < capture.target {
            return None;
        }
        let capture = self.capture.take()?;
        let features = capture
            .columns
            .into_iter()
            .enumerate()
            .map(|(i, (name, column))| column.finish(&name, ProfileSettings::default(), i as u64))
            .collect();
        let profile = Arc::new(Profile {
            format: FORMAT.into(),
            model: self.key.model.clone(),
            version: self.key.version.clone(),
            source: format!("live:first-{}", capture.records),
            created_unix_seconds: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            records: capture.records as u64,
            features,
        });
        self.set_profile(profile.clone(), now_ms);
        Some(profile)
    }

    /// Scores every window. Looks only: the windows are flushed, nothing is logged or reset.
    pub fn snapshot(&mut self, now_ms: u64) -> DriftSnapshot {
        let (Some(profile), Some(windows)) = (self.profile.clone(), self.windows.as_mut()) else {
            return DriftSnapshot {
                source: String::new(),
                reference_records: 0,
                reference_created: 0,
                windows: Vec::new(),
                features_overflowed: self.features_overflowed,
            };
        };
        windows.advance(now_ms);
        windows.flush();
        let scores: Vec<WindowScores> = windows
            .views()
            .into_iter()
            .map(|(window, state)| self.score(&profile, window, &state))
            .collect();
        DriftSnapshot {
            source: profile.source.clone(),
            reference_records: profile.records,
            reference_created: profile.created_unix_seconds,
            windows: scores,
            features_overflowed: self.features_overflowed,
        }
    }

    /// Closes an interval of the change detectors: scores the first window, logs and returns
    /// the change of its drifted features since the last interval, and its drift score (the
    /// largest PSI or JS distance) for the series. `None` without a profile.
    pub fn close_interval(&mut self, now_ms: u64) -> Option<(Option<DriftChange>, Option<f64>)> {
        let profile = self.profile.clone()?;
        let windows = self.windows.as_mut()?;
        windows.advance(now_ms);
        windows.flush();
        let (window, state) = windows.views().into_iter().next()?;
        let first = self.score(&profile, window, &state);
        let score = first
            .features
            .iter()
            .filter_map(|f| f.psi.or(f.js_distance))
            .reduce(f64::max);
        Some((self.detect_change(&first), score))
    }

    /// The change of the drifted set of `first` since the last call, logged.
    fn detect_change(&mut self, first: &WindowScores) -> Option<DriftChange> {
        let mut drifted: Vec<&FeatureScores> =
            first.features.iter().filter(|f| f.drifted).collect();
        let names: Vec<String> = drifted.iter().map(|f| f.name.clone()).collect();
        if names != self.last_drifted {
            drifted.sort_by(|a, b| {
                let key = |f: &FeatureScores| f.psi.or(f.js_distance).unwrap_or(0.0);
                key(b).total_cmp(&key(a))
            });
            let top: Vec<String> = drifted
                .iter()
                .take(5)
                .map(|f| match (f.psi, f.js_distance) {
                    (Some(p), _) if f.numeric => format!("{} (PSI {p:.3})", f.name),
                    (_, Some(j)) => format!("{} (JS {j:.3})", f.name),
                    _ => f.name.clone(),
                })
                .collect();
            let score = |f: &FeatureScores| f.psi.or(f.js_distance).unwrap_or(0.0);
            let mut stopped: Vec<FeatureScores> = first
                .features
                .iter()
                .filter(|f| !f.drifted && self.last_drifted.contains(&f.name))
                .cloned()
                .collect();
            stopped.sort_by(|a, b| score(b).total_cmp(&score(a)));
            let change = DriftChange {
                window: first.window.clone(),
                started: drifted
                    .iter()
                    .filter(|f| !self.last_drifted.contains(&f.name))
                    .map(|f| (*f).clone())
                    .collect(),
                stopped,
                drifted: first.drifted_features,
                dataset_drift: first.dataset_drift,
            };
            tracing::warn!(
                model = %self.key.model,
                version = %self.key.version,
                window = %first.window,
                drifted = first.drifted_features,
                of = first.scored_features,
                dataset_drift = first.dataset_drift,
                top = %top.join(", "),
                "drifted features changed"
            );
            self.last_drifted = names;
            return Some(change);
        }
        None
    }

    fn score(&self, profile: &Profile, window: String, state: &DriftState) -> WindowScores {
        let features: Vec<FeatureScores> = profile
            .features
            .iter()
            .zip(&state.features)
            .zip(&self.compiled)
            .map(|((reference, counts), compiled)| self.feature_scores(reference, counts, compiled))
            .collect();
        let scored = features
            .iter()
            .filter(|f| f.psi.is_some() || f.js_distance.is_some())
            .count();
        let drifted = features.iter().filter(|f| f.drifted).count();
        WindowScores {
            window,
            dataset_drift: scored > 0
                && drifted as f64 >= self.settings.dataset_drift_share * scored as f64,
            features,
            drifted_features: drifted,
            scored_features: scored,
        }
    }

    fn feature_scores(
        &self,
        reference: &FeatureProfile,
        counts: &FeatureCounts,
        compiled: &Compiled,
    ) -> FeatureScores {
        let rate = |part: u64, all: u64| (all > 0).then(|| part as f64 / all as f64);
        match (reference, counts, compiled) {
            (
                FeatureProfile::Numeric(r),
                FeatureCounts::Numeric(c),
                Compiled::Numeric {
                    fine_to_coarse,
                    coarse,
                    ..
                },
            ) => {
                let to_f = |v: &[u64]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
                let (rf, cf) = (to_f(&r.fine_counts), to_f(&c.bins));
                let mut cc = vec![0.0; *coarse];
                for (j, &n) in cf.iter().enumerate() {
                    cc[fine_to_coarse[j]] += n;
                }
                let rc = to_f(&r.counts);
                let n = c.finite() as f64;
                let exact = c.exact.as_ref().filter(|_| r.sample_complete && n > 0.0);
                // Exact: SciPy's ks_2samp statistic and its exact p-value (ks_2samp's own
                // method below 10 000 values). Binned: the bounded statistic and the asymptotic
                // p-value.
                let (ks, ks_pvalue, wasserstein) = match exact {
                    Some(values) => {
                        let d = drift::ks_statistic(&r.sample, values);
                        (
                            d.map(|v| Estimate {
                                value: v,
                                error_bound: 0.0,
                            }),
                            d.and_then(|d| drift::ks_exact_pvalue(d, r.sample.len(), values.len())),
                            drift::wasserstein(&r.sample, values).map(|v| Estimate {
                                value: v,
                                error_bound: 0.0,
                            }),
                        )
                    }
                    None => {
                        let lo = r.min.unwrap_or(c.min).min(c.min);
                        let hi = r.max.unwrap_or(c.max).max(c.max);
                        let ks = drift::ks_binned(&rf, &cf);
                        (
                            ks,
                            ks.map(|d| drift::ks_pvalue(d.value, r.count as f64, n)),
                            drift::wasserstein_binned(&r.fine_edges, lo, hi, &rf, &cf),
                        )
                    }
                };
                let psi = drift::psi(&rc, &cc);
                let threshold = r.drift_threshold.unwrap_or(self.settings.psi_threshold);
                FeatureScores {
                    name: r.name.clone(),
                    numeric: true,
                    values: c.total(),
                    psi,
                    js_distance: drift::js_distance(&rc, &cc),
                    ks_pvalue,
                    ks,
                    wasserstein,
                    chi_square: None,
                    unseen_share: None,
                    missing_rate: rate(c.missing, c.total()),
                    non_finite_rate: rate(c.non_finite, c.total()),
                    out_of_range_rate: rate(c.out_of_range, c.finite()),
                    drifted: psi.is_some_and(|p| p >= threshold),
                }
            }
            (FeatureProfile::Categorical(r), FeatureCounts::Categorical(c), _) => {
                let mut rc: Vec<f64> = r.categories.iter().map(|k| k.count as f64).collect();
                rc.push(r.other as f64);
                let cc: Vec<f64> = c.counts.iter().map(|&x| x as f64).collect();
                let js = drift::js_distance(&rc, &cc);
                FeatureScores {
                    name: r.name.clone(),
                    numeric: false,
                    values: c.total(),
                    psi: None,
                    js_distance: js,
                    ks: None,
                    ks_pvalue: None,
                    wasserstein: None,
                    chi_square: drift::chi_square(&rc, &cc),
                    unseen_share: rate(c.unseen, c.present()),
                    missing_rate: rate(c.missing, c.total()),
                    non_finite_rate: None,
                    out_of_range_rate: None,
                    drifted: js.is_some_and(|j| {
                        j >= r.drift_threshold.unwrap_or(self.settings.js_threshold)
                    }),
                }
            }
            _ => FeatureScores {
                name: reference.name().to_owned(),
                numeric: false,
                values: 0,
                psi: None,
                js_distance: None,
                ks: None,
                ks_pvalue: None,
                wasserstein: None,
                chi_square: None,
                unseen_share: None,
                missing_rate: None,
                non_finite_rate: None,
                out_of_range_rate: None,
                drifted: false,
            },
        }
    }
}

/// One declared numeric feature's value into the live window, seen by `observer` in the same
/// step: the loop over `numeric_features` calls this, inlined with everything it calls, where
/// the shared closure cost a call per value (BENCHMARKS.md, "Hot path (issue 15)").
#[inline(always)]
fn numeric_value<O: FeatureObserver>(
    compiled: &[Compiled],
    live: &mut DriftState,
    i: usize,
    v: f64,
    cap: usize,
    observer: &mut O,
) {
    match &compiled[i] {
        Compiled::Numeric {
            fine_bins,
            min,
            max,
            ..
        } => {
            let outside = v < *min || v > *max;
            live.numeric(i, v, fine_bins.bin(v), outside, cap);
            observer.numeric(i, v, outside);
        }
        // A number for a categorical feature: looked up as its text.
        Compiled::Categorical { index } => live.categorical(i, index.get(&v.to_string()).copied()),
    }
}

/// The prediction as a feature value: the class name, the score, or the regression value.
fn prediction_value<'a>(
    record: &'a pb::InferenceRecord,
    declaration: Option<&'a Declaration>,
) -> Option<Value<'a>> {
    use pb::inference_record::Prediction as P;
    match record.prediction.as_ref()? {
        P::Regression(r) => Some(Value::Number(r.value)),
        P::Classification(c) => {
            if !c.predicted_class.is_empty() {
                return Some(Value::Text(&c.predicted_class));
            }
            if let (Some(i), Some(d)) = (c.predicted_class_index, declaration) {
                if let Some(name) = d.class_names.get(i as usize) {
                    return Some(Value::Text(name));
                }
            }
            c.score.map(Value::Number)
        }
        P::Generation(_) => None,
    }
}

enum Value<'a> {
    Number(f64),
    Text(&'a str),
}

enum Cell {
    Number(f64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(names: &[&str]) -> Profile {
        Profile {
            format: FORMAT.into(),
            model: "m".into(),
            version: "1".into(),
            source: "test".into(),
            created_unix_seconds: 0,
            records: 3,
            features: names
                .iter()
                .map(|name| {
                    let mut column = NumericColumn::default();
                    for v in [1.0, 2.0, 3.0] {
                        column.push(Some(v));
                    }
                    FeatureProfile::Numeric(column.finish(name, ProfileSettings::default(), 1))
                })
                .collect(),
        }
    }

    #[test]
    fn a_loaded_profile_keeps_its_first_features_and_the_prediction() {
        let settings = DriftSettings {
            reference_records: 0,
            max_features: 2,
            ..Default::default()
        };
        let mut drift = ModelDrift::new(&settings, crate::models::ModelKey::new("m", "1"));
        let loaded = profile(&["a", "b", "c", PREDICTION, "d"]);
        let kept: Vec<&str> = tracked_features(&loaded, 2)
            .iter()
            .map(|f| f.name())
            .collect();
        assert_eq!(kept, ["a", "b", PREDICTION]);
        drift.set_profile(Arc::new(loaded), 0);
        assert_eq!(drift.compiled.len(), 3);
        assert_eq!(drift.prediction, Some(2));
        assert_eq!(drift.features_overflowed(), 2);
    }

    #[test]
    fn a_capture_takes_the_first_names_and_counts_the_rest() {
        let settings = DriftSettings {
            reference_records: 2,
            max_features: 2,
            ..Default::default()
        };
        let mut drift = ModelDrift::new(&settings, crate::models::ModelKey::new("m", "1"));
        let record = |names: &[&str]| pb::InferenceRecord {
            named_features: names
                .iter()
                .map(|&name| pb::NamedFeature {
                    name: name.into(),
                    value: Some(pb::named_feature::Value::Number(1.0)),
                })
                .collect(),
            ..Default::default()
        };
        assert!(drift
            .update(&record(&["a", "b", "c"]), 0, &mut ())
            .is_none());
        let captured = drift
            .update(&record(&["b", "d", "a", "c"]), 0, &mut ())
            .expect("captured");
        let names: Vec<&str> = captured.features.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(drift.features_overflowed(), 3);
    }
}
