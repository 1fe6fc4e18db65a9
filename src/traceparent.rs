//! W3C Trace Context `traceparent`, parsed and formatted strictly.
//!
//! Rules (W3C Recommendation, and the official test suite's expectations):
//! - lowercase hex only; exact field lengths (2-32-16-2) separated by `-`;
//! - version `ff` is invalid; version `00` must end right after the flags;
//! - a higher version is accepted when the flags are followed by the end or by `-`, parsed by its first
//!   four fields and re-emitted as version `00`;
//! - an all-zero trace-id or parent-id is invalid;
//! - spaces and tabs around the value are tolerated;
//! - every flag bit is preserved (only bit 0, *sampled*, has a meaning here).

use std::fmt;
use std::str::FromStr;

/// A valid W3C `traceparent`. Construct it with [`TraceParent::parse`] or [`TraceParent::new`]; an
/// invalid one cannot exist.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// The length of a formatted version-00 traceparent.
pub const TRACEPARENT_LEN: usize = 55;

/// The `sampled` bit of trace-flags.
pub const FLAG_SAMPLED: u8 = 0x01;

/// Why a `traceparent` was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// Shorter than 55 characters, or version 00 with extra characters.
    #[error("traceparent has the wrong length")]
    Length,
    /// A field separator is missing or misplaced.
    #[error("traceparent field {0} is not followed by '-'")]
    Separator(Field),
    /// A field holds something other than lowercase hex.
    #[error("traceparent {0} is not lowercase hex")]
    Hex(Field),
    /// Version `ff` is forbidden.
    #[error("traceparent version ff is invalid")]
    ForbiddenVersion,
    /// The trace-id is all zeros.
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    /// The parent-id is all zeros.
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
}

/// A field of the traceparent, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The 2-digit version.
    Version,
    /// The 32-digit trace-id.
    TraceId,
    /// The 16-digit parent-id (span id).
    ParentId,
    /// The 2-digit trace-flags.
    Flags,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Version => "version",
            Field::TraceId => "trace-id",
            Field::ParentId => "parent-id",
            Field::Flags => "trace-flags",
        })
    }
}

fn lower_hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn decode_hex<const N: usize>(s: &[u8], field: Field) -> Result<[u8; N], TraceParentError> {
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        let h = lower_hex_val(s[2 * i]).ok_or(TraceParentError::Hex(field))?;
        let l = lower_hex_val(s[2 * i + 1]).ok_or(TraceParentError::Hex(field))?;
        *o = h << 4 | l;
    }
    Ok(out)
}

impl TraceParent {
    /// Builds a traceparent from its parts; all-zero ids are rejected.
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Result<Self, TraceParentError> {
        if trace_id == [0; 16] {
            return Err(TraceParentError::ZeroTraceId);
        }
        if parent_id == [0; 8] {
            return Err(TraceParentError::ZeroParentId);
        }
        Ok(TraceParent { trace_id, parent_id, flags })
    }

    /// Parses a header value strictly (see the module docs).
    pub fn parse(s: &str) -> Result<Self, TraceParentError> {
        let s = s.trim_matches(|c| c == ' ' || c == '\t').as_bytes();
        if s.len() < TRACEPARENT_LEN {
            return Err(TraceParentError::Length);
        }
        let version: [u8; 1] = decode_hex(&s[0..2], Field::Version)?;
        if version[0] == 0xff {
            return Err(TraceParentError::ForbiddenVersion);
        }
        for (pos, field) in [(2, Field::Version), (35, Field::TraceId), (52, Field::ParentId)] {
            if s[pos] != b'-' {
                return Err(TraceParentError::Separator(field));
            }
        }
        let trace_id: [u8; 16] = decode_hex(&s[3..35], Field::TraceId)?;
        let parent_id: [u8; 8] = decode_hex(&s[36..52], Field::ParentId)?;
        let flags: [u8; 1] = decode_hex(&s[53..55], Field::Flags)?;
        if s.len() > TRACEPARENT_LEN {
            if version[0] == 0 {
                return Err(TraceParentError::Length);
            }
            if s[TRACEPARENT_LEN] != b'-' {
                return Err(TraceParentError::Separator(Field::Flags));
            }
        }
        Self::new(trace_id, parent_id, flags[0])
    }

