//! `inferscope labels`: delayed labels from files (a nightly job, a labelling tool) appended to
//! the fleet's label stream (`crate::label_stream`), from where the sidecars join them with their
//! predictions. For ground truth produced where no sidecar can be reached: each listens on its
//! pod's loopback.
//!
//! Input: CSV with a header row, or JSON Lines (one object a line; `-` reads standard input),
//! one label a row: `request_id`; `model` and `version` (or `--model` / `--version` for every
//! row); exactly one of `class` (a class name), `class_index` or `value` (regression); and
//! optionally `time_unix_nano` or `time` (RFC 3339), when the truth became known (default: when
//! the row is read). Other columns are ignored, with a warning.
//!
//! Every row is checked as the sidecar checks a delayed label (`validation::check_ground_truth`,
//! without a declaration: class names against a declaration are checked at the sidecar). A bad
//! row is reported with its file and line, counted by reason and skipped; the good rows are
//! sent. Rows go out in pipelines of [`BATCH`] `XADD`s (one round trip each).

use crate::{
    label_store::{self, Password},
    label_stream,
    pb::{self, label::Value as LabelValue},
    validation::{self, Limits},
};
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

/// Labels sent in one pipeline.
pub const BATCH: usize = 1000;
/// Exit code when some rows were rejected (the others were sent).
pub const EXIT_REJECTED: i32 = 3;
/// Exit code when Redis cannot be reached or fails (some rows may have been sent).
pub const EXIT_UNREACHABLE: i32 = 4;
/// Rejected rows reported one by one; the rest are only counted.
const SHOWN_REJECTS: u64 = 100;
/// How often the progress line is written when standard error is not a terminal (a Job's log).
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(10);

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated, with a header row.
    Csv,
    /// One JSON object a line.
    Jsonl,
}

/// What to import and where.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Files; `-` is standard input.
    pub files: Vec<PathBuf>,
    /// The Redis URL (`--label-store` of the sidecars); `None` only with `dry_run`.
    pub store: Option<String>,
    /// A file holding the password, used instead of the URL's (a mounted Secret).
    pub password_file: Option<PathBuf>,
    /// Model and version of rows that name none.
    pub model: Option<String>,
    pub version: Option<String>,
    /// The format of every file; guessed from each name's extension when `None`.
    pub format: Option<Format>,
    /// The stream's approximate length bound (`XADD … MAXLEN ~`).
    pub max_len: u64,
    /// Check the rows, send nothing.
    pub dry_run: bool,
}

/// Why the import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}: cannot tell the format; name it .csv or .jsonl, or give --format")]
    Format(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: the header row has no request_id column")]
    NoRequestId(String),
    #[error("give the label store: --store redis://host:6379/0 or INFERSCOPE_LABEL_STORE")]
    NoStore,
    #[error("cannot use --store {0}: give a redis:// or rediss:// URL")]
    BadStore(String),
    #[error(transparent)]
    Password(#[from] crate::config::ConfigError),
    #[error("cannot use --store {redis}: {source}")]
    Store {
        redis: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("cannot reach the label store {redis}: {source}")]
    Unreachable {
        redis: String,
        #[source]
        source: redis::RedisError,
    },
    #[error(
        "the label store {redis} failed after {sent} labels were sent: {source}; running the \
         import again sends every row again (labels already joined then count as duplicate or \
         unknown_request, never twice)"
    )]
    Failed {
        redis: String,
        sent: u64,
        #[source]
        source: redis::RedisError,
    },
}

impl ImportError {
    /// The process exit code this error ends `inferscope labels` with.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Unreachable { .. } | Self::Failed { .. } => EXIT_UNREACHABLE,
            _ => 1,
        }
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub files: usize,
    pub read: u64,
    pub sent: u64,
    /// Rows rejected, by reason (`validation::reason_name`, or `unreadable`).
    pub rejected: BTreeMap<&'static str, u64>,
    pub seconds: f64,
    /// The stream and store written to; `None` for a dry run.
    pub destination: Option<String>,
}

