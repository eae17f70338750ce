//! Sliding windows: rings of tumbling buckets of mergeable state (ARCHITECTURE.md, Windows).
//!
//! Records update one small `live` state only. When a ring's current bucket ends (or before a
//! snapshot), `live` is merged into the current bucket of every ring and into the since-start
//! total, then cleared: the per-record cost does not grow with the number of windows.
//!
//! A window of length L with N buckets has buckets of L/N; its view merges the current bucket and
//! the N − 1 before it, so it covers between L − L/N and L of the most recent time. Time is
//! passed in as milliseconds on the caller's monotonic clock, so the windows are pure and tests
//! drive them directly.

use std::time::Duration;

/// A mergeable state that windows can be built from.
pub trait WindowState: Clone {
    /// An empty state with the same configuration as `self`.
    fn empty_like(&self) -> Self;
    /// Adds `other` into `self`. `exact_budget` is how many exact items (raw pairs kept for exact
    /// computation) the result may hold; past it, the state keeps only its approximation.
    fn merge(&mut self, other: &Self, exact_budget: usize);
    fn reset(&mut self);
    /// Called on the live state before it is merged into the buckets and the total: a state
    /// whose exact items can be shared between the states it is merged into (instead of copied
    /// into each) makes them shareable here (`ScoreCurve::seal`, `src/stats/score_curve.rs`).
    fn seal(&mut self) {}
    /// Exact items held, counted against the budget.
    fn exact_len(&self) -> usize;
}

/// A window's name (as exported in the `window` attribute), length and bucket count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    pub name: String,
    pub length: Duration,
    pub buckets: usize,
}

impl WindowSpec {
    pub fn new(length: Duration, buckets: usize) -> Self {
        Self {
            name: duration_name(length),
            length,
            buckets: buckets.max(1),
        }
    }

    fn bucket_ms(&self) -> u64 {
        (self.length.as_millis() as u64 / self.buckets as u64).max(1)
    }
}

