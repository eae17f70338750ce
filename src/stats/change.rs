//! Change detectors for metric series. Page-Hinkley and ADWIN are ported from river
//! (`river.drift.PageHinkley`, `river.drift.ADWIN` with its Cython helper
//! `adwin_c.AdaptiveWindowing`; version pinned in `tests/oracles/requirements.txt`) so that they
//! flag exactly the same indices on the same stream, and reset after a detection as river's do.
//! river has no CUSUM or EWMA chart: those follow the textbook definitions (Montgomery), checked
//! against an independent NumPy implementation. All golden-tested (`tests/oracle_change.rs`).
//!
//! Written by hand: no maintained Rust crate implements these with river's exact semantics.

/// river's `stats.Mean`: `mean += (w / n)·(x − mean)` with w = 1.
#[derive(Debug, Clone, Default)]
struct Mean {
    n: f64,
    mean: f64,
}

impl Mean {
    fn update(&mut self, x: f64) {
        self.n += 1.0;
        self.mean += (1.0 / self.n) * (x - self.mean);
    }
}

/// Which direction of change Page-Hinkley watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Both,
}

/// Page-Hinkley test on a fading mean (river's `PageHinkley`).
#[derive(Debug, Clone)]
pub struct PageHinkley {
    pub min_instances: u64,
    pub delta: f64,
    pub threshold: f64,
    pub alpha: f64,
    pub direction: Direction,
    mean: Mean,
    sum_increase: f64,
    sum_decrease: f64,
    min_increase: f64,
    max_decrease: f64,
    detected: bool,
}

impl Default for PageHinkley {
    /// river's defaults: 30 instances, δ = 0.005, λ = 50, α = 1 − 0.0001, both directions.
    fn default() -> Self {
        Self::new(30, 0.005, 50.0, 1.0 - 0.0001, Direction::Both)
    }
}

impl PageHinkley {
    pub fn new(
        min_instances: u64,
        delta: f64,
        threshold: f64,
        alpha: f64,
        direction: Direction,
    ) -> Self {
        let mut ph = Self {
            min_instances,
            delta,
            threshold,
            alpha,
            direction,
            mean: Mean::default(),
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: f64::INFINITY,
            max_decrease: -1.0,
            detected: false,
        };
        ph.reset();
        ph
    }

    pub fn reset(&mut self) {
        self.mean = Mean::default();
        self.sum_increase = 0.0;
        self.sum_decrease = 0.0;
        self.min_increase = f64::INFINITY;
        self.max_decrease = -1.0;
        self.detected = false;
    }

    /// Adds one value; true when it completes a detection.
    pub fn update(&mut self, x: f64) -> bool {
        if self.detected {
            self.reset();
        }
        self.mean.update(x);
        let dev = x - self.mean.mean;
        self.sum_increase = self.alpha * self.sum_increase + dev - self.delta;
        self.sum_decrease = self.alpha * self.sum_decrease + dev + self.delta;
        if self.sum_increase < self.min_increase {
            self.min_increase = self.sum_increase;
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
        }
        if self.mean.n >= self.min_instances as f64 {
            let up = self.sum_increase - self.min_increase > self.threshold;
            let down = self.max_decrease - self.sum_decrease > self.threshold;
            self.detected = match self.direction {
                Direction::Up => up,
                Direction::Down => down,
                Direction::Both => up || down,
            };
        }
        self.detected
    }
}

/// One row of ADWIN's exponential histogram: buckets of 2^row values each.
#[derive(Debug, Clone)]
struct Row {
    totals: Vec<f64>,
    variances: Vec<f64>,
    len: usize,
}

impl Row {
    fn new(max_buckets: usize) -> Self {
        Self {
            totals: vec![0.0; max_buckets + 1],
            variances: vec![0.0; max_buckets + 1],
            len: 0,
        }
    }

    fn insert(&mut self, total: f64, variance: f64) {
        self.totals[self.len] = total;
        self.variances[self.len] = variance;
        self.len += 1;
    }

    /// Drops the `n` oldest buckets.
    fn compress(&mut self, n: usize) {
        let size = self.totals.len();
        for i in n..size {
            self.totals[i - n] = self.totals[i];
            self.variances[i - n] = self.variances[i];
        }
        for i in size - n..size {
            self.totals[i] = 0.0;
            self.variances[i] = 0.0;
        }
        self.len -= n;
    }
}

/// ADWIN, adaptive windowing (Bifet & Gavaldà 2007), as river implements it.
#[derive(Debug, Clone)]
pub struct Adwin {
    pub delta: f64,
    pub clock: u64,
    pub max_buckets: usize,
    pub min_window_length: f64,
    pub grace_period: f64,
    /// Row 0 holds single values; the last row the largest buckets.
    rows: std::collections::VecDeque<Row>,
    total: f64,
    variance: f64,
    width: f64,
    tick: u64,
    detected: bool,
}

