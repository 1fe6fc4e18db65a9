//! [`TracedConnection`]: a connection (pooled or not) that carries the caller's trace context.

use std::fmt;
use std::sync::Arc;

use sqlcommenter::carrier::{Action, Held, Scope, Want};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Executor, PgConnection, Postgres};

use crate::carrier::{self, CarrierState};
use crate::config::{Config, Mode, Shared};
use crate::run::delegate_executor;
use crate::transaction::{StateRef, TracedTransaction};

/// A PostgreSQL connection the wrapper can hold: an owned [`PgConnection`] or a [`PoolConnection`].
pub trait PgConn: Send + fmt::Debug + 'static {
    /// The connection itself.
    fn pg(&mut self) -> &mut PgConnection;

    /// Whether giving it up returns it for reuse (a pool connection): then a context it still carries
    /// is cleared first.
    fn reused(&self) -> bool;

    /// Gives the connection up after running `cleanup` (a simple-protocol statement) in a task spawned on
    /// the current runtime: a pooled connection then goes back to the pool (or is closed if the cleanup
    /// failed or no runtime is running), an owned one is closed.
    fn release_with(self, cleanup: String)
    where
        Self: Sized;
}

impl PgConn for PgConnection {
    fn pg(&mut self) -> &mut PgConnection {
        self
    }

    fn reused(&self) -> bool {
        false
    }

    fn release_with(mut self, cleanup: String) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if self.execute(AssertSqlSafe(cleanup)).await.is_ok() {
                    let _ = sqlx::Connection::close(self).await;
                }
            });
        }
    }
}

impl PgConn for PoolConnection<Postgres> {
    fn pg(&mut self) -> &mut PgConnection {
        self
    }

    fn reused(&self) -> bool {
        true
    }

    fn release_with(mut self, cleanup: String) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if self.execute(AssertSqlSafe(cleanup)).await.is_err() {
                        // Never return a connection whose carrier may be stale.
                        self.close_on_drop();
                    }
                });
            }
            Err(_) => self.close_on_drop(),
        }
    }
}

/// A connection whose statements carry the current trace context: a drop-in `sqlx::Executor`
/// (`&mut conn`), for `sqlx::query`, `query_as`, `query_scalar`, `query!` output, `execute`, `fetch*`.
///
/// In [`Mode::SessionCarrier`] it knows what the connection carries (the core
/// [`Tracker`](sqlcommenter::carrier::Tracker), fed with what the application's own statements do:
/// `RESET ALL`, `DISCARD ALL`, `SET`, `BEGIN`/`COMMIT`/`ROLLBACK [TO]`) and writes the carrier only before
/// a statement whose context differs: one round trip per request, none for the request's further
/// statements. A pooled connection that may still carry a context when dropped is cleared (in a spawned
/// task) before it goes back, so pooled connections never wait in the pool carrying a context.
pub struct TracedConnection<C: PgConn = PoolConnection<Postgres>> {
    conn: Option<C>,
    state: CarrierState,
    shared: Arc<Shared>,
}

impl<C: PgConn> fmt::Debug for TracedConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedConnection").field("conn", &self.conn).field("carrier", &self.state).finish()
    }
}

impl<C: PgConn> TracedConnection<C> {
    /// Wraps a connection that carries no context yet (fresh, or from a pool of connections only ever
    /// used through this crate's wrappers).
    pub fn new(conn: C, config: &Config) -> Self {
        TracedConnection { conn: Some(conn), state: CarrierState::default(), shared: config.shared.clone() }
    }

    pub(crate) fn from_pool(conn: C, shared: Arc<Shared>, state: CarrierState) -> Self {
        TracedConnection { conn: Some(conn), state, shared }
    }

    /// The connection and its carrier state, for a transaction that takes it over.
    pub(crate) fn into_parts(mut self) -> (C, CarrierState) {
        let state = std::mem::take(&mut self.state);
        match self.conn.take() {
            Some(c) => (c, state),
            None => unreachable!("the connection is only taken in Drop"),
        }
    }

    pub(crate) fn parts(&mut self) -> (&mut PgConnection, &mut CarrierState, &Arc<Shared>) {
        let conn = match self.conn.as_mut() {
            Some(c) => c.pg(),
            None => unreachable!("the connection is only taken in Drop"),
        };
        (conn, &mut self.state, &self.shared)
    }

    /// The wrapped connection, e.g. for sqlx APIs the wrapper does not cover (COPY, LISTEN). Statements
    /// run through it carry whatever the connection carries at that moment, and the wrapper does not see
    /// them: after changing settings through it, call [`TracedConnection::forget_carrier`].
    pub fn inner_mut(&mut self) -> &mut C {
        match self.conn.as_mut() {
            Some(c) => c,
            None => unreachable!("the connection is only taken in Drop"),
        }
    }

    /// Makes the wrapper rewrite the carrier before the next statement (after settings were changed
    /// through [`TracedConnection::inner_mut`]).
    pub fn forget_carrier(&mut self) {
        self.state.forget();
    }

    /// Whether the session may carry a trace context now (it does, or may after an interrupted write).
    pub fn carries_context(&self) -> bool {
        self.state.held() != Held::Base
    }

    /// Clears the carrier now (one round trip if it may be set).
    pub async fn reset_carrier(&mut self) -> Result<(), sqlx::Error> {
        let (conn, state, shared) = self.parts();
        let shared = shared.clone();
        crate::run::settle(conn, state).await?;
        let scope = if state.in_transaction() { Scope::Transaction } else { Scope::Session };
        carrier::ensure(conn, state, Want::Clean, scope, &shared).await
    }

    /// Starts a transaction whose statements carry the context. The carrier for the current context is
    /// folded into the `BEGIN` as a transaction-scoped `set_config` (no extra round trip) and ends with the
    /// transaction.
    pub async fn begin(&mut self) -> Result<TracedTransaction<'_>, sqlx::Error> {
        let (conn, state, shared) = self.parts();
        let shared = shared.clone();
        let ctx = shared.current();
        crate::run::settle(conn, state).await?;
        TracedTransaction::begin(conn, StateRef::Borrowed(state), ctx, shared).await
    }
}

impl<C: PgConn> Drop for TracedConnection<C> {
    fn drop(&mut self) {
        let mut cleanup = Vec::new();
        if self.state.wrap_open {
            cleanup.push("COMMIT".to_owned());
            self.state.wrap_open = false;
            self.state.ended(true);
        }
        let Some(conn) = self.conn.take() else { return };
        let clear = self.shared.mode == Mode::SessionCarrier && conn.reused() && self.state.held() != Held::Base;
        if clear {
            cleanup.push(self.shared.write_sql(&Action::Clear, Scope::Session));
        }
        if !cleanup.is_empty() {
            conn.release_with(cleanup.join("; "));
        }
    }
}

delegate_executor!([C: PgConn] TracedConnection<C>);
