//! An explicit-bucket histogram with the OpenTelemetry / Prometheus bucket semantics: bucket `i`
//! counts values in `(bounds[i-1], bounds[i]]`, the last bucket everything above the last bound.
//!
//! Written by hand because the OpenTelemetry SDK's histogram cannot be fed pre-aggregated
//! counts, and shards must aggregate without an SDK call per record (ARCHITECTURE.md, Data flow).

/// Counts, sum, min and max of the values recorded against fixed bucket boundaries.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplicitHistogram {
    /// Upper bounds of the buckets, strictly increasing; shared by every histogram of one
    /// instrument, so it is a static slice rather than a per-histogram vector.
    bounds: &'static [f64],
    /// One count per bucket: `bounds.len() + 1` of them, the last one for the overflow bucket.
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl ExplicitHistogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "bounds must increase"
        );
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Records one value. Non-finite values are the caller's to reject; here they are ignored
    /// so that one bad value can never poison `sum`.
    #[inline]
    pub fn update(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        // First bound >= value: with upper-inclusive buckets that is the value's bucket.
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket] += 1;
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Adds `other`'s observations into `self`. Both must share the same bounds.
    pub fn merge(&mut self, other: &Self) {
        assert_eq!(
            self.bounds, other.bounds,
            "merging histograms with other bounds"
        );
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.bounds);
    }

    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    pub fn bucket_counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Smallest value recorded, `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// The `q`-quantile estimated the way Prometheus' `histogram_quantile` does: linear
    /// interpolation inside the bucket that holds the rank, the lowest bucket starting at 0 and
    /// the overflow bucket answering its lower bound. Used by the demo's terminal summary.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * self.count as f64;
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (seen + n) as f64 >= rank {
                if i == self.bounds.len() {
                    return self.bounds.last().copied();
                }
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let upper = self.bounds[i];
                let into = (rank - seen as f64) / n as f64;
                return Some(lower + (upper - lower) * into);
            }
            seen += n;
        }
        self.bounds.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDS: &[f64] = &[0.1, 0.5, 1.0, 5.0];

    #[test]
    fn values_on_a_bound_fall_in_the_bucket_below_it() {
        let mut h = ExplicitHistogram::new(BOUNDS);
        for v in [0.1, 0.10000001, 1.0, 5.0, 5.0001, -3.0] {
            h.update(v);
        }
        assert_eq!(h.bucket_counts(), &[2, 1, 1, 1, 1]);
        assert_eq!(h.count(), 6);
        assert_eq!(h.min(), Some(-3.0));
        assert_eq!(h.max(), Some(5.0001));
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut h = ExplicitHistogram::new(BOUNDS);
        h.update(f64::NAN);
        h.update(f64::INFINITY);
        h.update(0.3);
        assert_eq!(h.count(), 1);
        assert_eq!(h.sum(), 0.3);
    }

    #[test]
    fn empty_histogram_has_no_min_max_or_quantile() {
        let h = ExplicitHistogram::new(BOUNDS);
        assert_eq!((h.min(), h.max(), h.quantile(0.5)), (None, None, None));
    }

    #[test]
    fn quantile_interpolates_like_histogram_quantile() {
        let mut h = ExplicitHistogram::new(BOUNDS);
        // 4 values in (0.1, 0.5]: the median's rank 2 of 4 sits halfway through that bucket.
        for v in [0.2, 0.3, 0.4, 0.45] {
            h.update(v);
        }
        assert!((h.quantile(0.5).unwrap() - 0.3).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn merge_equals_processing_the_concatenation(
            a in proptest::collection::vec(-1.0f64..10.0, 0..50),
            b in proptest::collection::vec(-1.0f64..10.0, 0..50),
        ) {
            let mut left = ExplicitHistogram::new(BOUNDS);
            a.iter().for_each(|&v| left.update(v));
            let mut right = ExplicitHistogram::new(BOUNDS);
            b.iter().for_each(|&v| right.update(v));
            left.merge(&right);

            let mut all = ExplicitHistogram::new(BOUNDS);
            a.iter().chain(&b).for_each(|&v| all.update(v));
            prop_assert_eq!(left.bucket_counts(), all.bucket_counts());
            prop_assert_eq!(left.count(), all.count());
            prop_assert_eq!(left.min(), all.min());
            prop_assert_eq!(left.max(), all.max());
            prop_assert!((left.sum() - all.sum()).abs() < 1e-9);
        }
    }
}
