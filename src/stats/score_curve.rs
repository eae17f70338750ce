//! ROC AUC and average precision of one binary problem (a binary classifier, or one class against
//! the rest), in bounded memory.
//!
//! Two representations are kept side by side:
//! - a **score histogram**: positives and negatives counted in [`SCORE_BINS`] bins that are
//!   uniform in logit space over `[-LOGIT_RANGE, LOGIT_RANGE]` (probabilities from 4.5e-5 to
//!   1 − 4.5e-5; the bins are narrow near 0 and 1, where calibrated classifiers put most scores).
//!   Scores outside (0, 1) fall in the end bins. Mergeable, fixed size.
//! - the **exact pairs** `(score, is_positive)` while there are at most `exact_cap` of them;
//!   past that they are dropped for good (for this state).
//!
//! Exact values follow scikit-learn: `roc_auc_score` (ties count half, the area under the
//! trapezoids of `roc_curve`) and `average_precision_score` (Σ (Rₙ − Rₙ₋₁)·Pₙ over distinct
//! score thresholds; 0 when there are no positives, as scikit-learn returns after its warning).
//! ROC AUC with only one class present is undefined and reported as `None`.
//!
//! From the histogram, every bin acts as one threshold: pairs in the same bin count as ties.
//! The error is bounded by what the binning could hide, computed from the same counts:
//! - ROC AUC: `|approx − exact| ≤ ½ · Σ_b pos_b · neg_b / (P · N)` (only the pairs sharing a bin
//!   can be misordered, each worth at most ½ in the Mann–Whitney sum);
//! - AP: a bin with `p` positives and `n` negatives, after `T` true and `F` false positives in
//!   higher bins, contributes `p/P` times a precision that lies in
//!   `[(T+1)/(T+F+1+n), (T+p)/(T+F+p)]` however its scores are ordered, so the error is at most
//!   `Σ_b p/P · (hi − lo)`.
//!
//! Both bounds are reported with every estimate (and exported), so a reader knows how far to
//! trust it; they are tested against the exact oracle.
//!
//! Written by hand: no maintained Rust crate computes mergeable, bounded ROC/PR areas.

/// Number of score bins.
pub const SCORE_BINS: usize = 512;
/// Bins span logits in `[-LOGIT_RANGE, LOGIT_RANGE]`.
pub const LOGIT_RANGE: f64 = 10.0;

/// A value and how far from the exact one it can be (0 when computed exactly).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub error_bound: f64,
}

/// The bin of a score: uniform in logit space, end bins for everything beyond. (A binary search
/// over precomputed edges measured slower than the logarithm: 66 vs 54 ns per labelled pair.)
#[inline]
pub fn score_bin(score: f64) -> usize {
    if score.is_nan() || score <= 0.0 {
        return 0;
    }
    if score >= 1.0 {
        return SCORE_BINS - 1;
    }
    let logit = (score / (1.0 - score)).ln();
    let u = (logit + LOGIT_RANGE) / (2.0 * LOGIT_RANGE);
    ((u * SCORE_BINS as f64).max(0.0) as usize).min(SCORE_BINS - 1)
}

/// Histogram and (while small) exact pairs of one binary problem's scores. Serialized with the
/// bins as `(bin, count)` pairs of the non-empty ones (the fleet's shared window states,
/// `src/fleet.rs`); counts that disagree with the bins are refused.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "CurveWire", into = "CurveWire")]
pub struct ScoreCurve {
    /// Positives per bin; empty until the first score (most window buckets of idle classes stay
    /// empty and cost nothing).
    positive_bins: Vec<u64>,
    negative_bins: Vec<u64>,
    positives: u64,
    negatives: u64,
    /// The raw pairs, while there are no more than the cap given to `update` / `merge`.
    exact: Option<Exact>,
}

/// The exact pairs, split by class: 8 bytes a pair instead of 16 for `(f64, bool)` (its padding
/// doubled the memory of every window's exact pairs; BENCHMARKS.md, "Memory with many model
/// versions").
#[derive(Debug, Clone, Default, PartialEq)]
struct Exact {
    positive: Vec<f64>,
    negative: Vec<f64>,
}

impl Exact {
    fn len(&self) -> usize {
        self.positive.len() + self.negative.len()
    }

    fn push(&mut self, score: f64, positive: bool) {
        if positive {
            self.positive.push(score);
        } else {
            self.negative.push(score);
        }
    }

