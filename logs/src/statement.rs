//! Statements assembled from log records: pairs `log_statement` lines with their later bare `duration:`,
//! attaches auto_explain plans and errors to their statement (same backend), and correlates each statement
//! with its trace. Every statement line stands on its own: a slow `execute` needs no `parse`/`bind`.

use std::collections::HashMap;

use sqlcommenter::{Tags, TraceContext};

use crate::correlate::{correlate, is_carrier_statement, Source};
use crate::message::{classify, plan_query_text, Body, Kind, Message, PlanFormat};
use crate::record::{LogRecord, Severity};

/// Why a statement failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// The error message.
    pub message: String,
    /// Its SQLSTATE, when logged (`%e`, csvlog, jsonlog, verbose stderr).
    pub sql_state: Option<String>,
}

/// One statement execution (or protocol step) found in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// Log time (end of the statement), microseconds since the epoch.
    pub time_us: Option<i64>,
    /// Duration in milliseconds, when logged.
    pub duration_ms: Option<f64>,
    /// SQL text as logged (comment included).
    pub query: String,
    /// Protocol step.
    pub kind: Kind,
    /// Prepared statement name (`""` for unnamed or simple).
    pub name: String,
    /// `DETAIL:  parameters: ...` without the `parameters: ` label.
    pub parameters: String,
    /// auto_explain plan (whole text after `plan:`).
    pub plan: String,
    /// Plan format when `plan` is set.
    pub plan_format: Option<PlanFormat>,
    /// The error, when the statement failed.
    pub error: Option<SqlError>,
    /// Database user.
    pub user: Option<String>,
    /// Database.
    pub database: Option<String>,
    /// `application_name` as logged (carrier included).
    pub application_name: String,
    /// Backend pid.
    pub pid: Option<u32>,
    /// Session id.
    pub session_id: Option<String>,
    /// Query id (`%Q`, csvlog/jsonlog).
    pub query_id: Option<i64>,
    /// Trace context.
    pub context: Option<TraceContext>,
    /// Where the context came from.
    pub source: Source,
    /// Comment tags besides traceparent/tracestate.
    pub tags: Tags,
    /// Byte range of the sqlcommenter comment in `query`, when located.
    pub comment_range: Option<(usize, usize)>,
    /// A driver's/proxy's own carrier statement (kept out of reports).
    pub carrier: bool,
}

impl Default for Statement {
    fn default() -> Self {
        Statement {
            time_us: None,
            duration_ms: None,
            query: String::new(),
            kind: Kind::Statement,
            name: String::new(),
            parameters: String::new(),
            plan: String::new(),
            plan_format: None,
            error: None,
            user: None,
            database: None,
            application_name: String::new(),
            pid: None,
            session_id: None,
            query_id: None,
            context: None,
            source: Source::None,
            tags: Tags::new(),
            comment_range: None,
            carrier: false,
        }
    }
}

impl Statement {
    /// Lowercase hex trace id, if correlated.
    pub fn trace_id(&self) -> Option<String> {
        self.context.as_ref().map(|c| c.traceparent.trace_id_hex())
    }

    /// The query with its sqlcommenter comment cut out (for grouping caches).
    pub fn query_without_comment(&self) -> (&str, &str) {
        match self.comment_range {
            Some((s, e)) if e > s && e <= self.query.len() => (&self.query[..s], &self.query[e..]),
            _ => (&self.query, ""),
        }
    }

    fn fill_from(&mut self, rec: &LogRecord, kind: Kind, name: &str, sql: &str, duration_ms: Option<f64>) {
        self.time_us = rec.time_us;
        self.duration_ms = duration_ms;
        self.query.clear();
        self.query.push_str(sql);
        self.kind = kind;
        self.name.clear();
        self.name.push_str(name);
        self.parameters.clear();
        if let Some(p) = rec.detail.strip_prefix("parameters: ") {
            self.parameters.push_str(p);
        }
        self.plan.clear();
        self.plan_format = None;
        self.error = None;
        set_opt(&mut self.user, &rec.user);
        set_opt(&mut self.database, &rec.database);
        self.application_name.clear();
        self.application_name.push_str(&rec.application_name);
        self.pid = rec.pid;
        set_opt(&mut self.session_id, &rec.session_id);
        self.query_id = rec.query_id.filter(|&q| q != 0);
    }

