//! jsonlog (PostgreSQL 15+): one JSON object per line, absent keys omitted.

use std::borrow::Cow;

use super::{push_capped, set_severity, ParseStats, RecordParser};
use crate::record::LogRecord;
use crate::time::parse_timestamp;

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

/// Parser for jsonlog files.
#[derive(Debug, Default)]
pub struct JsonParser {
    rec: LogRecord,
    stats: ParseStats,
}

impl JsonParser {
    /// A new parser.
    pub fn new() -> Self {
        Self::default()
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
        let Ok(e) = serde_json::from_slice::<Entry<'_>>(line) else {
            self.stats.unknown += 1;
            return;
        };
        let rec = &mut self.rec;
        rec.clear();
        rec.time_us = e.timestamp.as_deref().and_then(|t| parse_timestamp(t.as_bytes()));
        let sev_ok = e.error_severity.as_deref().is_some_and(|s| set_severity(rec, s.as_bytes()));
        if rec.time_us.is_none() || !sev_ok {
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
        let mut p = JsonParser::new();
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
}
