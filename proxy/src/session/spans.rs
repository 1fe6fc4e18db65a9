//! Statement spans of one session, sans I/O: one span per execution (simple Query, or Execute), with ids
//! chosen *before* the statement is forwarded, so the comment or carrier the proxy injects carries the
//! proxy span's own id as parent-id and server log lines point at it.
//!
//! An open span travels on the protocol state's queue item that its replies complete (one queue: the
//! reply order is tracked once); the session finishes it from those replies and returns the finished
//! [`SpanRecord`] as an event for the exporter ([`crate::telemetry`]). When export is off there is no
//! tracker, so the hot path creates no span objects.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use sqlcommenter::{Dialect, TraceContext};

use crate::context::IdGenerator;
use crate::frame;

/// Most replies one session may await while it traces (pipelined statements not yet answered); beyond,
/// tracing stops for that session so memory stays bounded.
pub const MAX_OPEN: usize = 16 * 1024;

/// One finished statement execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// The proxy span's id (the parent-id injected downstream).
    pub span_id: [u8; 8],
    /// The client's span, or `None` for a root span.
    pub parent: Option<[u8; 8]>,
    /// The statement text as the client sent it.
    pub text: Arc<str>,
    /// `db.namespace` (the startup `database`).
    pub database: Arc<str>,
    /// When the proxy forwarded the statement.
    pub start: Instant,
    /// When the proxy relayed its completion.
    pub end: Instant,
    /// Rows from CommandComplete, when it counts them.
    pub rows: Option<u64>,
    /// SQLSTATE and message of an ErrorResponse.
    pub error: Option<(String, String)>,
}

/// A span in flight, on the queue item of the Query or Execute it measures. For a multi-statement
/// Query it also holds a child span per statement still to complete (text and span id each) and when
/// the current one began (the previous one's completion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSpan {
    rec: SpanRecord,
    left: VecDeque<(Arc<str>, [u8; 8])>,
    since: Instant,
}

impl OpenSpan {
    /// One statement of this span's request completed at `now` (a CommandComplete, EmptyQueryResponse,
    /// PortalSuspended, or an ErrorResponse): counts its rows and, for a multi-statement Query, returns
    /// its child span. An error ends the request: the server skips the statements after it.
    pub fn statement_done(
        &mut self,
        now: Instant,
        rows: Option<u64>,
        error: Option<(String, String)>,
    ) -> Option<SpanRecord> {
        if let Some(n) = rows {
            self.rec.rows = Some(self.rec.rows.unwrap_or(0) + n);
        }
        let child = self.left.pop_front().map(|(text, span_id)| SpanRecord {
            trace_id: self.rec.trace_id,
            span_id,
            parent: Some(self.rec.span_id),
            text,
            database: self.rec.database.clone(),
            start: std::mem::replace(&mut self.since, now),
            end: now,
            rows,
            error: error.clone(),
        });
        if error.is_some() {
            self.left.clear();
            self.rec.error = error;
        }
        child
    }

    /// The span, ended at `now`.
    pub fn finish(self, now: Instant) -> SpanRecord {
        SpanRecord { end: now, ..self.rec }
    }
}

/// Ids reserved for the next Execute (chosen when its comment or carrier was written).
#[derive(Debug, Clone, Copy)]
struct Reserved {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
}

/// Per-session span state besides the open spans: statement and portal texts, the ids reserved for the
/// next execution.
#[derive(Debug)]
pub struct SpanTracker {
    database: Arc<str>,
    statements: HashMap<Vec<u8>, Arc<str>>,
    portals: HashMap<Vec<u8>, Arc<str>>,
    reserved: Option<Reserved>,
    disabled: bool,
}

impl SpanTracker {
    /// A tracker for a session on `database`.
    pub fn new(database: &str) -> Self {
        SpanTracker {
            database: Arc::from(database),
            statements: HashMap::new(),
            portals: HashMap::new(),
            reserved: None,
            disabled: false,
        }
    }

    /// Whether tracing stopped for this session (too many unanswered statements).
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Stops tracing for this session: `pending` replies are awaited, more than [`MAX_OPEN`].
    pub fn check_load(&mut self, pending: usize) {
        if pending >= MAX_OPEN && !self.disabled {
            tracing::debug!("too many unanswered statements: spans off for this session");
            self.disabled = true;
            self.reserved = None;
            self.statements.clear();
            self.portals.clear();
        }
    }

