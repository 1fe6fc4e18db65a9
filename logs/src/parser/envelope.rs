//! Managed services that wrap PostgreSQL's log entries in JSON envelopes:
//!
//! - **CloudNativePG**: one object per line, `{"logger":"postgres","msg":"record","record":{...}}` with the
//!   csvlog column names (`log_time`, `user_name`, `process_id`, `error_severity`, ...) and numbers written
//!   as strings. Other loggers (`pg_controldata`, the operator's own) are foreign.
//! - **Google Cloud SQL**: Cloud Logging entries (`gcloud logging read --format=json` arrays or sink exports,
//!   one per line); the stderr line is in `textPayload` (Cloud SQL's fixed prefix
//!   `%m [%p]: [%l-1] db=%d,user=%u `), the time is the envelope's `timestamp` (microseconds).
//! - **Azure Database for PostgreSQL**: diagnostic-log records (`category` `PostgreSQLLogs`), alone or in
//!   Event Hub batches (`{"records":[...]}`). Single Server splits the line into `properties.prefix`
//!   (fixed `%t-%c-`), `errorLevel` and `message`; Flexible Server puts the whole line (its
//!   `log_line_prefix`, `%t-%c-` unless changed: pass `--prefix`) in `message`, with `timestamp`,
//!   `processId` and `sqlerrcode` beside it. `detail` is its own property in both.
//!
//! Objects may span lines (pretty-printed arrays): they are cut out of the stream by brace depth.

use serde_json::Value;

use super::stderr::{Envelope, StderrParser};
use super::{push_capped, set_severity, ParseStats, RecordParser};
use crate::prefix::{severity_at, Prefix};
use crate::record::{parse_i64, LogRecord};
use crate::time::{parse_timestamp, Zones};

/// Which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// CloudNativePG.
    Cnpg,
    /// Google Cloud SQL.
    CloudSql,
    /// Azure Database for PostgreSQL.
    Azure,
}

/// Largest object kept (a bigger one is dropped and counted unknown).
const MAX_OBJECT: usize = 16 << 20;

/// Cuts top-level JSON objects out of a stream of lines (JSON lines, arrays, pretty-printed).
#[derive(Debug, Default)]
pub struct ObjectStream {
    buf: Vec<u8>,
    depth: u32,
    in_str: bool,
    esc: bool,
    oversized: bool,
}

impl ObjectStream {
    /// Feeds one line; calls `f` with each object completed; returns the number of bytes that were
    /// outside any object and not JSON punctuation (garbage).
    pub fn push_line(&mut self, line: &[u8], f: &mut dyn FnMut(&[u8])) -> usize {
        let mut garbage = 0;
        if self.depth > 0 {
            self.push(b"\n");
        }
        let mut start = None;
        for (i, &c) in line.iter().enumerate() {
            if self.depth == 0 {
                match c {
                    b'{' => {
                        self.depth = 1;
                        start = Some(i);
                    }
                    b' ' | b'\t' | b'\r' | b'[' | b']' | b',' => {}
                    _ => garbage += 1,
                }
                continue;
            }
            if self.in_str {
                if self.esc {
                    self.esc = false;
                } else if c == b'\\' {
                    self.esc = true;
                } else if c == b'"' {
                    self.in_str = false;
                }
                continue;
            }
            match c {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let s = start.take().unwrap_or(0);
                        self.push(&line[s..=i]);
                        if !self.oversized {
                            f(&self.buf);
                        }
                        self.buf.clear();
                        self.oversized = false;
                    }
                }
                _ => {}
            }
        }
        if self.depth > 0 {
            let s = start.unwrap_or(0);
            self.push(&line[s..]);
        }
        garbage
    }

    fn push(&mut self, b: &[u8]) {
        if self.buf.len() + b.len() > MAX_OBJECT {
            self.oversized = true;
            self.buf.clear();
        } else if !self.oversized {
            self.buf.extend_from_slice(b);
        }
    }

    /// True while an object is open.
    pub fn open(&self) -> bool {
        self.depth > 0
    }
}

