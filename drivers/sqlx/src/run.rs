//! The statement path every wrapper shares: decide, write the carrier if needed, run the commented query,
//! then record what the application's statement did to settings and transactions.

use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{FutureExt, TryStreamExt};
use sqlcommenter::carrier::{Scope, Want};
use sqlx::postgres::{PgQueryResult, PgRow};
use sqlx::{Either, Execute, Executor, PgConnection, Postgres};

use crate::carrier::{self, CarrierState, Effects};
use crate::config::{Mode, OutsideTransaction, Shared};
use crate::execute::Commented;

/// What one statement needs, decided synchronously when the caller issues it (so the context is the
/// caller's current span, not whatever span polls the future later).
pub(crate) struct Plan {
    query: Commented,
    /// `None` in per-query-comment mode (no carrier).
    pub(crate) want: Option<Want>,
}

pub(crate) fn plan<'q, E: Execute<'q, Postgres>>(shared: &Shared, query: E) -> Plan {
    let ctx = shared.current();
    match shared.mode {
        Mode::SessionCarrier => {
            let want = match &ctx {
                Some(c) => Want::Carry(c.traceparent),
                None => Want::Clean,
            };
            Plan { query: Commented::new(query, shared, None), want: Some(want) }
        }
        Mode::PerQueryComment => Plan { query: Commented::new(query, shared, ctx), want: None },
    }
}

/// Sends the `COMMIT` of a wrapper-opened transaction whose statement was dropped.
pub(crate) async fn settle(conn: &mut PgConnection, state: &mut CarrierState) -> Result<(), sqlx::Error> {
    if state.wrap_open {
        conn.execute("COMMIT").await?;
        state.wrap_open = false;
        state.ended(true);
    }
    Ok(())
}

/// Everything before the statement: returns whether it runs in a transaction the wrapper opened.
async fn before(
    conn: &mut PgConnection,
    state: &mut CarrierState,
    shared: &Shared,
    want: Option<Want>,
    effects: &Effects,
) -> Result<bool, sqlx::Error> {
    settle(conn, state).await?;
    let Some(want) = want else { return Ok(false) };
    if effects.controls_transaction() {
        return Ok(false);
    }
    if state.in_transaction() {
        carrier::ensure(conn, state, want, Scope::Transaction, shared).await?;
        return Ok(false);
    }
    match (shared.outside, want) {
        (OutsideTransaction::Session, want) => {
            carrier::ensure(conn, state, want, Scope::Session, shared).await?;
            Ok(false)
        }
        (OutsideTransaction::WrapInTransaction, Want::Carry(tp))
            if !effects.matter() && !effects.needs_no_transaction_block() =>
        {
            state.began();
            state.wrap_open = true;
            let write = state.plan(Want::Carry(tp), Scope::Transaction);
            let sql = match write {
                Some(action) => format!("BEGIN; {}", shared.write_sql(&action, Scope::Transaction)),
                None => "BEGIN".to_owned(),
            };
            if let Err(e) = conn.execute(sqlx::AssertSqlSafe(sql)).await {
                state.failed(Scope::Transaction);
                return Err(e);
            }
            Ok(true)
        }
        // Nothing session-scoped is written in this mode; a statement that cannot share a transaction
        // (or changes settings itself) runs unwrapped, without the carrier.
        (OutsideTransaction::WrapInTransaction, _) => {
            carrier::ensure(conn, state, Want::Clean, Scope::Session, shared).await?;
            Ok(false)
        }
    }
}

/// Ends a wrapper-opened transaction: `COMMIT` after success (its error is the statement's, as under
/// autocommit), `ROLLBACK` after failure.
async fn end_wrap(conn: &mut PgConnection, state: &mut CarrierState, ok: bool) -> Result<(), sqlx::Error> {
    conn.execute(if ok { "COMMIT" } else { "ROLLBACK" }).await?;
    state.wrap_open = false;
    state.ended(ok);
    Ok(())
}

/// Records the statement's outcome in the carrier state; a dropped statement counts as interrupted.
struct Outcome<'a> {
    state: &'a mut CarrierState,
    effects: Effects,
    target: &'a sqlcommenter::carrier::Target,
    settled: bool,
}

impl Outcome<'_> {
    fn succeeded(&mut self) {
        self.settled = true;
        self.state.succeeded(&self.effects, self.target);
    }

    fn failed(&mut self) {
        self.settled = true;
        self.state.statement_failed(&self.effects);
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.settled && self.effects.matter() {
            self.state.forget();
        }
    }
}

