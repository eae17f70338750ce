//! Streaming Half-Space Trees (Tan, Ting & Liu, "Fast anomaly detection for streaming data",
//! IJCAI 2011), with the semantics of `river.anomaly.HalfSpaceTrees` (river 0.22): padded random
//! trees built without data, node masses counted over tumbling windows of `window` records, the
//! score of a record read from the previous window's masses ("reference", river's `r_mass`) down
//! its path until a node holds less than 0.1·`window`, normalised so that 1 is most anomalous.
//!
//! Written by hand because no maintained Rust crate implements it. The trees are drawn from
//! the same Mersenne Twister stream as Python's `random.Random(seed)` (seeded the way CPython
//! seeds from an integer, `rand_mt` for the generator) with the same draws in the same order as
//! river, so for the same seed the trees, and therefore every score, are river's exactly
//! (golden test `tests/oracle_anomaly.rs`). It differs from river in its layout only: every tree is a complete binary tree in heap order (node `i` has children
//! `2i+1`, `2i+2`) in flat arrays, so a record walks `trees × (height + 1)` adjacent counters
//! instead of chasing boxed nodes; and one walk both scores (reference masses) and learns
//! (latest masses), which is river's score-then-learn order because scoring never reads the
//! masses being learned.
//!
//! Inputs are expected in [0, 1] per dimension, as river expects from its `limits` or a
//! `MinMaxScaler`. The sidecar scales with [`reference_scale`]: the reference profile's range
//! widened by [`REFERENCE_MARGIN`] range widths on each side, so that the trees also split the
//! space just beyond the reference and isolate values there (with the reference's exact range a
//! value far outside lands in the same edge leaf as the reference's extreme rows: mean ROC AUC
//! 0.903 instead of 0.939 over the evaluation streams of BENCHMARKS.md). Values outside [0, 1]
//! fall on the outer side of every split. A NaN goes down the child that has seen more of the
//! current window, as river does for a missing feature.

/// Range widths added on each side of the reference range before scaling into [0, 1]: the
/// reference then spans the middle third. Chosen on the evaluation streams (mean ROC AUC over
/// 17 streams: margin 0 → 0.903, 0.5 → 0.927, 1 → 0.939, 2 → 0.923).
pub const REFERENCE_MARGIN: f64 = 1.0;

/// `(origin, scale)` such that `(x − origin)·scale` maps the reference range [`min`, `max`],
/// widened by [`REFERENCE_MARGIN`] on each side, onto [0, 1]. A reference of one value gets a
/// width of 1.
pub fn reference_scale(min: f64, max: f64) -> (f64, f64) {
    let width = if max > min { max - min } else { 1.0 };
    (
        min - REFERENCE_MARGIN * width,
        1.0 / (width * (1.0 + 2.0 * REFERENCE_MARGIN)),
    )
}

/// Masses seen before [`MassRule`] flags anything (after the trees' first window).
pub const MASS_RULE_WARMUP: u64 = 1_000;

/// The sidecar's flag rule on the trees' scores: a record is flagged when its mass (1 − score)
/// is under `ratio` × the median mass of recent records (a streaming median, within 6.25 %, over
/// the last 10 000 to 20 000), once the trees score and [`MASS_RULE_WARMUP`] masses were seen.
/// Shared with `examples/hst_scores.rs`, so that the evaluation measures this very rule.
#[derive(Debug, Clone)]
pub struct MassRule {
    ratio: f64,
    median: crate::stats::tail_quantile::TailQuantile,
}

impl MassRule {
    pub fn new(ratio: f64) -> Self {
        Self {
            ratio,
            median: crate::stats::tail_quantile::TailQuantile::new(0.5, 10_000),
        }
    }