    fn extend(&mut self, other: &Self) {
        self.positive.extend_from_slice(&other.positive);
        self.negative.extend_from_slice(&other.negative);
    }

    fn clear(&mut self) {
        self.positive.clear();
        self.negative.clear();
    }

    fn pairs(&self) -> Vec<(f64, bool)> {
        let positive = self.positive.iter().map(|&s| (s, true));
        positive
            .chain(self.negative.iter().map(|&s| (s, false)))
            .collect()
    }

    fn from_pairs(pairs: &[(f64, bool)]) -> Self {
        let mut exact = Self::default();
        for &(score, positive) in pairs {
            exact.push(score, positive);
        }
        exact
    }

    /// Groups of tied scores, highest first: (positives, negatives) per group.
    fn groups(&self) -> Vec<(u64, u64)> {
        let descending = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(|a, b| b.total_cmp(a));
            v
        };
        let (positive, negative) = (descending(&self.positive), descending(&self.negative));
        let (mut i, mut j) = (0, 0);
        let mut groups: Vec<(u64, u64)> = Vec::new();
        while i < positive.len() || j < negative.len() {
            // The next score in descending order, then every pair tied with it (equal as
            // f64 values, as the single sorted list compared them: -0.0 ties 0.0).
            let top = match (positive.get(i), negative.get(j)) {
                (Some(&p), Some(&n)) => {
                    if p.total_cmp(&n).is_ge() {
                        p
                    } else {
                        n
                    }
                }
                (Some(&p), None) => p,
                (None, Some(&n)) => n,
                (None, None) => unreachable!("the loop condition"),
            };
            let mut group = (0, 0);
            while positive.get(i).is_some_and(|&p| p == top) {
                group.0 += 1;
                i += 1;
            }
            while negative.get(j).is_some_and(|&n| n == top) {
                group.1 += 1;
                j += 1;
            }
            if group == (0, 0) {
                // NaN never equals itself: each NaN is its own group, as in the sorted list.
                if positive.get(i).is_some_and(|&p| p.total_cmp(&top).is_eq()) {
                    group.0 += 1;
                    i += 1;
                } else {
                    group.1 += 1;
                    j += 1;
                }
            }
            groups.push(group);
        }
        groups
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CurveWire {
    positive: Vec<(u32, u64)>,
    negative: Vec<(u32, u64)>,
    exact: Option<Vec<(f64, bool)>>,
}

fn sparse(bins: &[u64]) -> Vec<(u32, u64)> {
    (0..bins.len() as u32)
        .zip(bins)
        .filter(|(_, &n)| n > 0)
        .map(|(i, &n)| (i, n))
        .collect()
}

/// Bins from `(bin, count)` pairs, and their total.
fn dense(pairs: &[(u32, u64)]) -> Result<(Vec<u64>, u64), String> {
    let mut bins = vec![0; SCORE_BINS];
    let mut total = 0u64;
    for &(i, n) in pairs {
        let bin = bins
            .get_mut(i as usize)
            .ok_or_else(|| format!("score bin {i} out of range"))?;
        *bin += n;
        total = total.checked_add(n).ok_or("bin counts overflow")?;
    }
    Ok((bins, total))
}

impl From<ScoreCurve> for CurveWire {
    fn from(c: ScoreCurve) -> Self {
        Self {
            positive: sparse(&c.positive_bins),
            negative: sparse(&c.negative_bins),
            exact: c.exact.as_ref().map(Exact::pairs),
        }
    }
}

impl TryFrom<CurveWire> for ScoreCurve {
    type Error = String;

    fn try_from(w: CurveWire) -> Result<Self, String> {
        let (positive_bins, positives) = dense(&w.positive)?;
        let (negative_bins, negatives) = dense(&w.negative)?;
        if let Some(exact) = &w.exact {
            let p = exact.iter().filter(|(_, positive)| *positive).count() as u64;
            if (p, exact.len() as u64 - p) != (positives, negatives) {
                return Err("exact pairs disagree with the bins".into());
            }
        }
        Ok(Self {
            positive_bins,
            negative_bins,
            positives,
            negatives,
            exact: w.exact.as_deref().map(Exact::from_pairs),
        })
    }
}

impl Default for ScoreCurve {
    fn default() -> Self {
        Self {
            positive_bins: Vec::new(),
            negative_bins: Vec::new(),
            positives: 0,
            negatives: 0,
            exact: Some(Exact::default()),
        }
    }
}

impl ScoreCurve {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn count(&self) -> u64 {
        self.positives + self.negatives
    }