    /// Marks the statement failed with `rec`'s error.
    fn fail(&mut self, rec: &LogRecord) {
        let sql_state = (!rec.sql_state.is_empty()).then(|| rec.sql_state.clone());
        self.error = Some(SqlError { message: rec.message.clone(), sql_state });
    }

    /// (Re)computes the trace context, tags and carrier flag from the query and application_name.
    pub fn correlate(&mut self) {
        let c = correlate(&self.query, &self.application_name);
        self.context = c.context;
        self.source = c.source;
        self.tags = c.tags;
        self.comment_range = c.comment_range;
        // Carrier statements (set_config / SET of the carrier GUCs) carry no comment of their own.
        self.carrier =
            self.source != Source::Comment && is_carrier_statement(&self.name, &self.query, &self.parameters);
    }
}

/// Sets `slot` to `v`, `None` when empty (reusing the buffer).
fn set_opt(slot: &mut Option<String>, v: &str) {
    if v.is_empty() {
        *slot = None;
    } else {
        let s = slot.get_or_insert_with(String::new);
        s.clear();
        s.push_str(v);
    }
}

/// Counters of the assembler.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AssembleStats {
    /// Statements emitted (carriers included).
    pub statements: u64,
    /// Carrier statements among them.
    pub carriers: u64,
    /// Bare `duration:` lines without a pending statement (e.g. `log_duration` for parse/bind).
    pub unpaired_durations: u64,
    /// auto_explain plans attached to their statement.
    pub plans_attached: u64,
    /// Records that are not about statements (connections, checkpoints, ...).
    pub other_records: u64,
}

#[derive(Debug, Default)]
struct Pending {
    /// A `log_statement` line waiting for its `duration:`.
    statement: Option<Statement>,
    /// auto_explain plans waiting for their statement line.
    plans: Vec<Statement>,
    /// A finished `execute` held until the backend's next record: auto_explain logs an extended-protocol
    /// plan when the portal is dropped, after the `execute` line.
    held: Option<Statement>,
}

/// Most plans kept waiting for their statement per backend (nested statements).
const MAX_PLANS: usize = 16;
/// Most backends with pending state; beyond it everything pending is flushed.
const MAX_PENDING: usize = 8192;

/// Turns records into statements.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: HashMap<u64, Pending>,
    scratch: Statement,
    stats: AssembleStats,
    /// The last correlation (query, application_name, result): parse/bind/execute lines of one execution
    /// repeat the same text.
    last: Option<(String, String, Statement)>,
}

fn same_key(q: &str, a: &str, prev: &Statement, st: &Statement) -> bool {
    q == st.query && a == st.application_name && prev.parameters == st.parameters
}

fn key(rec: &LogRecord) -> u64 {
    match rec.pid {
        Some(p) => u64::from(p),
        None => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            rec.session_id.hash(&mut h);
            h.finish() | (1 << 63)
        }
    }
}

fn plan_matches(plan_query: &str, stmt_query: &str) -> bool {
    let p = plan_query.trim();
    !p.is_empty() && (p == stmt_query.trim() || stmt_query.contains(p))
}

