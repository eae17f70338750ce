//! A value's bin among a profile's sorted edges in constant time: a uniform grid of cells over
//! the edges' range says, for each cell, which edges may lie in it, so a lookup is one
//! multiplication, two loads and two comparisons where the binary search of
//! [`super::profile::bin_of`] takes ~7 dependent steps over 99 fine edges (about 90
//! instructions a value, the largest single cost of drift on the hot path: BENCHMARKS.md,
//! "Hot path (issue 15)"). Hand-written because it is a few lines and has to agree with
//! `bin_of` bit for bit.
//!
//! Why the answer is exact whatever the rounding: `cell(v) = ⌊(v − origin)·scale⌋`, clamped, is
//! monotone in `v` (floating-point subtraction and multiplication by a positive number round
//! monotonically). So an edge in an earlier cell than `v`'s is below `v`, and an edge in a later
//! cell is above it; the cells of the edges themselves (computed with the same function) give
//! `first[c]`, the edges in cells before `c`. The bin, the number of edges below `v`, is then
//! `first[c]` plus the edges of cell `c` below `v`: counted with two branch-free comparisons
//! when the cell holds at most two edges (edges of later cells, and the +∞ padding after the
//! last, add nothing), by a binary search of the cell's edges otherwise.
//!
//! Memory: 4 bytes a cell, 4 to 16 cells an edge, beside the edges themselves: 1.6 KB for the
//! default 100 fine bins (6.4 KB at most), so 0.4–1.6 MB for a model version at the default
//! `--max-features-per-model` of 256, against the ~13 MB its drift windows hold.

use super::profile::bin_of;

/// Edges compared without a search: cells holding more fall back to a binary search.
const SCAN: usize = 2;
/// Cells per edge to start with, and at most (a grid is refined while more than a quarter of the
/// edges share crowded cells, as a skewed feature's dense quantiles do).
const CELLS_PER_EDGE: usize = 4;
const MAX_CELLS_PER_EDGE: usize = 16;

/// The bins of one feature's sorted edges (right-closed bins, the last open above).
#[derive(Debug, Clone)]
pub struct BinIndex {
    /// The edges, then [`SCAN`] copies of +∞ so that a scan never leaves the slice.
    edges: Vec<f64>,
    /// The real edges (without the padding).
    len: usize,
    origin: f64,
    /// Cells per unit of value; 0 when the edges span no width (one cell).
    scale: f64,
    /// `first[c]`: the edges whose cell is before `c`; one more entry than cells, the last `len`.
    first: Vec<u32>,
}

impl BinIndex {
    /// The index of `edges`, sorted ascending (as profiles hold them).
    pub fn new(edges: &[f64]) -> Self {
        let per_edge_cells = |k: usize| k * (edges.len() + 1);
        let mut k = CELLS_PER_EDGE;
        loop {
            let index = Self::with_cells(edges, per_edge_cells(k));
            if k >= MAX_CELLS_PER_EDGE || 4 * index.crowded() <= edges.len() {
                return index;
            }
            k *= 2;
        }
    }