impl Summary {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// 0 when every row was sent, [`EXIT_REJECTED`] when some were rejected.
    pub fn exit_code(&self) -> i32 {
        match self.rejected_total() {
            0 => 0,
            _ => EXIT_REJECTED,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.read as f64 / self.seconds.max(1e-9);
        writeln!(f, "read     {} rows from {} file(s)", self.read, self.files)?;
        match &self.destination {
            Some(to) => writeln!(f, "sent     {} labels to {to}", self.sent)?,
            None => writeln!(f, "valid    {} labels (dry run: nothing sent)", self.sent)?,
        }
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        match reasons.is_empty() {
            true => writeln!(f, "rejected 0")?,
            false => writeln!(
                f,
                "rejected {} ({})",
                self.rejected_total(),
                reasons.join(", ")
            )?,
        }
        writeln!(f, "took     {:.2} s, {rate:.0} rows/s", self.seconds)
    }
}

/// Why one row is not sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// The column (or proto field) at fault.
    pub field: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl RowError {
    fn new(field: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            reason,
            message: message.into(),
        }
    }

    fn unreadable(message: impl Into<String>) -> Self {
        Self::new("row", "unreadable", message)
    }
}

impl From<validation::FieldError> for RowError {
    fn from(e: validation::FieldError) -> Self {
        Self::new(e.field, validation::reason_name(e.reason), e.message)
    }
}

/// The columns a row may have, in [`Row`] order.
const COLUMNS: [&str; 8] = [
    "request_id",
    "model",
    "version",
    "class",
    "class_index",
    "value",
    "time_unix_nano",
    "time",
];

/// One row's cells by [`COLUMNS`] index; an empty cell is absent.
type Row = [Option<String>; COLUMNS.len()];

fn column(name: &str) -> Option<usize> {
    COLUMNS.iter().position(|c| *c == name)
}

/// A row as a label: parsed, then checked as the sidecar checks a delayed label.
pub fn label_of(
    row: &Row,
    model: Option<&str>,
    version: Option<&str>,
    now_ns: u64,
    limits: &Limits,
) -> Result<pb::GroundTruth, RowError> {
    let [request_id, row_model, row_version, class, class_index, value, time_unix_nano, time] = row;
    let label = match (class, class_index, value) {
        (Some(name), None, None) => LabelValue::ClassName(name.clone()),
        (None, Some(index), None) => LabelValue::ClassIndex(index.parse().map_err(|_| {
            RowError::new(
                "class_index",
                "invalid_value",
                format!("{index:?} is not a class index (0, 1, …)"),
            )
        })?),
        (None, None, Some(v)) => LabelValue::RegressionValue(v.parse().map_err(|_| {
            RowError::new("value", "invalid_value", format!("{v:?} is not a number"))
        })?),
        (None, None, None) => {
            return Err(RowError::new(
                "label",
                "missing_field",
                "no label: give class, class_index or value",
            ))
        }
        _ => {
            return Err(RowError::new(
                "label",
                "invalid_value",
                "more than one label: give one of class, class_index or value",
            ))
        }
    };
    let time_unix_nano = match (time_unix_nano, time) {
        (Some(ns), None) => ns.parse().map_err(|_| {
            RowError::new(
                "time_unix_nano",
                "invalid_value",
                format!("{ns:?} is not nanoseconds since the Unix epoch"),
            )
        })?,
        (None, Some(t)) => parse_rfc3339(t).ok_or_else(|| {
            RowError::new(
                "time",
                "invalid_value",
                format!("{t:?} is not an RFC 3339 time after 1970 (2026-01-31T23:59:59Z)"),
            )
        })?,
        (None, None) => now_ns,
        (Some(_), Some(_)) => {
            return Err(RowError::new(
                "time",
                "invalid_value",
                "give time or time_unix_nano, not both",
            ))
        }
    };
    let truth = pb::GroundTruth {
        model: row_model.as_deref().or(model).unwrap_or_default().into(),
        version: row_version
            .as_deref()
            .or(version)
            .unwrap_or_default()
            .into(),
        request_id: request_id.clone().unwrap_or_default(),
        label: Some(pb::Label { value: Some(label) }),
        time_unix_nano,
    };
    if truth.model.is_empty() {
        return Err(RowError::new(
            "model",
            "missing_field",
            "no model: give a model column or --model",
        ));
    }
    match validation::check_ground_truth(&truth, &truth.model, &truth.version, None, limits) {
        // A class index is checked against the model's declaration, which only the sidecars
        // have (the label's last check: nothing else is skipped).
        Err(e) if e.field == "label.class_index" => Ok(truth),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(truth),
    }
}

