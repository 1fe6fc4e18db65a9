//! Log format parsers. Each takes physical lines one at a time (without the newline) and calls `emit` with
//! every complete [`LogRecord`]. A record is complete when the next one starts (stderr: the next prefixed
//! primary line; csvlog: the closing of the row), or on [`RecordParser::finish`].

use crate::record::{parse_i64, push_lossy, LogRecord, Severity};

pub mod csv;
pub mod json;
pub mod stderr;

/// Longest field kept; longer statements are cut (keeps memory bounded on pathological input).
pub const MAX_FIELD: usize = 1 << 20;

/// Line counters of one parser.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ParseStats {
    /// Physical lines read.
    pub lines: u64,
    /// Complete records produced.
    pub records: u64,
    /// Lines that matched no known shape (skipped).
    pub unknown: u64,
}

/// A streaming parser of one log format.
pub trait RecordParser {
    /// Feeds one physical line.
    fn push_line(&mut self, line: &[u8], emit: &mut dyn FnMut(&LogRecord));
    /// Emits a record still being assembled (end of input, or an idle `--follow`).
    fn finish(&mut self, emit: &mut dyn FnMut(&LogRecord));
    /// The input went idle (`--follow`): emit what is complete. Stderr entries end only when the next one
    /// starts, so the last one is emitted here; a csvlog row still open stays open.
    fn idle(&mut self, emit: &mut dyn FnMut(&LogRecord)) {
        let _ = emit;
    }
    /// Counters so far.
    fn stats(&self) -> ParseStats;
}

/// A log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// stderr with a `log_line_prefix`.
    Stderr,
    /// csvlog.
    Csv,
    /// jsonlog (PostgreSQL 15+).
    Json,
}

/// Guesses the format from the first non-empty line: a JSON object, a csvlog row (timestamp then `,`), or
/// stderr.
pub fn detect_format(first_line: &[u8]) -> InputFormat {
    let l = first_line.trim_ascii_start();
    if l.starts_with(b"{") {
        return InputFormat::Json;
    }
    if let Some(comma) = memchr::memchr(b',', l) {
        let ts = crate::time::parse_timestamp(&l[..comma], &crate::time::Zones::new());
        if comma >= 19 && ts != Err(crate::time::TimeError::Malformed) {
            return InputFormat::Csv;
        }
    }
    InputFormat::Stderr
}

pub(crate) fn push_capped(out: &mut String, bytes: &[u8]) {
    if out.len() < MAX_FIELD {
        let room = MAX_FIELD - out.len();
        push_lossy(out, &bytes[..bytes.len().min(room)]);
    }
}

/// A line validated as UTF-8 once, so fields cut out of it at ASCII delimiters need no re-validation.
pub(crate) struct Src<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> Src<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Src { bytes, text: std::str::from_utf8(bytes).ok() }
    }

    /// Appends `bytes[range]` to `out` (lossy when the line is not UTF-8), within [`MAX_FIELD`].
    pub(crate) fn push(&self, out: &mut String, (s, e): (usize, usize)) {
        if out.len() >= MAX_FIELD {
            return;
        }
        let e = e.min(s + (MAX_FIELD - out.len()));
        match self.text.and_then(|t| t.get(s..e)) {
            Some(t) => out.push_str(t),
            None => push_lossy(out, &self.bytes[s..e]),
        }
    }
}

pub(crate) fn set_severity(rec: &mut LogRecord, label: &[u8]) -> bool {
    match Severity::from_label(label) {
        Some(s) => {
            rec.severity = s;
            true
        }
        None => false,
    }
}

pub(crate) fn set_pid(rec: &mut LogRecord, v: &[u8]) {
    rec.pid = parse_i64(v).and_then(|p| u32::try_from(p).ok());
}