    /// The 16-byte trace-id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The 8-byte parent-id (the id of the span that issued the query).
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace-flags byte, all bits preserved.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The same trace with another parent-id (e.g. a proxy's own span id).
    pub fn with_parent_id(&self, parent_id: [u8; 8]) -> Result<Self, TraceParentError> {
        Self::new(self.trace_id, parent_id, self.flags)
    }

    /// The same context with the sampled flag set or cleared.
    pub fn with_sampled(&self, sampled: bool) -> Self {
        let flags = if sampled { self.flags | FLAG_SAMPLED } else { self.flags & !FLAG_SAMPLED };
        TraceParent { flags, ..*self }
    }

    /// The trace-id as 32 lowercase hex characters.
    pub fn trace_id_hex(&self) -> String {
        hex_string(&self.trace_id)
    }

    /// The parent-id as 16 lowercase hex characters.
    pub fn parent_id_hex(&self) -> String {
        hex_string(&self.parent_id)
    }

    /// Writes the version-00 form into a fixed buffer (no allocation).
    pub fn to_bytes(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        write_hex(&mut out[3..35], &self.trace_id);
        write_hex(&mut out[36..52], &self.parent_id);
        write_hex(&mut out[53..55], &[self.flags]);
        out
    }

    /// Appends the version-00 form to `out`.
    pub fn write_to(&self, out: &mut String) {
        let bytes = self.to_bytes();
        // Hex digits and dashes only, so the conversion cannot fail.
        out.push_str(std::str::from_utf8(&bytes).unwrap_or_default());
    }
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

const fn hex_pairs() -> [[u8; 2]; 256] {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX_LOWER[i >> 4], HEX_LOWER[i & 0xf]];
        i += 1;
    }
    t
}

static HEX_PAIRS: [[u8; 2]; 256] = hex_pairs();

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[b as usize]);
    }
}

fn hex_string(bytes: &[u8]) -> String {
    let mut buf = vec![0u8; bytes.len() * 2];
    write_hex(&mut buf, bytes);
    String::from_utf8(buf).unwrap_or_default()
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl FromStr for TraceParent {
    type Err = TraceParentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn valid_inputs() {
        let cases: &[(&str, &str)] = &[
            (VALID, VALID),
            (" \t00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\t ", VALID),
            // higher version: first four fields, re-emitted as 00
            ("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", VALID),
            ("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds", VALID),
            ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-", VALID),
            // other flag bits preserved
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            ),
        ];
        for (input, want) in cases {
            let tp = TraceParent::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(tp.to_string(), *want, "{input:?}");
        }
        assert!(TraceParent::parse(VALID).unwrap().is_sampled());
    }

    #[test]
    fn invalid_inputs() {
        use TraceParentError::*;
        let cases: &[(&str, TraceParentError)] = &[
            ("", Length),
            ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ForbiddenVersion),
            ("0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Length),
            ("000-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Separator(Field::Version)),
            (".0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Hex(Field::Version)),
            ("00-00000000000000000000000000000000-b7ad6b7169203331-01", ZeroTraceId),
            ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", ZeroParentId),
            ("00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01", Length),
            ("00-0af7651916cd43dd8448eb211c80319c1-b7ad6b7169203331-01", Separator(Field::TraceId)),
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01", Length),
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033311-01", Separator(Field::ParentId)),
            ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", Hex(Field::TraceId)),
            ("00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01", Hex(Field::ParentId)),
            ("00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01", Hex(Field::TraceId)),
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1", Length),
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-001", Length),
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-.0", Hex(Field::Flags)),
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g", Hex(Field::Flags)),
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-", Length),
            ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x", Length),
            ("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x", Separator(Field::Flags)),
            ("00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Separator(Field::Version)),
            // two values at once (a comma-joined header) are invalid
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01,00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                Length,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(TraceParent::parse(input), Err(*want), "{input:?}");
        }
    }

    #[test]
    fn parts_round_trip() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(tp.parent_id_hex(), "b7ad6b7169203331");
        let again = TraceParent::new(tp.trace_id(), tp.parent_id(), tp.flags()).unwrap();
        assert_eq!(again, tp);
        assert!(!tp.with_sampled(false).is_sampled());
        assert_eq!(TraceParent::new(tp.trace_id(), [0; 8], 1), Err(TraceParentError::ZeroParentId));
    }
}