    /// Pairs held exactly (0 once they were dropped).
    pub fn exact_len(&self) -> usize {
        self.exact.as_ref().map_or(0, Exact::len)
    }

    pub fn is_exact(&self) -> bool {
        self.exact.is_some()
    }

    fn bins(&mut self) {
        if self.positive_bins.is_empty() {
            self.positive_bins = vec![0; SCORE_BINS];
            self.negative_bins = vec![0; SCORE_BINS];
        }
    }

    /// Records one score; keeps the pair exactly while the state holds fewer than `exact_cap`.
    #[inline]
    pub fn update(&mut self, score: f64, positive: bool, exact_cap: usize) {
        self.bins();
        let bin = score_bin(score);
        if positive {
            self.positive_bins[bin] += 1;
            self.positives += 1;
        } else {
            self.negative_bins[bin] += 1;
            self.negatives += 1;
        }
        if let Some(exact) = &mut self.exact {
            if exact.len() < exact_cap {
                exact.push(score, positive);
            } else {
                self.exact = None;
            }
        }
    }

    /// Adds `other` into `self`; the exact pairs survive if together they fit in `exact_cap`.
    pub fn merge(&mut self, other: &Self, exact_cap: usize) {
        if other.count() == 0 {
            return;
        }
        self.bins();
        for (mine, theirs) in self.positive_bins.iter_mut().zip(&other.positive_bins) {
            *mine += theirs;
        }
        for (mine, theirs) in self.negative_bins.iter_mut().zip(&other.negative_bins) {
            *mine += theirs;
        }
        self.positives += other.positives;
        self.negatives += other.negatives;
        self.exact = match (self.exact.take(), &other.exact) {
            (Some(mut mine), Some(theirs)) if mine.len() + theirs.len() <= exact_cap => {
                mine.extend(theirs);
                Some(mine)
            }
            _ => None,
        };
    }

    /// Empties the state (keeping the bin allocation), exact again.
    pub fn reset(&mut self) {
        self.positive_bins.fill(0);
        self.negative_bins.fill(0);
        self.positives = 0;
        self.negatives = 0;
        match &mut self.exact {
            Some(exact) => exact.clear(),
            None => self.exact = Some(Exact::default()),
        }
    }

    /// Groups of tied scores, highest score first: (positives, negatives) per group.
    fn groups(&self) -> Vec<(u64, u64)> {
        match &self.exact {
            Some(exact) => exact.groups(),
            None => self
                .positive_bins
                .iter()
                .zip(&self.negative_bins)
                .rev()
                .filter(|(p, n)| **p + **n > 0)
                .map(|(&p, &n)| (p, n))
                .collect(),
        }
    }

    /// `roc_auc_score`; `None` unless both classes are present.
    pub fn roc_auc(&self) -> Option<Estimate> {
        if self.positives == 0 || self.negatives == 0 {
            return None;
        }
        let (p_total, n_total) = (self.positives as f64, self.negatives as f64);
        // Mann–Whitney from the top: each positive beats the negatives below its group and ties
        // half of those in it.
        let mut negatives_below = n_total;
        let mut wins = 0.0;
        let mut tied = 0.0;
        for (p, n) in self.groups() {
            let (p, n) = (p as f64, n as f64);
            negatives_below -= n;
            wins += p * (negatives_below + 0.5 * n);
            tied += p * n;
        }
        let pairs = p_total * n_total;
        Some(Estimate {
            value: wins / pairs,
            error_bound: if self.is_exact() {
                0.0
            } else {
                0.5 * tied / pairs
            },
        })
    }

    /// `average_precision_score`; `None` with no scores at all, 0 with no positives.
    pub fn average_precision(&self) -> Option<Estimate> {
        if self.count() == 0 {
            return None;
        }
        if self.positives == 0 {
            return Some(Estimate {
                value: 0.0,
                error_bound: 0.0,
            });
        }
        let p_total = self.positives as f64;
        let (mut tp, mut fp) = (0.0, 0.0);
        let (mut ap, mut bound) = (0.0, 0.0);
        for (p, n) in self.groups() {
            let (p, n) = (p as f64, n as f64);
            if p > 0.0 {
                let hi = (tp + p) / (tp + fp + p);
                let lo = (tp + 1.0) / (tp + fp + 1.0 + n);
                bound += p / p_total * (hi - lo);
            }
            tp += p;
            fp += n;
            ap += p / p_total * (tp / (tp + fp));
        }
        Some(Estimate {
            value: ap,
            error_bound: if self.is_exact() { 0.0 } else { bound },
        })
    }