/// A string property, or a number's text (CloudNativePG writes numbers as strings, others not).
fn text<'a>(v: &'a Value, key: &str) -> Option<std::borrow::Cow<'a, str>> {
    match v.get(key)? {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        _ => None,
    }
}

fn put(out: &mut String, v: &Value, key: &str) {
    if let Some(s) = text(v, key) {
        push_capped(out, s.as_bytes());
    }
}

/// Parser for the JSON envelopes of managed services.
#[derive(Debug)]
pub struct EnvelopeParser {
    service: Service,
    stream: ObjectStream,
    inner: StderrParser,
    prefix: Prefix,
    zones: Zones,
    rec: LogRecord,
    /// Azure: the last entry, held for a DETAIL/STATEMENT sent as an event of its own.
    held: LogRecord,
    has_held: bool,
    line: Vec<u8>,
    stats: ParseStats,
}

impl EnvelopeParser {
    /// A parser for `service`; `prefix` is the `log_line_prefix` of the lines inside (Cloud SQL, Azure).
    pub fn new(service: Service, prefix: Prefix, zones: Zones) -> Self {
        EnvelopeParser {
            service,
            stream: ObjectStream::default(),
            inner: StderrParser::new(prefix.clone(), zones.clone()),
            prefix,
            zones,
            rec: LogRecord::default(),
            held: LogRecord::default(),
            has_held: false,
            line: Vec::new(),
            stats: ParseStats::default(),
        }
    }

    fn object(&mut self, obj: &[u8], emit: &mut dyn FnMut(&LogRecord)) {
        let Ok(v) = serde_json::from_slice::<Value>(obj) else {
            self.stats.unknown += 1;
            return;
        };
        match self.service {
            Service::Cnpg => self.cnpg(&v, emit),
            Service::CloudSql => self.cloudsql(&v, emit),
            Service::Azure => match v.get("records").and_then(Value::as_array) {
                Some(records) => records.iter().for_each(|r| self.azure(r, emit)),
                None => self.azure(&v, emit),
            },
        }
    }

    fn cnpg(&mut self, v: &Value, emit: &mut dyn FnMut(&LogRecord)) {
        let Some(r) = v.get("record").filter(|r| r.is_object()) else {
            if v.get("logger").is_some() {
                self.stats.foreign += 1;
            } else {
                self.stats.unknown += 1;
            }
            return;
        };
        if v.get("logger").and_then(Value::as_str) != Some("postgres") {
            self.stats.foreign += 1;
            return;
        }
        let rec = &mut self.rec;
        rec.clear();
        let sev = text(r, "error_severity");
        if !sev.as_deref().is_some_and(|s| set_severity(rec, s.as_bytes())) {
            self.stats.unknown += 1;
            return;
        }
        rec.time_us = text(r, "log_time").and_then(|t| parse_timestamp(t.as_bytes(), &self.zones).ok());
        put(&mut rec.user, r, "user_name");
        put(&mut rec.database, r, "database_name");
        rec.pid = text(r, "process_id").and_then(|p| p.parse().ok());
        if let Some(from) = text(r, "connection_from") {
            let host = from.rsplit_once(':').map_or(&*from, |(h, _)| h);
            push_capped(&mut rec.remote_host, host.as_bytes());
        }
        put(&mut rec.session_id, r, "session_id");
        rec.line_num = text(r, "session_line_num").and_then(|n| n.parse().ok());
        put(&mut rec.sql_state, r, "sql_state_code");
        put(&mut rec.message, r, "message");
        put(&mut rec.detail, r, "detail");
        put(&mut rec.hint, r, "hint");
        put(&mut rec.context, r, "context");
        put(&mut rec.statement, r, "query");
        put(&mut rec.application_name, r, "application_name");
        put(&mut rec.backend_type, r, "backend_type");
        rec.query_id = text(r, "query_id").and_then(|q| parse_i64(q.as_bytes()));
        self.stats.records += 1;
        emit(rec);
    }

