//! ROC AUC and average precision of one binary problem (a binary classifier, or one class against
//! the rest), in bounded memory.
//!
//! Two representations are kept side by side:
//! - a **score histogram**: positives and negatives counted in [`SCORE_BINS`] bins that are
//!   uniform in logit space over `[-LOGIT_RANGE, LOGIT_RANGE]` (probabilities from 4.5e-5 to
//!   1 − 4.5e-5; the bins are narrow near 0 and 1, where calibrated classifiers put most scores).
//!   Scores outside (0, 1) fall in the end bins. Mergeable, fixed size; a merged state keeps the
//!   counts in the smallest form that holds them (`Bins`).
//! - the **exact pairs** `(score, is_positive)` while there are at most `exact_cap` of them;
//!   past that they are dropped for good (for this state). States merged from the same live
//!   state share its pairs instead of copying them (`Exact`).
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

use std::sync::Arc;

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

/// Largest number of non-empty bins one side of a stored state keeps as a sparse list: 8 bytes
/// an entry, so at most 1 KiB, what the dense u16 counts take (u32: 2 KiB, u64: 4 KiB).
const SPARSE_MAX: usize = SCORE_BINS / 4;

/// Counts per score bin of one side of a curve (its positives, or its negatives), in the
/// smallest of four forms that holds them (BENCHMARKS.md, "Memory with many model versions"):
/// a window keeps a state per bucket, and most buckets see few distinct scores, or counts far
/// below 2¹⁶ (a 30 s bucket of 200 records/s holds 6 000). The state records update is always
/// `Wide` (one index per score, no search); a merge result takes the smallest form that fits. The forms are invisible outside this module:
/// equality, serialization and every statistic read the counts, not the form.
#[derive(Debug, Clone)]
enum Bins {
    /// The non-empty bins in increasing order, each with its count.
    Sparse(Vec<(u16, u32)>),
    /// Every bin's count, while all fit in a u16.
    Dense16(Box<[u16]>),
    /// Every bin's count, while all fit in a u32.
    Dense32(Box<[u32]>),
    /// Every bin's count.
    Wide(Box<[u64]>),
}

impl Default for Bins {
    fn default() -> Self {
        Bins::Sparse(Vec::new())
    }
}

impl PartialEq for Bins {
    fn eq(&self, other: &Self) -> bool {
        self.nonempty() == other.nonempty()
    }
}

impl Bins {
    /// Adds one to `bin`; the state becomes `Wide` first if it is not.
    #[inline]
    fn increment(&mut self, bin: usize) {
        if !matches!(self, Bins::Wide(_)) {
            self.widen();
        }
        if let Bins::Wide(counts) = self {
            counts[bin] += 1;
        }
    }

    fn widen(&mut self) {
        let mut counts = vec![0u64; SCORE_BINS].into_boxed_slice();
        self.for_each(|bin, n| counts[bin] = n);
        *self = Bins::Wide(counts);
    }

    /// Calls `f(bin, count)` for every non-empty bin, in increasing bin order.
    fn for_each(&self, mut f: impl FnMut(usize, u64)) {
        match self {
            Bins::Sparse(entries) => {
                for &(bin, n) in entries {
                    f(bin as usize, u64::from(n));
                }
            }
            Bins::Dense16(counts) => each_nonempty(counts, f),
            Bins::Dense32(counts) => each_nonempty(counts, f),
            Bins::Wide(counts) => each_nonempty(counts, f),
        }
    }

