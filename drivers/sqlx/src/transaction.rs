//! [`TracedTransaction`]: a sqlx transaction whose statements carry the trace context.

use std::fmt;
use std::sync::Arc;

use sqlcommenter::carrier::{Scope, Want};
use sqlcommenter::TraceContext;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, SqlSafeStr, Transaction};

use crate::carrier::CarrierState;
use crate::config::{Mode, Shared};
use crate::run::delegate_executor;

/// The carrier state of the transaction's connection: its own (a pool connection the transaction owns)
/// or the [`crate::TracedConnection`]'s it was begun on.
pub(crate) enum StateRef<'c> {
    Owned(CarrierState),
    Borrowed(&'c mut CarrierState),
}

impl StateRef<'_> {
    fn get(&mut self) -> &mut CarrierState {
        match self {
            StateRef::Owned(s) => s,
            StateRef::Borrowed(s) => s,
        }
    }
}

/// A transaction from [`crate::TracedPool::begin`] or [`crate::TracedConnection::begin`]; `&mut tx` is an
/// `Executor`. The carrier is transaction-scoped (`set_config(…, true)`): the one for the context at
/// `begin` is sent in the same simple Query as the `BEGIN` (no extra round trip), a different context
/// inside the transaction costs one write, and it all ends with the transaction (commit, rollback or
/// drop): nothing for a pooler to replay, nothing left in the session.
///
/// The `COMMIT`/`ROLLBACK` itself is logged by PostgreSQL after the transaction ended, so its duration
/// line shows the connection's own `application_name`, not the context (a `log_statement` line, written
/// before it runs, does show it). Carrying it there would take a session-scoped write, which poolers
/// replay and which must be cleared again: not worth it for a statement that has no query text.
pub struct TracedTransaction<'c> {
    tx: Option<Transaction<'c, Postgres>>,
    state: StateRef<'c>,
    shared: Arc<Shared>,
}

impl fmt::Debug for TracedTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state: &CarrierState = match &self.state {
            StateRef::Owned(s) => s,
            StateRef::Borrowed(s) => s,
        };
        f.debug_struct("TracedTransaction").field("tx", &self.tx).field("carrier", state).finish()
    }
}

impl<'c> TracedTransaction<'c> {
    pub(crate) async fn begin(
        conn: impl Into<sqlx::pool::MaybePoolConnection<'c, Postgres>>,
        mut state: StateRef<'c>,
        ctx: Option<TraceContext>,
        shared: Arc<Shared>,
    ) -> Result<Self, sqlx::Error> {
        let s = state.get();
        s.began();
        let write = match shared.mode {
            Mode::SessionCarrier => {
                let want = ctx.map_or(Want::Clean, |c| Want::Carry(c.traceparent));
                s.plan(want, Scope::Transaction)
            }
            Mode::PerQueryComment => None,
        };
        let statement =
            write.map(|a| AssertSqlSafe(format!("BEGIN; {}", shared.write_sql(&a, Scope::Transaction))).into_sql_str());
        match Transaction::begin(conn, statement).await {
            Ok(tx) => Ok(TracedTransaction { tx: Some(tx), state, shared }),
            Err(e) => {
                let s = state.get();
                s.ended(false);
                s.forget();
                Err(e)
            }
        }
    }

    fn parts(&mut self) -> (&mut PgConnection, &mut CarrierState, &Arc<Shared>) {
        let tx = match self.tx.as_mut() {
            Some(tx) => tx,
            None => unreachable!("the transaction is only taken when it ends"),
        };
        (tx, self.state.get(), &self.shared)
    }

    /// Commits (the carrier ends with the transaction).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let Some(tx) = self.tx.take() else { return Ok(()) };
        let result = tx.commit().await;
        self.state.get().ended(result.is_ok());
        result
    }

    /// Rolls back (the carrier ends with the transaction).
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let Some(tx) = self.tx.take() else { return Ok(()) };
        self.state.get().ended(false);
        tx.rollback().await
    }

    /// The sqlx transaction, for APIs the wrapper does not cover.
    pub fn inner_mut(&mut self) -> &mut Transaction<'c, Postgres> {
        match self.tx.as_mut() {
            Some(tx) => tx,
            None => unreachable!("the transaction is only taken when it ends"),
        }
    }
}

impl Drop for TracedTransaction<'_> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            // sqlx queues the ROLLBACK.
            self.state.get().ended(false);
        }
    }
}

delegate_executor!([] TracedTransaction<'_>);
