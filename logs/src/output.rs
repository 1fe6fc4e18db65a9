//! Per-statement outputs: one JSON object per line (`--format jsonl`) and one text line (trace view,
//! `--follow`).

use std::io::{self, Write};

use crate::statement::Statement;
use crate::time::write_rfc3339;

/// Formats timestamps, reusing the text of the last second (log times arrive in order).
#[derive(Debug, Default)]
pub struct TimeFormatter {
    second: Option<i64>,
    text: String,
}

impl TimeFormatter {
    /// Appends the RFC 3339 form of `us` to `out`.
    pub fn write(&mut self, us: i64, out: &mut Vec<u8>) {
        let sec = us.div_euclid(1_000_000);
        if self.second != Some(sec) {
            self.text.clear();
            write_rfc3339(sec * 1_000_000, &mut self.text);
            self.second = Some(sec);
        }
        // "YYYY-MM-DDTHH:MM:SS." then milliseconds, then "Z"
        let head = &self.text.as_bytes()[..self.text.len() - 4];
        out.extend_from_slice(head);
        let ms = (us.rem_euclid(1_000_000) / 1000) as u32;
        out.extend_from_slice(&[b'0' + (ms / 100) as u8, b'0' + (ms / 10 % 10) as u8, b'0' + (ms % 10) as u8, b'Z']);
    }
}

/// Bytes that need escaping inside a JSON string: control characters, `"` and `\\`.
const fn escape_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
}
static NEEDS_ESCAPE: [bool; 256] = escape_table();

/// Appends `s` as a JSON string (RFC 8259 escaping; non-ASCII passes through as UTF-8).
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    // Most strings need no escaping: check that with a branch-free pass the compiler vectorizes.
    let clean = b.chunks(32).all(|c| !c.iter().fold(false, |acc, &x| acc | (x < 0x20) | (x == b'"') | (x == b'\\')));
    if clean {
        out.extend_from_slice(b);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        if !NEEDS_ESCAPE[c as usize] {
            continue;
        }
        out.extend_from_slice(&b[start..i]);
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

/// Milliseconds with three decimals (PostgreSQL logs durations to the microsecond).
fn push_ms(out: &mut Vec<u8>, d: f64) {
    let us = (d * 1000.0).round();
    if !(0.0..1e15).contains(&us) {
        let _ = write!(out, "{d}");
        return;
    }
    let us = us as u64;
    push_u64(out, us / 1000);
    let f = (us % 1000) as u32;
    out.extend_from_slice(&[b'.', b'0' + (f / 100) as u8, b'0' + (f / 10 % 10) as u8, b'0' + (f % 10) as u8]);
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
    }
}

fn opt_str(out: &mut Vec<u8>, key: &str, v: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    if v.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        json_str(out, v);
    }
}

