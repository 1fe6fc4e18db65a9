//! What one connection's carrier holds (the core [`Tracker`]) and the writes this crate sends.
//!
//! Every write is the core carrier statement as one simple-protocol Query with literals
//! ([`sqlcommenter::carrier::Write::literal_sql`], `SELECT pg_catalog.set_config(E'…', E'…', bool)`):
//! one round trip, like the prepared [`sqlcommenter::carrier::SET_CONFIG_SQL`] once it is cached, but it
//! never enters sqlx's statement cache nor `pg_prepared_statements`, PgBouncer has no prepared statement
//! to track for it, and it can be folded into a transaction's `BEGIN`. `pg_stat_statements` normalizes its
//! constants: one entry for every value and both scopes.

use sqlcommenter::carrier::{statements, Action, Effect, Held, Scope, Target, Tracker, Want};
use sqlcommenter::TraceParent;
use sqlx::{AssertSqlSafe, Executor, PgConnection};

use crate::config::Shared;

/// A connection's carrier: the core tracker plus whether the current transaction has failed (the server
/// refuses every statement but `ROLLBACK` until it ends, so the carrier is not written then).
#[derive(Debug, Clone, Default)]
pub(crate) struct CarrierState {
    tracker: Tracker,
    aborted: bool,
    /// A transaction the wrapper opened around one statement
    /// ([`crate::OutsideTransaction::WrapInTransaction`]) whose `COMMIT` is still to be sent (its statement
    /// future or stream was dropped): sent before anything else runs on the connection.
    pub(crate) wrap_open: bool,
    /// The connection's own `application_name`, read before its first write when the configuration does
    /// not say it (an owned connection).
    base: Option<String>,
}

impl CarrierState {
    /// A connection whose carrier is known to hold `held` (`Base` or a traceparent) at session level.
    pub(crate) fn holding(held: Option<TraceParent>) -> Self {
        let mut tracker = Tracker::new();
        if let Some(tp) = held {
            tracker.plan(Want::Carry(tp), Scope::Session);
        }
        CarrierState { tracker, aborted: false, wrap_open: false, base: None }
    }

    pub(crate) fn held(&self) -> Held {
        self.tracker.held()
    }

    pub(crate) fn in_transaction(&self) -> bool {
        self.tracker.in_transaction()
    }

    /// The session value must be rewritten before it is relied on (the connection was used outside the
    /// wrapper).
    pub(crate) fn forget(&mut self) {
        self.tracker.forget();
    }

    /// What a statement of the application needs: `want` unless the transaction failed.
    fn want(&self, want: Want) -> Want {
        if self.aborted {
            Want::Any
        } else {
            want
        }
    }

    /// A transaction started with `BEGIN`.
    pub(crate) fn began(&mut self) {
        self.tracker.observe(&Effect::Begin, &Target::default());
        self.aborted = false;
    }

    /// The transaction ended (`committed`: a `COMMIT` that succeeded).
    pub(crate) fn ended(&mut self, committed: bool) {
        self.tracker.transaction_ended(committed);
        self.aborted = false;
    }

    /// Plans the write `want` needs in `scope` (recorded as sent; report failure with [`Self::failed`]).
    pub(crate) fn plan(&mut self, want: Want, scope: Scope) -> Option<Action> {
        let want = self.want(want);
        self.tracker.plan(want, scope)
    }

    pub(crate) fn failed(&mut self, scope: Scope) {
        self.tracker.failed(scope);
    }

    /// The application's statement succeeded: what it did to the settings.
    pub(crate) fn succeeded(&mut self, effects: &Effects, target: &Target) {
        for e in &effects.0 {
            self.tracker.observe(e, target);
        }
        if effects.0.iter().any(|e| matches!(e, Effect::Commit | Effect::Rollback | Effect::RollbackToSavepoint)) {
            self.aborted = false;
        }
    }

