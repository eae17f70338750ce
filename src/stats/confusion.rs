//! A growable confusion matrix and the label-based classification metrics read from it, with
//! scikit-learn's semantics (`sklearn.metrics`, version pinned in `tests/oracles/requirements.txt`):
//! `zero_division=0`, and averaging over the labels present in the true *or* predicted classes of
//! the data (`labels=None`), as `precision_recall_fscore_support` does.
//!
//! Classes are dense indices `0..n` chosen by the caller; the matrix grows when a larger index
//! arrives, so states of one model that saw different numbers of classes still merge.

/// Counts of (true class, predicted class) pairs. Serialized as its side and counts (the fleet's
/// shared window states, `src/fleet.rs`); a side that does not match the counts is refused.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "ConfusionWire", into = "ConfusionWire")]
pub struct ConfusionMatrix {
    /// Side of the matrix: every class index seen so far is below it.
    n: usize,
    /// Row-major: `counts[t * n + p]` pairs with true class `t` predicted as `p`.
    counts: Vec<u64>,
    total: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ConfusionWire {
    n: usize,
    counts: Vec<u64>,
}

impl From<ConfusionMatrix> for ConfusionWire {
    fn from(m: ConfusionMatrix) -> Self {
        Self {
            n: m.n,
            counts: m.counts,
        }
    }
}

impl TryFrom<ConfusionWire> for ConfusionMatrix {
    type Error = String;

    fn try_from(w: ConfusionWire) -> Result<Self, String> {
        if w.n.checked_mul(w.n) != Some(w.counts.len()) {
            return Err(format!("{} counts for {} classes", w.counts.len(), w.n));
        }
        Ok(Self {
            total: w.counts.iter().sum(),
            n: w.n,
            counts: w.counts,
        })
    }
}

/// How per-class scores are combined, as scikit-learn's `average` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Average {
    /// Global TP, FP and FN. For single-label data precision = recall = F1 = accuracy.
    Micro,
    /// Unweighted mean over the present classes.
    Macro,
    /// Mean weighted by each class's support (number of true instances).
    Weighted,
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// `num / den`, or 0 when `den` is 0 (scikit-learn's `zero_division=0`).
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// F1 as scikit-learn computes it since 1.3: `2·tp / (2·tp + fp + fn)`, 0 when the denominator is.
fn f1(tp: f64, fp: f64, fn_: f64) -> f64 {
    ratio(2.0 * tp, 2.0 * tp + fp + fn_)
}

impl ConfusionMatrix {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of class indices the matrix spans.
    pub fn classes(&self) -> usize {
        self.n
    }

    /// Labelled pairs counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    fn grow(&mut self, n: usize) {
        if n <= self.n {
            return;
        }
        let mut counts = vec![0; n * n];
        for t in 0..self.n {
            counts[t * n..t * n + self.n]
                .copy_from_slice(&self.counts[t * self.n..(t + 1) * self.n]);
        }
        self.counts = counts;
        self.n = n;
    }

    #[inline]
    pub fn update(&mut self, truth: usize, predicted: usize) {
        let need = truth.max(predicted) + 1;
        if need > self.n {
            self.grow(need);
        }
        self.counts[truth * self.n + predicted] += 1;
        self.total += 1;
    }

    /// Adds `n` pairs of one cell.
    pub fn add(&mut self, truth: usize, predicted: usize, n: u64) {
        self.grow(truth.max(predicted) + 1);
        self.counts[truth * self.n + predicted] += n;
        self.total += n;
    }

    pub fn merge(&mut self, other: &Self) {
        self.grow(other.n);
        for t in 0..other.n {
            for p in 0..other.n {
                self.counts[t * self.n + p] += other.counts[t * other.n + p];
            }
        }
        self.total += other.total;
    }

