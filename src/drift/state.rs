//! The mergeable drift state of one window bucket: per feature, counts over the reference's fine
//! bins (or categories), data-quality counts, the range seen, and the raw values while few.

use crate::windows::WindowState;

/// One numeric feature's counts.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericCounts {
    /// Over the profile's fine bins.
    pub bins: Vec<u64>,
    pub missing: u64,
    pub non_finite: u64,
    /// Finite values outside the reference's [min, max].
    pub out_of_range: u64,
    pub min: f64,
    pub max: f64,
    /// The finite values while there are at most the exact cap of them.
    pub exact: Option<Vec<f64>>,
}

impl NumericCounts {
    pub fn new(bins: usize) -> Self {
        Self {
            bins: vec![0; bins],
            missing: 0,
            non_finite: 0,
            out_of_range: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            exact: Some(Vec::new()),
        }
    }

    pub fn finite(&self) -> u64 {
        self.bins.iter().sum()
    }

    /// Values seen (finite, non-finite and missing).
    pub fn total(&self) -> u64 {
        self.finite() + self.missing + self.non_finite
    }
}

/// One categorical feature's counts.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoricalCounts {
    /// Over the profile's categories, then one for everything else.
    pub counts: Vec<u64>,
    /// Values of categories the reference never saw (also counted in the last entry).
    pub unseen: u64,
    pub missing: u64,
}

impl CategoricalCounts {
    pub fn new(categories: usize) -> Self {
        Self {
            counts: vec![0; categories + 1],
            unseen: 0,
            missing: 0,
        }
    }

    pub fn present(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn total(&self) -> u64 {
        self.present() + self.missing
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FeatureCounts {
    Numeric(NumericCounts),
    Categorical(CategoricalCounts),
}

/// All features of one model version (in profile order), for one bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriftState {
    pub features: Vec<FeatureCounts>,
}

impl DriftState {
    /// Records one numeric value of feature `i` in fine bin `bin` (the caller looked it up).
    #[inline(always)]
    pub fn numeric(
        &mut self,
        i: usize,
        value: f64,
        bin: usize,
        out_of_range: bool,
        exact_cap: usize,
    ) {
        let FeatureCounts::Numeric(n) = &mut self.features[i] else {
            return;
        };
        if value.is_nan() {
            n.missing += 1;
            return;
        }
        if value.is_infinite() {
            n.non_finite += 1;
            return;
        }
        n.bins[bin] += 1;
        n.out_of_range += u64::from(out_of_range);
        n.min = n.min.min(value);
        n.max = n.max.max(value);
        if let Some(exact) = &mut n.exact {
            if exact.len() < exact_cap {
                exact.push(value);
            } else {
                n.exact = None;
            }
        }
    }

    #[inline]
    pub fn missing(&mut self, i: usize) {
        match &mut self.features[i] {
            FeatureCounts::Numeric(n) => n.missing += 1,
            FeatureCounts::Categorical(c) => c.missing += 1,
        }
    }

    /// Records one category of feature `i`: `index` into the profile's categories, or `None` for
    /// one outside them (counted in the last, "other", entry and as unseen).
    #[inline]
    pub fn categorical(&mut self, i: usize, index: Option<usize>) {
        let FeatureCounts::Categorical(c) = &mut self.features[i] else {
            return;
        };
        match index {
            Some(k) => c.counts[k] += 1,
            None => {
                let last = c.counts.len() - 1;
                c.counts[last] += 1;
                c.unseen += 1;
            }
        }
    }
}

impl WindowState for DriftState {
    fn empty_like(&self) -> Self {
        // Fresh counts of the same shape, not a clone reset: a clone of the live state carried
        // its exact values' allocation (cleared, not freed: up to 16 KB a feature) into every
        // new bucket (BENCHMARKS.md, "Memory with many model versions").
        let features = self
            .features
            .iter()
            .map(|f| match f {
                FeatureCounts::Numeric(n) => {
                    FeatureCounts::Numeric(NumericCounts::new(n.bins.len()))
                }
                FeatureCounts::Categorical(c) => {
                    FeatureCounts::Categorical(CategoricalCounts::new(c.counts.len() - 1))
                }
            })
            .collect();
        DriftState { features }
    }

    fn merge(&mut self, other: &Self, exact_budget: usize) {
        for (mine, theirs) in self.features.iter_mut().zip(&other.features) {
            match (mine, theirs) {
                (FeatureCounts::Numeric(a), FeatureCounts::Numeric(b)) => {
                    for (x, y) in a.bins.iter_mut().zip(&b.bins) {
                        *x += y;
                    }
                    a.missing += b.missing;
                    a.non_finite += b.non_finite;
                    a.out_of_range += b.out_of_range;
                    a.min = a.min.min(b.min);
                    a.max = a.max.max(b.max);
                    a.exact = match (a.exact.take(), &b.exact) {
                        (Some(mut x), Some(y)) if x.len() + y.len() <= exact_budget => {
                            x.extend_from_slice(y);
                            Some(x)
                        }
                        _ => None,
                    };
                }
                (FeatureCounts::Categorical(a), FeatureCounts::Categorical(b)) => {
                    for (x, y) in a.counts.iter_mut().zip(&b.counts) {
                        *x += y;
                    }
                    a.unseen += b.unseen;
                    a.missing += b.missing;
                }
                _ => {}
            }
        }
    }

    fn reset(&mut self) {
        for f in &mut self.features {
            match f {
                FeatureCounts::Numeric(n) => {
                    n.bins.fill(0);
                    n.missing = 0;
                    n.non_finite = 0;
                    n.out_of_range = 0;
                    n.min = f64::INFINITY;
                    n.max = f64::NEG_INFINITY;
                    match &mut n.exact {
                        Some(v) => v.clear(),
                        None => n.exact = Some(Vec::new()),
                    }
                }
                FeatureCounts::Categorical(c) => {
                    c.counts.fill(0);
                    c.unseen = 0;
                    c.missing = 0;
                }
            }
        }
    }

    fn exact_len(&self) -> usize {
        self.features
            .iter()
            .map(|f| match f {
                FeatureCounts::Numeric(n) => n.exact.as_ref().map_or(0, Vec::len),
                FeatureCounts::Categorical(_) => 0,
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_like_is_the_state_reset_without_its_allocations() {
        let mut live = DriftState {
            features: vec![
                FeatureCounts::Numeric(NumericCounts::new(20)),
                FeatureCounts::Categorical(CategoricalCounts::new(3)),
            ],
        };
        for i in 0..2_000 {
            live.numeric(0, i as f64, i % 20, i % 7 == 0, 2_000);
            live.categorical(1, (i % 5 < 3).then_some(i % 3));
            if i % 11 == 0 {
                live.missing(1);
            }
        }
        let empty = live.empty_like();
        let mut reset = live.clone();
        reset.reset();
        assert_eq!(empty, reset);
        let FeatureCounts::Numeric(n) = &empty.features[0] else {
            panic!("numeric")
        };
        assert_eq!(n.exact.as_ref().map(Vec::capacity), Some(0));
    }
}