    fn with_cells(edges: &[f64], cells: usize) -> Self {
        let len = edges.len();
        let (origin, width) = match (edges.first(), edges.last()) {
            (Some(&a), Some(&b)) => (a, b - a),
            _ => (0.0, 0.0),
        };
        let scale = cells as f64 / width;
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            0.0
        };
        let mut index = Self {
            edges: edges
                .iter()
                .copied()
                .chain(std::iter::repeat_n(f64::INFINITY, SCAN))
                .collect(),
            len,
            origin,
            scale,
            first: Vec::new(),
        };
        let cells = if scale > 0.0 { cells } else { 1 };
        // Edges sorted, cells monotone: one walk counts the edges before each cell.
        let mut first = Vec::with_capacity(cells + 1);
        let mut j = 0;
        for c in 0..cells {
            while j < len && index.cell_of(edges[j], cells) < c {
                j += 1;
            }
            first.push(u32::try_from(j).expect("fewer than 2^32 edges"));
        }
        first.push(u32::try_from(len).expect("fewer than 2^32 edges"));
        index.first = first;
        index
    }

    #[inline]
    fn cell_of(&self, value: f64, cells: usize) -> usize {
        // `as` saturates: NaN and values below the origin go to cell 0, +∞ to the last.
        (((value - self.origin) * self.scale) as usize).min(cells - 1)
    }

    /// Edges in cells holding more than [`SCAN`] of them.
    fn crowded(&self) -> usize {
        self.first
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .filter(|&n| n > SCAN)
            .sum()
    }

    /// The bin of `value`: the number of edges below it, as [`bin_of`] (NaN: 0).
    #[inline(always)]
    pub fn bin(&self, value: f64) -> usize {
        let c = self.cell_of(value, self.first.len() - 1);
        let (lo, hi) = (self.first[c] as usize, self.first[c + 1] as usize);
        if hi - lo <= SCAN {
            lo + usize::from(self.edges[lo] < value) + usize::from(self.edges[lo + 1] < value)
        } else {
            lo + bin_of(&self.edges[lo..hi], value)
        }
    }

    /// The edges, without the padding.
    pub fn edges(&self) -> &[f64] {
        &self.edges[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(edges: &[f64], values: impl IntoIterator<Item = f64>) {
        let index = BinIndex::new(edges);
        assert_eq!(index.edges(), edges);
        for v in values {
            assert_eq!(index.bin(v), bin_of(edges, v), "value {v} among {edges:?}");
        }
    }

    /// Every edge, its neighbours one ulp away, the midpoints and the infinities.
    fn probes(edges: &[f64]) -> Vec<f64> {
        let mut v = vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0];
        for w in edges.windows(2) {
            v.push(w[0] + (w[1] - w[0]) / 2.0);
        }
        for &e in edges {
            v.extend([e, e.next_up(), e.next_down(), e * 2.0, e - 1.0, e + 1.0]);
        }
        v
    }

    #[test]
    fn few_or_degenerate_edges() {
        for edges in [
            vec![],
            vec![1.0],
            vec![-3.0, -3.0],
            vec![0.0, 1e-320],
            vec![-f64::MAX, f64::MAX],
            vec![1.0, 1.0, 1.0, 2.0],
        ] {
            let p = probes(&edges);
            check(&edges, p);
        }
    }

    #[test]
    fn quantile_edges_of_skewed_and_discrete_samples() {
        // Log-normal (σ = 2), zero-inflated, and a few distinct values.
        let log_normal: Vec<f64> = (1..100)
            .map(|k| (2.0 * 2.326 * (k as f64 / 50.0 - 1.0)).exp())
            .collect();
        let mut zero_inflated = vec![0.0; 60];
        zero_inflated.extend((1..40).map(|k| k as f64 * 0.37));
        zero_inflated.dedup();
        for edges in [log_normal, zero_inflated, vec![0.0, 1.0, 2.0, 3.0]] {
            let p = probes(&edges);
            check(&edges, p);
        }
    }

    proptest! {
        #[test]
        fn every_value_gets_bin_of_s_bin(
            mut edges in proptest::collection::vec(-1e6f64..1e6, 0..300),
            spread in proptest::collection::vec(-2e6f64..2e6, 0..200),
            exponent in 0u32..4,
        ) {
            // Sorted edges, some bunched by raising to a power (dense near 0, sparse far out).
            let power = exponent as i32 * 3 + 1;
            for e in edges.iter_mut() {
                *e = e.signum() * (e.abs() / 1e6).powi(power) * 1e6;
            }
            edges.sort_by(f64::total_cmp);
            let mut values = probes(&edges);
            values.extend(spread);
            check(&edges, values);
        }
    }
}
