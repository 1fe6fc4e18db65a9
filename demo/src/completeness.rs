//! Trace completeness: for each statement the workload ran, was it found in the server log under the trace
//! id it ran under, and was the span named there exported?
//!
//! What counts as one statement: one execution the workload issued — a simple-protocol query message, or
//! the Execute of a prepared statement (unnamed or named); its Parse/Bind steps are not counted. For COPY,
//! the COPY statement itself is counted; its data rows are not statements. The drivers' and the proxy's own
//! carrier statements (`set_config`, `SET application_name`, `SET sqlcommenter.traceparent`) are not
//! counted either.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use opentelemetry_sdk::trace::SpanData;
use sqlcommenter_logs::{Kind, Statement};

use crate::probe::{find_probes, Expected};

/// The way a statement reached PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatementPath {
    /// The sqlx wrapper (`sqlcommenter_sqlx::TracedPool`).
    Sqlx,
    /// The tokio-postgres wrapper (`sqlcommenter_tokio_postgres::Client`).
    TokioPostgres,
    /// Unmodified client through the proxy: simple query protocol.
    ProxySimple,
    /// Unmodified client through the proxy: unnamed extended protocol (`query_typed`).
    ProxyExtended,
    /// Unmodified client through the proxy: named prepared statement (prepare, then execute).
    ProxyPrepared,
    /// Unmodified client through the proxy: `COPY ... FROM STDIN`.
    ProxyCopy,
}

impl StatementPath {
    /// All paths in display order.
    pub const ALL: [StatementPath; 6] = [
        StatementPath::Sqlx,
        StatementPath::TokioPostgres,
        StatementPath::ProxySimple,
        StatementPath::ProxyExtended,
        StatementPath::ProxyPrepared,
        StatementPath::ProxyCopy,
    ];

    /// Human-readable name.
    pub fn label(self) -> &'static str {
        match self {
            StatementPath::Sqlx => "sqlx wrapper",
            StatementPath::TokioPostgres => "tokio-postgres wrapper",
            StatementPath::ProxySimple => "proxy: simple query",
            StatementPath::ProxyExtended => "proxy: unnamed extended",
            StatementPath::ProxyPrepared => "proxy: named prepared",
            StatementPath::ProxyCopy => "proxy: COPY FROM STDIN",
        }
    }
}

/// Completeness of one path, inside or outside transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStats {
    /// The path.
    pub path: StatementPath,
    /// Inside an explicit transaction.
    pub in_tx: bool,
    /// Statements the workload ran.
    pub ran: usize,
    /// Of those, found in the server log with the trace id they ran under (every execution line).
    pub in_log: usize,
    /// Of those, whose logged (trace id, parent span id) names a span the exporter received.
    pub in_spans: usize,
    /// A few misses, for diagnosis.
    pub misses: Vec<String>,
}

impl PathStats {
    /// 100 % in the log and in the exported spans (and at least one statement ran).
    pub fn complete(&self) -> bool {
        self.ran > 0 && self.in_log == self.ran && self.in_spans == self.ran
    }
}

/// Compares what the workload ran with the parsed server log and the exported spans.
pub(crate) fn measure(expected: &[Expected], statements: &[Statement], spans: &[SpanData]) -> Vec<PathStats> {
    let mut by_probe: HashMap<&str, Vec<&Statement>> = HashMap::new();
    for st in statements.iter().filter(|s| !s.carrier && matches!(s.kind, Kind::Simple | Kind::Execute)) {
        let mut seen = HashSet::new();
        for p in find_probes(&st.query).chain(find_probes(&st.parameters)) {
            if seen.insert(p) {
                by_probe.entry(p).or_default().push(st);
            }
        }
    }
    let exported: HashSet<(String, String)> =
        spans.iter().map(|s| (s.span_context.trace_id().to_string(), s.span_context.span_id().to_string())).collect();

    let mut out = Vec::new();
    for path in StatementPath::ALL {
        for in_tx in [false, true] {
            let mut stats = PathStats { path, in_tx, ran: 0, in_log: 0, in_spans: 0, misses: Vec::new() };
            for e in expected.iter().filter(|e| e.path == path && e.in_tx == in_tx) {
                stats.ran += 1;
                let lines = by_probe.get(e.probe.as_str()).map_or(&[][..], Vec::as_slice);
                let want = e.context.as_ref().map(|c| c.traceparent.trace_id_hex());
                let right_trace = !lines.is_empty() && want.is_some() && lines.iter().all(|l| l.trace_id() == want);
                let span_known = right_trace
                    && lines.iter().all(|l| {
                        l.context.as_ref().is_some_and(|c| {
                            exported.contains(&(c.traceparent.trace_id_hex(), c.traceparent.parent_id_hex()))
                        })
                    });
                stats.in_log += usize::from(right_trace);
                stats.in_spans += usize::from(span_known);
                if !(right_trace && span_known) && stats.misses.len() < 3 {
                    stats.misses.push(describe_miss(e, lines, want.as_deref(), right_trace));
                }
            }
            if stats.ran > 0 {
                out.push(stats);
            }
        }
    }
    out
}

