//! Times three walks of the Half-Space Trees on the same trees and rows in one process (BENCHMARKS.md,
//! "Hot path (issue 15)"): the branchy walk, one tree at a time, that src/stats/half_space_trees.rs
//! had before; the same without a branch; and the kept one, up to 16 trees in lockstep without a
//! branch. Callgrind counts instructions, not the load latency and mispredictions that decide
//! this, so it is timed; the three interleave, best of 5 rounds, so a noisy machine slows them
//! alike. Standalone (no dependency), a copy of the walks' arithmetic on trees drawn like river's
//! (split points in the padded middle 70 %), 10 trees of height 8, 32 features, window 250:
//!
//!     rustc --edition 2021 -O tools/shard-cost/hst_walks.rs -o /tmp/hst_walks && /tmp/hst_walks
use std::time::Instant;

#[derive(Clone, Copy, Default)]
struct Node {
    threshold: f64,
    feature: u16,
    latest: u16,
    reference: u16,
}

struct Trees {
    height: u32,
    nodes: usize,
    internal: usize,
    nodes_of: Vec<Node>,
    /// 0.1 × window, as a float (branchy) and as the smallest integer mass at or over it.
    size_limit: f64,
    limit: u16,
}

/// SplitMix64 in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Trees {
    fn new(dims: usize, trees: usize, height: u32, window: u32, rng: &mut Rng) -> Self {
        let nodes = (1usize << (height + 1)) - 1;
        let internal = (1usize << height) - 1;
        let nodes_of = (0..trees * nodes)
            .map(|i| match i % nodes < internal {
                true => Node {
                    threshold: 0.15 + 0.7 * rng.next(),
                    feature: (rng.next() * dims as f64) as u16,
                    ..Node::default()
                },
                false => Node::default(),
            })
            .collect();
        let size_limit = 0.1 * window as f64;
        Self {
            height,
            nodes,
            internal,
            nodes_of,
            size_limit,
            limit: size_limit.ceil() as u16,
        }
    }

    fn pivot(&mut self) {
        for n in &mut self.nodes_of {
            n.reference = n.latest;
            n.latest = 0;
        }
    }

    /// Before: one tree at a time, a branch per split (and the missing-value test), the score
    /// summed in floats.
    #[inline(never)]
    fn branchy(&mut self, x: &[f64]) -> f64 {
        let mut mass = 0.0;
        for tree in self.nodes_of.chunks_exact_mut(self.nodes) {
            let (mut node, mut descending) = (0usize, true);
            for depth in 0..=self.height {
                let n = &mut tree[node];
                n.latest += 1;
                if descending {
                    mass += f64::from(n.reference) * f64::from(1u32 << depth);
                    descending = f64::from(n.reference) >= self.size_limit;
                }
                if node >= self.internal {
                    break;
                }
                let (value, left, right) = (x[usize::from(n.feature)], 2 * node + 1, 2 * node + 2);
                node = if value < n.threshold {
                    left
                } else if value.is_nan() {
                    // As before: the child seen more in this window.
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
        mass
    }

    /// One tree at a time, the child and the descent's stop by arithmetic.
    #[inline(never)]
    fn branch_free(&mut self, x: &[f64]) -> f64 {
        let mut mass: u64 = 0;
        for tree in self.nodes_of.chunks_exact_mut(self.nodes) {
            let (mut node, mut keep) = (0usize, u64::MAX);
            for depth in 0..self.height {
                let n = &mut tree[node];
                n.latest += 1;
                mass += (u64::from(n.reference) << depth) & keep;
                keep &= u64::from(n.reference >= self.limit).wrapping_neg();
                node = 2 * node + 1 + usize::from(x[usize::from(n.feature)] >= n.threshold);
            }
            let leaf = &mut tree[node];
            leaf.latest += 1;
            mass += (u64::from(leaf.reference) << self.height) & keep;
        }
        mass as f64
    }

    /// Kept: up to 16 trees in lockstep, one level at a time, as `HalfSpaceTrees::walk`.
    #[inline(never)]
    fn lockstep(&mut self, x: &[f64]) -> f64 {
        const LOCKSTEP: usize = 16;
        let (height, limit, nodes) = (self.height, self.limit, self.nodes);
        let mut mass: u64 = 0;
        for group in self.nodes_of.chunks_mut(LOCKSTEP * nodes) {
            let mut lanes = [(0usize, 0usize, u64::MAX); LOCKSTEP];
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
                    let right = x[usize::from(n.feature)] >= n.threshold;
                    *node = 2 * *node + 1 + usize::from(right);
                }
            }
            for &mut (start, node, keep) in lanes.iter_mut() {
                group[start + node].latest += 1;
                mass += (u64::from(group[start + node].reference) << height) & keep;
            }
        }
        mass as f64
    }
}

fn main() {
    let (dims, window) = (32, 250);
    let mut rng = Rng(7);
    let rows: Vec<Vec<f64>> = (0..200_000)
        .map(|_| (0..dims).map(|_| 0.333 + 0.333 * rng.next()).collect())
        .collect();
    let walks: [(&str, fn(&mut Trees, &[f64]) -> f64); 3] = [
        ("branchy, one tree at a time (before)", Trees::branchy),
        ("branch-free, one tree at a time", Trees::branch_free),
        ("branch-free, trees in lockstep (kept)", Trees::lockstep),
    ];
    // The same trees for every walk; each starts past its first window.
    let mut trees: Vec<Trees> = walks
        .iter()
        .map(|_| Trees::new(dims, 10, 8, window, &mut Rng(11)))
        .collect();
    for ((_, walk), t) in walks.iter().zip(&mut trees) {
        for row in &rows[..window as usize] {
            walk(t, row);
        }
        t.pivot();
    }
    let mut best = [f64::MAX; 3];
    let mut sums = [0.0; 3];
    for _round in 0..5 {
        for (k, ((_, walk), t)) in walks.iter().zip(&mut trees).enumerate() {
            let start = Instant::now();
            let mut sum = 0.0;
            for (i, row) in rows.iter().enumerate() {
                sum += walk(t, row);
                if i % window as usize == window as usize - 1 {
                    t.pivot();
                }
            }
            best[k] = best[k].min(start.elapsed().as_nanos() as f64 / rows.len() as f64);
            sums[k] = sum;
        }
    }
    assert!(
        sums.iter().all(|&s| s == sums[0]),
        "the walks disagree: {:?}",
        sums
    );
    for ((name, _), ns) in walks.iter().zip(best) {
        println!("{ns:7.1} ns per row  {name}");
    }
}
