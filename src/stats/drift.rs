//! Two-sample drift statistics, with the definitions of SciPy (`scipy.stats.ks_2samp`,
//! `chisquare`, `wasserstein_distance`, `scipy.spatial.distance.jensenshannon`) and the PSI of
//! Evidently (empty bins get [`PSI_EPSILON`]); versions pinned in `tests/oracles/requirements.txt`.
//!
//! Two forms for numeric features:
//! - **binned**, from counts over the reference's quantile bins (what the windows keep, one bin
//!   lookup per value): PSI and Jensen–Shannon on the coarse bins as users of Evidently expect,
//!   and the Kolmogorov–Smirnov statistic and Wasserstein distance on the fine bins, each with a
//!   bound on how far the binned value can be from the exact one;
//! - **exact**, from raw values (small windows against a complete reference sample).
//!
//! Written by hand: no maintained Rust crate provides these tests over binned, mergeable counts.

/// Share given to an empty bin in PSI (Evidently's `0.0001`), so that the logarithm stays finite.
pub const PSI_EPSILON: f64 = 1e-4;

/// A value and how far from the exact one it can be (0 when computed exactly).
pub use super::score_curve::Estimate;

fn total(counts: &[f64]) -> f64 {
    counts.iter().sum()
}

/// Population stability index of `current` against `reference` (counts over the same bins):
/// Σ (r − c) · ln(r / c) over the bin shares, empty shares replaced by [`PSI_EPSILON`].
/// `None` when either side is empty.
pub fn psi(reference: &[f64], current: &[f64]) -> Option<f64> {
    let (nr, nc) = (total(reference), total(current));
    if nr == 0.0 || nc == 0.0 {
        return None;
    }
    let share = |count: f64, n: f64| {
        let p = count / n;
        if p == 0.0 {
            PSI_EPSILON
        } else {
            p
        }
    };
    Some(
        reference
            .iter()
            .zip(current)
            .map(|(&r, &c)| {
                let (r, c) = (share(r, nr), share(c, nc));
                (r - c) * (r / c).ln()
            })
            .sum(),
    )
}

/// `x · ln(x / y)` with SciPy's `rel_entr` conventions for zeros.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else if y == 0.0 {
        f64::INFINITY
    } else {
        x * (x / y).ln()
    }
}

/// Jensen–Shannon distance, base 2 (`jensenshannon(p, q, base=2)`): in [0, 1].
pub fn js_distance(reference: &[f64], current: &[f64]) -> Option<f64> {
    let (nr, nc) = (total(reference), total(current));
    if nr == 0.0 || nc == 0.0 {
        return None;
    }
    let mut js = 0.0;
    for (&r, &c) in reference.iter().zip(current) {
        let (p, q) = (r / nr, c / nc);
        let m = (p + q) / 2.0;
        js += rel_entr(p, m) + rel_entr(q, m);
    }
    js /= std::f64::consts::LN_2;
    Some((js / 2.0).max(0.0).sqrt())
}

/// Pearson's chi-square of the current counts against the reference shares scaled to the
/// current total (`chisquare(f_obs, f_exp)`), with its p-value (k − 1 degrees of freedom).
/// A category never seen in the reference but present now makes the statistic infinite and the
/// p-value 0, as SciPy gives.
pub fn chi_square(reference: &[f64], current: &[f64]) -> Option<(f64, f64)> {
    let (nr, nc) = (total(reference), total(current));
    if nr == 0.0 || nc == 0.0 || reference.len() < 2 {
        return None;
    }
    // A category absent from both sides carries no information and adds 0 (SciPy would give
    // NaN for 0/0; inferscope's category lists can hold such an entry, e.g. an empty "other").
    let stat: f64 = reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let expected = r / nr * nc;
            match (expected == 0.0, c == 0.0) {
                (true, true) => 0.0,
                (true, false) => f64::INFINITY,
                _ => (c - expected) * (c - expected) / expected,
            }
        })
        .sum();
    // Degrees of freedom: the categories with a count on either side, less one.
    let categories = reference
        .iter()
        .zip(current)
        .filter(|(&r, &c)| r > 0.0 || c > 0.0)
        .count();
    if categories < 2 {
        return None;
    }
    let dof = (categories - 1) as f64;
    let p = if stat.is_infinite() {
        0.0
    } else if stat <= 0.0 {
        1.0
    } else {
        // Q(k/2, x/2), the chi-square survival function; never panics on odd input.
        statrs::function::gamma::checked_gamma_ur(dof / 2.0, stat / 2.0).unwrap_or(f64::NAN)
    };
    Some((stat, p))
}

/// Survival function of the Kolmogorov distribution (`scipy.stats.kstwobign.sf`).
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        // Jacobi theta form of the CDF, fast for small x.
        let mut cdf = 0.0;
        let c = std::f64::consts::PI * std::f64::consts::PI / (8.0 * x * x);
        for k in 1..=20 {
            let j = (2 * k - 1) as f64;
            cdf += (-j * j * c).exp();
        }
        1.0 - cdf * (2.0 * std::f64::consts::PI).sqrt() / x
    } else {
        let mut sf = 0.0;
        for k in 1..=100 {
            let kf = k as f64;
            let term = (-2.0 * kf * kf * x * x).exp();
            sf += if k % 2 == 1 { term } else { -term };
            if term < 1e-300 {
                break;
            }
        }
        (2.0 * sf).clamp(0.0, 1.0)
    }
}

