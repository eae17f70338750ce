//! Reference profiles: what the drift tests compare a window against, one JSON document per
//! model version (format [`FORMAT`], documented in the README).
//!
//! Per numeric feature: the reference's quantile bin edges — deciles for PSI and Jensen–Shannon,
//! percentiles for the binned KS and Wasserstein — with the counts in each bin, the missing and
//! non-finite counts, min, max, mean and standard deviation, and a uniform sample of the values
//! (all of them for references up to the sample size) for exact tests on small windows. Per
//! categorical feature: the top-K categories with their counts and the count of all others. The
//! prediction is profiled like a feature named [`PREDICTION`].
//!
//! Quantiles follow NumPy's default (`np.quantile(..., method="linear")`) bit for bit, so the bins
//! are the ones the golden tests compute with NumPy; repeated edges (discrete features) are kept
//! once, as `np.unique` does.

use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The `format` field of a profile this version reads and writes.
pub const FORMAT: &str = "inferscope-profile/1";
/// Feature name under which the prediction is profiled.
pub const PREDICTION: &str = "__prediction__";
/// Coarse bins (PSI, Jensen–Shannon): deciles.
pub const DEFAULT_BINS: usize = 10;
/// Fine bins (binned KS and Wasserstein): percentiles.
pub const DEFAULT_FINE_BINS: usize = 100;
/// Categories kept per categorical feature; the rest are counted together as "other".
pub const DEFAULT_TOP_K: usize = 20;
/// Reference values kept for exact tests.
pub const DEFAULT_SAMPLE: usize = 1000;
/// Distinct categories counted while building; past it, new ones go straight to "other" (so a
/// free-text column cannot exhaust memory).
pub const MAX_DISTINCT_CATEGORIES: usize = 100_000;

/// A reference profile of one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub format: String,
    pub model: String,
    pub version: String,
    /// Where the reference came from (a file name, or `live:first-N`).
    #[serde(default)]
    pub source: String,
    pub created_unix_seconds: u64,
    /// Reference records.
    pub records: u64,
    pub features: Vec<FeatureProfile>,
}

/// One feature's reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureProfile {
    Numeric(NumericProfile),
    Categorical(CategoricalProfile),
}

impl FeatureProfile {
    pub fn name(&self) -> &str {
        match self {
            Self::Numeric(n) => &n.name,
            Self::Categorical(c) => &c.name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericProfile {
    pub name: String,
    /// Finite values.
    pub count: u64,
    /// Absent or NaN.
    pub missing: u64,
    /// ±infinity.
    pub non_finite: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Sample standard deviation (ddof = 1, as pandas).
    pub std: Option<f64>,
    /// Upper edges of the coarse bins; bin `i` holds `(edges[i-1], edges[i]]`, the last bin
    /// everything above the last edge.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
    pub fine_edges: Vec<f64>,
    pub fine_counts: Vec<u64>,
    /// Up to the sample size of the finite values, uniformly drawn.
    pub sample: Vec<f64>,
    /// True when `sample` holds every finite value.
    pub sample_complete: bool,
    /// PSI at or above which this feature counts as drifted (overrides
    /// `--drift-psi-threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_threshold: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalProfile {
    pub name: String,
    /// Present values (any category).
    pub count: u64,
    /// Absent or empty.
    pub missing: u64,
    /// The top categories by count (ties by name), most frequent first.
    pub categories: Vec<CategoryCount>,
    /// Values of all other categories.
    pub other: u64,
    /// Jensen–Shannon distance at or above which this feature counts as drifted (overrides
    /// `--drift-js-threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_threshold: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryCount {
    pub value: String,
    pub count: u64,
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid profile")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: format {found:?}, this inferscope reads {FORMAT:?}")]
    Format { path: String, found: String },
    #[error("{path}: feature {feature:?}: {problem}")]
    Feature {
        path: String,
        feature: String,
        problem: String,
    },
}

impl Profile {
    /// Reads and checks a profile file.
    pub fn load(path: &std::path::Path) -> Result<Self, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: shown.clone(),
            source,
        })?;
        let profile: Profile =
            serde_json::from_str(&text).map_err(|source| ProfileError::Parse {
                path: shown.clone(),
                source,
            })?;
        profile.check(&shown)?;
        Ok(profile)
    }

    /// Structural checks a hand-edited or foreign file might fail.
    pub fn check(&self, path: &str) -> Result<(), ProfileError> {
        if self.format != FORMAT {
            return Err(ProfileError::Format {
                path: path.into(),
                found: self.format.clone(),
            });
        }
        for f in &self.features {
            let problem = match f {
                FeatureProfile::Numeric(n) => {
                    if n.counts.len() != n.edges.len() + 1
                        || n.fine_counts.len() != n.fine_edges.len() + 1
                    {
                        Some("each edge list needs one count more than edges")
                    } else if !n.edges.windows(2).all(|w| w[0] < w[1])
                        || !n.fine_edges.windows(2).all(|w| w[0] < w[1])
                        || n.edges.iter().chain(&n.fine_edges).any(|e| !e.is_finite())
                    {
                        Some("edges must be finite and strictly increasing")
                    } else if n.edges.iter().any(|e| !n.fine_edges.contains(e)) {
                        Some("every coarse edge must also be a fine edge (fine bins a multiple of the coarse ones)")
                    } else {
                        None
                    }
                }
                FeatureProfile::Categorical(_) => None,
            };
            if let Some(problem) = problem {
                return Err(ProfileError::Feature {
                    path: path.into(),
                    feature: f.name().into(),
                    problem: problem.into(),
                });
            }
        }
        Ok(())
    }

    pub fn feature(&self, name: &str) -> Option<&FeatureProfile> {
        self.features.iter().find(|f| f.name() == name)
    }
}