/// Nanoseconds since the Unix epoch of an RFC 3339 time (`2026-01-31T23:59:59.5+01:00`; `T`,
/// `t` or a space between date and time; `Z` or an offset); `None` before 1970 or when it is
/// not one.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut rest = &text[19..];
    let mut nanos = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let kept = &fraction[..n.min(9)];
        nanos = kept.parse::<i64>().ok()? * 10i64.pow(9 - kept.len() as u32);
        rest = &fraction[n..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hh = std::str::from_utf8(&[*h1, *h2]).ok()?.parse::<i64>().ok()?;
            let mm = std::str::from_utf8(&[*m1, *m2]).ok()?.parse::<i64>().ok()?;
            if hh > 23 || mm > 59 {
                return None;
            }
            let seconds = hh * 3600 + mm * 60;
            if *sign == b'+' {
                seconds
            } else {
                -seconds
            }
        }
        _ => return None,
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    // Second 60: a leap second, as RFC 3339 allows; it lands on the next second.
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(seconds)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos as u64)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant, "chrono-Compatible Low-Level
/// Date Algorithms", `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One row read from a file: its line, and its cells or why it could not be read.
struct ReadRow {
    line: u64,
    cells: Result<Row, RowError>,
}

/// Rows of one file, with the bytes read so far (for progress).
enum Rows {
    Csv {
        reader: csv::Reader<Box<dyn Read>>,
        /// The [`COLUMNS`] index of each column of the header; `None` for one ignored.
        columns: Vec<Option<usize>>,
        record: csv::StringRecord,
    },
    Jsonl {
        reader: BufReader<Box<dyn Read>>,
        line: u64,
        bytes: u64,
        buffer: Vec<u8>,
    },
}

