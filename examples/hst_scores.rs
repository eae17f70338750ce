//! Scores a CSV stream with inferscope's Half-Space Trees, as the sidecar does: the reference is
//! the first `--reference` rows (their min and max scale every column, as a profile captured live
//! would, with `reference_scale`; `--margin` overrides its margin), and every row is scored and
//! then learned, in order. Used by
//! `tools/eval-anomaly.py`, which compares the scores with river and scikit-learn.
//!
//! cargo run --release --example hst_scores -- stream.csv --reference 2000 > scores.txt
//!
//! Input: a header and numeric columns only. Output, one line per row on stdout: the score
//! (river's scale, 1 = most anomalous) and 1 or 0, whether the sidecar's rule
//! ([`MassRule`], `--ratio`, default the sidecar's) flags the row; the time spent scoring, in ns
//! per row, on stderr. By default the trees learn every row from the first, as river does; with
//! `--sidecar` they start after the reference rows, as in the sidecar (which builds them when
//! the reference profile is ready), and the reference rows get score 0.

use inferscope::{
    anomaly::settings::DEFAULT_HST_MASS_RATIO,
    stats::half_space_trees::{reference_scale, HalfSpaceTrees, MassRule},
};
use std::{io::Write, time::Instant};

fn main() -> anyhow::Result<()> {
    let mut path = None;
    let (mut reference, mut trees, mut height, mut window, mut seed) = (2000usize, 10, 8, 250, 42);
    let mut margin = None;
    let mut ratio = DEFAULT_HST_MASS_RATIO;
    let mut sidecar = false;
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
            "--ratio" => ratio = value()?.parse()?,
            "--sidecar" => sidecar = true,
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
    let mut rule = MassRule::new(ratio);
    let skip = if sidecar { reference } else { 0 };
    let mut scores = vec![0.0; skip];
    let mut flags = vec![false; skip];
    scores.reserve(rows.len() - skip);
    flags.reserve(rows.len() - skip);
    // Scoring, learning and the flag rule, as the sidecar runs them per record.
    let start = Instant::now();
    for x in &scaled[skip..] {
        let scoring = hst.is_scoring();
        let score = hst.score_learn(x);
        scores.push(score);
        flags.push(rule.check(score, scoring).is_some());
    }
    let elapsed = start.elapsed();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (s, f) in scores.iter().zip(flags) {
        writeln!(out, "{s} {}", u8::from(f))?;
    }
    eprintln!(
        "{:.1} ns per row",
        elapsed.as_nanos() as f64 / (rows.len() - skip).max(1) as f64
    );
    Ok(())
}