    fn cloudsql(&mut self, v: &Value, emit: &mut dyn FnMut(&LogRecord)) {
        let Some(payload) = v.get("textPayload").and_then(Value::as_str) else {
            if v.get("logName").is_some() || v.get("jsonPayload").is_some() {
                self.stats.foreign += 1;
            } else {
                self.stats.unknown += 1;
            }
            return;
        };
        let time_us = text(v, "timestamp").and_then(|t| parse_timestamp(t.as_bytes(), &self.zones).ok());
        let env = Envelope { time_us, time_wins: true, pid: None };
        for l in payload.trim_end_matches('\n').split('\n') {
            self.inner.push_enveloped(l.as_bytes(), env, emit);
        }
    }

    fn azure(&mut self, r: &Value, emit: &mut dyn FnMut(&LogRecord)) {
        if r.get("category").and_then(Value::as_str) != Some("PostgreSQLLogs") {
            self.stats.foreign += 1;
            return;
        }
        // `properties` is an object, or (some exports) a JSON string holding one.
        let parsed;
        let props = match r.get("properties") {
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(p) => {
                    parsed = p;
                    &parsed
                }
                Err(_) => {
                    self.stats.unknown += 1;
                    return;
                }
            },
            Some(p) => p,
            None => {
                self.stats.unknown += 1;
                return;
            }
        };
        let level = text(props, "errorLevel").unwrap_or_default();
        let message = text(props, "message").unwrap_or_default();
        let time_us = text(props, "timestamp")
            .or_else(|| text(r, "time"))
            .and_then(|t| parse_timestamp(t.as_bytes(), &self.zones).ok());
        let pid = text(props, "processId").and_then(|p| p.parse().ok());
        // The first line, prefix included.
        self.line.clear();
        let mut lines = message.split('\n');
        let first = lines.next().unwrap_or("");
        match text(props, "prefix") {
            Some(prefix) => {
                self.line.extend_from_slice(prefix.as_bytes());
                self.line.extend_from_slice(level.as_bytes());
                self.line.extend_from_slice(b":  ");
                self.line.extend_from_slice(first.as_bytes());
            }
            None => self.line.extend_from_slice(first.as_bytes()),
        }
        let rec = &mut self.rec;
        rec.clear();
        let msg_at = match self.prefix.parse_line(&self.line, rec, &self.zones) {
            Some((sev, at)) => {
                rec.severity = sev;
                at
            }
            None => {
                // A prefix other than `--prefix`: start at the severity the envelope names.
                let label = format!("{level}:  ");
                let Some(at) = memchr::memmem::find(&self.line, label.as_bytes()) else {
                    self.stats.unknown += 1;
                    return;
                };
                rec.clear();
                let Some((sev, msg)) = severity_at(&self.line, at) else {
                    self.stats.unknown += 1;
                    return;
                };
                rec.severity = sev;
                msg
            }
        };
        if time_us.is_some() {
            rec.time_us = time_us;
        }
        rec.pid = rec.pid.or(pid);
        if rec.sql_state.is_empty() {
            put(&mut rec.sql_state, props, "sqlerrcode");
        }
        push_capped(&mut rec.message, &self.line[msg_at..]);
        for l in lines {
            push_capped(&mut rec.message, b"\n");
            push_capped(&mut rec.message, l.strip_prefix('\t').unwrap_or(l).as_bytes());
        }
        put(&mut rec.detail, props, "detail");
        put(&mut rec.hint, props, "hint");
        put(&mut rec.context, props, "context");
        put(&mut rec.statement, props, "statement");
        if rec.backend_type.is_empty() {
            put(&mut rec.backend_type, props, "backendType");
        }
        let sev = rec.severity;
        if sev.is_secondary() && self.has_held && (rec.pid == self.held.pid && rec.session_id == self.held.session_id) {
            // A DETAIL or STATEMENT sent as an event of its own belongs to the entry before it.
            let text = std::mem::take(&mut self.rec.message);
            if let Some(f) = self.held.secondary_field(sev) {
                f.clear();
                push_capped(f, text.as_bytes());
            }
            self.rec.message = text;
            return;
        }
        self.release(emit);
        std::mem::swap(&mut self.rec, &mut self.held);
        self.has_held = true;
    }

    fn release(&mut self, emit: &mut dyn FnMut(&LogRecord)) {
        if self.has_held {
            self.has_held = false;
            self.stats.records += 1;
            emit(&self.held);
        }
    }
}

