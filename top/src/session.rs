//! One client backend as `pg_stat_activity` shows it, with the trace it is working for.

use std::time::Duration;

use sqlcommenter::{carrier, parse_context, Dialect, TraceParent};

/// What `pg_stat_activity.query` holds for other roles' sessions when the viewer lacks
/// `pg_read_all_stats` (granted by `pg_monitor`).
pub const INSUFFICIENT_PRIVILEGE: &str = "<insufficient privilege>";

/// `pg_stat_activity.state`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Running a statement.
    Active,
    /// Waiting for a command.
    Idle,
    /// In a transaction, waiting for a command.
    IdleInTransaction,
    /// In a failed transaction, waiting for a command.
    IdleInTransactionAborted,
    /// Executing a fast-path function.
    FastpathFunctionCall,
    /// `track_activities` is off for this backend.
    Disabled,
    /// A state this version does not know.
    Other(String),
}

impl State {
    /// Reads the server's text.
    pub fn parse(s: &str) -> State {
        match s {
            "active" => State::Active,
            "idle" => State::Idle,
            "idle in transaction" => State::IdleInTransaction,
            "idle in transaction (aborted)" => State::IdleInTransactionAborted,
            "fastpath function call" => State::FastpathFunctionCall,
            "disabled" => State::Disabled,
            other => State::Other(other.to_owned()),
        }
    }

    /// The server's text.
    pub fn as_str(&self) -> &str {
        match self {
            State::Active => "active",
            State::Idle => "idle",
            State::IdleInTransaction => "idle in transaction",
            State::IdleInTransactionAborted => "idle in transaction (aborted)",
            State::FastpathFunctionCall => "fastpath function call",
            State::Disabled => "disabled",
            State::Other(s) => s,
        }
    }

    /// Idle inside a transaction (holding its locks and snapshot while the client does something else).
    pub fn is_idle_in_transaction(&self) -> bool {
        matches!(self, State::IdleInTransaction | State::IdleInTransactionAborted)
    }
}

/// Where a session's trace context was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TraceSource {
    /// The sqlcommenter comment in the current (or last) statement's text.
    Comment,
    /// The `application_name` carrier (`name@traceparent` or a bare traceparent).
    ApplicationName,
}

impl TraceSource {
    /// `comment` or `application_name`, as in the JSON contract.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceSource::Comment => "comment",
            TraceSource::ApplicationName => "application_name",
        }
    }
}

/// A session's trace context and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The W3C traceparent (trace id, the caller's span id, flags).
    pub traceparent: TraceParent,
    /// Where it was read.
    pub source: TraceSource,
}

impl Trace {
    /// The comment in `query` first (it belongs to the very statement), else the carrier in
    /// `application_name` (set for the session, e.g. for named prepared statements).
    pub fn resolve(query: Option<&str>, application_name: Option<&str>) -> Option<Trace> {
        if let Some(ctx) = query.and_then(|q| parse_context(q, Dialect::Postgres)) {
            return Some(Trace { traceparent: ctx.traceparent, source: TraceSource::Comment });
        }
        let (_, tp) = carrier::decode_application_name(application_name?)?;
        Some(Trace { traceparent: tp, source: TraceSource::ApplicationName })
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> String {
        self.traceparent.trace_id_hex()
    }

    /// The 16-hex-digit span id of the caller (the traceparent's parent-id).
    pub fn span_id(&self) -> String {
        self.traceparent.parent_id_hex()
    }
}

/// One client backend in one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Backend process id.
    pub pid: i32,
    /// Role name.
    pub user: Option<String>,
    /// Database name.
    pub database: Option<String>,
    /// `application_name` as the server holds it (carrier included).
    pub application_name: Option<String>,
    /// The client's own name: `application_name` without the carrier.
    pub application: Option<String>,
    /// The trace the session works for, if any.
    pub trace: Option<Trace>,
    /// `None` when the viewer may not see it.
    pub state: Option<State>,
    /// `Lock`, `IO`, `Client`, … (`None` when not waiting).
    pub wait_event_type: Option<String>,
    /// `relation`, `transactionid`, `ClientRead`, …
    pub wait_event: Option<String>,
    /// Time since the transaction started (`None` outside a transaction).
    pub xact_age: Option<Duration>,
    /// Time since the current (or, when idle, the last) statement started.
    pub query_age: Option<Duration>,
    /// The statement text as the server holds it (cut at `track_activity_query_size`).
    pub raw_query: Option<String>,
    /// The statement normalized by the core (comments dropped, literals as `?`).
    pub query: Option<String>,
    /// The statement is a carrier write by a driver or the proxy (`set_config` of the carrier), not the
    /// application's own ([`sqlcommenter::carrier::is_carrier_statement`]).
    pub carrier_statement: bool,
    /// Backends holding what this one waits for (`pg_blocking_pids`, only asked for lock waits).
    pub blocked_by: Vec<i32>,
}