/// Runs `plan` on `conn`, whose carrier is `state`.
pub(crate) fn fetch_many<'e>(
    conn: &'e mut PgConnection,
    state: &'e mut CarrierState,
    shared: Arc<Shared>,
    mut plan: Plan,
) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>> {
    Box::pin(async_stream::try_stream! {
        let effects = std::mem::take(&mut plan.query.effects);
        let wrapped = before(conn, state, &shared, plan.want, &effects).await?;
        let mut outcome = Outcome { state, effects, target: &shared.target, settled: false };
        let mut error = None;
        {
            let mut s = conn.fetch_many(plan.query);
            loop {
                match s.try_next().await {
                    Ok(Some(v)) => yield v,
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
        match error {
            None => outcome.succeeded(),
            Some(_) => outcome.failed(),
        }
        if wrapped {
            let ended = end_wrap(conn, &mut *outcome.state, error.is_none()).await;
            if error.is_none() {
                ended?;
            }
        }
        if let Some(e) = error {
            Err(e)?;
        }
    })
}

/// As [`fetch_many`], for `fetch_optional`.
pub(crate) fn fetch_optional<'e>(
    conn: &'e mut PgConnection,
    state: &'e mut CarrierState,
    shared: Arc<Shared>,
    mut plan: Plan,
) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>> {
    async move {
        let effects = std::mem::take(&mut plan.query.effects);
        let wrapped = before(conn, state, &shared, plan.want, &effects).await?;
        let mut outcome = Outcome { state, effects, target: &shared.target, settled: false };
        let result = conn.fetch_optional(plan.query).await;
        match &result {
            Ok(_) => outcome.succeeded(),
            Err(_) => outcome.failed(),
        }
        if wrapped {
            let ended = end_wrap(conn, &mut *outcome.state, result.is_ok()).await;
            if result.is_ok() {
                ended?;
            }
        }
        result
    }
    .boxed()
}

/// Implements `sqlx::Executor` for `&'c mut $ty` by delegating to [`fetch_many`]/[`fetch_optional`] on the
/// parts returned by `$ty::parts(&mut self) -> (&mut PgConnection, &mut CarrierState, &Arc<Shared>)`.
macro_rules! delegate_executor {
    ([$($gen:tt)*] $ty:ty) => {
        impl<'c, $($gen)*> sqlx::Executor<'c> for &'c mut $ty {
            type Database = sqlx::Postgres;

            fn fetch_many<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> futures_core::stream::BoxStream<
                'e,
                Result<sqlx::Either<sqlx::postgres::PgQueryResult, sqlx::postgres::PgRow>, sqlx::Error>,
            >
            where
                'c: 'e,
                E: 'q + sqlx::Execute<'q, sqlx::Postgres>,
            {
                let (conn, state, shared) = self.parts();
                let shared = shared.clone();
                let plan = $crate::run::plan(&shared, query);
                $crate::run::fetch_many(conn, state, shared, plan)
            }

            fn fetch_optional<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> futures_core::future::BoxFuture<'e, Result<Option<sqlx::postgres::PgRow>, sqlx::Error>>
            where
                'c: 'e,
                E: 'q + sqlx::Execute<'q, sqlx::Postgres>,
            {
                let (conn, state, shared) = self.parts();
                let shared = shared.clone();
                let plan = $crate::run::plan(&shared, query);
                $crate::run::fetch_optional(conn, state, shared, plan)
            }

            fn prepare_with<'e>(
                self,
                sql: sqlx::SqlStr,
                parameters: &'e [sqlx::postgres::PgTypeInfo],
            ) -> futures_core::future::BoxFuture<'e, Result<sqlx::postgres::PgStatement, sqlx::Error>>
            where
                'c: 'e,
            {
                let (conn, _, _) = self.parts();
                conn.prepare_with(sql, parameters)
            }

            fn describe<'e>(
                self,
                sql: sqlx::SqlStr,
            ) -> futures_core::future::BoxFuture<'e, Result<sqlx::Describe<sqlx::Postgres>, sqlx::Error>>
            where
                'c: 'e,
            {
                let (conn, _, _) = self.parts();
                conn.describe(sql)
            }
        }
    };
}

pub(crate) use delegate_executor;