    /// The non-empty bins in increasing order, with their counts.
    fn nonempty(&self) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        self.for_each(|bin, n| out.push((bin, n)));
        out
    }

    /// The smallest form holding these non-empty bins (increasing, each bin once).
    fn of_nonempty(entries: &[(usize, u64)]) -> Self {
        let largest = entries.iter().map(|&(_, n)| n).max().unwrap_or(0);
        if largest <= u64::from(u32::MAX) && entries.len() <= SPARSE_MAX {
            Bins::Sparse(entries.iter().map(|&(b, n)| (b as u16, n as u32)).collect())
        } else if largest <= u64::from(u16::MAX) {
            Bins::Dense16(dense_of(entries))
        } else if largest <= u64::from(u32::MAX) {
            Bins::Dense32(dense_of(entries))
        } else {
            Bins::Wide(dense_of(entries))
        }
    }

    /// Adds `other`'s counts. A `Wide` state stays `Wide` (it is the live state records update,
    /// or it outgrew u32); any other takes the smallest form that holds the sum.
    fn merge(&mut self, other: &Bins) {
        match self {
            Bins::Wide(counts) => {
                other.for_each(|bin, n| counts[bin] += n);
                return;
            }
            Bins::Dense16(counts) => {
                if add_if_it_fits(counts, other) {
                    return;
                }
            }
            Bins::Dense32(counts) => {
                if add_if_it_fits(counts, other) {
                    return;
                }
            }
            Bins::Sparse(mine) => {
                if let Bins::Sparse(theirs) = other {
                    // Both short: merged in one pass, without the dense array below.
                    let (mut i, mut j) = (0, 0);
                    let mut sum: Vec<(usize, u64)> = Vec::with_capacity(mine.len() + theirs.len());
                    while i < mine.len() || j < theirs.len() {
                        let a = mine.get(i).map(|&(b, n)| (b as usize, u64::from(n)));
                        let b = theirs.get(j).map(|&(b, n)| (b as usize, u64::from(n)));
                        match (a, b) {
                            (Some(a), Some(b)) if a.0 == b.0 => {
                                sum.push((a.0, a.1 + b.1));
                                i += 1;
                                j += 1;
                            }
                            (Some(a), Some(b)) if a.0 < b.0 => {
                                sum.push(a);
                                i += 1;
                            }
                            (Some(a), None) => {
                                sum.push(a);
                                i += 1;
                            }
                            (_, Some(b)) => {
                                sum.push(b);
                                j += 1;
                            }
                            (None, None) => unreachable!("the loop condition"),
                        }
                    }
                    *self = Bins::of_nonempty(&sum);
                    return;
                }
            }
        }
        let mut sum = [0u64; SCORE_BINS];
        self.for_each(|bin, n| sum[bin] += n);
        other.for_each(|bin, n| sum[bin] += n);
        let nonempty: Vec<(usize, u64)> = (0..SCORE_BINS)
            .filter(|&bin| sum[bin] > 0)
            .map(|bin| (bin, sum[bin]))
            .collect();
        *self = Bins::of_nonempty(&nonempty);
    }

    /// Bytes held on the heap.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        match self {
            Bins::Sparse(entries) => entries.capacity() * std::mem::size_of::<(u16, u32)>(),
            Bins::Dense16(counts) => counts.len() * 2,
            Bins::Dense32(counts) => counts.len() * 4,
            Bins::Wide(counts) => counts.len() * 8,
        }
    }
}

/// Calls `f(bin, count)` for every non-empty bin of a dense form, in increasing bin order.
fn each_nonempty<T: Copy + Into<u64>>(counts: &[T], mut f: impl FnMut(usize, u64)) {
    for (bin, &n) in counts.iter().enumerate() {
        let n = n.into();
        if n > 0 {
            f(bin, n);
        }
    }
}

/// A dense form holding these non-empty bins; every count fits `T` (the caller chose `T` by the
/// largest).
fn dense_of<T: Copy + Default + TryFrom<u64>>(entries: &[(usize, u64)]) -> Box<[T]> {
    let mut counts = vec![T::default(); SCORE_BINS].into_boxed_slice();
    for &(bin, n) in entries {
        match T::try_from(n) {
            Ok(n) => counts[bin] = n,
            Err(_) => unreachable!("the form is chosen by the largest count"),
        }
    }
    counts
}

/// Adds `other`'s counts into `counts` if every sum fits the count type; else changes nothing.
fn add_if_it_fits<T>(counts: &mut [T], other: &Bins) -> bool
where
    T: Copy + Into<u64> + TryFrom<u64>,
{
    let mut fits = true;
    other.for_each(|bin, n| fits &= T::try_from(counts[bin].into() + n).is_ok());
    if fits {
        other.for_each(|bin, n| {
            if let Ok(sum) = T::try_from(counts[bin].into() + n) {
                counts[bin] = sum;
            }
        });
    }
    fits
}

/// Histogram and (while small) exact pairs of one binary problem's scores. Serialized with the
/// bins as `(bin, count)` pairs of the non-empty ones (the fleet's shared window states,
/// `src/fleet.rs`); counts that disagree with the bins are refused.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "CurveWire", into = "CurveWire")]
pub struct ScoreCurve {
    /// Positives per bin, in the smallest form that holds them (`Bins`): nothing until the
    /// first positive (most window buckets of idle classes stay empty and cost nothing).
    positive_bins: Bins,
    negative_bins: Bins,
    positives: u64,
    negatives: u64,
    /// The raw pairs, while there are no more than the cap given to `update` / `merge`.
    exact: Option<Exact>,
}