impl Default for Adwin {
    /// river's defaults: δ = 0.002, clock 32, 5 buckets per row, minimum sub-window 5, grace 10.
    fn default() -> Self {
        Self::new(0.002, 32, 5, 5, 10)
    }
}

impl Adwin {
    pub fn new(
        delta: f64,
        clock: u64,
        max_buckets: usize,
        min_window_length: u32,
        grace_period: u32,
    ) -> Self {
        let mut a = Self {
            delta,
            clock: clock.max(1),
            max_buckets,
            min_window_length: f64::from(min_window_length),
            grace_period: f64::from(grace_period),
            rows: Default::default(),
            total: 0.0,
            variance: 0.0,
            width: 0.0,
            tick: 0,
            detected: false,
        };
        a.reset();
        a
    }

    pub fn reset(&mut self) {
        self.rows = [Row::new(self.max_buckets)].into();
        self.total = 0.0;
        self.variance = 0.0;
        self.width = 0.0;
        self.tick = 0;
        self.detected = false;
    }

    /// Values in the current window.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// Mean of the current window.
    pub fn estimation(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }

    /// Adds one value; true when it completes a detection.
    pub fn update(&mut self, x: f64) -> bool {
        if self.detected {
            self.reset();
        }
        self.insert(x);
        self.detected = self.detect();
        self.detected
    }

    fn bucket_size(row: usize) -> f64 {
        2f64.powi(row as i32)
    }

    fn insert(&mut self, value: f64) {
        self.rows[0].insert(value, 0.0);
        self.width += 1.0;
        if self.width > 1.0 {
            let mean = self.total / (self.width - 1.0);
            self.variance += (self.width - 1.0) * (value - mean) * (value - mean) / self.width;
        }
        self.total += value;
        self.compress();
    }

    fn compress(&mut self) {
        let mut idx = 0;
        while idx < self.rows.len() {
            if self.rows[idx].len != self.max_buckets + 1 {
                break;
            }
            if idx + 1 == self.rows.len() {
                self.rows.push_back(Row::new(self.max_buckets));
            }
            let n = Self::bucket_size(idx);
            let row = &self.rows[idx];
            let (mu1, mu2) = (row.totals[0] / n, row.totals[1] / n);
            let total12 = row.totals[0] + row.totals[1];
            let temp = n * n * (mu1 - mu2) * (mu1 - mu2) / (n + n);
            let v12 = row.variances[0] + row.variances[1] + temp;
            self.rows[idx + 1].insert(total12, v12);
            self.rows[idx].compress(2);
            if self.rows[idx + 1].len <= self.max_buckets {
                break;
            }
            idx += 1;
        }
    }

    /// Drops the oldest bucket; returns its size.
    fn delete_oldest(&mut self) -> f64 {
        let last = self.rows.len() - 1;
        let n = Self::bucket_size(last);
        let (u, v) = (self.rows[last].totals[0], self.rows[last].variances[0]);
        let mu = u / n;
        self.width -= n;
        self.total -= u;
        let mu_window = self.total / self.width;
        self.variance -=
            v + n * self.width * (mu - mu_window) * (mu - mu_window) / (n + self.width);
        self.rows[last].compress(1);
        if self.rows[last].len == 0 {
            self.rows.pop_back();
        }
        n
    }

    fn cut(&self, n0: f64, n1: f64, delta_mean: f64) -> bool {
        let delta_prime = (2.0 * self.width.ln() / self.delta).ln();
        let m_recip =
            1.0 / (n0 - self.min_window_length + 1.0) + 1.0 / (n1 - self.min_window_length + 1.0);
        let variance_in_window = self.variance / self.width;
        let epsilon = (2.0 * m_recip * variance_in_window * delta_prime).sqrt()
            + 2.0 / 3.0 * delta_prime * m_recip;
        delta_mean.abs() > epsilon
    }

    fn detect(&mut self) -> bool {
        let mut change = false;
        self.tick += 1;
        if !(self.tick.is_multiple_of(self.clock) && self.width > self.grace_period) {
            return false;
        }
        let mut reduce = true;
        while reduce {
            reduce = false;
            let mut exit = false;
            let (mut n0, mut n1) = (0.0, self.width);
            let (mut u0, mut u1) = (0.0, self.total);
            let mut idx = self.rows.len();
            while idx > 0 && !exit {
                idx -= 1;
                let size = Self::bucket_size(idx);
                let mut k = 0;
                while k < self.rows[idx].len {
                    let u2 = self.rows[idx].totals[k];
                    n0 += size;
                    n1 -= size;
                    u0 += u2;
                    u1 -= u2;
                    if idx == 0 && k == self.rows[idx].len - 1 {
                        exit = true;
                        break;
                    }
                    let delta_mean = u0 / n0 - u1 / n1;
                    if n1 >= self.min_window_length
                        && n0 >= self.min_window_length
                        && self.cut(n0, n1, delta_mean)
                    {
                        reduce = true;
                        change = true;
                        if self.width > 0.0 {
                            self.delete_oldest();
                            exit = true;
                            break;
                        }
                    }
                    k += 1;
                }
            }
        }
        change
    }
}

