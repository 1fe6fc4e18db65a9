//! jsonlog (PostgreSQL 15+): one JSON object per line, absent keys omitted.

use std::borrow::Cow;

use super::{push_capped, set_severity, ParseStats, RecordParser, Src};
use crate::record::LogRecord;
use crate::time::{parse_timestamp, TimeError, Zones};

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Entry<'a> {
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dbname: Option<Cow<'a, str>>,
    pid: Option<u32>,
    #[serde(borrow)]
    remote_host: Option<Cow<'a, str>>,
    #[serde(borrow)]
    session_id: Option<Cow<'a, str>>,
    line_num: Option<u64>,
    #[serde(borrow)]
    error_severity: Option<Cow<'a, str>>,
    #[serde(borrow)]
    state_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow)]
    detail: Option<Cow<'a, str>>,
    #[serde(borrow)]
    hint: Option<Cow<'a, str>>,
    #[serde(borrow)]
    context: Option<Cow<'a, str>>,
    #[serde(borrow)]
    statement: Option<Cow<'a, str>>,
    #[serde(borrow)]
    application_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    backend_type: Option<Cow<'a, str>>,
    query_id: Option<i64>,
}

/// A value in a jsonlog object, as found in the line: a string (raw, still escaped when the flag is set)
/// or the text of a number/literal.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Str(&'a [u8], (usize, usize), bool),
    Other(&'a [u8]),
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// Scans a JSON string starting after its opening quote: (content, has escapes, index after the quote).
fn scan_str(b: &[u8], mut i: usize) -> Option<(&[u8], bool, usize)> {
    let start = i;
    let mut escaped = false;
    loop {
        let off = memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        i += off;
        if b[i] == b'"' {
            return Some((&b[start..i], escaped, i + 1));
        }
        escaped = true;
        i += 2;
    }
}

/// Decodes a JSON string body with escapes.
fn unescape(raw: &[u8]) -> Option<Vec<u8>> {
    let mut bytes: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' {
            bytes.push(c);
            i += 1;
            continue;
        }
        let e = *raw.get(i + 1)?;
        i += 2;
        match e {
            b'"' | b'\\' | b'/' => bytes.push(e),
            b'b' => bytes.push(8),
            b'f' => bytes.push(12),
            b'n' => bytes.push(b'\n'),
            b'r' => bytes.push(b'\r'),
            b't' => bytes.push(b'\t'),
            b'u' => {
                let hex = |j: usize| -> Option<u32> {
                    let h = std::str::from_utf8(raw.get(j..j + 4)?).ok()?;
                    u32::from_str_radix(h, 16).ok()
                };
                let mut cp = hex(i)?;
                i += 4;
                if (0xD800..0xDC00).contains(&cp) && raw.get(i) == Some(&b'\\') && raw.get(i + 1) == Some(&b'u') {
                    let lo = hex(i + 2)?;
                    if (0xDC00..0xE000).contains(&lo) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        i += 6;
                    }
                }
                let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
    Some(bytes)
}

fn put_raw(src: &Src<'_>, out: &mut String, v: Raw<'_>) -> Option<()> {
    match v {
        Raw::Str(_, range, false) => src.push(out, range),
        Raw::Str(s, _, true) => push_capped(out, &unescape(s)?),
        Raw::Other(b"null") => {}
        Raw::Other(_) => return None,
    }
    Some(())
}

fn num<T: std::str::FromStr>(v: Raw<'_>) -> Option<T> {
    match v {
        Raw::Other(t) => std::str::from_utf8(t).ok()?.parse().ok(),
        Raw::Str(..) => None,
    }
}

/// Fast path for PostgreSQL's own jsonlog lines: one flat object of strings and numbers. `None` on
/// anything else (the caller then uses serde_json).
fn fast_parse(b: &[u8], rec: &mut LogRecord, zones: &Zones) -> Option<()> {
    let src = Src::new(b);
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut have_time = false;
    let mut have_sev = false;
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b'}' => break,
            b'"' => {}
            _ => return None,
        }
        let (key, key_esc, after) = scan_str(b, i + 1)?;
        if key_esc {
            return None;
        }
        i = skip_ws(b, after);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let v = match b.get(i)? {
            b'"' => {
                let (s, esc, after) = scan_str(b, i + 1)?;
                let range = (i + 1, i + 1 + s.len());
                i = after;
                Raw::Str(s, range, esc)
            }
            b'{' | b'[' => return None,
            _ => {
                let start = i;
                while i < b.len() && !matches!(b[i], b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n') {
                    i += 1;
                }
                Raw::Other(&b[start..i])
            }
        };
        match key {
            b"timestamp" => {
                let Raw::Str(t, _, false) = v else { return None };
                rec.time_us = read_time(t, zones)?;
                have_time = true;
            }
            b"error_severity" => {
                let Raw::Str(t, _, false) = v else { return None };
                if !set_severity(rec, t) {
                    return None;
                }
                have_sev = true;
            }
            b"user" => put_raw(&src, &mut rec.user, v)?,
            b"dbname" => put_raw(&src, &mut rec.database, v)?,
            b"pid" => rec.pid = Some(num(v)?),
            b"remote_host" => put_raw(&src, &mut rec.remote_host, v)?,
            b"session_id" => put_raw(&src, &mut rec.session_id, v)?,
            b"line_num" => rec.line_num = Some(num(v)?),
            b"state_code" => put_raw(&src, &mut rec.sql_state, v)?,
            b"message" => put_raw(&src, &mut rec.message, v)?,
            b"detail" => put_raw(&src, &mut rec.detail, v)?,
            b"hint" => put_raw(&src, &mut rec.hint, v)?,
            b"context" => put_raw(&src, &mut rec.context, v)?,
            b"statement" => put_raw(&src, &mut rec.statement, v)?,
            b"application_name" => put_raw(&src, &mut rec.application_name, v)?,
            b"backend_type" => put_raw(&src, &mut rec.backend_type, v)?,
            b"query_id" => rec.query_id = Some(num(v)?),
            _ => {}
        }
        i = skip_ws(b, i);
        match b.get(i)? {
            b',' => i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    (have_time && have_sev).then_some(())
}

/// A log time: `Some(None)` when its zone was refused (counted by `zones`), `None` when it is no time.
fn read_time(t: &[u8], zones: &Zones) -> Option<Option<i64>> {
    match parse_timestamp(t, zones) {
        Ok(t) => Some(Some(t)),
        Err(TimeError::Zone(_)) => Some(None),
        Err(TimeError::Malformed) => None,
    }
}

/// Parser for jsonlog files.
#[derive(Debug, Default)]
pub struct JsonParser {
    rec: LogRecord,
    stats: ParseStats,
    zones: Zones,
}

impl JsonParser {
    /// A new parser; `zones` resolves time zone abbreviations.
    pub fn new(zones: Zones) -> Self {
        JsonParser { zones, ..Self::default() }
    }
}

fn put(out: &mut String, v: &Option<Cow<'_, str>>) {
    if let Some(v) = v {
        push_capped(out, v.as_bytes());
    }
}

impl RecordParser for JsonParser {
    fn push_line(&mut self, line: &[u8], emit: &mut dyn FnMut(&LogRecord)) {
        self.stats.lines += 1;
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        self.rec.clear();
        if fast_parse(line, &mut self.rec, &self.zones).is_some() {
            self.stats.records += 1;
            emit(&self.rec);
            return;
        }
        let Ok(e) = serde_json::from_slice::<Entry<'_>>(line) else {
            self.stats.unknown += 1;
            return;
        };
        let rec = &mut self.rec;
        rec.clear();
        let time = e.timestamp.as_deref().and_then(|t| read_time(t.as_bytes(), &self.zones));
        let sev_ok = e.error_severity.as_deref().is_some_and(|s| set_severity(rec, s.as_bytes()));
        rec.time_us = time.flatten();
        if time.is_none() || !sev_ok {
            self.stats.unknown += 1;
            return;
        }
        put(&mut rec.user, &e.user);
        put(&mut rec.database, &e.dbname);
        rec.pid = e.pid;
        put(&mut rec.remote_host, &e.remote_host);
        put(&mut rec.session_id, &e.session_id);
        rec.line_num = e.line_num;
        put(&mut rec.sql_state, &e.state_code);
        put(&mut rec.message, &e.message);
        put(&mut rec.detail, &e.detail);
        put(&mut rec.hint, &e.hint);
        put(&mut rec.context, &e.context);
        put(&mut rec.statement, &e.statement);
        put(&mut rec.application_name, &e.application_name);
        put(&mut rec.backend_type, &e.backend_type);
        rec.query_id = e.query_id;
        self.stats.records += 1;
        emit(rec);
    }

    fn finish(&mut self, _emit: &mut dyn FnMut(&LogRecord)) {}

    fn stats(&self) -> ParseStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_skips_garbage() {
        let mut p = JsonParser::new(Zones::new());
        let mut out = Vec::new();
        let lines = [
            r#"{"timestamp":"2024-05-01 10:00:00.123 UTC","user":"bob","dbname":"shop","pid":42,"session_id":"a.b","line_num":3,"ps":"SELECT","error_severity":"LOG","message":"duration: 1.5 ms  statement: select \"a\"\nfrom t","application_name":"x@y","backend_type":"client backend","query_id":-5}"#,
            "{not json",
            r#"{"timestamp":"2024-05-01 10:00:00.123 UTC"}"#,
        ];
        for l in lines {
            p.push_line(l.as_bytes(), &mut |r| out.push(r.clone()));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message, "duration: 1.5 ms  statement: select \"a\"\nfrom t");
        assert_eq!(out[0].query_id, Some(-5));
        assert_eq!(p.stats().unknown, 2);
    }

    #[test]
    fn fast_path_agrees_with_serde() {
        let lines = [
            r#"{"timestamp":"2024-05-01 10:00:00.123 UTC","user":"bob","dbname":"shop","pid":42,"session_id":"a.b","line_num":3,"ps":"SELECT","error_severity":"LOG","message":"duration: 1.5 ms  statement: select \"a\"\n\tfrom t \\ \/ \u00e9\ud83d\ude00","application_name":"x@y","backend_type":"client backend","query_id":-5}"#,
            r#" { "timestamp" : "2024-05-01 10:00:00.123 UTC" , "error_severity" : "ERROR", "statement": "select 1", "state_code":"22012", "message":"division by zero" } "#,
        ];
        for l in lines {
            let mut fast = LogRecord::default();
            assert!(fast_parse(l.as_bytes(), &mut fast, &Zones::new()).is_some(), "{l}");
            let e: Entry<'_> = serde_json::from_str(l).unwrap();
            assert_eq!(fast.message, e.message.as_deref().unwrap_or(""));
            assert_eq!(fast.statement, e.statement.as_deref().unwrap_or(""));
            assert_eq!(fast.pid, e.pid);
            assert_eq!(fast.query_id, e.query_id);
        }
        let mut r = LogRecord::default();
        for bad in [
            r#"{"timestamp":"2024-05-01 10:00:00.123 UTC","error_severity":"LOG","x":{"nested":1}}"#,
            "{",
            r#"{"a":"unterminated}"#,
        ] {
            assert!(fast_parse(bad.as_bytes(), &mut r, &Zones::new()).is_none(), "{bad}");
        }
    }
}