fn describe_miss(e: &Expected, lines: &[&Statement], want: Option<&str>, right_trace: bool) -> String {
    let want = want.unwrap_or("(no span)");
    match lines.first() {
        None => format!("{}: not in the log (expected trace {want})", e.probe),
        Some(l) if !right_trace => format!(
            "{}: logged under {} via {} (expected {want}): {}",
            e.probe,
            l.trace_id().unwrap_or_else(|| "no trace".into()),
            l.source.as_str(),
            sqlcommenter_logs::text::one_line(&l.query, 80)
        ),
        Some(l) => format!(
            "{}: span {} named in the log was not exported",
            e.probe,
            l.context.as_ref().map_or_else(String::new, |c| c.traceparent.parent_id_hex())
        ),
    }
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        "-".into()
    } else {
        format!("{n}/{d} {:5.1} %", n as f64 * 100.0 / d as f64)
    }
}

/// The completeness table, with what is counted.
pub(crate) fn render(paths: &[PathStats]) -> String {
    let mut s = String::new();
    s.push_str("Trace completeness: statements the workload ran, found in the server log under the trace id they\n");
    s.push_str("ran under (\"log\"), and whose logged span id names a span the exporter received (\"spans\").\n");
    s.push_str("Counted: each simple-protocol query and each Execute of a prepared statement (Parse/Bind steps,\n");
    s.push_str("COPY data rows and the carriers' own SET/set_config statements are not statements of the app).\n\n");
    let _ = writeln!(s, "{:<26} {:<8} {:>5}  {:<16} {:<16}", "path", "in tx", "ran", "log", "spans");
    let (mut ran, mut log, mut spans) = (0, 0, 0);
    for p in paths {
        let _ = writeln!(
            s,
            "{:<26} {:<8} {:>5}  {:<16} {:<16}{}",
            p.path.label(),
            if p.in_tx { "yes" } else { "no" },
            p.ran,
            pct(p.in_log, p.ran),
            pct(p.in_spans, p.ran),
            if p.complete() { "" } else { "  <-- below 100 %" }
        );
        ran += p.ran;
        log += p.in_log;
        spans += p.in_spans;
        for m in &p.misses {
            let _ = writeln!(s, "      miss: {m}");
        }
    }
    let _ = writeln!(s, "{:<26} {:<8} {:>5}  {:<16} {:<16}", "all paths", "", ran, pct(log, ran), pct(spans, ran));
    s
}

/// Transaction ends (`COMMIT`) per application: (application, with trace context, total). They are issued by
/// the drivers' transaction APIs rather than written by the application, so they are reported here and not
/// counted above.
pub(crate) fn commits(statements: &[Statement]) -> Vec<(String, usize, usize)> {
    let mut by_app: std::collections::BTreeMap<String, (usize, usize)> = std::collections::BTreeMap::new();
    for st in statements.iter().filter(|s| !s.carrier && matches!(s.kind, Kind::Simple | Kind::Execute)) {
        let (before, after) = st.query_without_comment();
        let text = format!("{before}{after}");
        if !text.trim().trim_end_matches(';').eq_ignore_ascii_case("commit") {
            continue;
        }
        let app = sqlcommenter::carrier::strip_carrier(&st.application_name);
        let e = by_app.entry(if app.is_empty() { "(none)".to_owned() } else { app.to_owned() }).or_default();
        e.0 += usize::from(st.context.is_some());
        e.1 += 1;
    }
    by_app.into_iter().map(|(app, (with, total))| (app, with, total)).collect()
}

/// One line per application for [`commits`].
pub(crate) fn render_commits(commits: &[(String, usize, usize)]) -> String {
    let parts: Vec<String> = commits.iter().map(|(app, with, total)| format!("{app} {with}/{total}")).collect();
    format!(
        "Not counted above: COMMITs (issued by the drivers' transaction APIs) logged with trace context: {}.\n\
         A transaction-scoped carrier (SET LOCAL) has already ended when the server logs its COMMIT.\n",
        if parts.is_empty() { "none ran".to_owned() } else { parts.join(", ") }
    )
}
