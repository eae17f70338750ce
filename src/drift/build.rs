//! Builds a reference profile from a file of reference (training) data: CSV with a header row,
//! or JSON Lines (one object per line). Two passes over the file: the first decides each
//! column's kind (numeric when every present value is a number, unless named categorical) and
//! counts the bytes for the progress report, the second profiles.
//!
//! Missing values: an empty CSV cell, `NaN`, a JSON `null` or an absent key. `inf` / `-inf` are
//! counted as non-finite. Numeric columns are held in memory while building (8 bytes a value).

use super::profile::{
    CategoricalColumn, Column, FeatureProfile, NumericColumn, Profile, ProfileSettings, FORMAT,
    PREDICTION,
};
use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

/// What to profile and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub input: PathBuf,
    pub model: String,
    pub version: String,
    /// Columns profiled as categorical even when their values are numbers (codes, ids).
    pub categorical: Vec<String>,
    /// Columns left out (ids, labels, timestamps).
    pub ignore: Vec<String>,
    /// The column holding the model's prediction, profiled as [`PREDICTION`].
    pub prediction: Option<String>,
    pub settings: ProfileSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Parse {
        path: String,
        line: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    Input { path: String, message: String },
}

/// A cell as read: absent, a number, or text.
enum Cell<'a> {
    Missing,
    /// A number, with its text as written (a categorical column keeps the text: "02134" is not
    /// 2134).
    Number(f64, std::borrow::Cow<'a, str>),
    Text(std::borrow::Cow<'a, str>),
}

fn csv_cell(raw: &str) -> Cell<'_> {
    let t = raw.trim();
    if t.is_empty() {
        return Cell::Missing;
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_nan() => Cell::Missing,
        Ok(v) => Cell::Number(v, t.into()),
        Err(_) => Cell::Text(t.into()),
    }
}

fn json_cell(value: &serde_json::Value) -> Cell<'_> {
    match value {
        serde_json::Value::Null => Cell::Missing,
        serde_json::Value::Number(n) => n
            .as_f64()
            .map_or(Cell::Missing, |v| Cell::Number(v, n.to_string().into())),
        serde_json::Value::String(s) if s.is_empty() => Cell::Missing,
        serde_json::Value::String(s) => Cell::Text(s.as_str().into()),
        other => Cell::Text(other.to_string().into()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Csv,
    JsonLines,
}

fn format_of(path: &Path) -> Result<Format, BuildError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => Ok(Format::Csv),
        Some("jsonl" | "ndjson" | "json") => Ok(Format::JsonLines),
        _ => Err(BuildError::Input {
            path: path.display().to_string(),
            message:
                "use a .csv file (with a header row) or a .jsonl file (one JSON object per line)"
                    .into(),
        }),
    }
}

/// Calls `row` with every row's cells by column name, and `progress` with the bytes read so far.
fn scan(
    path: &Path,
    format: Format,
    mut row: impl FnMut(&mut dyn FnMut(&mut dyn FnMut(&str, Cell<'_>))),
    progress: &mut dyn FnMut(u64),
) -> Result<u64, BuildError> {
    let shown = || path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| BuildError::Read {
        path: shown(),
        source,
    })?;
    let mut rows = 0u64;
    match format {
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(file);
            let headers: Vec<String> = reader
                .headers()
                .map_err(|e| BuildError::Parse {
                    path: shown(),
                    line: 1,
                    message: e.to_string(),
                })?
                .iter()
                .map(str::to_owned)
                .collect();
            let mut record = csv::StringRecord::new();
            loop {
                match reader.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) => {
                        return Err(BuildError::Parse {
                            path: shown(),
                            line: e.position().map_or(0, |p| p.line()),
                            message: e.to_string(),
                        })
                    }
                }
                rows += 1;
                row(&mut |visit| {
                    for (name, raw) in headers.iter().zip(record.iter()) {
                        visit(name, csv_cell(raw));
                    }
                });
                if rows.is_multiple_of(4096) {
                    progress(reader.position().byte());
                }
            }
            progress(reader.position().byte());
        }
        Format::JsonLines => {
            let mut reader = BufReader::new(file);
            let (mut line, mut bytes, mut number) = (String::new(), 0u64, 0u64);
            loop {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .map_err(|source| BuildError::Read {
                        path: shown(),
                        source,
                    })?;
                if n == 0 {
                    break;
                }
                bytes += n as u64;
                number += 1;
                if line.trim().is_empty() {
                    continue;
                }
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&line).map_err(|e| BuildError::Parse {
                        path: shown(),
                        line: number,
                        message: format!("not a JSON object: {e}"),
                    })?;
                rows += 1;
                row(&mut |visit| {
                    for (name, value) in &object {
                        visit(name, json_cell(value));
                    }
                });
                if rows.is_multiple_of(4096) {
                    progress(bytes);
                }
            }
            progress(bytes);
        }
    }
    Ok(rows)
}