    /// The application's statement failed or was dropped before the end.
    pub(crate) fn statement_failed(&mut self, effects: &Effects) {
        if self.in_transaction() {
            self.aborted = true;
        }
        if effects.matter() {
            // Part of it may have run (a multi-statement Query, a dropped stream): unknown.
            self.tracker.forget();
            self.aborted = false;
        }
    }
}

/// What an application statement does to settings and transactions, read with the core lexer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Effects(Vec<Effect<'static>>);

/// Bytes a statement must contain (any case) for [`statements`] to find anything a carrier cares about
/// (settings, transaction control, statements refused in a transaction block); texts without any of them
/// skip the lexer.
const KEYWORDS: [&[u8]; 16] = [
    b"set",
    b"begin",
    b"start",
    b"commit",
    b"end",
    b"rollback",
    b"abort",
    b"discard",
    b"vacuum",
    b"concurrently",
    b"database",
    b"tablespace",
    b"subscription",
    b"system",
    b"cluster",
    b"prepared",
];

impl Effects {
    pub(crate) fn of(sql: &str) -> Self {
        let bytes = sql.as_bytes();
        let found = |kw: &[u8]| bytes.windows(kw.len()).any(|w| w.eq_ignore_ascii_case(kw));
        if !KEYWORDS.iter().any(|kw| found(kw)) {
            return Effects::default();
        }
        let effects = statements(sql)
            .into_iter()
            .filter(|e| !matches!(e, Effect::Other))
            .map(|e| match e {
                Effect::Set { variable, value, scope, computed } => Effect::Set {
                    variable: variable.into_owned().into(),
                    value: value.map(|v| v.into_owned().into()),
                    scope,
                    computed,
                },
                Effect::Begin => Effect::Begin,
                Effect::Commit => Effect::Commit,
                Effect::Rollback => Effect::Rollback,
                Effect::RollbackToSavepoint => Effect::RollbackToSavepoint,
                Effect::ResetAll => Effect::ResetAll,
                Effect::UnknownSettings => Effect::UnknownSettings,
                Effect::NoTransactionBlock => Effect::NoTransactionBlock,
                Effect::Other => Effect::Other,
            })
            .collect();
        Effects(effects)
    }

    /// Whether the statement may change settings or the transaction state.
    pub(crate) fn matter(&self) -> bool {
        self.0.iter().any(|e| !matches!(e, Effect::NoTransactionBlock))
    }

    /// Transaction control (`BEGIN`, `COMMIT`, `ROLLBACK`, `ROLLBACK TO`): no carrier write goes before it
    /// (it would fail in an aborted transaction, and a `COMMIT` is logged after the transaction ended).
    pub(crate) fn controls_transaction(&self) -> bool {
        self.0
            .iter()
            .any(|e| matches!(e, Effect::Begin | Effect::Commit | Effect::Rollback | Effect::RollbackToSavepoint))
    }

    /// A statement PostgreSQL refuses inside a transaction block.
    pub(crate) fn needs_no_transaction_block(&self) -> bool {
        self.0.iter().any(|e| matches!(e, Effect::NoTransactionBlock))
    }
}

/// Sends the write `want` needs in `scope`, if any, keeping `state` truthful when it fails or the future
/// is dropped half-way.
pub(crate) async fn ensure(
    conn: &mut PgConnection,
    state: &mut CarrierState,
    want: Want,
    scope: Scope,
    shared: &Shared,
) -> Result<(), sqlx::Error> {
    if shared.needs_base() && state.base.is_none() && state.held() == Held::Base && want != Want::Any {
        // Still its own value: read it once, so a clear can write it back.
        let row = conn.fetch_one(sqlx::raw_sql("SELECT pg_catalog.current_setting('application_name')")).await?;
        state.base = Some(sqlx::Row::try_get::<String, _>(&row, 0)?);
    }
    let Some(action) = state.plan(want, scope) else { return Ok(()) };
    let sql = shared.write_sql_for(&action, scope, state.base.as_deref());
    let guard = Pending { state, scope, done: false };
    conn.execute(AssertSqlSafe(sql)).await?;
    guard.confirm();
    Ok(())
}

