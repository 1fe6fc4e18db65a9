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

fn json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping, written straight into the buffer.
    let _ = serde_json::to_writer(&mut *out, s);
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
        Some(d) => {
            let _ = write!(out, "{d}");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"query\":");
    json_str(out, &st.query);
    match &st.context {
        Some(ctx) => {
            let tp = &ctx.traceparent;
            let _ = write!(
                out,
                ",\"trace_id\":\"{}\",\"parent_span_id\":\"{}\",\"sampled\":{}",
                tp.trace_id_hex(),
                tp.parent_id_hex(),
                tp.is_sampled()
            );
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
    opt_str(out, "user", &st.user);
    opt_str(out, "database", &st.database);
    match st.pid {
        Some(p) => {
            let _ = write!(out, ",\"pid\":{p}");
        }
        None => out.extend_from_slice(b",\"pid\":null"),
    }
    opt_str(out, "session_id", &st.session_id);
    let _ = write!(out, ",\"kind\":\"{}\"", st.kind.as_str());
    opt_str(out, "statement_name", &st.name);
    let _ = write!(out, ",\"context_source\":\"{}\"", st.source.as_str());
    match st.query_id {
        Some(q) => {
            let _ = write!(out, ",\"query_id\":{q}");
        }
        None => out.extend_from_slice(b",\"query_id\":null"),
    }
    opt_str(out, "parameters", &st.parameters);
    opt_str(out, "error", &st.error);
    opt_str(out, "sql_state", &st.sql_state);
    opt_str(out, "plan", &st.plan);
    opt_str(out, "plan_format", st.plan_format.map_or("", |f| f.as_str()));
    let _ = write!(out, ",\"carrier\":{}}}", st.carrier);
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
    if !st.error.is_empty() {
        s.push_str(&format!("  ERROR {}: {}", st.sql_state, st.error));
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