/// `np.quantile(sorted, q)` with the default linear method, including NumPy's way of
/// interpolating from the upper value when the fraction is ≥ 0.5.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let h = (n - 1) as f64 * q;
    let lo = h.floor();
    let t = h - lo;
    let lo = lo as usize;
    let hi = (lo + 1).min(n - 1);
    let (a, b) = (sorted[lo], sorted[hi]);
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// Quantile edges at `k/bins` for `k = 1..bins`, repeated values kept once.
pub fn quantile_edges(sorted: &[f64], bins: usize) -> Vec<f64> {
    let mut edges: Vec<f64> = (1..bins)
        .map(|k| quantile(sorted, k as f64 / bins as f64))
        .collect();
    edges.dedup();
    edges
}

/// The bin of `value` for upper edges `edges` (right-closed bins, the last one open above), as
/// `np.searchsorted(edges, value, side="left")`.
#[inline]
pub fn bin_of(edges: &[f64], value: f64) -> usize {
    // Branchless binary search: the comparison feeds a conditional move, so the ~7 steps over
    // 99 percentile edges do not pay for unpredictable branches. `select_unpredictable` makes
    // the compiler keep it a conditional move: a plain `if` compiled to a branch, which cost
    // 45 ns per feature on random values against 11 on the ordered values the first bench
    // used (BENCHMARKS.md).
    let mut base = 0usize;
    let mut size = edges.len();
    while size > 1 {
        let half = size / 2;
        let mid = base + half;
        base = std::hint::select_unpredictable(edges[mid - 1] < value, mid, base);
        size -= half;
    }
    // `base` is the first index whose preceding edges are all < value, up to the last step.
    base + usize::from(size == 1 && edges[base] < value)
}

fn counts(edges: &[f64], sorted: &[f64]) -> Vec<u64> {
    let mut counts = vec![0; edges.len() + 1];
    for &v in sorted {
        counts[bin_of(edges, v)] += 1;
    }
    counts
}

/// Profile-building settings.
#[derive(Debug, Clone, Copy)]
pub struct ProfileSettings {
    pub bins: usize,
    pub fine_bins: usize,
    pub top_k: usize,
    pub sample: usize,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        Self {
            bins: DEFAULT_BINS,
            fine_bins: DEFAULT_FINE_BINS,
            top_k: DEFAULT_TOP_K,
            sample: DEFAULT_SAMPLE,
        }
    }
}

/// Collects one numeric column. Keeps every finite value (8 bytes each) for the exact quantiles.
#[derive(Debug, Default, Clone)]
pub struct NumericColumn {
    values: Vec<f64>,
    missing: u64,
    non_finite: u64,
}

impl NumericColumn {
    pub fn push(&mut self, value: Option<f64>) {
        match value {
            None => self.missing += 1,
            Some(v) if v.is_nan() => self.missing += 1,
            Some(v) if v.is_infinite() => self.non_finite += 1,
            Some(v) => self.values.push(v),
        }
    }

    pub fn finish(mut self, name: &str, settings: ProfileSettings, seed: u64) -> NumericProfile {
        self.values.sort_by(f64::total_cmp);
        let v = &self.values;
        let n = v.len();
        // Fine bins are a multiple of the coarse ones, so that every coarse edge (quantile k/B)
        // is also a fine edge (quantile kr/(Br), the same double): counts kept per fine bin then
        // add up exactly to the coarse bins.
        let bins = settings.bins.max(2);
        let fine = bins * settings.fine_bins.div_ceil(bins).max(1);
        let (edges, fine_edges) = if n == 0 {
            (Vec::new(), Vec::new())
        } else {
            (quantile_edges(v, bins), quantile_edges(v, fine))
        };
        let mean = (n > 0).then(|| v.iter().sum::<f64>() / n as f64);
        let std = mean
            .filter(|_| n > 1)
            .map(|m| (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64).sqrt());
        let (sample, complete) = if n <= settings.sample {
            (v.clone(), true)
        } else {
            // Uniform without replacement (partial Fisher–Yates), seeded: the same file gives the
            // same profile.
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut pool = v.clone();
            for i in 0..settings.sample {
                let j = rng.random_range(i..n);
                pool.swap(i, j);
            }
            pool.truncate(settings.sample);
            (pool, false)
        };
        NumericProfile {
            name: name.into(),
            count: n as u64,
            missing: self.missing,
            non_finite: self.non_finite,
            min: v.first().copied(),
            max: v.last().copied(),
            mean,
            std,
            counts: counts(&edges, v),
            edges,
            fine_counts: counts(&fine_edges, v),
            fine_edges,
            sample,
            sample_complete: complete,
            drift_threshold: None,
        }
    }
}