    /// Zeroes the counts, keeping the allocation.
    pub fn reset(&mut self) {
        self.counts.fill(0);
        self.total = 0;
    }

    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        if truth < self.n && predicted < self.n {
            self.counts[truth * self.n + predicted]
        } else {
            0
        }
    }

    /// True instances of `class` (row sum).
    pub fn support(&self, class: usize) -> u64 {
        (0..self.n).map(|p| self.count(class, p)).sum()
    }

    /// Predictions of `class` (column sum).
    pub fn predicted(&self, class: usize) -> u64 {
        (0..self.n).map(|t| self.count(t, class)).sum()
    }

    /// True positives, false positives, false negatives and true negatives of `class`
    /// (one-vs-rest).
    pub fn outcomes(&self, class: usize) -> [u64; 4] {
        let tp = self.count(class, class);
        let fp = self.predicted(class) - tp;
        let fn_ = self.support(class) - tp;
        [tp, fp, fn_, self.total - tp - fp - fn_]
    }

    /// The classes scikit-learn would average over: those with a true or predicted instance.
    pub fn present(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.n).filter(|&c| self.support(c) > 0 || self.predicted(c) > 0)
    }

    pub fn class_scores(&self, class: usize) -> ClassScores {
        let [tp, fp, fn_, _] = self.outcomes(class).map(|v| v as f64);
        ClassScores {
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            f1: f1(tp, fp, fn_),
            support: self.support(class),
        }
    }

    /// `accuracy_score`; `None` with no pairs (scikit-learn would divide by zero).
    pub fn accuracy(&self) -> Option<f64> {
        (self.total > 0).then(|| {
            let correct: u64 = (0..self.n).map(|c| self.count(c, c)).sum();
            correct as f64 / self.total as f64
        })
    }

    /// `balanced_accuracy_score`: mean recall over the classes with true instances (classes only
    /// ever predicted are left out, as scikit-learn does after its warning).
    pub fn balanced_accuracy(&self) -> Option<f64> {
        let recalls: Vec<f64> = (0..self.n)
            .filter(|&c| self.support(c) > 0)
            .map(|c| self.count(c, c) as f64 / self.support(c) as f64)
            .collect();
        (!recalls.is_empty()).then(|| recalls.iter().sum::<f64>() / recalls.len() as f64)
    }

    /// Averaged precision, recall and F1 as `precision_recall_fscore_support(average=...)`;
    /// `None` with no pairs.
    pub fn averaged(&self, average: Average) -> Option<ClassScores> {
        if self.total == 0 {
            return None;
        }
        let classes: Vec<usize> = self.present().collect();
        Some(match average {
            Average::Micro => {
                let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
                for &c in &classes {
                    let [t, p, n, _] = self.outcomes(c).map(|v| v as f64);
                    tp += t;
                    fp += p;
                    fn_ += n;
                }
                ClassScores {
                    precision: ratio(tp, tp + fp),
                    recall: ratio(tp, tp + fn_),
                    f1: f1(tp, fp, fn_),
                    support: self.total,
                }
            }
            Average::Macro | Average::Weighted => {
                let scores: Vec<ClassScores> =
                    classes.iter().map(|&c| self.class_scores(c)).collect();
                let weights: Vec<f64> = scores
                    .iter()
                    .map(|s| match average {
                        Average::Weighted => s.support as f64,
                        _ => 1.0,
                    })
                    .collect();
                let total: f64 = weights.iter().sum();
                let mean = |field: fn(&ClassScores) -> f64| {
                    if total == 0.0 {
                        0.0
                    } else {
                        scores
                            .iter()
                            .zip(&weights)
                            .map(|(s, w)| field(s) * w)
                            .sum::<f64>()
                            / total
                    }
                };
                ClassScores {
                    precision: mean(|s| s.precision),
                    recall: mean(|s| s.recall),
                    f1: mean(|s| s.f1),
                    support: self.total,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matrix(pairs: &[(usize, usize)]) -> ConfusionMatrix {
        let mut m = ConfusionMatrix::new();
        for &(t, p) in pairs {
            m.update(t, p);
        }
        m
    }

    #[test]
    fn outcomes_partition_the_pairs() {
        let m = matrix(&[(0, 0), (0, 1), (1, 1), (2, 1), (2, 2)]);
        assert_eq!(m.outcomes(1), [1, 2, 0, 2]);
        assert_eq!(m.accuracy(), Some(3.0 / 5.0));
        assert_eq!(ConfusionMatrix::new().accuracy(), None);
    }

    proptest! {
        #[test]
        fn merge_equals_concatenation(
            a in proptest::collection::vec((0usize..6, 0usize..6), 0..50),
            b in proptest::collection::vec((0usize..12, 0usize..12), 0..50),
        ) {
            let mut merged = matrix(&a);
            merged.merge(&matrix(&b));
            let all: Vec<_> = a.iter().chain(&b).copied().collect();
            let whole = matrix(&all);
            for t in 0..12 {
                for p in 0..12 {
                    prop_assert_eq!(merged.count(t, p), whole.count(t, p));
                }
            }
            prop_assert_eq!(merged.total(), whole.total());
            prop_assert_eq!(merged.averaged(Average::Macro), whole.averaged(Average::Macro));
        }
    }
}