/// Marks a planned write as failed unless confirmed (error or dropped future).
struct Pending<'a> {
    state: &'a mut CarrierState,
    scope: Scope,
    done: bool,
}

impl Pending<'_> {
    fn confirm(mut self) {
        self.done = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.state.failed(self.scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use sqlcommenter::carrier::AppNameFormat;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn writes_are_the_core_statement() {
        let tp = TraceParent::parse(TP).unwrap();
        let cfg = Config::builder().base_application_name("o'k\\").build().unwrap();
        assert_eq!(
            cfg.shared.write_sql(&Action::Set(tp), Scope::Session),
            format!("SELECT pg_catalog.set_config(E'application_name', E'{TP}', false)")
        );
        assert_eq!(
            cfg.shared.write_sql(&Action::Clear, Scope::Session),
            "SELECT pg_catalog.set_config(E'application_name', E'o''k\\\\', false)"
        );
        let named = Config::builder()
            .base_application_name("svc")
            .carrier(Target::ApplicationName(AppNameFormat::Named))
            .build()
            .unwrap();
        assert_eq!(
            named.shared.write_sql(&Action::Set(tp), Scope::Transaction),
            format!("SELECT pg_catalog.set_config(E'application_name', E'svc@{TP}', true)")
        );
        for sql in [
            cfg.shared.write_sql(&Action::Set(tp), Scope::Session),
            named.shared.write_sql(&Action::Set(tp), Scope::Transaction),
        ] {
            assert!(sqlcommenter::carrier::is_carrier_statement(&sql), "{sql}");
        }
        let unknown = Config::default();
        assert_eq!(
            unknown.shared.write_sql(&Action::Clear, Scope::Session),
            "SELECT pg_catalog.set_config(name, reset_val, false) FROM pg_catalog.pg_settings \
             WHERE name = 'application_name'"
        );
        // The core recogniser knows the literal form's clear too (its exact `pg_catalog.set_config(E'…'` shape),
        // while the application's own `set_config('application_name', 'svc', false)` stays the application's.
        assert!(sqlcommenter::carrier::is_carrier_statement(&cfg.shared.write_sql(&Action::Clear, Scope::Session)));
    }

    #[test]
    fn effects_skip_the_lexer_only_when_nothing_can_matter() {
        assert!(!Effects::of("SELECT id, v FROM kv WHERE id = $1").matter());
        assert!(Effects::of("reset all").matter());
        assert!(Effects::of("SELECT 1; DISCARD ALL").matter());
        assert!(!Effects::of("SELECT 'RESET ALL' AS x, offset_ FROM t").matter());
        assert!(Effects::of("ROLLBACK TO SAVEPOINT a").controls_transaction());
        assert!(Effects::of("VACUUM t").needs_no_transaction_block());
        assert!(!Effects::of("VACUUM t").matter());
    }

    #[test]
    fn reset_all_forgets_the_carrier() {
        let tp = TraceParent::parse(TP).unwrap();
        let mut s = CarrierState::default();
        assert_eq!(s.plan(Want::Carry(tp), Scope::Session), Some(Action::Set(tp)));
        s.succeeded(&Effects::of("RESET ALL"), &Target::default());
        assert_eq!(s.plan(Want::Carry(tp), Scope::Session), Some(Action::Set(tp)));
        // in a failed transaction nothing is written until it ends
        s.began();
        s.statement_failed(&Effects::of("SELECT 1/0"));
        assert_eq!(s.plan(Want::Clean, Scope::Transaction), None);
        s.succeeded(&Effects::of("ROLLBACK"), &Target::default());
        assert_eq!(s.held(), Held::Carrying(tp));
    }
}
