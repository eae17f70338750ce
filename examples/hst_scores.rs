//! Scores a CSV stream with inferscope's Half-Space Trees, as the sidecar does: the reference is
//! the first `--reference` rows (their min and max scale every column, as a profile captured live
//! would, with `reference_scale`; `--margin` overrides its margin), and every row is scored and
//! then learned, in order. Used by
//! `tools/eval-anomaly.py`, which compares the scores with river and scikit-learn.
//!
//! cargo run --release --example hst_scores -- stream.csv --reference 2000 > scores.txt
//!
//! Input: a header and numeric columns only. Output: one score per row (river's scale, 1 = most
//! anomalous) on stdout; the time spent scoring, in ns per row, on stderr.

use inferscope::stats::half_space_trees::{reference_scale, HalfSpaceTrees};
use std::{io::Write, time::Instant};

fn main() -> anyhow::Result<()> {
    let mut path = None;
    let (mut reference, mut trees, mut height, mut window, mut seed) = (2000usize, 10, 8, 250, 42);
    let mut margin = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || -> anyhow::Result<String> {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--reference" => reference = value()?.parse()?,
            "--trees" => trees = value()?.parse()?,
            "--height" => height = value()?.parse()?,
            "--window" => window = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--margin" => margin = Some(value()?.parse::<f64>()?),
            _ => path = Some(a),
        }
    }
    let path = path.ok_or_else(|| anyhow::anyhow!("usage: hst_scores <stream.csv> [options]"))?;
    let mut reader = csv::Reader::from_path(&path)?;
    let rows: Vec<Vec<f64>> = reader
        .records()
        .map(|r| -> anyhow::Result<Vec<f64>> {
            r?.iter().map(|v| Ok(v.trim().parse::<f64>()?)).collect()
        })
        .collect::<Result<_, _>>()?;
    let dims = rows.first().map_or(0, Vec::len);
    anyhow::ensure!(dims > 0, "{path}: no rows");
    let reference = reference.clamp(1, rows.len());
    let mut lo = vec![f64::INFINITY; dims];
    let mut hi = vec![f64::NEG_INFINITY; dims];
    for row in &rows[..reference] {
        for (j, &v) in row.iter().enumerate() {
            lo[j] = lo[j].min(v);
            hi[j] = hi[j].max(v);
        }
    }
    let scales: Vec<(f64, f64)> = lo
        .iter()
        .zip(&hi)
        .map(|(&l, &h)| match margin {
            Some(m) => {
                // An explicit margin, for exploring the choice of REFERENCE_MARGIN.
                let w = if h > l { h - l } else { 1.0 };
                (l - m * w, 1.0 / (w * (1.0 + 2.0 * m)))
            }
            None => reference_scale(l, h),
        })
        .collect();
    // Scaled as the sidecar scales a record, before timing (the sidecar does it in its drift pass).
    let scaled: Vec<Vec<f64>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(j, v)| (v - scales[j].0) * scales[j].1)
                .collect()
        })
        .collect();
    let mut hst = HalfSpaceTrees::new(dims, trees, height, window, seed);
    let mut scores = Vec::with_capacity(rows.len());
    let start = Instant::now();
    for x in &scaled {
        scores.push(hst.score_learn(x));
    }
    let elapsed = start.elapsed();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for s in scores {
        writeln!(out, "{s}")?;
    }
    eprintln!(
        "{:.1} ns per row",
        elapsed.as_nanos() as f64 / rows.len() as f64
    );
    Ok(())
}