impl RecordParser for EnvelopeParser {
    fn push_line(&mut self, line: &[u8], emit: &mut dyn FnMut(&LogRecord)) {
        self.stats.lines += 1;
        let mut objects: Vec<Vec<u8>> = Vec::new();
        let garbage = self.stream.push_line(line, &mut |o| objects.push(o.to_vec()));
        if garbage > 0 {
            self.stats.unknown += 1;
        }
        for o in objects {
            self.object(&o, emit);
        }
    }

    fn finish(&mut self, emit: &mut dyn FnMut(&LogRecord)) {
        if self.stream.open() {
            self.stats.unknown += 1;
            self.stream = ObjectStream::default();
        }
        self.release(emit);
        self.inner.finish(emit);
    }

    fn idle(&mut self, emit: &mut dyn FnMut(&LogRecord)) {
        self.release(emit);
        self.inner.idle(emit);
    }

    fn stats(&self) -> ParseStats {
        let inner = self.inner.stats();
        ParseStats {
            lines: self.stats.lines,
            records: self.stats.records + inner.records,
            unknown: self.stats.unknown + inner.unknown,
            foreign: self.stats.foreign,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_flexible_with_another_prefix_is_read_from_its_severity() {
        let mut p =
            EnvelopeParser::new(Service::Azure, Prefix::new(crate::parser::AZURE_PREFIX).unwrap(), Zones::new());
        let rec = r#"{"records":[{"category":"PostgreSQLLogs","time":"2023-02-27T22:21:11.830Z","properties":{"timestamp":"2023-02-27 22:21:11.823 UTC","processId":2030,"errorLevel":"LOG","sqlerrcode":"00000","message":"<custom prefix 2030> LOG:  duration: 0.053 ms  bind <unnamed>: UPDATE t SET x = $1","detail":"parameters: $1 = '4'"}}]}"#;
        let mut out = Vec::new();
        p.push_line(rec.as_bytes(), &mut |r| out.push(r.clone()));
        p.finish(&mut |r| out.push(r.clone()));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message, "duration: 0.053 ms  bind <unnamed>: UPDATE t SET x = $1");
        assert_eq!((out[0].pid, out[0].detail.as_str()), (Some(2030), "parameters: $1 = '4'"));
        assert_eq!(crate::time::format_rfc3339(out[0].time_us.unwrap()), "2023-02-27T22:21:11.823Z");
        assert_eq!(p.stats().unknown, 0);
    }

    #[test]
    fn objects_across_lines_and_arrays() {
        let mut s = ObjectStream::default();
        let mut got = Vec::new();
        let text =
            "[\n  {\n    \"a\": \"x}\\\"{\",\n    \"b\": [1, {\"c\": 2}]\n  },\n  {\"d\": 3}\n]\n{\"e\":4} {\"f\":5}";
        let mut garbage = 0;
        for l in text.lines() {
            garbage += s.push_line(l.as_bytes(), &mut |o| got.push(serde_json::from_slice::<Value>(o).unwrap()));
        }
        assert_eq!(garbage, 0);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0]["b"][1]["c"], 2);
        assert_eq!(got[3]["f"], 5);
        assert!(s.push_line(b"not json", &mut |_| {}) > 0);
    }
}
