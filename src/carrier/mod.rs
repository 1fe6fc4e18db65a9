//! The session carrier: how a per-execution traceparent reaches PostgreSQL outside the statement text, for
//! statements whose text must stay fixed (named prepared statements, statement caches). This module is
//! the carrier's one home; the drivers, the proxy, the log tool and `top` use it and keep no copies.
//!
//! - [`value`]: what the target variable holds ([`Target`], [`AppNameFormat`]) and how it is read back.
//! - [`statement`]: the one statement that writes it, `SELECT pg_catalog.set_config($1, $2, $3)` — one
//!   fixed text, so `pg_stat_statements` keeps one entry however many traces pass (PostgreSQL ≤ 17 keys
//!   utility statements such as `SET … TO '…'` by their text: one entry per trace) — and the recogniser
//!   that tells carrier statements from the application's in logs; the proxy's form also returns
//!   `pg_backend_pid()`, which tells it whether the server session is its own.
//! - [`effect`]: what a client's own statement does to the carrier (`SET`, `RESET`, `SET LOCAL`,
//!   `ROLLBACK`, `ROLLBACK TO`, `DISCARD ALL`, `RESET ALL`, `set_config`), read with the core lexer; and
//!   which statements cannot run inside a transaction block.
//! - [`state`]: a sans-I/O [`Tracker`] of what the server holds and what the next statement needs.
//!
//! ## Scope: the transaction wherever it can be
//! A carrier written with `is_local = true` ([`Scope::Transaction`]) inside the statement's own transaction
//! (an explicit one, or the implicit transaction of an extended-protocol batch up to its Sync) ends with
//! it: a pooler (PgBouncer, pgdog) sees no `application_name` change to replay — PostgreSQL ≥ 14 reports
//! changed settings only at ReadyForQuery, by then the value has reverted — and nothing is left for the
//! next user of a pooled connection. [`Scope::Session`] is kept for paths where the client API puts a Sync
//! after every statement outside a transaction; those paths clear it before the connection is reused.
//! Which server log line still sees a transaction-scoped value: an Execute's `duration`/`execute` line is
//! written before the Sync (sees it); a simple Query's duration line after its implicit commit (does not:
//! simple queries carry their context in a comment); `COMMIT` is logged after the transaction ended.

pub mod effect;
pub mod state;
pub mod statement;
pub mod value;

pub use effect::{may_have_effect, statements, stores_text, Effect};
pub use state::{Action, Held, Tracker, Want};
pub use statement::{is_carrier_statement, Write, SET_CONFIG_PID_SQL, SET_CONFIG_SQL};
pub use value::{
    decode_application_name, decode_pg_tracing, encode_application_name, encode_pg_tracing, is_valid_guc_name,
    strip_carrier, AppNameFormat, APPLICATION_NAME_MAX, APPLICATION_NAME_SEPARATOR, DEFAULT_GUC, PG_TRACING_GUC,
};

use crate::traceparent::TraceParent;

/// How long a carrier value lasts on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Until the end of the current transaction (`set_config(…, true)`): the default wherever the statement
    /// runs inside a transaction the carrier can share.
    Transaction,
    /// Until changed (`set_config(…, false)`): must be cleared before the connection serves someone else.
    Session,
}

impl Scope {
    /// The `is_local` argument of `set_config`.
    pub fn is_local(self) -> bool {
        self == Scope::Transaction
    }
}

/// The session variable that carries the traceparent, and the format of its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `application_name`: reaches `%a` in `log_line_prefix`, csvlog/jsonlog and `pg_stat_activity`.
    ApplicationName(AppNameFormat),
    /// A custom setting (validated with [`is_valid_guc_name`]) holding the bare traceparent.
    Guc(String),
    /// `pg_tracing.trace_context` in pg_tracing's `traceparent='…'` format.
    PgTracing,
}

impl Default for Target {
    fn default() -> Self {
        Target::ApplicationName(AppNameFormat::Bare)
    }
}

/// A carrier configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The custom setting name is not a two-part lowercase name PostgreSQL accepts as a placeholder.
    #[error("invalid carrier setting name {0:?}: expected lowercase dot-separated parts, like {DEFAULT_GUC}")]
    GucName(String),
    /// An unknown carrier name.
    #[error("unknown carrier {0:?} (expected application_name, application_name:named, guc, pg_tracing)")]
    Unknown(String),
}