/// The asymptotic two-sided p-value of a two-sample KS statistic `d` (Smirnov's limit:
/// `kstwobign.sf(d·√(n·m/(n+m)))`). SciPy's `ks_2samp` uses an exact distribution for samples up
/// to 10 000; the two agree closely for windows of a few hundred values or more.
pub fn ks_pvalue(d: f64, n: f64, m: f64) -> f64 {
    kolmogorov_sf(d * (n * m / (n + m)).sqrt())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The exact two-sided p-value of a two-sample KS statistic `d` between samples of sizes `m`
/// and `n`, as `scipy.stats.ks_2samp(..., method="exact")`: the probability that a uniformly
/// random interleaving of the two samples gives a statistic at least `d`, with `d` first
/// rounded to the lattice of attainable values (`h / lcm(m, n)`) as SciPy does.
///
/// Computed directly, without `1 − P(inside)` (which would lose tiny p-values to cancellation):
/// a forward pass over the lattice paths from (0, 0) to (m, n) carries the probability of the
/// paths still strictly inside the band |x/m − y/n| < d, and adds to the result the probability
/// of every step that leaves it (such a path has reached D ≥ d whatever it does next). Only the
/// band is visited: O(m · band width).
pub fn ks_exact_pvalue(d: f64, m: usize, n: usize) -> Option<f64> {
    if m == 0 || n == 0 {
        return None;
    }
    let (mu, nu) = (m as u64, n as u64);
    let g = gcd(mu, nu);
    let lcm = mu / g * nu;
    let h = (d * lcm as f64).round() as u64;
    if h == 0 {
        return Some(1.0);
    }
    // Outside iff |x·n − y·m| ≥ h·g (that is |x/m − y/n| ≥ h/lcm), in exact integers.
    let limit = u128::from(h) * u128::from(g);
    let outside = |x: usize, y: usize| {
        let (a, b) = (x as u128 * n as u128, y as u128 * m as u128);
        a.abs_diff(b) >= limit
    };
    let total = (m + n) as f64;
    let mut p = 0.0;
    let mut column = vec![0.0f64; n + 1];
    let mut next = vec![0.0f64; n + 1];
    column[0] = 1.0;
    let (mut lo, mut hi) = (0usize, 0usize); // the non-zero range of `column`
    for x in 0..=m {
        let (mut next_lo, mut next_hi) = (usize::MAX, 0usize);
        let mut y = lo;
        while y <= hi.min(n) {
            let mass = column[y];
            column[y] = 0.0;
            if mass > 0.0 {
                let left = total - (x + y) as f64;
                if y < n {
                    let step = mass * (n - y) as f64 / left;
                    if outside(x, y + 1) {
                        p += step;
                    } else {
                        column[y + 1] += step;
                        hi = hi.max(y + 1);
                    }
                }
                if x < m {
                    let step = mass * (m - x) as f64 / left;
                    if outside(x + 1, y) {
                        p += step;
                    } else {
                        next[y] += step;
                        next_lo = next_lo.min(y);
                        next_hi = next_hi.max(y);
                    }
                }
            }
            y += 1;
        }
        std::mem::swap(&mut column, &mut next);
        if next_lo == usize::MAX {
            break;
        }
        lo = next_lo;
        hi = next_hi;
    }
    Some(p.clamp(0.0, 1.0))
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Number of values ≤ `x` in a sorted slice (`searchsorted(side='right')`).
fn rank(sorted: &[f64], x: f64) -> usize {
    sorted.partition_point(|&v| v <= x)
}

/// The two-sample KS statistic of raw values, as `ks_2samp(a, b).statistic`.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (a, b) = (sorted(a), sorted(b));
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let d = a
        .iter()
        .chain(&b)
        .map(|&x| (rank(&a, x) as f64 / na - rank(&b, x) as f64 / nb).abs())
        .fold(0.0, f64::max);
    Some(d)
}

/// The first Wasserstein distance of raw values, as `wasserstein_distance(a, b)`.
pub fn wasserstein(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (a, b) = (sorted(a), sorted(b));
    let all = sorted(&[a.as_slice(), b.as_slice()].concat());
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let mut w = 0.0;
    for pair in all.windows(2) {
        let (x, next) = (pair[0], pair[1]);
        let diff = rank(&a, x) as f64 / na - rank(&b, x) as f64 / nb;
        w += diff.abs() * (next - x);
    }
    Some(w)
}

/// KS statistic from counts over the same bins with upper edges `edges` (the last bin is open
/// above). The CDFs are known exactly at the edges, so the exact statistic lies between the
/// largest gap seen there and that plus the largest bin share of either side.
pub fn ks_binned(reference: &[f64], current: &[f64]) -> Option<Estimate> {
    let (nr, nc) = (total(reference), total(current));
    if nr == 0.0 || nc == 0.0 {
        return None;
    }
    let (mut fr, mut fc, mut d, mut widest) = (0.0, 0.0, 0.0f64, 0.0f64);
    for (&r, &c) in reference.iter().zip(current) {
        fr += r / nr;
        fc += c / nc;
        d = d.max((fr - fc).abs());
        widest = widest.max(r / nr).max(c / nc);
    }
    Some(Estimate {
        value: d,
        error_bound: widest,
    })
}

/// Wasserstein distance from counts over bins `[lo, edges[0]], (edges[0], edges[1]], …,
/// (edges[last], hi]` where `lo`/`hi` are the smallest and largest value of both samples. In
/// each bin the CDFs move within their known end values, so |F_r − F_c| lies between a floor and
/// a ceiling; the estimate takes the middle, the bound half the spread, times the bin width.
pub fn wasserstein_binned(
    edges: &[f64],
    lo: f64,
    hi: f64,
    reference: &[f64],
    current: &[f64],
) -> Option<Estimate> {
    let (nr, nc) = (total(reference), total(current));
    if nr == 0.0 || nc == 0.0 || reference.len() != edges.len() + 1 {
        return None;
    }
    let (mut r0, mut c0) = (0.0, 0.0);
    let (mut value, mut bound) = (0.0, 0.0);
    for (i, (&r, &c)) in reference.iter().zip(current).enumerate() {
        let (r1, c1) = (r0 + r / nr, c0 + c / nc);
        let a = if i == 0 { lo } else { edges[i - 1].max(lo) };
        let b = if i == edges.len() {
            hi
        } else {
            edges[i].min(hi)
        };
        let width = (b - a).max(0.0);
        if width > 0.0 {
            // |F_r − F_c| over the bin: F_r ∈ [r0, r1], F_c ∈ [c0, c1].
            let ceiling = (r1 - c0).abs().max((c1 - r0).abs());
            let floor = if r1 < c0 {
                c0 - r1
            } else if c1 < r0 {
                r0 - c1
            } else {
                0.0
            };
            value += width * (ceiling + floor) / 2.0;
            bound += width * (ceiling - floor) / 2.0;
        }
        r0 = r1;
        c0 = c1;
    }
    Some(Estimate {
        value,
        error_bound: bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Counts of `values` over bins with upper edges `edges` (right-closed, last open).
    fn bin(edges: &[f64], values: &[f64]) -> Vec<f64> {
        let mut counts = vec![0.0; edges.len() + 1];
        for &v in values {
            counts[edges.partition_point(|&e| e < v)] += 1.0;
        }
        counts
    }

    proptest! {
        #[test]
        fn binned_ks_and_wasserstein_bound_the_exact_values(
            a in proptest::collection::vec(-50.0f64..50.0, 1..200),
            b in proptest::collection::vec(-80.0f64..80.0, 1..200),
            edges in proptest::collection::btree_set(-60i32..60, 1..20),
        ) {
            let edges: Vec<f64> = edges.into_iter().map(f64::from).collect();
            let (ra, rb) = (bin(&edges, &a), bin(&edges, &b));
            let d = ks_statistic(&a, &b).unwrap();
            let est = ks_binned(&ra, &rb).unwrap();
            prop_assert!(est.value <= d + 1e-12 && d <= est.value + est.error_bound + 1e-12);
            let lo = a.iter().chain(&b).copied().fold(f64::INFINITY, f64::min);
            let hi = a.iter().chain(&b).copied().fold(f64::NEG_INFINITY, f64::max);
            let w = wasserstein(&a, &b).unwrap();
            let est = wasserstein_binned(&edges, lo, hi, &ra, &rb).unwrap();
            prop_assert!((est.value - w).abs() <= est.error_bound + 1e-9 * w.max(1.0));
        }
    }

    #[test]
    fn categories_empty_on_both_sides_change_nothing() {
        let (r, c) = ([500.0, 300.0, 200.0], [40.0, 35.0, 25.0]);
        let padded = chi_square(&[500.0, 300.0, 200.0, 0.0], &[40.0, 35.0, 25.0, 0.0]);
        assert_eq!(
            chi_square(&r, &c),
            padded,
            "statistic and degrees of freedom"
        );
        assert_eq!(
            chi_square(&[5.0, 0.0], &[3.0, 0.0]),
            None,
            "one category: no test"
        );
    }

    #[test]
    fn identical_distributions_do_not_drift() {
        let r = [10.0, 20.0, 30.0];
        assert_eq!(psi(&r, &r), Some(0.0));
        assert_eq!(js_distance(&r, &r), Some(0.0));
        assert_eq!(chi_square(&r, &r).map(|c| c.0), Some(0.0));
        assert_eq!(psi(&r, &[0.0; 3]), None, "empty window: undefined");
        assert!((kolmogorov_sf(0.0) - 1.0).abs() < 1e-15);
    }
}