    fn reserve(&mut self, ctx: &TraceContext, client: bool, ids: &mut IdGenerator) -> Option<Reserved> {
        if self.disabled || !ctx.traceparent.is_sampled() {
            return None;
        }
        Some(Reserved {
            trace_id: ctx.traceparent.trace_id(),
            span_id: fresh_span_id(ids),
            parent: client.then(|| ctx.traceparent.parent_id()),
        })
    }

    fn open(&self, r: Reserved, text: Arc<str>, now: Instant) -> OpenSpan {
        let rec = SpanRecord {
            trace_id: r.trace_id,
            span_id: r.span_id,
            parent: r.parent,
            text,
            database: self.database.clone(),
            start: now,
            end: now,
            rows: None,
            error: None,
        };
        OpenSpan { rec, left: VecDeque::new(), since: now }
    }

    /// A simple Query forwarded at `now`: its span (for the Query's queue item) and the context to inject
    /// (parent-id = the span's id). `client` says whether `ctx` came from the client (else it is the
    /// proxy's root).
    pub fn query(
        &mut self,
        sql: &[u8],
        ctx: TraceContext,
        client: bool,
        ids: &mut IdGenerator,
        now: Instant,
    ) -> (TraceContext, Option<Box<OpenSpan>>) {
        // A statement with its own traceparent keeps it: the span is that context's child.
        let (ctx, client) = match own_context(sql) {
            Some(own) => (own, true),
            None => (ctx, client),
        };
        let Some(r) = self.reserve(&ctx, client, ids) else { return (ctx, None) };
        let mut span = self.open(r, Arc::from(String::from_utf8_lossy(sql)), now);
        // A `;` before the end may separate statements: each gets its own child span.
        if sql.trim_ascii_end().strip_suffix(b";").unwrap_or(sql).contains(&b';') {
            let text = String::from_utf8_lossy(sql);
            let stmts = sqlcommenter::lexer::split_statements(&text, Dialect::Postgres);
            if stmts.len() > 1 {
                span.left = stmts.into_iter().map(|t| (Arc::from(t), fresh_span_id(ids))).collect();
            }
        }
        (with_parent(ctx, r.span_id), Some(Box::new(span)))
    }

    /// A Parse (named or not): remembers the statement's text for its executions.
    pub fn statement(&mut self, name: &[u8], sql: &[u8]) {
        if self.disabled {
            return;
        }
        if self.statements.len() < MAX_OPEN || self.statements.contains_key(name) {
            self.statements.insert(name.to_vec(), Arc::from(String::from_utf8_lossy(sql)));
        }
    }

    /// A Parse of the unnamed statement: reserves the next Execute's span; returns the context to inject.
    pub fn parse_unnamed(
        &mut self,
        sql: &[u8],
        ctx: TraceContext,
        client: bool,
        ids: &mut IdGenerator,
    ) -> TraceContext {
        let (ctx, client) = match own_context(sql) {
            Some(own) => (own, true),
            None => (ctx, client),
        };
        self.reserved = self.reserve(&ctx, client, ids);
        match self.reserved {
            Some(r) => with_parent(ctx, r.span_id),
            None => ctx,
        }
    }

    /// A named execution's carrier is about to be written: reserves the span and returns its context.
    pub fn carrier(&mut self, ctx: TraceContext, client: bool, ids: &mut IdGenerator) -> TraceContext {
        self.reserved = self.reserve(&ctx, client, ids);
        match self.reserved {
            Some(r) => with_parent(ctx, r.span_id),
            None => ctx,
        }
    }

    /// A Bind: maps its portal to the statement's text.
    pub fn bind(&mut self, body: &[u8]) {
        if self.disabled {
            return;
        }
        let Some((portal, rest)) = frame::cstr(body) else { return };
        let Some((stmt, _)) = frame::cstr(rest) else { return };
        match self.statements.get(stmt) {
            Some(t) if self.portals.len() < MAX_OPEN || self.portals.contains_key(portal) => {
                self.portals.insert(portal.to_vec(), t.clone());
            }
            _ => {
                self.portals.remove(portal);
            }
        }
    }

    /// A Close of a statement or portal.
    pub fn close(&mut self, body: &[u8]) {
        let Some((&kind, rest)) = body.split_first() else { return };
        let Some((name, _)) = frame::cstr(rest) else { return };
        match kind {
            b'S' => self.statements.remove(name),
            _ => self.portals.remove(name),
        };
    }