impl Target {
    /// A custom-setting target, checked.
    pub fn guc(name: &str) -> Result<Target, TargetError> {
        if is_valid_guc_name(name) {
            Ok(Target::Guc(name.to_owned()))
        } else {
            Err(TargetError::GucName(name.to_owned()))
        }
    }

    /// Parses a configuration word: `application_name` (bare traceparent), `application_name:named`,
    /// `guc` (the setting `guc_name`) or `pg_tracing`.
    pub fn parse(s: &str, guc_name: &str) -> Result<Target, TargetError> {
        match s {
            "application_name" => Ok(Target::ApplicationName(AppNameFormat::Bare)),
            "application_name:named" => Ok(Target::ApplicationName(AppNameFormat::Named)),
            "guc" => Target::guc(guc_name),
            "pg_tracing" => Ok(Target::PgTracing),
            other => Err(TargetError::Unknown(other.to_owned())),
        }
    }

    /// The setting's name, as passed to `set_config`.
    pub fn variable(&self) -> &str {
        match self {
            Target::ApplicationName(_) => "application_name",
            Target::Guc(name) => name,
            Target::PgTracing => PG_TRACING_GUC,
        }
    }

    /// The value that carries `tp`; `base` is the client's own `application_name` (kept in the
    /// [`AppNameFormat::Named`] form).
    pub fn value(&self, base: &str, tp: &TraceParent) -> String {
        match self {
            Target::ApplicationName(AppNameFormat::Bare) => tp.to_string(),
            Target::ApplicationName(AppNameFormat::Named) => encode_application_name(base, tp),
            Target::Guc(_) => tp.to_string(),
            Target::PgTracing => encode_pg_tracing(tp),
        }
    }

    /// The value that carries nothing: the client's own name for `application_name`, else empty.
    pub fn cleared(&self, base: &str) -> String {
        match self {
            Target::ApplicationName(_) => strip_carrier(base).to_owned(),
            Target::Guc(_) | Target::PgTracing => String::new(),
        }
    }

    /// Reads a value of this target's variable back (either `application_name` form).
    pub fn read(&self, value: &str) -> Option<TraceParent> {
        match self {
            Target::ApplicationName(_) => decode_application_name(value).map(|(_, tp)| tp),
            Target::Guc(_) => TraceParent::parse(value.trim()).ok(),
            Target::PgTracing => decode_pg_tracing(value),
        }
    }

    /// The statement that moves this carrier to `action` in `scope`.
    pub fn write(&self, action: &Action, scope: Scope, base: &str) -> Write<'_> {
        let value = match action {
            Action::Set(tp) => self.value(base, tp),
            Action::Clear => self.cleared(base),
        };
        Write { variable: self.variable(), value, scope }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn targets() {
        let tp = TraceParent::parse(TP).unwrap();
        let bare = Target::default();
        assert_eq!(bare.value("checkout", &tp), TP);
        assert_eq!(bare.cleared("checkout"), "checkout");
        assert_eq!(bare.read(TP), Some(tp));
        assert_eq!(bare.read(&format!("checkou@{TP}")), Some(tp));
        let named = Target::parse("application_name:named", DEFAULT_GUC).unwrap();
        assert_eq!(named.value("checkout", &tp), format!("checkou@{TP}"));
        let guc = Target::parse("guc", DEFAULT_GUC).unwrap();
        assert_eq!(guc.variable(), DEFAULT_GUC);
        assert_eq!(guc.value("x", &tp), TP);
        assert_eq!(guc.cleared("x"), "");
        assert_eq!(guc.read(TP), Some(tp));
        assert_eq!(Target::parse("guc", "nodot"), Err(TargetError::GucName("nodot".into())));
        assert!(matches!(Target::parse("nope", DEFAULT_GUC), Err(TargetError::Unknown(_))));
        let pgt = Target::PgTracing;
        assert_eq!(pgt.read(&pgt.value("", &tp)), Some(tp));
        let w = bare.write(&Action::Set(tp), Scope::Transaction, "app");
        assert_eq!(w.params(), ["application_name", TP, "true"]);
    }
}
