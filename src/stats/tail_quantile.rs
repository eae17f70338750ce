//! A streaming upper quantile of a positive quantity (latency, token counts) over the recent
//! past, for "far outside the model's own distribution" checks: log-spaced bins (16 per octave,
//! so an estimate is at most 6.25 % high), counted over two alternating epochs of `epoch`
//! values, so the quantile always covers the last `epoch` to `2·epoch` values and follows a
//! model whose latency moves. The estimate is refreshed every [`REFRESH`] values; updating is
//! one bin increment.
//!
//! Written by hand: the sketch crates (ddsketch, hdrhistogram) are not windowed, and a check per
//! record needs a cached threshold rather than a query.

/// Sub-bins per power of two.
const PER_OCTAVE: usize = 16;
/// Smallest resolved value: 2^-30 (≈ 1 ns in seconds); anything below shares bin 0.
const MIN_EXPONENT: i64 = -30;
/// Octaves covered: up to 2^34 (≈ 1.7e10); anything above shares the last bin.
const OCTAVES: usize = 64;
const BINS: usize = OCTAVES * PER_OCTAVE;
/// Values between two refreshes of the cached quantile.
pub const REFRESH: u32 = 256;

#[derive(Debug, Clone)]
pub struct TailQuantile {
    quantile: f64,
    epoch: u32,
    /// Two epochs of bins, `[current, previous]` alternating by `current`.
    counts: Vec<u32>,
    current: usize,
    in_current: u32,
    in_previous: u32,
    since_refresh: u32,
    /// Values ever seen.
    seen: u64,
    /// The last computed estimate; `None` before the first refresh.
    estimate: Option<f64>,
}

/// The bin of a value: its binary exponent and top four mantissa bits.
#[inline]
fn bin(x: f64) -> usize {
    // Zero, negative and NaN share bin 0.
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let sub = ((bits >> 48) & 0xf) as i64;
    ((exponent - MIN_EXPONENT) * PER_OCTAVE as i64 + sub).clamp(0, BINS as i64 - 1) as usize
}

/// The upper edge of a bin.
fn upper_edge(bin: usize) -> f64 {
    let exponent = (bin / PER_OCTAVE) as i64 + MIN_EXPONENT;
    let sub = (bin % PER_OCTAVE) as f64;
    2f64.powi(exponent as i32) * (1.0 + (sub + 1.0) / PER_OCTAVE as f64)
}

impl TailQuantile {
    /// `quantile` in (0, 1); `epoch` values per epoch (at least [`REFRESH`]).
    pub fn new(quantile: f64, epoch: u32) -> Self {
        Self {
            quantile,
            epoch: epoch.max(REFRESH),
            counts: vec![0; 2 * BINS],
            current: 0,
            in_current: 0,
            in_previous: 0,
            since_refresh: 0,
            seen: 0,
            estimate: None,
        }
    }

    /// Values ever seen.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Values the estimate currently covers.
    pub fn count(&self) -> u64 {
        u64::from(self.in_current) + u64::from(self.in_previous)
    }

    /// The quantile as of the last refresh (before `x` of the current call was counted).
    #[inline]
    pub fn estimate(&self) -> Option<f64> {
        self.estimate
    }

    #[inline]
    pub fn update(&mut self, x: f64) {
        self.counts[self.current * BINS + bin(x)] += 1;
        self.in_current += 1;
        self.seen += 1;
        if self.in_current == self.epoch {
            // The previous epoch is forgotten; the full one becomes the previous.
            self.current ^= 1;
            self.counts[self.current * BINS..(self.current + 1) * BINS].fill(0);
            self.in_previous = self.in_current;
            self.in_current = 0;
        }
        self.since_refresh += 1;
        if self.since_refresh == REFRESH {
            self.since_refresh = 0;
            self.estimate = self.compute();
        }
    }

    fn compute(&self) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        // The smallest value with at least ⌈q·n⌉ values at or below it.
        let rank = (self.quantile * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for b in 0..BINS {
            seen += u64::from(self.counts[b]) + u64::from(self.counts[BINS + b]);
            if seen >= rank {
                return Some(upper_edge(b));
            }
        }
        Some(upper_edge(BINS - 1))
    }
}

/// The same bins over one interval (between two metric exports), for a series of interval
/// quantiles such as the latency p95 the change detectors watch.
#[derive(Debug, Clone, Default)]
pub struct IntervalQuantiles {
    /// Allocated with the first value. u64: an interval is as long as nobody takes it (metrics
    /// export off), so its counts have no bound.
    counts: Vec<u64>,
    n: u64,
}

impl IntervalQuantiles {
    #[inline]
    pub fn update(&mut self, x: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BINS];
        }
        self.counts[bin(x)] += 1;
        self.n += 1;
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// The `quantile` of the interval's values (upper bin edge), and a new interval.
    pub fn take(&mut self, quantile: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = (quantile * self.n as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        let mut found = upper_edge(BINS - 1);
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                found = upper_edge(b);
                break;
            }
        }
        self.counts.fill(0);
        self.n = 0;
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_monotone_and_their_edges_bound_their_values() {
        let mut last = 0;
        for i in 1..10_000 {
            let x = 1e-6 * 1.003f64.powi(i);
            let b = bin(x);
            assert!(b >= last);
            assert!(
                x < upper_edge(b) && upper_edge(b) <= x * 1.0625 + 1e-300,
                "{x}"
            );
            last = b;
        }
        assert_eq!(bin(0.0), 0);
        assert_eq!(bin(f64::NAN), 0);
        assert_eq!(bin(f64::INFINITY), BINS - 1);
    }

    #[test]
    fn the_estimate_is_within_one_bin_of_the_exact_quantile() {
        let mut q = TailQuantile::new(0.99, 10_000);
        let values: Vec<f64> = (1..=5_120).map(|i| i as f64 / 1000.0).collect();
        for &v in &values {
            q.update(v);
        }
        let exact = values[(0.99 * values.len() as f64).ceil() as usize - 1];
        let estimate = q.estimate().unwrap();
        assert!(
            estimate >= exact && estimate <= exact * 1.0625,
            "{estimate} {exact}"
        );
    }

    #[test]
    fn old_epochs_are_forgotten() {
        let mut q = TailQuantile::new(0.5, 256);
        for _ in 0..512 {
            q.update(100.0);
        }
        for _ in 0..512 {
            q.update(1.0);
        }
        assert!(q.estimate().unwrap() < 1.1);
        assert_eq!(q.count(), 256);
    }

    #[test]
    fn an_interval_quantile_covers_its_interval_only() {
        let mut q = IntervalQuantiles::default();
        for i in 1..=100 {
            q.update(i as f64);
        }
        let p95 = q.take(0.95).unwrap();
        assert!((95.0..=95.0 * 1.0625).contains(&p95), "{p95}");
        assert_eq!(q.take(0.95), None);
        q.update(2.0);
        assert!(q.take(0.95).unwrap() <= 2.0 * 1.0625);
    }
}