    /// An Execute forwarded at `now`: its span, with the reserved ids, else fresh ones under `ctx`.
    pub fn execute(
        &mut self,
        body: &[u8],
        ctx: &TraceContext,
        client: bool,
        ids: &mut IdGenerator,
        now: Instant,
    ) -> Option<Box<OpenSpan>> {
        let r = match self.reserved.take() {
            Some(r) => r,
            None => self.reserve(ctx, client, ids)?,
        };
        let portal = frame::cstr(body).map_or(&b""[..], |(p, _)| p);
        let text = self.portals.get(portal).cloned().unwrap_or_else(|| Arc::from(""));
        Some(Box::new(self.open(r, text, now)))
    }
}

fn fresh_span_id(ids: &mut IdGenerator) -> [u8; 8] {
    loop {
        let id = ids.next_u64().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

fn with_parent(ctx: TraceContext, span_id: [u8; 8]) -> TraceContext {
    match ctx.traceparent.with_parent_id(span_id) {
        Ok(tp) => TraceContext { traceparent: tp, tracestate: ctx.tracestate },
        Err(_) => ctx,
    }
}

fn own_context(sql: &[u8]) -> Option<TraceContext> {
    frame::find_ci(sql, b"traceparent")?;
    sqlcommenter::parse_context(std::str::from_utf8(sql).ok()?, Dialect::Postgres)
}

/// The row count of a CommandComplete tag (`SELECT 5`, `INSERT 0 5`, `UPDATE 3`, `FETCH 2`, `COPY 7`).
pub fn rows(tag: &[u8]) -> Option<u64> {
    let tag = std::str::from_utf8(tag).ok()?;
    let verb = tag.split(' ').next()?;
    if !matches!(verb, "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "FETCH" | "MOVE" | "COPY") {
        return None;
    }
    tag.rsplit(' ').next()?.parse().ok()
}

/// SQLSTATE (`C`) and message (`M`) of an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut msg = String::new();
    let mut rest = body;
    while let Some((&t, r)) = rest.split_first() {
        if t == 0 {
            break;
        }
        let Some((v, r)) = frame::cstr(r) else { break };
        match t {
            b'C' => code = String::from_utf8_lossy(v).into_owned(),
            b'M' => msg = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
        rest = r;
    }
    (code, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_counts_and_errors() {
        assert_eq!(rows(b"SELECT 5"), Some(5));
        assert_eq!(rows(b"INSERT 0 7"), Some(7));
        assert_eq!(rows(b"BEGIN"), None);
        assert_eq!(rows(b"CREATE TABLE"), None);
        let body = b"SERROR\0C22012\0Mdivision by zero\0\0";
        assert_eq!(error_fields(body), ("22012".into(), "division by zero".into()));
    }

    #[test]
    fn a_multi_statement_query_ends_a_child_per_statement_and_stops_at_an_error() {
        let tp: sqlcommenter::TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap();
        let mut t = SpanTracker::new("db");
        let mut ids = IdGenerator::seeded(1);
        let t0 = Instant::now();
        let (ctx, span) = t.query(b"select 1; select 2; select 3", TraceContext::new(tp), true, &mut ids, t0);
        let mut span = *span.unwrap();
        assert_eq!(ctx.traceparent.trace_id(), tp.trace_id());
        assert_eq!(ctx.traceparent.parent_id(), span.rec.span_id, "the injected context points at the span");
        let t1 = t0 + std::time::Duration::from_millis(1);
        let a = span.statement_done(t1, Some(1), None).unwrap();
        assert_eq!((&*a.text, a.start, a.end, a.rows, a.parent), ("select 1", t0, t1, Some(1), Some(span.rec.span_id)));
        let t2 = t1 + std::time::Duration::from_millis(1);
        let b = span.statement_done(t2, None, Some(("22012".into(), "division by zero".into()))).unwrap();
        assert_eq!((&*b.text, b.start, b.error.as_ref().map(|e| &*e.0)), ("select 2", t1, Some("22012")));
        assert_eq!(span.statement_done(t2, None, None), None, "skipped after the error: no child");
        let done = span.finish(t2);
        assert_eq!(
            (done.rows, done.error.map(|e| e.0), done.parent),
            (Some(1), Some("22012".into()), Some(tp.parent_id()))
        );
    }
}