impl Rows {
    /// Opens `path` (`-`: standard input) as `format`; warns about columns it ignores.
    fn open(
        path: &Path,
        format: Format,
        warn: &mut dyn FnMut(String),
    ) -> Result<Self, ImportError> {
        let shown = path.display().to_string();
        let input: Box<dyn Read> = if path == Path::new("-") {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(
                std::fs::File::open(path).map_err(|source| ImportError::Read {
                    path: shown.clone(),
                    source,
                })?,
            )
        };
        Ok(match format {
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .trim(csv::Trim::All)
                    .from_reader(input);
                let header = reader.headers().map_err(|e| ImportError::Read {
                    path: shown.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                let columns: Vec<Option<usize>> = header.iter().map(column).collect();
                let ignored: Vec<&str> = header
                    .iter()
                    .zip(&columns)
                    .filter(|(_, c)| c.is_none())
                    .map(|(name, _)| name)
                    .collect();
                if !ignored.is_empty() {
                    warn(format!(
                        "{shown}: columns ignored: {} (known: {})",
                        ignored.join(", "),
                        COLUMNS.join(", ")
                    ));
                }
                if !columns.contains(&Some(0)) {
                    return Err(ImportError::NoRequestId(shown));
                }
                Rows::Csv {
                    reader,
                    columns,
                    record: csv::StringRecord::new(),
                }
            }
            Format::Jsonl => Rows::Jsonl {
                reader: BufReader::new(input),
                line: 0,
                bytes: 0,
                buffer: Vec::new(),
            },
        })
    }

    /// Bytes of the input read so far.
    fn bytes(&self) -> u64 {
        match self {
            Rows::Csv { reader, .. } => reader.position().byte(),
            Rows::Jsonl { bytes, .. } => *bytes,
        }
    }

    /// The next row; `Ok(None)` at the end, `Err` when the input cannot be read any further.
    fn next(&mut self, ignored: &mut dyn FnMut(&str)) -> std::io::Result<Option<ReadRow>> {
        match self {
            Rows::Csv {
                reader,
                columns,
                record,
            } => match reader.read_record(record) {
                Ok(false) => Ok(None),
                Ok(true) => {
                    let mut row = Row::default();
                    for (cell, at) in record.iter().zip(columns.iter()) {
                        if let (Some(at), false) = (at, cell.is_empty()) {
                            row[*at] = Some(cell.to_owned());
                        }
                    }
                    let line = record.position().map_or(0, |p| p.line());
                    Ok(Some(ReadRow {
                        line,
                        cells: Ok(row),
                    }))
                }
                Err(e) if e.is_io_error() => Err(std::io::Error::other(e.to_string())),
                // A row with the wrong number of cells, or not UTF-8: that row only.
                Err(e) => Ok(Some(ReadRow {
                    line: e.position().map_or(0, |p| p.line()),
                    cells: Err(RowError::unreadable(match e.kind() {
                        csv::ErrorKind::UnequalLengths {
                            expected_len, len, ..
                        } => format!("{len} cells, the header has {expected_len}"),
                        _ => e.to_string(),
                    })),
                })),
            },
            Rows::Jsonl {
                reader,
                line,
                bytes,
                buffer,
            } => loop {
                buffer.clear();
                let n = reader.read_until(b'\n', buffer)?;
                if n == 0 {
                    return Ok(None);
                }
                *line += 1;
                *bytes += n as u64;
                if buffer.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let cells = serde_json::from_slice(buffer)
                    .map_err(|e| RowError::unreadable(format!("not a JSON object: {e}")))
                    .and_then(|object| json_row(object, ignored));
                return Ok(Some(ReadRow { line: *line, cells }));
            },
        }
    }
}

/// A JSON object's cells: strings and numbers as written, `null` absent.
fn json_row(
    object: serde_json::Map<String, serde_json::Value>,
    ignored: &mut dyn FnMut(&str),
) -> Result<Row, RowError> {
    use serde_json::Value;
    let mut row = Row::default();
    for (name, value) in object {
        let Some(at) = column(&name) else {
            ignored(&name);
            continue;
        };
        row[at] = match value {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            other => {
                return Err(RowError::new(
                    COLUMNS[at],
                    "invalid_value",
                    format!("{other} is not a string or a number"),
                ))
            }
        };
    }
    Ok(row)
}

/// The format of `path`: `given`, else from its extension; standard input is JSON Lines.
fn format_of(path: &Path, given: Option<Format>) -> Result<Format, ImportError> {
    if let Some(format) = given {
        return Ok(format);
    }
    if path == Path::new("-") {
        return Ok(Format::Jsonl);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => Ok(Format::Csv),
        Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
        _ => Err(ImportError::Format(path.display().to_string())),
    }
}

/// Where progress goes: a bar on a terminal, else a line every [`PROGRESS_LINE_EVERY`].
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    next_line: Instant,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Self {
            bar,
            next_line: Instant::now() + PROGRESS_LINE_EVERY,
        }
    }

    fn file(&self, path: &Path) {
        if let Some(bar) = &self.bar {
            let size = std::fs::metadata(path).map_or(0, |m| m.len());
            bar.set_length(size);
            bar.set_position(0);
        }
    }

    fn update(&mut self, bytes: u64, summary: &Summary) {
        let message = format!(
            "{} rows, {} sent, {} rejected",
            summary.read,
            summary.sent,
            summary.rejected_total()
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(bytes);
                bar.set_message(message);
            }
            None if Instant::now() >= self.next_line => {
                eprintln!("labels: {message}");
                self.next_line = Instant::now() + PROGRESS_LINE_EVERY;
            }
            None => {}
        }
    }

    /// Writes `line` without breaking the bar.
    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The stream's connection, or none for a dry run.
struct Sender {
    connection: redis::aio::MultiplexedConnection,
    redacted: String,
    max_len: u64,
}