impl Session {
    /// Builds a session from the raw column values, resolving the trace and the normalized query.
    #[allow(clippy::too_many_arguments)]
    pub fn from_columns(
        pid: i32,
        user: Option<String>,
        database: Option<String>,
        application_name: Option<String>,
        state: Option<&str>,
        wait_event_type: Option<String>,
        wait_event: Option<String>,
        xact_age_ms: Option<f64>,
        query_age_ms: Option<f64>,
        raw_query: Option<String>,
        blocked_by: Vec<i32>,
    ) -> Session {
        let trace = Trace::resolve(raw_query.as_deref(), application_name.as_deref());
        let application =
            application_name.as_deref().map(|a| carrier::strip_carrier(a).to_owned()).filter(|a| !a.is_empty());
        let query = raw_query.as_deref().map(|q| {
            if q == INSUFFICIENT_PRIVILEGE {
                q.to_owned()
            } else {
                sqlcommenter::normalize(q, Dialect::Postgres)
            }
        });
        let carrier_statement = raw_query.as_deref().is_some_and(carrier::is_carrier_statement);
        let age = |ms: Option<f64>| ms.filter(|m| m.is_finite()).map(|m| Duration::from_secs_f64(m.max(0.0) / 1000.0));
        Session {
            pid,
            user,
            database,
            application_name,
            application,
            trace,
            state: state.map(State::parse),
            wait_event_type,
            wait_event,
            xact_age: age(xact_age_ms),
            query_age: age(query_age_ms),
            raw_query,
            query,
            carrier_statement,
            blocked_by,
        }
    }

    /// True when the server hid this session's details from the viewer.
    pub fn is_hidden(&self) -> bool {
        self.raw_query.as_deref() == Some(INSUFFICIENT_PRIVILEGE)
    }

    /// True when it waits for a lock another backend holds.
    pub fn is_blocked(&self) -> bool {
        !self.blocked_by.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const B: &str = "00-11111111111111111111111111111111-2222222222222222-01";

    fn session(app: Option<&str>, query: Option<&str>) -> Session {
        Session::from_columns(
            1,
            None,
            None,
            app.map(str::to_owned),
            Some("active"),
            None,
            None,
            Some(1.5),
            None,
            query.map(str::to_owned),
            vec![],
        )
    }

    #[test]
    fn comment_first_then_both_carrier_forms() {
        let q = format!("SELECT * FROM t WHERE id = 42 /*traceparent='{A}'*/");
        let s = session(Some(&format!("svc@{B}")), Some(&q));
        let t = s.trace.unwrap();
        assert_eq!((t.source, t.trace_id().as_str()), (TraceSource::Comment, "0af7651916cd43dd8448eb211c80319c"));
        assert_eq!(t.span_id(), "b7ad6b7169203331");
        assert_eq!(s.application.as_deref(), Some("svc"));
        assert_eq!(s.query.as_deref(), Some("SELECT * FROM t WHERE id = ?"));

        let s = session(Some(&format!("svc@{B}")), Some("SELECT 1"));
        assert_eq!(s.trace.as_ref().map(|t| t.source), Some(TraceSource::ApplicationName));
        let s = session(Some(B), Some("SELECT 1"));
        assert_eq!(s.trace.as_ref().map(Trace::trace_id).as_deref(), Some("11111111111111111111111111111111"));
        assert_eq!(s.application, None, "a bare traceparent leaves no client name");

        // An invalid traceparent in the comment falls back to the carrier; none at all is None.
        let s = session(Some(&format!("svc@{B}")), Some("SELECT 1 /*traceparent='00-zz'*/"));
        assert_eq!(s.trace.map(|t| t.source), Some(TraceSource::ApplicationName));
        assert_eq!(session(Some("psql"), Some("SELECT 1")).trace, None);
        assert_eq!(session(None, None).trace, None);
    }

    #[test]
    fn hidden_sessions_keep_the_marker() {
        let s = session(Some("other"), Some(INSUFFICIENT_PRIVILEGE));
        assert!(s.is_hidden());
        assert_eq!(s.query.as_deref(), Some(INSUFFICIENT_PRIVILEGE));
        assert_eq!(State::parse("idle in transaction"), State::IdleInTransaction);
        assert_eq!(State::parse("weird").as_str(), "weird");
    }

    #[test]
    fn carrier_statements_are_marked() {
        let s = session(Some(&format!("svc@{B}")), Some("SELECT pg_catalog.set_config($1, $2, $3)"));
        assert!(s.carrier_statement);
        assert_eq!(s.trace.map(|t| t.source), Some(TraceSource::ApplicationName));
        assert!(!session(Some("svc"), Some("SELECT set_config('work_mem', '64MB', false)")).carrier_statement);
        assert!(!session(Some("svc"), Some("UPDATE t SET x = 1")).carrier_statement);
    }
}