    /// The flag score (1 − mass / median) when `score` is flagged; `scoring`: the trees were
    /// scoring when they gave it (past their first window).
    pub fn check(&mut self, score: f64, scoring: bool) -> Option<f64> {
        if !scoring {
            return None;
        }
        let mass = 1.0 - score;
        let flag = self
            .median
            .estimate()
            .filter(|_| self.settled())
            .filter(|&typical| mass < self.ratio * typical)
            .map(|typical| 1.0 - mass / typical);
        self.median.update(mass);
        flag
    }

    /// True once flags can be raised.
    pub fn settled(&self) -> bool {
        self.median.seen() >= MASS_RULE_WARMUP
    }
}

/// CPython's `random.Random(seed)` for a non-negative integer seed: MT19937 seeded by
/// `init_by_array` with the seed's 32-bit words, least significant first; `random()` as
/// `genrand_res53`.
pub struct PythonRandom(rand_mt::Mt);

impl PythonRandom {
    pub fn new(seed: u64) -> Self {
        let (low, high) = (seed as u32, (seed >> 32) as u32);
        let key: Vec<u32> = if high == 0 {
            vec![low]
        } else {
            vec![low, high]
        };
        Self(rand_mt::Mt::new_with_key(key))
    }

    /// `random.random()`: 53 random bits in [0, 1).
    pub fn random(&mut self) -> f64 {
        let a = f64::from(self.0.next_u32() >> 5);
        let b = f64::from(self.0.next_u32() >> 6);
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `random.uniform(a, b)`.
    fn uniform(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.random()
    }

    /// `random.choices(range(len(weights)), weights)[0]`: bisect_right on the running sums.
    fn choice(&mut self, weights: impl Iterator<Item = f64>, scratch: &mut Vec<f64>) -> usize {
        scratch.clear();
        let mut sum = 0.0;
        for w in weights {
            sum += w;
            scratch.push(sum);
        }
        let total = sum + 0.0;
        let v = self.random() * total;
        let hi = scratch.len() - 1;
        scratch[..hi].partition_point(|&c| c <= v)
    }
}

/// Padding of river's `make_padded_tree`: a split point is drawn from the middle 70 % of the
/// node's range so that no half-space is too narrow.
const PADDING: f64 = 0.15;

/// Trees walked together by [`HalfSpaceTrees::score_learn`].
const LOCKSTEP: usize = 16;

/// The mass under which the score stops descending, as a share of the window (river's and the
/// paper's 0.1).
const SIZE_LIMIT_SHARE: f64 = 0.1;

/// One node: its split (unused in leaves) and masses together, so that a step of a walk touches
/// one 16-byte slot rather than three arrays (which measured 0.34 µs per record in the sidecar
/// against 0.18 µs in isolation: the walks missed the cache three times per node).
#[derive(Debug, Clone, Copy, Default)]
struct Node {
    /// Split point: left when `x < threshold`, as river.
    threshold: f64,
    /// Split dimension.
    feature: u16,
    /// The mass counted in the current window and in the previous one (river's `l_mass`,
    /// `r_mass`); a window holds at most 65 535 records.
    latest: u16,
    reference: u16,
}

#[derive(Debug, Clone)]
pub struct HalfSpaceTrees {
    height: u32,
    window: u32,
    /// Nodes per tree: `2^(height+1) − 1`.
    nodes: usize,
    /// Every node of every tree, `trees × nodes`, tree by tree in heap order.
    nodes_of: Vec<Node>,
    /// Records of the current window so far.
    counter: u32,
    /// False until the first window completes: scores are 0 before (river).
    scoring: bool,
    /// The smallest reference mass the score descends past: `ceil(0.1·window)`, so that the
    /// integer comparison `reference >= descend_limit` is river's `r_mass >= 0.1·window` exactly.
    descend_limit: u16,
    max_score: f64,
}

impl HalfSpaceTrees {
    /// `dims` dimensions, each in [0, 1]. Panics if `dims` is 0 or over 65 536, `height` over
    /// 20, or `window` 0 or over 65 535.
    pub fn new(dims: usize, trees: usize, height: u32, window: u32, seed: u64) -> Self {
        assert!(dims > 0 && dims <= 1 << 16, "1..=65536 dimensions");
        assert!(height <= 20 && trees > 0 && window > 0 && window <= u32::from(u16::MAX));
        let nodes = (1usize << (height + 1)) - 1;
        let internal = (1usize << height) - 1;
        let mut rng = PythonRandom::new(seed);
        let mut scratch = Vec::with_capacity(dims);
        let mut feature = vec![0u16; trees * internal];
        let mut threshold = vec![0.0; trees * internal];
        let mut limits = vec![(0.0f64, 1.0f64); dims];
        for t in 0..trees {
            let range = t * internal..(t + 1) * internal;
            build(
                0,
                height,
                &mut limits,
                &mut rng,
                &mut scratch,
                &mut feature[range.clone()],
                &mut threshold[range],
            );
        }
        Self {
            height,
            window,
            nodes,
            nodes_of: (0..trees * nodes)
                .map(|i| {
                    let (t, node) = (i / nodes, i % nodes);
                    match node < internal {
                        true => Node {
                            threshold: threshold[t * internal + node],
                            feature: feature[t * internal + node],
                            ..Node::default()
                        },
                        false => Node::default(),
                    }
                })
                .collect(),
            counter: 0,
            scoring: false,
            descend_limit: (SIZE_LIMIT_SHARE * window as f64).ceil() as u16,
            max_score: trees as f64 * window as f64 * nodes as f64,
        }
    }