/// Scores of one set of pairs, split by class: 8 bytes a pair instead of 16 for `(f64, bool)`
/// (its padding doubled the memory of every window's exact pairs; BENCHMARKS.md, "Memory with
/// many model versions").
#[derive(Debug, Clone, Default, PartialEq)]
struct Scores {
    positive: Vec<f64>,
    negative: Vec<f64>,
}

impl Scores {
    fn len(&self) -> usize {
        self.positive.len() + self.negative.len()
    }
}

/// Chunks a state holds before they are copied into one (a since-start state merges a chunk at
/// every flush: without a bound, a slow model's state would hold thousands of tiny ones).
const MAX_CHUNKS: usize = 32;

/// The exact pairs of a state, in arrival order: chunks shared with other states, then the
/// pairs this state recorded itself. The live state's pairs become one chunk when the windows
/// flush it ([`ScoreCurve::seal`]); every ring's bucket, every window view and the since-start
/// state that take them then hold a reference, not a copy (before, each held its own copy: five
/// or more of every live pair, the largest part of the memory of many model versions).
#[derive(Debug, Clone, Default)]
struct Exact {
    chunks: Vec<Arc<Scores>>,
    /// Pairs in `chunks`.
    shared: usize,
    own: Scores,
}

impl PartialEq for Exact {
    fn eq(&self, other: &Self) -> bool {
        self.positive().eq(other.positive()) && self.negative().eq(other.negative())
    }
}

impl Exact {
    fn len(&self) -> usize {
        self.shared + self.own.len()
    }

    fn push(&mut self, score: f64, positive: bool) {
        if positive {
            self.own.positive.push(score);
        } else {
            self.own.negative.push(score);
        }
    }

    /// Makes the pairs recorded so far a chunk, which merges then share.
    fn seal(&mut self) {
        if self.own.len() > 0 {
            self.shared += self.own.len();
            let mut own = std::mem::take(&mut self.own);
            // Shared for as long as a bucket holds it: without the growth slack.
            own.positive.shrink_to_fit();
            own.negative.shrink_to_fit();
            self.chunks.push(Arc::new(own));
            self.bound_chunks();
        }
    }

    /// Past [`MAX_CHUNKS`], copies every pair into one chunk (in order).
    fn bound_chunks(&mut self) {
        if self.chunks.len() > MAX_CHUNKS {
            let all = Scores {
                positive: self
                    .chunks
                    .iter()
                    .flat_map(|c| &c.positive)
                    .copied()
                    .collect(),
                negative: self
                    .chunks
                    .iter()
                    .flat_map(|c| &c.negative)
                    .copied()
                    .collect(),
            };
            self.chunks = vec![Arc::new(all)];
        }
    }

    fn extend(&mut self, other: &Self) {
        // Own pairs first, so that the order stays the order of arrival.
        self.seal();
        self.chunks.extend(other.chunks.iter().cloned());
        self.shared += other.shared;
        if other.own.len() > 0 {
            self.shared += other.own.len();
            self.chunks.push(Arc::new(other.own.clone()));
        }
        self.bound_chunks();
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.shared = 0;
        self.own.positive.clear();
        self.own.negative.clear();
    }

    fn positive(&self) -> impl Iterator<Item = &f64> {
        self.chunks
            .iter()
            .flat_map(|c| &c.positive)
            .chain(&self.own.positive)
    }

    fn negative(&self) -> impl Iterator<Item = &f64> {
        self.chunks
            .iter()
            .flat_map(|c| &c.negative)
            .chain(&self.own.negative)
    }

