//! The W3C Trace Context `traceparent` a record may carry (Trace Context level 1, §3.2), read in
//! this module only: validation parses it to accept or reject the record; the sampling decision
//! reads the one field it needs from the validated text ([`sampled_flag`], [`trace_id_low`]);
//! a record that gets a span parses it into a [`TraceParent`], which export makes the span's
//! parent. Written here rather than taken from the OpenTelemetry SDK because the SDK's
//! propagator does not say why a header is invalid, which the reject must.

/// Why a `traceparent` is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    #[error("wrong length")]
    Length,
    #[error("misplaced dashes")]
    Dashes,
    #[error("not lowercase hex")]
    NotHex,
    #[error("invalid version")]
    Version,
    #[error("all-zero id")]
    ZeroId,
}

/// A valid `traceparent`: the caller's trace id, span id and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

impl TraceParent {
    /// Parses a header value: lowercase hex, non-zero ids, version `ff` forbidden, and for
    /// version `00` exactly 55 characters (later versions may append `-` and more).
    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        let b = value.as_bytes();
        if b.len() < 55 || (b.len() > 55 && b[55] != b'-') {
            return Err(TraceParentError::Length);
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceParentError::Dashes);
        }
        let (version, trace_id, span_id, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
        let is_hex = |s: &[u8]| {
            s.iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        };
        if !(is_hex(version) && is_hex(trace_id) && is_hex(span_id) && is_hex(flags)) {
            return Err(TraceParentError::NotHex);
        }
        if version == b"ff" || (version == b"00" && b.len() != 55) {
            return Err(TraceParentError::Version);
        }
        // Checked as lowercase hex above: the conversions cannot fail.
        let hex = |s: &[u8]| u128::from_str_radix(std::str::from_utf8(s).unwrap_or("0"), 16);
        let parsed = Self {
            trace_id: hex(trace_id).map_err(|_| TraceParentError::NotHex)?,
            span_id: hex(span_id).map_err(|_| TraceParentError::NotHex)? as u64,
            flags: hex(flags).map_err(|_| TraceParentError::NotHex)? as u8,
        };
        if parsed.trace_id == 0 || parsed.span_id == 0 {
            return Err(TraceParentError::ZeroId);
        }
        Ok(parsed)
    }

    /// The caller's `sampled` flag.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The low 64 bits of the trace id, which OpenTelemetry's `TraceIdRatioBased` sampler
    /// compares with the ratio.
    pub fn trace_id_low(&self) -> u64 {
        self.trace_id as u64
    }
}

/// The `sampled` flag of a `traceparent` that validation accepted (two hex digits read, not the
/// whole header: this runs for every record that carries one).
pub fn sampled_flag(validated: &str) -> bool {
    validated
        .get(53..55)
        .and_then(|f| u8::from_str_radix(f, 16).ok())
        .is_some_and(|f| f & 1 == 1)
}

/// The low 64 bits of the trace id of a `traceparent` that validation accepted.
pub fn trace_id_low(validated: &str) -> u64 {
    validated
        .get(19..35)
        .and_then(|t| u64::from_str_radix(t, 16).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_hex() {
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tp.span_id, 0x00f067aa0ba902b7);
        assert!(tp.sampled());
        assert_eq!(tp.trace_id_low(), 0xa3ce929d0e0e4736);
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(sampled_flag(text));
        assert!(!sampled_flag(&text.replace("-01", "-00")));
        assert_eq!(trace_id_low(text), tp.trace_id_low());
    }
}