/// Appends the JSON object of `st` (no newline) to `out`.
pub fn write_json(st: &Statement, out: &mut Vec<u8>, times: &mut TimeFormatter) {
    out.extend_from_slice(b"{\"timestamp\":");
    match st.time_us {
        Some(t) => {
            out.push(b'"');
            times.write(t, out);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"duration_ms\":");
    match st.duration_ms {
        Some(d) => push_ms(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"query\":");
    json_str(out, &st.query);
    match &st.context {
        Some(ctx) => {
            let tp = &ctx.traceparent;
            out.extend_from_slice(b",\"trace_id\":\"");
            push_hex(out, &tp.trace_id());
            out.extend_from_slice(b"\",\"parent_span_id\":\"");
            push_hex(out, &tp.parent_id());
            out.extend_from_slice(if tp.is_sampled() { b"\",\"sampled\":true" } else { b"\",\"sampled\":false" });
            match &ctx.tracestate {
                Some(ts) => {
                    out.extend_from_slice(b",\"tracestate\":");
                    json_str(out, &ts.to_string());
                }
                None => out.extend_from_slice(b",\"tracestate\":null"),
            }
        }
        None => {
            out.extend_from_slice(b",\"trace_id\":null,\"parent_span_id\":null,\"sampled\":null,\"tracestate\":null")
        }
    }
    out.extend_from_slice(b",\"tags\":{");
    for (i, (k, v)) in st.tags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, k);
        out.push(b':');
        json_str(out, v);
    }
    out.push(b'}');
    opt_str(out, "application_name", &st.application_name);
    opt_str(out, "user", st.user.as_deref().unwrap_or(""));
    opt_str(out, "database", st.database.as_deref().unwrap_or(""));
    match st.pid {
        Some(p) => {
            out.extend_from_slice(b",\"pid\":");
            push_u64(out, u64::from(p));
        }
        None => out.extend_from_slice(b",\"pid\":null"),
    }
    opt_str(out, "session_id", st.session_id.as_deref().unwrap_or(""));
    out.extend_from_slice(b",\"kind\":\"");
    out.extend_from_slice(st.kind.as_str().as_bytes());
    out.push(b'"');
    opt_str(out, "statement_name", &st.name);
    out.extend_from_slice(b",\"context_source\":\"");
    out.extend_from_slice(st.source.as_str().as_bytes());
    out.push(b'"');
    match st.query_id {
        Some(q) => {
            out.extend_from_slice(b",\"query_id\":");
            push_i64(out, q);
        }
        None => out.extend_from_slice(b",\"query_id\":null"),
    }
    opt_str(out, "parameters", &st.parameters);
    opt_str(out, "error", st.error.as_ref().map_or("", |e| e.message.as_str()));
    opt_str(out, "sql_state", st.error.as_ref().and_then(|e| e.sql_state.as_deref()).unwrap_or(""));
    opt_str(out, "plan", &st.plan);
    opt_str(out, "plan_format", st.plan_format.map_or("", |f| f.as_str()));
    out.extend_from_slice(if st.carrier { b",\"carrier\":true}" } else { b",\"carrier\":false}" });
}

/// Writes one JSON line per statement, buffering output.
pub struct JsonlWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    times: TimeFormatter,
}

impl<W: Write> JsonlWriter<W> {
    /// Wraps `out`.
    pub fn new(out: W) -> Self {
        JsonlWriter { out, buf: Vec::with_capacity(128 * 1024), times: TimeFormatter::default() }
    }

    /// Writes `st`.
    pub fn write(&mut self, st: &Statement) -> io::Result<()> {
        write_json(st, &mut self.buf, &mut self.times);
        self.buf.push(b'\n');
        if self.buf.len() >= 64 * 1024 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flushes everything written so far.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }
}

/// A one-line human summary of `st`.
pub fn text_line(st: &Statement) -> String {
    let mut s = String::new();
    match st.time_us {
        Some(t) => write_rfc3339(t, &mut s),
        None => s.push_str("-                       "),
    }
    let dur = st.duration_ms.map_or("-".to_owned(), |d| format!("{d:.3} ms"));
    let trace = st.trace_id().unwrap_or_else(|| "-".into());
    let (a, b) = st.query_without_comment();
    let q: String = a.split_whitespace().chain(b.split_whitespace()).collect::<Vec<_>>().join(" ");
    let q = if q.len() > 160 { format!("{}…", &q[..q.floor_char_boundary_compat(160)]) } else { q };
    s.push_str(&format!(
        "  {dur:>12}  {:<9} pid={:<7} trace={trace} [{}]  {q}",
        st.kind.as_str(),
        st.pid.map_or("-".into(), |p| p.to_string()),
        st.source.as_str()
    ));
    if let Some(e) = &st.error {
        s.push_str(&format!("  ERROR {}: {}", e.sql_state.as_deref().unwrap_or("-"), e.message));
    }
    s
}

/// `str::floor_char_boundary` for older toolchains.
pub(crate) trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        if i >= self.len() {
            return self.len();
        }
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaping_and_numbers_match_serde() {
        for s in ["plain", "q\"uote\\back", "tab\tnl\ncr\r\u{1}\u{1f}", "ünïcødé €", ""] {
            let mut out = Vec::new();
            json_str(&mut out, s);
            assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap());
        }
        let mut out = Vec::new();
        push_ms(&mut out, 0.251);
        out.push(b' ');
        push_ms(&mut out, 1234.5);
        out.push(b' ');
        push_i64(&mut out, -42);
        assert_eq!(String::from_utf8(out).unwrap(), "0.251 1234.500 -42");
    }
}