    fn pairs(&self) -> Vec<(f64, bool)> {
        let positive = self.positive().map(|&s| (s, true));
        positive
            .chain(self.negative().map(|&s| (s, false)))
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
        let descending = |v: &mut Vec<f64>| v.sort_by(|a, b| b.total_cmp(a));
        let mut positive: Vec<f64> = self.positive().copied().collect();
        let mut negative: Vec<f64> = self.negative().copied().collect();
        descending(&mut positive);
        descending(&mut negative);
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

fn sparse(bins: &Bins) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    bins.for_each(|bin, n| out.push((bin as u32, n)));
    out
}

/// Bins from `(bin, count)` pairs, and their total.
fn dense(pairs: &[(u32, u64)]) -> Result<(Bins, u64), String> {
    let mut bins = vec![0; SCORE_BINS];
    let mut total = 0u64;
    for &(i, n) in pairs {
        let bin = bins
            .get_mut(i as usize)
            .ok_or_else(|| format!("score bin {i} out of range"))?;
        *bin += n;
        total = total.checked_add(n).ok_or("bin counts overflow")?;
    }
    let nonempty: Vec<(usize, u64)> = (0..SCORE_BINS)
        .filter(|&bin| bins[bin] > 0)
        .map(|bin| (bin, bins[bin]))
        .collect();
    Ok((Bins::of_nonempty(&nonempty), total))
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
            positive_bins: Bins::default(),
            negative_bins: Bins::default(),
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

    /// Records one score; keeps the pair exactly while the state holds fewer than `exact_cap`.
    #[inline]
    pub fn update(&mut self, score: f64, positive: bool, exact_cap: usize) {
        let bin = score_bin(score);
        if positive {
            self.positive_bins.increment(bin);
            self.positives += 1;
        } else {
            self.negative_bins.increment(bin);
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
        self.positive_bins.merge(&other.positive_bins);
        self.negative_bins.merge(&other.negative_bins);
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

    /// Makes the exact pairs recorded so far shareable: states this one is merged into next
    /// hold them by reference (`Exact`). The windows call it on the live state before they
    /// flush it into the buckets (`src/windows.rs`).
    pub fn seal(&mut self) {
        if let Some(exact) = &mut self.exact {
            exact.seal();
        }
    }

    /// Empties the state, exact again. The bins are freed: the live state allocates them again
    /// at its next score, a bucket takes the form of what it is merged with next.
    pub fn reset(&mut self) {
        self.positive_bins = Bins::default();
        self.negative_bins = Bins::default();
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
            None => {
                // Every non-empty bin, highest first: the two sides' lists merged from the end.
                let (positive, negative) =
                    (self.positive_bins.nonempty(), self.negative_bins.nonempty());
                let (mut i, mut j) = (positive.len(), negative.len());
                let mut groups = Vec::with_capacity(i.max(j));
                while i > 0 || j > 0 {
                    let p = i.checked_sub(1).map(|k| positive[k]);
                    let n = j.checked_sub(1).map(|k| negative[k]);
                    let top = p.map_or(0, |p| p.0).max(n.map_or(0, |n| n.0));
                    let mut group = (0, 0);
                    if let Some((bin, count)) = p.filter(|p| p.0 == top) {
                        debug_assert_eq!(bin, top);
                        group.0 = count;
                        i -= 1;
                    }
                    if let Some((_, count)) = n.filter(|n| n.0 == top) {
                        group.1 = count;
                        j -= 1;
                    }
                    groups.push(group);
                }
                groups
            }
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

    /// One side's counts as the dense u64 array every state held before `Bins`.
    type Reference = Vec<u64>;

    fn reference_nonempty(r: &Reference) -> Vec<(usize, u64)> {
        (0..SCORE_BINS)
            .filter(|&b| r[b] > 0)
            .map(|b| (b, r[b]))
            .collect()
    }

    /// Bins with `entries` counts (any form), from increments or, for counts near u32::MAX,
    /// from `of_nonempty`.
    fn bins_of(entries: &[(usize, u64)]) -> Bins {
        let mut sorted: Vec<(usize, u64)> = Vec::new();
        let mut r = vec![0u64; SCORE_BINS];
        for &(b, n) in entries {
            r[b] += n;
        }
        sorted.extend(reference_nonempty(&r));
        Bins::of_nonempty(&sorted)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Increment(usize),
        Merge(Vec<(usize, u64)>),
        Reset,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let bin = prop_oneof![0usize..8, 0usize..SCORE_BINS];
        let count = prop_oneof![
            1u64..4,
            Just(u64::from(u16::MAX) - 1),
            Just(u64::from(u16::MAX) + 1),
            Just(u64::from(u32::MAX) - 1),
            Just(u64::from(u32::MAX)),
            Just(u64::from(u32::MAX) + 1),
        ];
        let op = prop_oneof![
            6 => bin.clone().prop_map(Op::Increment),
            3 => proptest::collection::vec((bin, count), 0..300).prop_map(Op::Merge),
            1 => Just(Op::Reset),
        ];
        proptest::collection::vec(op, 0..40)
    }

    #[test]
    fn counts_past_u32_widen_the_bins() {
        let max = u64::from(u32::MAX);
        let mut narrow = Bins::of_nonempty(&(0..SCORE_BINS).map(|b| (b, max)).collect::<Vec<_>>());
        assert!(matches!(narrow, Bins::Dense32(_)));
        narrow.merge(&bins_of(&[(7, 1)]));
        assert!(matches!(narrow, Bins::Wide(_)));
        assert_eq!(narrow.nonempty()[7], (7, max + 1));
        let mut sparse = bins_of(&[(3, max)]);
        assert!(matches!(sparse, Bins::Sparse(_)));
        sparse.merge(&bins_of(&[(3, 2)]));
        assert_eq!(sparse.nonempty(), [(3, max + 2)]);
    }

    #[test]
    fn a_bucket_of_few_distinct_scores_is_small() {
        // The load generator's multiclass scores: two values per class (BENCHMARKS.md).
        let mut live = ScoreCurve::new();
        for i in 0..6_000 {
            live.update(if i % 10 == 0 { 0.5 } else { 0.5 / 9.0 }, i % 5 == 0, 0);
        }
        let mut bucket = ScoreCurve::new();
        bucket.merge(&live, 0);
        let held = |c: &ScoreCurve| c.positive_bins.heap_bytes() + c.negative_bins.heap_bytes();
        assert_eq!(held(&live), 2 * SCORE_BINS * 8);
        assert!(held(&bucket) <= 32, "{} bytes", held(&bucket));
        // Continuous scores (a 30 s bucket of 200 records/s): u16 counts, a quarter of the live
        // state's.
        let mut live = ScoreCurve::new();
        for i in 0..6_000 {
            live.update(i as f64 / 6_000.0, i % 3 == 0, 0);
        }
        let mut bucket = ScoreCurve::new();
        bucket.merge(&live, 0);
        assert_eq!(held(&bucket), 2 * SCORE_BINS * 2);
        assert_eq!(bucket, live);
        // Past u16 in one bin (a 6-minute bucket of 200 records/s with most scores alike): u32.
        for _ in 0..70_000 {
            live.update(0.5, false, 0);
        }
        let mut bucket = ScoreCurve::new();
        bucket.merge(&live, 0);
        assert!(matches!(bucket.negative_bins, Bins::Dense32(_)));
        assert!(matches!(bucket.positive_bins, Bins::Dense16(_)));
        assert_eq!(held(&bucket), SCORE_BINS * 4 + SCORE_BINS * 2);
        assert_eq!(bucket, live);
        assert_eq!(bucket.roc_auc(), live.roc_auc());
    }

    /// What `Exact` held before its chunks: the positives' and the negatives' scores, each
    /// in arrival order.
    #[derive(Debug, Clone, Default)]
    struct ReferenceExact {
        positive: Vec<f64>,
        negative: Vec<f64>,
    }

    #[derive(Debug, Clone)]
    enum ExactOp {
        Push(f64, bool),
        Seal,
        /// Merges a state made of these pairs, sealed part way (at the index) or not at all.
        Merge(Vec<(f64, bool)>, Option<usize>),
        Clear,
    }

    fn exact_ops() -> impl Strategy<Value = Vec<ExactOp>> {
        let pair = ((0u32..=20).prop_map(|s| s as f64 / 20.0), any::<bool>());
        let op = prop_oneof![
            6 => pair.clone().prop_map(|(s, y)| ExactOp::Push(s, y)),
            2 => Just(ExactOp::Seal),
            3 => (proptest::collection::vec(pair, 0..20), proptest::option::of(0usize..20))
                .prop_map(|(pairs, at)| ExactOp::Merge(pairs, at)),
            1 => Just(ExactOp::Clear),
        ];
        proptest::collection::vec(op, 0..120)
    }

    #[test]
    fn sealed_pairs_are_shared_not_copied() {
        let mut live = ScoreCurve::new();
        for i in 0..2_000 {
            live.update(i as f64 / 2_000.0, i % 3 == 0, 2_000);
        }
        live.seal();
        let (mut bucket, mut total, mut view) =
            (ScoreCurve::new(), ScoreCurve::new(), ScoreCurve::new());
        bucket.merge(&live, 2_000);
        total.merge(&live, 2_000);
        view.merge(&bucket, 2_000);
        let chunk = &live.exact.as_ref().unwrap().chunks[0];
        assert_eq!(chunk.len(), 2_000);
        assert_eq!(
            Arc::strong_count(chunk),
            4,
            "live, bucket, total and view hold one chunk"
        );
        assert_eq!(view, live);
        assert_eq!(view.roc_auc(), live.roc_auc());
        let chunk = Arc::clone(chunk);
        live.reset();
        assert_eq!(
            Arc::strong_count(&chunk),
            4,
            "bucket, total, view and this test"
        );
        assert!(live.exact.as_ref().unwrap().chunks.is_empty());
    }

    proptest! {
        /// Chunks or not, the pairs are the ones the two plain lists held, in the same order.
        #[test]
        fn exact_chunks_hold_the_plain_lists(ops in exact_ops()) {
            let mut exact = Exact::default();
            let mut reference = ReferenceExact::default();
            for op in ops {
                match op {
                    ExactOp::Push(s, y) => {
                        exact.push(s, y);
                        if y { reference.positive.push(s) } else { reference.negative.push(s) }
                    }
                    ExactOp::Seal => exact.seal(),
                    ExactOp::Merge(pairs, at) => {
                        let mut other = Exact::default();
                        for (i, &(s, y)) in pairs.iter().enumerate() {
                            if Some(i) == at {
                                other.seal();
                            }
                            other.push(s, y);
                            if y { reference.positive.push(s) } else { reference.negative.push(s) }
                        }
                        exact.extend(&other);
                    }
                    ExactOp::Clear => {
                        exact.clear();
                        reference = ReferenceExact::default();
                    }
                }
                prop_assert!(exact.chunks.len() <= MAX_CHUNKS);
                prop_assert_eq!(exact.len(), reference.positive.len() + reference.negative.len());
                prop_assert_eq!(exact.positive().copied().collect::<Vec<_>>(), reference.positive.clone());
                prop_assert_eq!(exact.negative().copied().collect::<Vec<_>>(), reference.negative.clone());
            }
            let plain = Exact {
                own: Scores { positive: reference.positive, negative: reference.negative },
                ..Default::default()
            };
            prop_assert_eq!(exact.groups(), plain.groups());
            prop_assert_eq!(exact.pairs(), plain.pairs());
        }
    }

    proptest! {
        /// The three forms hold exactly the counts the dense u64 array held, and a merge result
        /// takes the smallest form that fits.
        #[test]
        fn bins_count_as_the_dense_array(ops in ops()) {
            let mut bins = Bins::default();
            let mut reference: Reference = vec![0; SCORE_BINS];
            for op in ops {
                match op {
                    Op::Increment(b) => {
                        bins.increment(b);
                        reference[b] += 1;
                        prop_assert!(matches!(bins, Bins::Wide(_)));
                    }
                    Op::Merge(entries) => {
                        let other = bins_of(&entries);
                        let was_wide = matches!(bins, Bins::Wide(_));
                        bins.merge(&other);
                        for (b, n) in other.nonempty() {
                            reference[b] += n;
                        }
                        let nonempty = reference_nonempty(&reference);
                        let largest = nonempty.iter().map(|&(_, n)| n).max().unwrap_or(0);
                        let (fits16, fits32) =
                            (largest <= u64::from(u16::MAX), largest <= u64::from(u32::MAX));
                        let many = nonempty.len() > SPARSE_MAX;
                        match &bins {
                            Bins::Wide(_) => prop_assert!(was_wide || !fits32),
                            Bins::Dense32(_) => prop_assert!(fits32 && !fits16 && many),
                            Bins::Dense16(_) => prop_assert!(fits16 && many),
                            Bins::Sparse(_) => prop_assert!(fits32 && !many),
                        }
                    }
                    Op::Reset => {
                        bins = Bins::default();
                        reference.fill(0);
                    }
                }
                prop_assert_eq!(bins.nonempty(), reference_nonempty(&reference));
            }
        }

        /// A state merged from parts (compact bins) reports bit for bit what the same scores
        /// recorded into one live state (wide bins) report, and serializes the same.
        #[test]
        fn merged_parts_report_as_one_live_state(
            parts in proptest::collection::vec(
                proptest::collection::vec((0.0f64..1.0, any::<bool>()), 0..300),
                1..6,
            ),
            cap in prop_oneof![Just(0usize), 0usize..400],
        ) {
            let mut merged = ScoreCurve::new();
            let mut live = ScoreCurve::new();
            for part in &parts {
                merged.merge(&curve(part, cap), cap);
                for &(s, y) in part {
                    live.update(s, y, usize::MAX);
                }
            }
            let (merged, live) = (merged.approximate(), live.approximate());
            prop_assert_eq!(merged.roc_auc(), live.roc_auc());
            prop_assert_eq!(merged.average_precision(), live.average_precision());
            prop_assert_eq!(
                serde_json::to_string(&merged).unwrap(),
                serde_json::to_string(&live).unwrap()
            );
            prop_assert_eq!(&merged, &live);
        }
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