    /// The histogram-only view of this state (for testing the bound against the exact value).
    pub fn approximate(&self) -> Self {
        Self {
            exact: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn curve(pairs: &[(f64, bool)], cap: usize) -> ScoreCurve {
        let mut c = ScoreCurve::new();
        for &(s, y) in pairs {
            c.update(s, y, cap);
        }
        c
    }

    #[test]
    fn bins_are_monotone_and_cover_the_range() {
        let mut last = 0;
        for i in 0..=10_000 {
            let b = score_bin(i as f64 / 10_000.0);
            assert!(b >= last);
            last = b;
        }
        assert_eq!(score_bin(-3.0), 0);
        assert_eq!(score_bin(0.5), SCORE_BINS / 2);
        assert_eq!(score_bin(7.0), SCORE_BINS - 1);
    }

    #[test]
    fn one_class_has_no_auc() {
        let c = curve(&[(0.2, true), (0.9, true)], 10);
        assert_eq!(c.roc_auc(), None);
        assert_eq!(c.average_precision().map(|e| e.value), Some(1.0));
        let c = curve(&[(0.2, false)], 10);
        assert_eq!(c.average_precision().map(|e| e.value), Some(0.0));
    }

    fn pairs() -> impl Strategy<Value = Vec<(f64, bool)>> {
        // Scores on a coarse grid so that ties are common.
        proptest::collection::vec(
            ((0u32..=40).prop_map(|s| s as f64 / 40.0), any::<bool>()),
            0..120,
        )
    }

    /// The groups as one list sorted by score, highest first, and cut wherever a score differs
    /// from the one before: what `Exact::groups` computes from its two lists.
    fn groups_of_one_sorted_list(pairs: &[(f64, bool)]) -> Vec<(u64, u64)> {
        let mut sorted = pairs.to_vec();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut groups: Vec<(u64, u64)> = Vec::new();
        let mut last = f64::NAN;
        for (score, positive) in sorted {
            if groups.is_empty() || score != last {
                groups.push((0, 0));
                last = score;
            }
            let g = groups.last_mut().unwrap();
            if positive {
                g.0 += 1;
            } else {
                g.1 += 1;
            }
        }
        groups
    }

    proptest! {
        #[test]
        fn split_pairs_group_as_one_sorted_list(
            pairs in proptest::collection::vec(
                (prop_oneof![
                    (0u32..=8).prop_map(|s| s as f64 / 8.0),
                    Just(0.0),
                    Just(-0.0),
                    Just(1.0),
                ], any::<bool>()),
                0..80,
            ),
        ) {
            prop_assert_eq!(
                Exact::from_pairs(&pairs).groups(),
                groups_of_one_sorted_list(&pairs)
            );
        }

        #[test]
        fn merge_equals_concatenation(a in pairs(), b in pairs(), cap in 0usize..300) {
            let mut merged = curve(&a, cap);
            merged.merge(&curve(&b, cap), cap);
            let all: Vec<_> = a.iter().chain(&b).copied().collect();
            let whole = curve(&all, cap);
            prop_assert_eq!(merged.is_exact(), whole.is_exact());
            let close = |x: Option<Estimate>, y: Option<Estimate>| match (x, y) {
                (None, None) => true,
                (Some(x), Some(y)) => (x.value - y.value).abs() < 1e-12
                    && (x.error_bound - y.error_bound).abs() < 1e-12,
                _ => false,
            };
            prop_assert!(close(merged.roc_auc(), whole.roc_auc()));
            prop_assert!(close(merged.average_precision(), whole.average_precision()));
        }

        #[test]
        fn histogram_error_stays_within_its_bound(
            scores in proptest::collection::vec((0.0f64..1.0, any::<bool>()), 1..400),
        ) {
            let exact = curve(&scores, usize::MAX);
            let approx = exact.approximate();
            if let (Some(e), Some(a)) = (exact.roc_auc(), approx.roc_auc()) {
                prop_assert!((e.value - a.value).abs() <= a.error_bound + 1e-12);
            }
            let (e, a) = (exact.average_precision().unwrap(), approx.average_precision().unwrap());
            prop_assert!((e.value - a.value).abs() <= a.error_bound + 1e-12);
        }
    }
}