    /// Scores `x` against the previous window (0 during the first window, 1 = most anomalous)
    /// and then learns it, as river's `score_one` followed by `learn_one`. `x` has `dims` values.
    ///
    /// The score is summed in integers (`reference << depth`) and divided once: every partial sum
    /// of river's float sum is an integer under 2^36 (masses ≤ 65 535, depth ≤ 20, nodes ≤ 2^20),
    /// so both sums are exact and equal.
    pub fn score_learn(&mut self, x: &[f64]) -> f64 {
        // A record without missing values (nearly all) walks without looking for them.
        let mass = if x.iter().fold(false, |any, v| any | v.is_nan()) {
            self.walk::<true>(x)
        } else {
            self.walk::<false>(x)
        };
        let score = if self.scoring {
            1.0 - mass as f64 / self.max_score
        } else {
            0.0
        };
        self.counter += 1;
        if self.counter == self.window {
            for n in &mut self.nodes_of {
                n.reference = n.latest;
                n.latest = 0;
            }
            self.scoring = true;
            self.counter = 0;
        }
        score
    }

    /// Every tree's path for `x`: adds one to each node's latest mass and returns the sum of
    /// `reference << depth` down to the first node under the size limit (0 before the first
    /// window completes). `MISSING`: `x` may hold NaN.
    ///
    /// Up to [`LOCKSTEP`] trees walk together, one level at a time: the child is chosen without
    /// a branch (on independent features half the splits go either way, and a mispredicted
    /// branch per node cost more than the node's work), and the trees' independent loads of the
    /// next level overlap instead of each waiting for the comparison before it (one tree at a
    /// time without a branch was slower than with one: BENCHMARKS.md, "Hot path (issue 15)").
    #[inline(always)]
    fn walk<const MISSING: bool>(&mut self, x: &[f64]) -> u64 {
        let (height, limit, nodes) = (self.height, self.descend_limit, self.nodes);
        let all = u64::from(self.scoring).wrapping_neg();
        let mut mass: u64 = 0;
        for group in self.nodes_of.chunks_mut(LOCKSTEP * nodes) {
            // Per tree of the group: where it starts in `group`, its node (within the tree), and
            // all ones while its score descends.
            let mut lanes = [(0usize, 0usize, all); LOCKSTEP];
            let lanes = &mut lanes[..group.len() / nodes];
            for (tree, lane) in lanes.iter_mut().enumerate() {
                lane.0 = tree * nodes;
            }
            for depth in 0..height {
                for (start, node, keep) in lanes.iter_mut() {
                    let n = &mut group[*start + *node];
                    n.latest += 1;
                    mass += (u64::from(n.reference) << depth) & *keep;
                    *keep &= u64::from(n.reference >= limit).wrapping_neg();
                    let (value, threshold) = (x[usize::from(n.feature)], n.threshold);
                    // Node i of a tree has children 2i + 1 and 2i + 2.
                    let left = 2 * *node + 1;
                    let right = if MISSING && value.is_nan() {
                        // Missing: the child seen more in this window (river keeps left on ties).
                        group[*start + left].latest < group[*start + left + 1].latest
                    } else {
                        // Not NaN here (thresholds never are): river's `not value < threshold`.
                        value >= threshold
                    };
                    *node = left + usize::from(right);
                }
            }
            for &mut (start, node, keep) in lanes.iter_mut() {
                let leaf = &mut group[start + node];
                leaf.latest += 1;
                mass += (u64::from(leaf.reference) << height) & keep;
            }
        }
        mass
    }