/// Mean and standard deviation of the first values of a series, the in-control reference of the
/// control charts below (Welford; population σ of the warm-up, as a control chart's phase I).
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Baseline {
    /// A baseline known in advance (no warm-up): `mean` and `sigma`.
    pub fn known(mean: f64, sigma: f64) -> Self {
        Self {
            n: 1,
            mean,
            m2: sigma * sigma,
        }
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    pub fn update(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub fn sigma(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.m2 / self.n as f64).sqrt()
        }
    }
}

/// Two-sided tabular CUSUM (Page 1954; Montgomery, *Statistical Quality Control*, §9.1): after a
/// warm-up of `warmup` values that fixes the target μ₀ and σ,
/// S⁺ = max(0, S⁺ + x − μ₀ − kσ), S⁻ = max(0, S⁻ + μ₀ − kσ − x); a detection when either
/// exceeds hσ, after which both sums restart from 0 (the baseline is kept).
#[derive(Debug, Clone)]
pub struct Cusum {
    pub warmup: u64,
    /// Slack, in σ (0.5 detects a one-σ shift fastest).
    pub k: f64,
    /// Decision interval, in σ (4–5 is the textbook choice).
    pub h: f64,
    baseline: Baseline,
    upper: f64,
    lower: f64,
}

impl Default for Cusum {
    fn default() -> Self {
        Self::new(30, 0.5, 5.0)
    }
}

impl Cusum {
    /// A chart whose in-control mean and σ are known (for values already standardised: 0, 1).
    pub fn in_control(mean: f64, sigma: f64, k: f64, h: f64) -> Self {
        Self {
            warmup: 1,
            baseline: Baseline::known(mean, sigma),
            ..Self::new(1, k, h)
        }
    }

    pub fn new(warmup: u64, k: f64, h: f64) -> Self {
        Self {
            warmup: warmup.max(2),
            k,
            h,
            baseline: Baseline::default(),
            upper: 0.0,
            lower: 0.0,
        }
    }

    /// Adds one value; true when it completes a detection.
    pub fn update(&mut self, x: f64) -> bool {
        if self.baseline.n < self.warmup {
            self.baseline.update(x);
            return false;
        }
        let (mu, sigma) = (self.baseline.mean, self.baseline.sigma());
        self.upper = (self.upper + x - mu - self.k * sigma).max(0.0);
        self.lower = (self.lower + mu - self.k * sigma - x).max(0.0);
        let detected = self.upper > self.h * sigma || self.lower > self.h * sigma;
        if detected {
            self.upper = 0.0;
            self.lower = 0.0;
        }
        detected
    }
}

/// EWMA control chart (Roberts 1959; Montgomery §9.2): z = λx + (1 − λ)z, starting at μ₀, with
/// time-varying limits μ₀ ± Lσ·√(λ/(2 − λ)·(1 − (1 − λ)^{2t})) after a warm-up that fixes μ₀ and
/// σ. A detection when z leaves the limits; z then restarts at μ₀ and t at 0.
#[derive(Debug, Clone)]
pub struct Ewma {
    pub warmup: u64,
    pub lambda: f64,
    /// Limit width in σ.
    pub l: f64,
    baseline: Baseline,
    z: f64,
    t: u64,
}

impl Default for Ewma {
    fn default() -> Self {
        Self::new(30, 0.2, 3.0)
    }
}

impl Ewma {
    /// A chart whose in-control mean and σ are known (for values already standardised: 0, 1).
    pub fn in_control(mean: f64, sigma: f64, lambda: f64, l: f64) -> Self {
        Self {
            warmup: 1,
            baseline: Baseline::known(mean, sigma),
            z: mean,
            ..Self::new(1, lambda, l)
        }
    }

    pub fn new(warmup: u64, lambda: f64, l: f64) -> Self {
        Self {
            warmup: warmup.max(2),
            lambda,
            l,
            baseline: Baseline::default(),
            z: 0.0,
            t: 0,
        }
    }

    /// Adds one value; true when it completes a detection.
    pub fn update(&mut self, x: f64) -> bool {
        if self.baseline.n < self.warmup {
            self.baseline.update(x);
            self.z = self.baseline.mean;
            return false;
        }
        let (mu, sigma) = (self.baseline.mean, self.baseline.sigma());
        self.t += 1;
        self.z = self.lambda * x + (1.0 - self.lambda) * self.z;
        let width = self.l
            * sigma
            * (self.lambda / (2.0 - self.lambda)
                * (1.0 - (1.0 - self.lambda).powi(2 * self.t as i32)))
            .sqrt();
        let detected = (self.z - mu).abs() > width;
        if detected {
            self.z = mu;
            self.t = 0;
        }
        detected
    }
}