/// `300 s` → `5m`, `3600 s` → `1h`, as Prometheus writes durations.
pub fn duration_name(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses `30s`, `5m`, `1h`, `1d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3_600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

struct Ring<S> {
    spec: WindowSpec,
    bucket_ms: u64,
    /// `buckets[i]` holds absolute bucket number `numbers[i]`; `None` until first used.
    buckets: Vec<Option<S>>,
    numbers: Vec<u64>,
    /// Absolute number of the bucket `live` belongs to.
    current: u64,
}

impl<S: WindowState> Ring<S> {
    /// An empty ring whose current bucket is absolute bucket `current`.
    fn new(spec: &WindowSpec, current: u64) -> Self {
        Self {
            spec: spec.clone(),
            bucket_ms: spec.bucket_ms(),
            buckets: (0..spec.buckets).map(|_| None).collect(),
            numbers: vec![0; spec.buckets],
            current,
        }
    }

    fn slot(&self, number: u64) -> usize {
        (number % self.buckets.len() as u64) as usize
    }

    /// Whether absolute bucket `number` is inside the window ending with the current bucket.
    fn in_window(&self, number: u64) -> bool {
        number <= self.current && self.current - number < self.buckets.len() as u64
    }

    fn absorb(&mut self, live: &S, exact_cap: usize) {
        let slot = self.slot(self.current);
        // Exact items held by the other buckets of the window count against the budget, so a
        // ring never holds more than `exact_cap` of them.
        let others: usize = (0..self.buckets.len())
            .filter(|&i| i != slot && self.in_window(self.numbers[i]))
            .filter_map(|i| self.buckets[i].as_ref().map(S::exact_len))
            .sum();
        let budget = exact_cap.saturating_sub(others);
        let current = self.current;
        match &mut self.buckets[slot] {
            Some(bucket) if self.numbers[slot] == current => bucket.merge(live, budget),
            Some(bucket) => {
                bucket.reset();
                bucket.merge(live, budget);
                self.numbers[slot] = current;
            }
            None => {
                let mut bucket = live.empty_like();
                bucket.merge(live, budget);
                self.buckets[slot] = Some(bucket);
                self.numbers[slot] = current;
            }
        }
    }

    fn view(&self, empty: &S, exact_cap: usize) -> S {
        let mut view = empty.empty_like();
        // Oldest first, so that merged exact items keep their arrival order.
        let n = self.buckets.len() as u64;
        for number in self.current.saturating_sub(n - 1)..=self.current {
            let slot = self.slot(number);
            if let Some(bucket) = &self.buckets[slot] {
                if self.numbers[slot] == number {
                    view.merge(bucket, exact_cap);
                }
            }
        }
        view
    }
}

/// Since-start state plus one ring per configured window.
pub struct Windows<S> {
    live: S,
    total: S,
    rings: Vec<Ring<S>>,
    exact_cap: usize,
}

impl<S: WindowState> Windows<S> {
    /// Windows over `empty`-like states, starting at `now_ms`.
    pub fn new(empty: S, specs: &[WindowSpec], exact_cap: usize, now_ms: u64) -> Self {
        let rings = specs
            .iter()
            .map(|spec| Ring::new(spec, now_ms / spec.bucket_ms()))
            .collect();
        Self {
            total: empty.empty_like(),
            live: empty,
            rings,
            exact_cap,
        }
    }

    /// Empty windows of another state with the same specs, at the time these are at: for a
    /// state made later than the model's (its first evaluation), whose buckets line up.
    pub fn beside<T: WindowState>(&self, empty: T, exact_cap: usize) -> Windows<T> {
        Windows {
            total: empty.empty_like(),
            live: empty,
            rings: self
                .rings
                .iter()
                .map(|r| Ring::new(&r.spec, r.current))
                .collect(),
            exact_cap,
        }
    }

    /// The state records update; call [`advance`](Self::advance) first with the current time.
    #[inline]
    pub fn live(&mut self) -> &mut S {
        &mut self.live
    }

    pub fn exact_cap(&self) -> usize {
        self.exact_cap
    }

    /// Moves the windows to `now_ms`: if any ring's bucket changed, what `live` holds is first
    /// credited to the buckets it was recorded in.
    #[inline]
    pub fn advance(&mut self, now_ms: u64) {
        if self.rings.iter().all(|r| now_ms / r.bucket_ms == r.current) {
            return;
        }
        self.flush();
        for ring in &mut self.rings {
            ring.current = ring.current.max(now_ms / ring.bucket_ms);
        }
    }

    /// Credits `live` to every ring and the total, and clears it.
    pub fn flush(&mut self) {
        self.live.seal();
        for ring in &mut self.rings {
            ring.absorb(&self.live, self.exact_cap);
        }
        self.total.merge(&self.live, self.exact_cap);
        self.live.reset();
    }

    /// Every window's merged state, then the since-start state under the name `all`.
    /// Call [`advance`](Self::advance) and [`flush`](Self::flush) first.
    pub fn views(&self) -> Vec<(String, S)> {
        let mut views: Vec<(String, S)> = self
            .rings
            .iter()
            .map(|r| (r.spec.name.clone(), r.view(&self.live, self.exact_cap)))
            .collect();
        views.push((SINCE_START.to_owned(), self.total.clone()));
        views
    }

    /// The since-start state.
    pub fn total(&self) -> &S {
        &self.total
    }
}

/// The `window` attribute value of since-start metrics.
pub const SINCE_START: &str = "all";

#[cfg(test)]
mod tests {
    use super::*;

    /// A sum with "exact items" = the number of updates while under the budget.
    #[derive(Debug, Clone, Default, PartialEq)]
    struct Sum {
        value: u64,
        items: Option<Vec<u64>>,
    }

    impl WindowState for Sum {
        fn empty_like(&self) -> Self {
            Sum {
                value: 0,
                items: Some(Vec::new()),
            }
        }
        fn merge(&mut self, other: &Self, budget: usize) {
            self.value += other.value;
            self.items = match (self.items.take(), &other.items) {
                (Some(mut a), Some(b)) if a.len() + b.len() <= budget => {
                    a.extend(b);
                    Some(a)
                }
                _ => None,
            };
        }
        fn reset(&mut self) {
            *self = self.empty_like();
        }
        fn exact_len(&self) -> usize {
            self.items.as_ref().map_or(0, Vec::len)
        }
    }

    fn add(w: &mut Windows<Sum>, now_ms: u64, v: u64) {
        w.advance(now_ms);
        let live = w.live();
        live.value += v;
        if let Some(items) = &mut live.items {
            items.push(v);
        }
    }

    fn values(w: &mut Windows<Sum>, now_ms: u64) -> Vec<(String, u64)> {
        w.advance(now_ms);
        w.flush();
        w.views().into_iter().map(|(n, s)| (n, s.value)).collect()
    }

    #[test]
    fn windows_slide_bucket_by_bucket() {
        let specs = [
            WindowSpec::new(Duration::from_secs(10), 5), // 2 s buckets
            WindowSpec::new(Duration::from_secs(60), 6), // 10 s buckets
        ];
        let mut w = Windows::new(Sum::default().empty_like(), &specs, 100, 0);
        add(&mut w, 0, 1);
        add(&mut w, 1_999, 2);
        add(&mut w, 2_000, 4);
        add(&mut w, 9_000, 8);
        assert_eq!(
            values(&mut w, 9_500),
            [("10s".into(), 15), ("1m".into(), 15), ("all".into(), 15)]
        );
        // At 10 s the first 2 s bucket (1 + 2) has left the 10 s window.
        assert_eq!(
            values(&mut w, 10_000),
            [("10s".into(), 12), ("1m".into(), 15), ("all".into(), 15)]
        );
        // Long idle: everything leaves the windows, the total stays.
        add(&mut w, 200_000, 16);
        assert_eq!(
            values(&mut w, 200_001),
            [("10s".into(), 16), ("1m".into(), 16), ("all".into(), 31)]
        );
    }

    #[test]
    fn a_ring_holds_no_more_exact_items_than_the_cap() {
        let specs = [WindowSpec::new(Duration::from_secs(10), 5)];
        let mut w = Windows::new(Sum::default().empty_like(), &specs, 3, 0);
        for t in 0..4 {
            add(&mut w, t * 2_000, 1);
        }
        w.flush();
        let views = w.views();
        assert_eq!(views[0].1.value, 4);
        assert_eq!(views[0].1.items, None, "4 items do not fit a budget of 3");
        // Once the bucket that overflowed leaves the window, exact again.
        for t in 4..9 {
            w.advance(t * 2_000);
        }
        w.flush();
        assert_eq!(w.views()[0].1.items, Some(vec![]));
    }

    #[test]
    fn durations_parse_and_print_like_prometheus() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(duration_name(Duration::from_secs(3600)), "1h");
        assert_eq!(duration_name(Duration::from_secs(90)), "90s");
    }
}