impl Assembler {
    /// A new assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> AssembleStats {
        self.stats
    }

    fn emit_owned(stats: &mut AssembleStats, s: &Statement, emit: &mut dyn FnMut(&Statement)) {
        stats.statements += 1;
        if s.carrier {
            stats.carriers += 1;
        }
        emit(s);
    }

    /// Feeds one record; calls `emit` for every statement it completes.
    pub fn push(&mut self, rec: &LogRecord, emit: &mut dyn FnMut(&Statement)) {
        match rec.severity {
            Severity::Log => {}
            Severity::Error | Severity::Fatal | Severity::Panic if !rec.statement.is_empty() => {
                return self.push_error(rec, emit);
            }
            _ => {
                self.stats.other_records += 1;
                return;
            }
        }
        let msg = classify(&rec.message);
        let k = key(rec);
        if let Message::Timed(_, Body::Plan(plan)) | Message::Untimed(Body::Plan(plan)) = msg {
            if self.attach_to_held(k, plan, emit) {
                return;
            }
        }
        self.release_held(k, emit);
        match msg {
            Message::Other => self.stats.other_records += 1,
            Message::Timed(ms, Body::Bare) => {
                let Some(p) = self.pending.get_mut(&k) else {
                    self.stats.unpaired_durations += 1;
                    return;
                };
                let Some(mut st) = p.statement.take() else {
                    self.stats.unpaired_durations += 1;
                    return;
                };
                st.duration_ms = Some(ms);
                Self::attach_plan(&mut self.stats, p, &mut st, emit);
                if st.kind == Kind::Execute && st.plan.is_empty() {
                    p.held = Some(st);
                } else {
                    Self::emit_owned(&mut self.stats, &st, emit);
                    self.cleanup(k);
                }
            }
            Message::Timed(ms, Body::Sql(kind, name, sql)) => {
                self.scratch.fill_from(rec, kind, name, sql, Some(ms));
                Self::correlate_cached(&mut self.last, &mut self.scratch);
                if let Some(p) = self.pending.get_mut(&k) {
                    if let Some(prev) = p.statement.take() {
                        // `log_statement` and `log_min_duration_statement` both on: the timed line supersedes.
                        if prev.query != self.scratch.query {
                            Self::emit_owned(&mut self.stats, &prev, emit);
                        }
                    }
                    Self::attach_plan(&mut self.stats, p, &mut self.scratch, emit);
                    self.cleanup(k);
                }
                if kind == Kind::Execute && self.scratch.plan.is_empty() {
                    self.make_room(emit);
                    let held = std::mem::take(&mut self.scratch);
                    self.pending.entry(k).or_default().held = Some(held);
                } else {
                    Self::emit_owned(&mut self.stats, &self.scratch, emit);
                }
            }
            Message::Untimed(Body::Sql(kind, name, sql)) => {
                let mut st = Statement::default();
                st.fill_from(rec, kind, name, sql, None);
                Self::correlate_cached(&mut self.last, &mut st);
                self.make_room(emit);
                let p = self.pending.entry(k).or_default();
                if let Some(prev) = p.statement.take() {
                    Self::emit_owned(&mut self.stats, &prev, emit);
                }
                for plan in p.plans.drain(..) {
                    Self::emit_owned(&mut self.stats, &plan, emit);
                }
                p.statement = Some(st);
            }
            Message::Timed(_, Body::Plan(plan)) | Message::Untimed(Body::Plan(plan)) => {
                let ms = if let Message::Timed(ms, _) = msg { Some(ms) } else { None };
                let Some((qt, fmt)) = plan_query_text(plan) else {
                    self.stats.other_records += 1;
                    return;
                };
                let mut st = Statement::default();
                st.fill_from(rec, Kind::Statement, "", &qt, ms);
                Self::correlate_cached(&mut self.last, &mut st);
                st.plan.push_str(plan);
                st.plan_format = Some(fmt);
                self.make_room(emit);
                let p = self.pending.entry(k).or_default();
                if let Some(pending) = p.statement.as_mut() {
                    if pending.plan.is_empty() && plan_matches(&st.query, &pending.query) {
                        pending.plan = st.plan;
                        pending.plan_format = st.plan_format;
                        self.stats.plans_attached += 1;
                        return;
                    }
                }
                if p.plans.len() >= MAX_PLANS {
                    let old = p.plans.remove(0);
                    Self::emit_owned(&mut self.stats, &old, emit);
                }
                p.plans.push(st);
            }
            Message::Untimed(Body::Bare) => self.stats.other_records += 1,
        }
    }

    /// Correlates `st`, reusing the previous result when query and application_name repeat.
    fn correlate_cached(last: &mut Option<(String, String, Statement)>, st: &mut Statement) {
        if let Some((q, a, prev)) = last.as_ref() {
            if same_key(q, a, prev, st) {
                st.context.clone_from(&prev.context);
                st.source = prev.source;
                st.tags.clone_from(&prev.tags);
                st.comment_range = prev.comment_range;
                st.carrier = prev.carrier;
                return;
            }
        }
        st.correlate();
        let (mut q, mut a, mut prev) = last.take().unwrap_or_default();
        q.clear();
        q.push_str(&st.query);
        a.clear();
        a.push_str(&st.application_name);
        prev.context.clone_from(&st.context);
        prev.source = st.source;
        prev.tags.clone_from(&st.tags);
        prev.comment_range = st.comment_range;
        prev.carrier = st.carrier;
        prev.parameters.clear();
        prev.parameters.push_str(&st.parameters);
        *last = Some((q, a, prev));
    }

    /// Attaches a plan that follows its `execute` line; true when it did.
    fn attach_to_held(&mut self, k: u64, plan: &str, emit: &mut dyn FnMut(&Statement)) -> bool {
        let Some(p) = self.pending.get_mut(&k) else { return false };
        let Some(held) = p.held.as_mut() else { return false };
        let Some((qt, fmt)) = plan_query_text(plan) else { return false };
        if !plan_matches(&qt, &held.query) {
            return false;
        }
        held.plan.push_str(plan);
        held.plan_format = Some(fmt);
        self.stats.plans_attached += 1;
        if let Some(st) = p.held.take() {
            Self::emit_owned(&mut self.stats, &st, emit);
            self.scratch = st;
        }
        self.cleanup(k);
        true
    }

    /// Emits the backend's held `execute`, if any.
    fn release_held(&mut self, k: u64, emit: &mut dyn FnMut(&Statement)) {
        if let Some(p) = self.pending.get_mut(&k) {
            if let Some(st) = p.held.take() {
                Self::emit_owned(&mut self.stats, &st, emit);
                self.scratch = st;
                self.cleanup(k);
            }
        }
    }

    fn push_error(&mut self, rec: &LogRecord, emit: &mut dyn FnMut(&Statement)) {
        let k = key(rec);
        self.release_held(k, emit);
        if let Some(p) = self.pending.get_mut(&k) {
            if let Some(mut st) = p.statement.take() {
                if st.query == rec.statement {
                    st.fail(rec);
                    Self::emit_owned(&mut self.stats, &st, emit);
                    self.cleanup(k);
                    return;
                }
                p.statement = Some(st);
            }
        }
        let mut st = std::mem::take(&mut self.scratch);
        st.fill_from(rec, Kind::Statement, "", &rec.statement, None);
        Self::correlate_cached(&mut self.last, &mut st);
        st.fail(rec);
        Self::emit_owned(&mut self.stats, &st, emit);
        self.scratch = st;
    }

    fn attach_plan(stats: &mut AssembleStats, p: &mut Pending, st: &mut Statement, emit: &mut dyn FnMut(&Statement)) {
        if p.plans.is_empty() {
            return;
        }
        let pos = p.plans.iter().rposition(|pl| plan_matches(&pl.query, &st.query));
        for (i, plan) in p.plans.drain(..).enumerate() {
            if Some(i) == pos && st.plan.is_empty() {
                st.plan = plan.plan;
                st.plan_format = plan.plan_format;
                stats.plans_attached += 1;
            } else {
                // A nested statement's plan, or a plan whose statement was not logged: on its own.
                Self::emit_owned(stats, &plan, emit);
            }
        }
    }

    fn cleanup(&mut self, k: u64) {
        if self.pending.get(&k).is_some_and(|p| p.statement.is_none() && p.plans.is_empty() && p.held.is_none()) {
            self.pending.remove(&k);
        }
    }

    fn make_room(&mut self, emit: &mut dyn FnMut(&Statement)) {
        if self.pending.len() >= MAX_PENDING {
            self.finish(emit);
        }
    }

    /// Emits auto_explain plans still waiting for their statement line (call when the input is idle).
    pub fn flush_plans(&mut self, emit: &mut dyn FnMut(&Statement)) {
        for p in self.pending.values_mut() {
            if let Some(st) = p.held.take() {
                Self::emit_owned(&mut self.stats, &st, emit);
            }
            for plan in p.plans.drain(..) {
                Self::emit_owned(&mut self.stats, &plan, emit);
            }
        }
        self.pending.retain(|_, p| p.statement.is_some());
    }

    /// Emits everything still pending (end of input).
    pub fn finish(&mut self, emit: &mut dyn FnMut(&Statement)) {
        let mut all: Vec<Statement> = Vec::new();
        for (_, p) in self.pending.drain() {
            all.extend(p.held);
            all.extend(p.plans);
            all.extend(p.statement);
        }
        all.sort_by_key(|s| s.time_us);
        for s in &all {
            Self::emit_owned(&mut self.stats, s, emit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::stderr::StderrParser;
    use crate::parser::RecordParser;
    use crate::prefix::Prefix;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn run(log: &str) -> (Vec<Statement>, AssembleStats) {
        let mut p = StderrParser::new(Prefix::new("%m [%p] %a: ").unwrap(), crate::time::Zones::new());
        let mut a = Assembler::new();
        let mut out = Vec::new();
        for line in log.lines() {
            p.push_line(line.as_bytes(), &mut |r| a.push(r, &mut |s| out.push(s.clone())));
        }
        p.finish(&mut |r| a.push(r, &mut |s| out.push(s.clone())));
        a.finish(&mut |s| out.push(s.clone()));
        (out, a.stats())
    }

    #[test]
    fn log_statement_pairs_with_bare_duration_per_pid() {
        let log = format!(
            "2024-05-01 10:00:00.000 UTC [1] app: LOG:  statement: select 1 /*traceparent='{TP}'*/\n\
             2024-05-01 10:00:00.001 UTC [2] app: LOG:  statement: select 2\n\
             2024-05-01 10:00:00.002 UTC [2] app: LOG:  duration: 2.000 ms\n\
             2024-05-01 10:00:00.003 UTC [1] app: LOG:  duration: 1.000 ms\n\
             2024-05-01 10:00:00.004 UTC [1] app: LOG:  duration: 9.000 ms\n"
        );
        let (out, stats) = run(&log);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].query.as_str(), out[0].duration_ms), ("select 2", Some(2.0)));
        assert_eq!(out[1].duration_ms, Some(1.0));
        assert_eq!(out[1].source, Source::Comment);
        assert_eq!(stats.unpaired_durations, 1);
    }

    #[test]
    fn plans_errors_and_carriers() {
        let log = format!(
            "2024-05-01 10:00:00.000 UTC [1] svc@{TP}: LOG:  duration: 0.050 ms  plan:\n\
             \tQuery Text: select * from t where id = $1\n\
             \tIndex Scan using t_pkey on t  (cost=0.1..8.1 rows=1 width=4)\n\
             2024-05-01 10:00:00.000 UTC [1] svc@{TP}: LOG:  duration: 0.100 ms  execute s1: select * from t where id = $1\n\
             2024-05-01 10:00:00.000 UTC [1] svc@{TP}: DETAIL:  parameters: $1 = '7'\n\
             2024-05-01 10:00:00.100 UTC [1] svc: LOG:  duration: 0.010 ms  execute __sqlc_tc: select set_config('application_name', $1, false)\n\
             2024-05-01 10:00:00.200 UTC [1] svc: ERROR:  division by zero\n\
             2024-05-01 10:00:00.200 UTC [1] svc: STATEMENT:  select 1/0\n"
        );
        let (out, stats) = run(&log);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].kind, Kind::Execute);
        assert_eq!(out[0].name, "s1");
        assert_eq!(out[0].parameters, "$1 = '7'");
        assert_eq!(out[0].source, Source::ApplicationName);
        assert!(out[0].plan.contains("Index Scan"));
        assert!(out[1].carrier);
        assert_eq!(out[2].error.as_ref().map(|e| e.message.as_str()), Some("division by zero"));
        assert_eq!(out[2].query, "select 1/0");
        assert_eq!(stats.plans_attached, 1);
        assert_eq!(stats.carriers, 1);
    }
}
