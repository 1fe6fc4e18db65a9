//! `--once --format json`: the contract documented in the crate README. One object,
//! `{"sessions": [...]}`, one entry per client backend, by pid.

use serde::Serialize;

use crate::sample::Snapshot;
use crate::session::Session;

#[derive(Serialize)]
struct Document<'a> {
    sessions: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    pid: i32,
    application_name: Option<&'a str>,
    application: Option<&'a str>,
    trace_id: Option<String>,
    span_id: Option<String>,
    context_source: Option<&'static str>,
    state: Option<&'a str>,
    wait_event_type: Option<&'a str>,
    wait_event: Option<&'a str>,
    xact_age_ms: Option<u64>,
    query_age_ms: Option<u64>,
    query: Option<&'a str>,
    blocked_by: &'a [i32],
    blocked_by_trace_ids: Vec<Option<String>>,
}

fn entry<'a>(snapshot: &'a Snapshot, s: &'a Session) -> Entry<'a> {
    let ms = |d: Option<std::time::Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Entry {
        pid: s.pid,
        application_name: s.application_name.as_deref(),
        application: s.application.as_deref(),
        trace_id: s.trace.as_ref().map(|t| t.trace_id()),
        span_id: s.trace.as_ref().map(|t| t.span_id()),
        context_source: s.trace.as_ref().map(|t| t.source.as_str()),
        state: s.state.as_ref().map(|st| st.as_str()),
        wait_event_type: s.wait_event_type.as_deref(),
        wait_event: s.wait_event.as_deref(),
        xact_age_ms: ms(s.xact_age),
        query_age_ms: ms(s.query_age),
        query: s.query.as_deref(),
        blocked_by: &s.blocked_by,
        blocked_by_trace_ids: s
            .blocked_by
            .iter()
            .map(|&p| snapshot.get(p).and_then(|b| b.trace.as_ref()).map(|t| t.trace_id()))
            .collect(),
    }
}

/// The snapshot as the JSON document of the contract (one line, no trailing newline).
pub fn render(snapshot: &Snapshot) -> String {
    let doc = Document { sessions: snapshot.sessions.iter().map(|s| entry(snapshot, s)).collect() };
    serde_json::to_string(&doc).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}