    /// True once a full window has been seen and scores mean something.
    pub fn is_scoring(&self) -> bool {
        self.scoring
    }

    /// Bytes held by the trees, for sizing documentation.
    pub fn memory_bytes(&self) -> usize {
        self.nodes_of.len() * std::mem::size_of::<Node>()
    }
}

/// Builds the subtree rooted at heap index `node` of depth-to-go `height`: the split dimension is
/// drawn with probability proportional to the width of its current range and the split point
/// uniformly from the padded range, as river's `make_padded_tree`.
fn build(
    node: usize,
    height: u32,
    limits: &mut [(f64, f64)],
    rng: &mut PythonRandom,
    scratch: &mut Vec<f64>,
    feature: &mut [u16],
    threshold: &mut [f64],
) {
    if height == 0 {
        return;
    }
    let on = rng.choice(limits.iter().map(|(a, b)| b - a), scratch);
    let (a, b) = limits[on];
    let at = rng.uniform(a + PADDING * (b - a), b - PADDING * (b - a));
    feature[node] = on as u16;
    threshold[node] = at;
    limits[on] = (a, at);
    build(
        2 * node + 1,
        height - 1,
        limits,
        rng,
        scratch,
        feature,
        threshold,
    );
    limits[on] = (at, b);
    build(
        2 * node + 2,
        height - 1,
        limits,
        rng,
        scratch,
        feature,
        threshold,
    );
    limits[on] = (a, b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// The walk as first written (river's float sum, a branch per split), kept to check that
    /// the faster one returns the same scores bit for bit.
    fn score_learn_reference(h: &mut HalfSpaceTrees, x: &[f64]) -> f64 {
        let size_limit = SIZE_LIMIT_SHARE * h.window as f64;
        let (trees, internal) = (h.nodes_of.len() / h.nodes, h.nodes / 2);
        let mut mass_score = 0.0;
        for t in 0..trees {
            let tree = &mut h.nodes_of[t * h.nodes..(t + 1) * h.nodes];
            let mut node = 0usize;
            let mut descending = h.scoring;
            for depth in 0..=h.height {
                let n = &mut tree[node];
                n.latest += 1;
                if descending {
                    mass_score += f64::from(n.reference) * f64::from(1u32 << depth);
                    descending = f64::from(n.reference) >= size_limit;
                }
                if node >= internal {
                    break;
                }
                let value = x[usize::from(n.feature)];
                let (left, right) = (2 * node + 1, 2 * node + 2);
                node = if value < n.threshold {
                    left
                } else if value.is_nan() {
                    if tree[left].latest < tree[right].latest {
                        right
                    } else {
                        left
                    }
                } else {
                    right
                };
            }
        }
        let score = if h.scoring {
            1.0 - mass_score / h.max_score
        } else {
            0.0
        };
        h.counter += 1;
        if h.counter == h.window {
            for n in &mut h.nodes_of {
                n.reference = n.latest;
                n.latest = 0;
            }
            h.scoring = true;
            h.counter = 0;
        }
        score
    }

    #[test]
    fn the_walk_scores_as_the_reference_walk_bit_for_bit() {
        let mut rng = StdRng::seed_from_u64(17);
        // Windows whose tenth is and is not an integer; heights 1 to 12; missing values.
        for (dims, trees, height, window) in [
            (3, 4, 6, 25),
            (5, 10, 8, 250),
            (2, 3, 1, 7),
            (8, 2, 12, 999),
            // More trees than walk together: two groups, the second partial.
            (4, 21, 5, 40),
        ] {
            let mut fast = HalfSpaceTrees::new(dims, trees, height, window, 5);
            let mut slow = fast.clone();
            for i in 0..3 * window as usize + 17 {
                let x: Vec<f64> = (0..dims)
                    .map(|d| match (i + d) % 23 {
                        0 => f64::NAN,
                        1 => 3.0,
                        2 => -1.0,
                        _ => 0.2 + 0.6 * rng.random::<f64>() * if i % 7 == 0 { 0.1 } else { 1.0 },
                    })
                    .collect();
                let (a, b) = (fast.score_learn(&x), score_learn_reference(&mut slow, &x));
                assert_eq!(a.to_bits(), b.to_bits(), "row {i}: {a} vs {b}");
            }
            assert!(fast.is_scoring());
        }
    }

    #[test]
    fn scores_are_zero_until_the_first_window_completes() {
        let mut hst = HalfSpaceTrees::new(2, 5, 4, 10, 1);
        for _ in 0..10 {
            assert_eq!(hst.score_learn(&[0.5, 0.5]), 0.0);
        }
        assert!(hst.is_scoring());
        assert!(hst.score_learn(&[0.5, 0.5]) < 1.0);
    }

    #[test]
    fn every_tree_is_complete_and_splits_inside_its_padded_range() {
        let hst = HalfSpaceTrees::new(3, 4, 6, 10, 7);
        assert_eq!(hst.nodes_of.len(), 4 * 127);
        // The root split of every tree lies in [0.15, 0.85].
        for t in 0..4 {
            let at = hst.nodes_of[t * hst.nodes].threshold;
            assert!((0.15..=0.85).contains(&at), "{at}");
        }
        assert!(hst.nodes_of.iter().all(|n| n.feature < 3));
    }

    #[test]
    fn an_isolated_point_scores_higher_than_the_cluster_it_is_far_from() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut hst = HalfSpaceTrees::new(4, 10, 8, 250, 42);
        let mut normal = 0.0;
        for i in 0..2000 {
            let x: Vec<f64> = (0..4).map(|_| 0.4 + 0.1 * rng.random::<f64>()).collect();
            let s = hst.score_learn(&x);
            if i >= 1000 {
                normal = f64::max(normal, s);
            }
        }
        let outlier = hst.score_learn(&[0.95, 0.05, 0.9, 0.1]);
        assert!(outlier > normal, "outlier {outlier} vs normal max {normal}");
    }

    #[test]
    fn a_missing_value_follows_the_busier_child() {
        let mut hst = HalfSpaceTrees::new(1, 1, 1, 100, 5);
        let at = hst.nodes_of[0].threshold;
        for _ in 0..3 {
            hst.score_learn(&[at + 0.01]);
        }
        hst.score_learn(&[f64::NAN]);
        assert_eq!(
            hst.nodes_of[2].latest, 4,
            "NaN went right with the majority"
        );
    }

    #[test]
    fn masses_pivot_at_every_window() {
        let mut hst = HalfSpaceTrees::new(1, 1, 2, 4, 9);
        for _ in 0..4 {
            hst.score_learn(&[0.5]);
        }
        assert_eq!((hst.nodes_of[0].latest, hst.nodes_of[0].reference), (0, 4));
        hst.score_learn(&[0.5]);
        assert_eq!((hst.nodes_of[0].latest, hst.nodes_of[0].reference), (1, 4));
    }
}
