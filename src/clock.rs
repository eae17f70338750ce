//! Wall-clock conversions shared by the pipeline and export.

/// A wall-clock time as Unix nanoseconds (0 before the epoch), as OTLP and the API carry them.
pub fn unix_nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