/// Collects one categorical column.
#[derive(Debug, Default, Clone)]
pub struct CategoricalColumn {
    counts: HashMap<String, u64>,
    /// Values of categories not counted because `MAX_DISTINCT_CATEGORIES` was reached.
    uncounted: u64,
    missing: u64,
}

impl CategoricalColumn {
    pub fn push(&mut self, value: Option<&str>) {
        match value {
            None | Some("") => self.missing += 1,
            Some(v) => {
                if let Some(n) = self.counts.get_mut(v) {
                    *n += 1;
                } else if self.counts.len() < MAX_DISTINCT_CATEGORIES {
                    self.counts.insert(v.to_owned(), 1);
                } else {
                    self.uncounted += 1;
                }
            }
        }
    }

    pub fn finish(self, name: &str, settings: ProfileSettings) -> CategoricalProfile {
        let mut all: Vec<(String, u64)> = self.counts.into_iter().collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let count = all.iter().map(|c| c.1).sum::<u64>() + self.uncounted;
        let kept: Vec<CategoryCount> = all
            .iter()
            .take(settings.top_k)
            .map(|(value, count)| CategoryCount {
                value: value.clone(),
                count: *count,
            })
            .collect();
        let other = count - kept.iter().map(|c| c.count).sum::<u64>();
        CategoricalProfile {
            name: name.into(),
            count,
            missing: self.missing,
            categories: kept,
            other,
            drift_threshold: None,
        }
    }
}

/// One column being profiled.
#[derive(Debug, Clone)]
pub enum Column {
    Numeric(NumericColumn),
    Categorical(CategoricalColumn),
}

impl Column {
    pub fn finish(self, name: &str, settings: ProfileSettings, seed: u64) -> FeatureProfile {
        match self {
            Column::Numeric(c) => FeatureProfile::Numeric(c.finish(name, settings, seed)),
            Column::Categorical(c) => FeatureProfile::Categorical(c.finish(name, settings)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        // np.quantile([1, 2, 3, 4, 10], 0.9) == 7.6000000000000005 (upper-value interpolation).
        assert_eq!(quantile(&v, 0.9), 7.6000000000000005);
        assert_eq!(quantile_edges(&[1.0, 1.0, 1.0, 2.0], 4), vec![1.0, 1.25]);
        assert_eq!(bin_of(&[1.0, 2.0], 1.0), 0);
        assert_eq!(bin_of(&[1.0, 2.0], 1.5), 1);
        assert_eq!(bin_of(&[1.0, 2.0], 9.0), 2);
    }

    #[test]
    fn coarse_edges_are_fine_edges_whatever_the_bin_count() {
        for bins in [2, 7, 8, 10, 30, 200] {
            let mut column = NumericColumn::default();
            for v in 0..997 {
                column.push(Some(f64::from(v * v % 101)));
            }
            let settings = ProfileSettings {
                bins,
                ..ProfileSettings::default()
            };
            let n = column.finish("x", settings, 1);
            assert!(
                n.edges.iter().all(|e| n.fine_edges.contains(e)),
                "bins {bins}"
            );
        }
    }

    #[test]
    fn a_bad_profile_names_the_feature() {
        let mut column = NumericColumn::default();
        for v in 0..100 {
            column.push(Some(f64::from(v)));
        }
        let mut p = Profile {
            format: FORMAT.into(),
            model: "m".into(),
            version: "1".into(),
            source: String::new(),
            created_unix_seconds: 0,
            records: 100,
            features: vec![FeatureProfile::Numeric(column.finish(
                "x",
                ProfileSettings::default(),
                1,
            ))],
        };
        p.check("p.json").unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Profile>(&json).unwrap(), p);
        if let FeatureProfile::Numeric(n) = &mut p.features[0] {
            n.edges.reverse();
        }
        let e = p.check("p.json").unwrap_err().to_string();
        assert!(e.contains("\"x\"") && e.contains("increasing"), "{e}");
    }
}

#[cfg(test)]
mod bin_tests {
    use super::bin_of;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bin_of_is_searchsorted_left(
            edges in proptest::collection::btree_set(-100i32..100, 0..120),
            value in -120.0f64..120.0,
        ) {
            let edges: Vec<f64> = edges.into_iter().map(f64::from).collect();
            prop_assert_eq!(bin_of(&edges, value), edges.partition_point(|&e| e < value));
            for &e in &edges {
                prop_assert_eq!(bin_of(&edges, e), edges.partition_point(|&x| x < e));
            }
        }
    }
}
