//! [`TracedTransaction`]: a sqlx transaction whose statements carry the trace context.

use std::fmt;
use std::sync::Arc;

use sqlcommenter::TraceContext;
use sqlx::{PgConnection, Postgres, Transaction};

use crate::carrier::{self, State};
use crate::config::{Mode, Shared};
use crate::connection::begin_with_carrier;
use crate::run::delegate_executor;

/// A transaction from [`crate::TracedPool::begin`] or [`crate::TracedConnection::begin`]; `&mut tx` is an
/// `Executor`. The carrier is a `SET LOCAL`: the one for the context at `begin` is sent with the `BEGIN`
/// itself, a different context inside the transaction costs one `SET LOCAL`, and it all ends with the
/// transaction (commit, rollback or drop), so nothing leaks into the session afterwards.
pub struct TracedTransaction<'c> {
    tx: Transaction<'c, Postgres>,
    state: State,
    shared: Arc<Shared>,
}

impl fmt::Debug for TracedTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedTransaction").field("tx", &self.tx).field("state", &self.state).finish()
    }
}

impl<'c> TracedTransaction<'c> {
    /// `session`: what the session carries before the transaction.
    pub(crate) async fn begin(
        conn: impl Into<sqlx::pool::MaybePoolConnection<'c, Postgres>>,
        session: State,
        ctx: Option<TraceContext>,
        shared: Arc<Shared>,
    ) -> Result<Self, sqlx::Error> {
        let (set, state) = match shared.mode {
            Mode::SessionCarrier => {
                let wanted = State::wanted(ctx.as_ref().map(|c| &c.traceparent));
                if wanted == session {
                    (None, session)
                } else {
                    (Some(carrier::statement(&shared, &wanted, true)), wanted)
                }
            }
            Mode::PerQueryComment => (None, session),
        };
        let tx = begin_with_carrier(conn, set).await?;
        Ok(TracedTransaction { tx, state, shared })
    }

    fn parts(&mut self) -> (&mut PgConnection, &mut State, bool, &Arc<Shared>) {
        (&mut self.tx, &mut self.state, true, &self.shared)
    }

    /// Commits (the carrier ends with the transaction).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls back (the carrier ends with the transaction).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }

    /// The sqlx transaction, for APIs the wrapper does not cover.
    pub fn inner_mut(&mut self) -> &mut Transaction<'c, Postgres> {
        &mut self.tx
    }
}

delegate_executor!([] TracedTransaction<'_>);