/// The size of the input in bytes, for a progress bar.
pub fn input_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Builds the profile of `options.input`; `progress` gets the bytes read in the second pass.
pub fn build_profile(
    options: &BuildOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Profile, BuildError> {
    let path = options.input.as_path();
    let format = format_of(path)?;
    let ignore: HashSet<&str> = options.ignore.iter().map(String::as_str).collect();
    let forced: HashSet<&str> = options.categorical.iter().map(String::as_str).collect();

    // Pass 1: column kinds, in first-seen order.
    let mut order: Vec<String> = Vec::new();
    let mut textual: BTreeMap<String, bool> = BTreeMap::new();
    scan(
        path,
        format,
        |cells| {
            cells(&mut |name, cell| {
                if ignore.contains(name) {
                    return;
                }
                let text = matches!(cell, Cell::Text(_));
                match textual.get_mut(name) {
                    Some(t) => *t |= text,
                    None => {
                        order.push(name.to_owned());
                        textual.insert(name.to_owned(), text);
                    }
                }
            })
        },
        &mut |_| {},
    )?;
    if let Some(p) = &options.prediction {
        if !textual.contains_key(p) {
            return Err(BuildError::Input {
                path: path.display().to_string(),
                message: format!("no column {p:?} for --prediction-column"),
            });
        }
    }
    let mut columns: BTreeMap<String, Column> = order
        .iter()
        .map(|name| {
            let column = if textual[name] || forced.contains(name.as_str()) {
                Column::Categorical(CategoricalColumn::default())
            } else {
                Column::Numeric(NumericColumn::default())
            };
            (name.clone(), column)
        })
        .collect();

    // Pass 2: the values. A cell absent from a JSON line counts as missing.
    let mut seen: HashSet<String> = HashSet::new();
    let records = scan(
        path,
        format,
        |cells| {
            seen.clear();
            cells(&mut |name, cell| {
                let Some(column) = columns.get_mut(name) else {
                    return;
                };
                seen.insert(name.to_owned());
                match (column, cell) {
                    (Column::Numeric(c), Cell::Number(v, _)) => c.push(Some(v)),
                    (Column::Numeric(c), _) => c.push(None),
                    (Column::Categorical(c), Cell::Missing) => c.push(None),
                    (Column::Categorical(c), Cell::Number(_, raw)) => c.push(Some(&raw)),
                    (Column::Categorical(c), Cell::Text(t)) => c.push(Some(&t)),
                }
            });
            if format == Format::JsonLines && seen.len() < columns.len() {
                for (name, column) in columns.iter_mut() {
                    if !seen.contains(name) {
                        match column {
                            Column::Numeric(c) => c.push(None),
                            Column::Categorical(c) => c.push(None),
                        }
                    }
                }
            }
        },
        progress,
    )?;
    if records == 0 {
        return Err(BuildError::Input {
            path: path.display().to_string(),
            message: "no records".into(),
        });
    }

    let mut features: Vec<FeatureProfile> = Vec::with_capacity(order.len());
    for (i, name) in order.iter().enumerate() {
        let column = columns.remove(name).expect("every ordered column exists");
        let shown_name = if options.prediction.as_deref() == Some(name.as_str()) {
            PREDICTION
        } else {
            name.as_str()
        };
        features.push(column.finish(shown_name, options.settings, 0x9e37_79b9 ^ i as u64));
    }
    Ok(Profile {
        format: FORMAT.into(),
        model: options.model.clone(),
        version: options.version.clone(),
        source: path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        created_unix_seconds: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        records,
        features,
    })
}

/// A human summary of a profile, one line per feature.
pub fn summary(profile: &Profile) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let numeric = profile
        .features
        .iter()
        .filter(|f| matches!(f, FeatureProfile::Numeric(_)))
        .count();
    let _ = writeln!(
        out,
        "{} records of {}@{} from {}: {} numeric, {} categorical",
        profile.records,
        profile.model,
        profile.version,
        profile.source,
        numeric,
        profile.features.len() - numeric
    );
    let pct = |part: u64, all: u64| 100.0 * part as f64 / all.max(1) as f64;
    for f in &profile.features {
        let _ = match f {
            FeatureProfile::Numeric(n) => writeln!(
                out,
                "  {:<24} numeric      missing {:>5.1}%  non-finite {:>5.1}%  min {}  max {}  mean {}  {} bins",
                n.name,
                pct(n.missing, profile.records),
                pct(n.non_finite, profile.records),
                n.min.map_or("-".into(), |v| format!("{v:.4}")),
                n.max.map_or("-".into(), |v| format!("{v:.4}")),
                n.mean.map_or("-".into(), |v| format!("{v:.4}")),
                n.counts.len()
            ),
            FeatureProfile::Categorical(c) => writeln!(
                out,
                "  {:<24} categorical  missing {:>5.1}%  {} categories kept{}, other {:.1}%",
                c.name,
                pct(c.missing, profile.records),
                c.categories.len(),
                c.categories
                    .first()
                    .map_or(String::new(), |top| format!(" (top {:?} {:.1}%)", top.value, pct(top.count, c.count))),
                pct(c.other, c.count)
            ),
        };
    }
    out
}