impl Sender {
    async fn connect(
        store: &str,
        password_file: Option<PathBuf>,
        max_len: u64,
    ) -> Result<Self, ImportError> {
        let redacted = label_store::redact(store);
        if !(store.starts_with("redis://") || store.starts_with("rediss://")) {
            return Err(ImportError::BadStore(redacted));
        }
        let password = Password::read(password_file)?;
        let client =
            label_store::client(store, password.as_ref()).map_err(|source| ImportError::Store {
                redis: redacted.clone(),
                source,
            })?;
        let unreachable = |source| ImportError::Unreachable {
            redis: redacted.clone(),
            source,
        };
        let mut connection = label_stream::connect(&client, Duration::from_secs(10))
            .await
            .map_err(unreachable)?;
        label_stream::create_group(&mut connection)
            .await
            .map_err(unreachable)?;
        Ok(Self {
            connection,
            redacted,
            max_len,
        })
    }

    /// Appends `labels` in one pipeline.
    async fn send(&mut self, labels: &[pb::GroundTruth]) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for truth in labels {
            label_stream::append(&mut pipe, truth, self.max_len);
        }
        pipe.query_async::<()>(&mut self.connection).await
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs `inferscope labels`: reads, checks and sends every row; reports rejected rows and
/// progress on standard error.
pub async fn run(options: ImportOptions) -> Result<Summary, ImportError> {
    let started = Instant::now();
    // Every file is checked before anything is sent: a typo in the last name sends nothing.
    let formats = options
        .files
        .iter()
        .map(|path| format_of(path, options.format))
        .collect::<Result<Vec<_>, _>>()?;
    for path in options.files.iter().filter(|p| *p != Path::new("-")) {
        std::fs::metadata(path).map_err(|source| ImportError::Read {
            path: path.display().to_string(),
            source,
        })?;
    }
    let mut sender = match (&options.store, options.dry_run) {
        (_, true) => None,
        (None, false) => return Err(ImportError::NoStore),
        (Some(store), false) => {
            let password_file = options.password_file.clone();
            Some(Sender::connect(store, password_file, options.max_len).await?)
        }
    };
    let limits = Limits::default();
    let mut summary = Summary {
        files: options.files.len(),
        destination: sender
            .as_ref()
            .map(|s| format!("{} at {}", label_stream::STREAM, s.redacted)),
        ..Summary::default()
    };
    let mut progress = Progress::new();
    let mut batch = Vec::with_capacity(BATCH);
    let now = now_ns();
    for (path, format) in options.files.iter().zip(formats) {
        let shown = path.display().to_string();
        progress.file(path);
        let mut rows = Rows::open(path, format, &mut |w| progress.println(&w))?;
        let mut ignored = std::collections::BTreeSet::new();
        loop {
            let next = rows.next(&mut |name| {
                if ignored.insert(name.to_owned()) {
                    progress.println(&format!("{shown}: key {name:?} ignored"));
                }
            });
            let Some(row) = next.map_err(|source| ImportError::Read {
                path: shown.clone(),
                source,
            })?
            else {
                break;
            };
            summary.read += 1;
            let label = row.cells.and_then(|cells| {
                label_of(
                    &cells,
                    options.model.as_deref(),
                    options.version.as_deref(),
                    now,
                    &limits,
                )
            });
            match label {
                Ok(truth) => batch.push(truth),
                Err(e) => {
                    let rejected = summary.rejected_total();
                    *summary.rejected.entry(e.reason).or_default() += 1;
                    if rejected < SHOWN_REJECTS {
                        progress.println(&format!(
                            "{shown}:{}: {}: {} ({})",
                            row.line, e.field, e.message, e.reason
                        ));
                    } else if rejected == SHOWN_REJECTS {
                        progress.println("… further rejected rows are only counted");
                    }
                }
            }
            if batch.len() == BATCH {
                flush(&mut sender, &mut batch, &mut summary).await?;
                progress.update(rows.bytes(), &summary);
            }
        }
        progress.update(rows.bytes(), &summary);
    }
    flush(&mut sender, &mut batch, &mut summary).await?;
    progress.finish();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Sends the labels of `batch` (a dry run counts them) and empties it.
async fn flush(
    sender: &mut Option<Sender>,
    batch: &mut Vec<pb::GroundTruth>,
    summary: &mut Summary,
) -> Result<(), ImportError> {
    if batch.is_empty() {
        return Ok(());
    }
    if let Some(sender) = sender {
        sender
            .send(batch)
            .await
            .map_err(|source| ImportError::Failed {
                redis: sender.redacted.clone(),
                sent: summary.sent,
                source,
            })?;
    }
    summary.sent += batch.len() as u64;
    batch.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[(&str, &str)]) -> Row {
        let mut row = Row::default();
        for (name, value) in cells {
            row[column(name).unwrap()] = Some((*value).into());
        }
        row
    }

    fn label(cells: &[(&str, &str)]) -> Result<pb::GroundTruth, RowError> {
        label_of(&row(cells), Some("m"), Some("1"), 42, &Limits::default())
    }

    #[test]
    fn a_row_becomes_the_label_the_sidecar_takes() {
        let truth = label(&[("request_id", "r1"), ("class", "yes")]).unwrap();
        assert_eq!((truth.model.as_str(), truth.version.as_str()), ("m", "1"));
        assert_eq!(truth.time_unix_nano, 42);
        let truth = label(&[
            ("request_id", "r2"),
            ("model", "other"),
            ("value", "2.5"),
            ("time", "1970-01-01T00:00:01.5Z"),
        ])
        .unwrap();
        assert_eq!(truth.model, "other");
        assert_eq!(
            truth.label.unwrap().value,
            Some(LabelValue::RegressionValue(2.5))
        );
        assert_eq!(truth.time_unix_nano, 1_500_000_000);
    }

    #[test]
    fn bad_rows_say_which_field_and_why() {
        let reason = |cells: &[(&str, &str)]| {
            let e = label(cells).unwrap_err();
            (e.field, e.reason)
        };
        assert_eq!(reason(&[("class", "yes")]), ("request_id", "missing_field"));
        assert_eq!(reason(&[("request_id", "r")]), ("label", "missing_field"));
        assert_eq!(
            reason(&[("request_id", "r"), ("class", "a"), ("value", "1")]),
            ("label", "invalid_value")
        );
        assert_eq!(
            reason(&[("request_id", "r"), ("class_index", "-1")]),
            ("class_index", "invalid_value")
        );
        // The range of a class index is the sidecar's to check, against the declaration.
        assert!(label(&[("request_id", "r"), ("class_index", "7")]).is_ok());
        assert_eq!(
            reason(&[("request_id", "r"), ("value", "inf")]),
            ("label.regression_value", "invalid_value")
        );
        assert_eq!(
            reason(&[("request_id", "r"), ("class", "a"), ("time", "yesterday")]),
            ("time", "invalid_value")
        );
        let long = "x".repeat(300);
        assert_eq!(
            reason(&[("request_id", &long), ("class", "a")]),
            ("request_id", "too_long")
        );
        let e = label_of(
            &row(&[("request_id", "r"), ("class", "a")]),
            None,
            None,
            0,
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!((e.field, e.reason), ("model", "missing_field"));
    }

    #[test]
    fn rfc3339_times_as_python_reads_them() {
        // Values checked with Python: datetime.fromisoformat(t).timestamp().
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-03-01T12:30:45.123456789+02:00"),
            Some(1_772_361_045_123_456_789)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29 00:00:00-00:30"),
            Some(1_709_166_600_000_000_000)
        );
        for bad in [
            "1969-12-31T23:59:59Z",
            "2023-02-29T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-1-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_come_from_the_extension_and_stdin_is_json_lines() {
        assert_eq!(format_of(Path::new("a.csv"), None).unwrap(), Format::Csv);
        assert_eq!(
            format_of(Path::new("a.jsonl"), None).unwrap(),
            Format::Jsonl
        );
        assert_eq!(format_of(Path::new("-"), None).unwrap(), Format::Jsonl);
        assert_eq!(
            format_of(Path::new("a.txt"), Some(Format::Csv)).unwrap(),
            Format::Csv
        );
        assert!(format_of(Path::new("a.txt"), None).is_err());
    }
}
