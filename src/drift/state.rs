//! The mergeable drift state of one window bucket: per feature, counts over the reference's fine
//! bins (or categories), data-quality counts, the range seen, and the raw values while few.

use crate::windows::WindowState;
use std::sync::Arc;

/// Chunks a state holds before they are copied into one (a since-start state merges a chunk at
/// every flush).
const MAX_CHUNKS: usize = 32;

/// A numeric feature's finite values, in arrival order: chunks shared with other states, then
/// the values this state recorded itself. The live state's values become one chunk when the
/// windows flush it (`WindowState::seal`), and the buckets, views and since-start state that take
/// them hold a reference, not a copy, as the score curves' exact pairs do (`Exact` in
/// `src/stats/score_curve.rs`; BENCHMARKS.md, "Memory with many model versions").
#[derive(Debug, Clone, Default)]
pub struct ExactValues {
    chunks: Vec<Arc<[f64]>>,
    /// Values in `chunks`.
    shared: usize,
    own: Vec<f64>,
}

impl PartialEq for ExactValues {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl ExactValues {
    pub fn len(&self) -> usize {
        self.shared + self.own.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, value: f64) {
        self.own.push(value);
    }

    /// The values in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = &f64> {
        self.chunks.iter().flat_map(|c| c.iter()).chain(&self.own)
    }

    pub fn to_vec(&self) -> Vec<f64> {
        self.iter().copied().collect()
    }

    /// Makes the values recorded so far a chunk, which merges then share.
    fn seal(&mut self) {
        if !self.own.is_empty() {
            self.shared += self.own.len();
            let own: Arc<[f64]> = std::mem::take(&mut self.own).into();
            self.chunks.push(own);
            self.bound_chunks();
        }
    }

    fn extend(&mut self, other: &Self) {
        // Own values first, so that the order stays the order of arrival.
        self.seal();
        self.chunks.extend(other.chunks.iter().cloned());
        self.shared += other.shared;
        if !other.own.is_empty() {
            self.shared += other.own.len();
            self.chunks.push(other.own.as_slice().into());
        }
        self.bound_chunks();
    }

    /// Past [`MAX_CHUNKS`], copies every value into one chunk (in order).
    fn bound_chunks(&mut self) {
        if self.chunks.len() > MAX_CHUNKS {
            let all: Arc<[f64]> = self.chunks.iter().flat_map(|c| c.iter()).copied().collect();
            self.chunks = vec![all];
        }
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.shared = 0;
        self.own.clear();
    }
}

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
    pub exact: Option<ExactValues>,
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
            exact: Some(ExactValues::default()),
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
                            x.extend(y);
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

    fn seal(&mut self) {
        for f in &mut self.features {
            if let FeatureCounts::Numeric(NumericCounts {
                exact: Some(exact), ..
            }) = f
            {
                exact.seal();
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
                        None => n.exact = Some(ExactValues::default()),
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
                FeatureCounts::Numeric(n) => n.exact.as_ref().map_or(0, ExactValues::len),
                FeatureCounts::Categorical(_) => 0,
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert_eq!(n.exact.as_ref().map(|e| e.own.capacity()), Some(0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(f64),
        Seal,
        /// Merges a state of these values, sealed part way (at the index) or not at all.
        Merge(Vec<f64>, Option<usize>),
        Clear,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let value = (0u32..50).prop_map(f64::from);
        let op = prop_oneof![
            6 => value.clone().prop_map(Op::Push),
            2 => Just(Op::Seal),
            3 => (proptest::collection::vec(value, 0..20), proptest::option::of(0usize..20))
                .prop_map(|(values, at)| Op::Merge(values, at)),
            1 => Just(Op::Clear),
        ];
        proptest::collection::vec(op, 0..120)
    }

    #[test]
    fn sealed_values_are_shared_not_copied() {
        let mut live = ExactValues::default();
        (0..2_000).for_each(|i| live.push(f64::from(i)));
        live.seal();
        let (mut bucket, mut total) = (ExactValues::default(), ExactValues::default());
        bucket.extend(&live);
        total.extend(&live);
        assert_eq!(Arc::strong_count(&live.chunks[0]), 3);
        assert_eq!(bucket, live);
        assert_eq!(
            total.to_vec(),
            (0..2_000).map(f64::from).collect::<Vec<_>>()
        );
    }

    proptest! {
        /// Chunks or not, the values are the ones one plain list held, in the same order.
        #[test]
        fn exact_values_hold_the_plain_list(ops in ops()) {
            let mut exact = ExactValues::default();
            let mut plain: Vec<f64> = Vec::new();
            for op in ops {
                match op {
                    Op::Push(v) => {
                        exact.push(v);
                        plain.push(v);
                    }
                    Op::Seal => exact.seal(),
                    Op::Merge(values, at) => {
                        let mut other = ExactValues::default();
                        for (i, &v) in values.iter().enumerate() {
                            if Some(i) == at {
                                other.seal();
                            }
                            other.push(v);
                        }
                        exact.extend(&other);
                        plain.extend(&values);
                    }
                    Op::Clear => {
                        exact.clear();
                        plain.clear();
                    }
                }
                prop_assert!(exact.chunks.len() <= MAX_CHUNKS);
                prop_assert_eq!(exact.len(), plain.len());
                prop_assert_eq!(exact.to_vec(), plain.clone());
            }
        }
    }
}
