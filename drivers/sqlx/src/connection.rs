//! [`TracedConnection`]: a connection (pooled or not) that carries the caller's trace context.

use std::fmt;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Executor, PgConnection, Postgres, Transaction};

use crate::carrier::{self, State};
use crate::config::{Config, Mode, Shared};
use crate::run::delegate_executor;
use crate::stash::Stash;
use crate::transaction::TracedTransaction;
use sqlcommenter::TraceParent;

/// A PostgreSQL connection the wrapper can hold: an owned [`PgConnection`] or a [`PoolConnection`].
pub trait PgConn: Send + fmt::Debug + 'static {
    /// The connection itself.
    fn pg(&mut self) -> &mut PgConnection;

    /// Gives the connection up while it still carries a trace context (`reset` is the statement that
    /// clears it). An owned connection is simply dropped (and closed); a pooled one is reset before it
    /// goes back to the pool, so the next user never sees this request's context.
    fn release_carrying(self, reset: String)
    where
        Self: Sized,
    {
        let _ = reset;
    }
}

impl PgConn for PgConnection {
    fn pg(&mut self) -> &mut PgConnection {
        self
    }
}

impl PgConn for PoolConnection<Postgres> {
    fn pg(&mut self) -> &mut PgConnection {
        self
    }

    fn release_carrying(mut self, reset: String) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if self.execute(AssertSqlSafe(reset)).await.is_err() {
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
/// In [`Mode::SessionCarrier`] it remembers what the session carries and writes the carrier only before a
/// statement whose context differs: one round trip per request, none for further queries of the request.
/// A pooled connection still carrying a context when dropped is reset (in a spawned task) before it goes
/// back to the pool.
pub struct TracedConnection<C: PgConn = PoolConnection<Postgres>> {
    conn: Option<C>,
    state: State,
    shared: Arc<Shared>,
    stash: Option<Arc<Stash>>,
}

impl<C: PgConn> fmt::Debug for TracedConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedConnection").field("conn", &self.conn).field("state", &self.state).finish()
    }
}

impl<C: PgConn> TracedConnection<C> {
    /// Wraps a connection that carries no context yet (fresh, or from a pool of connections only ever
    /// used through this crate's wrappers).
    pub fn new(conn: C, config: &Config) -> Self {
        TracedConnection { conn: Some(conn), state: State::Base, shared: config.shared.clone(), stash: None }
    }

    pub(crate) fn from_pool(
        conn: C,
        shared: Arc<Shared>,
        carried: Option<TraceParent>,
        stash: Option<Arc<Stash>>,
    ) -> Self {
        TracedConnection { conn: Some(conn), state: State::wanted(carried.as_ref()), shared, stash }
    }

    fn pg(&mut self) -> &mut PgConnection {
        match self.conn.as_mut() {
            Some(c) => c.pg(),
            None => unreachable!("the connection is only taken in Drop"),
        }
    }

    fn parts(&mut self) -> (&mut PgConnection, &mut State, bool, &Arc<Shared>) {
        let conn = match self.conn.as_mut() {
            Some(c) => c.pg(),
            None => unreachable!("the connection is only taken in Drop"),
        };
        (conn, &mut self.state, false, &self.shared)
    }

    pub(crate) fn parts_for_pool(&mut self) -> (&mut PgConnection, &mut State, bool, Arc<Shared>) {
        let (conn, state, local, shared) = self.parts();
        let shared = shared.clone();
        (conn, state, local, shared)
    }

    /// The wrapped connection, e.g. for sqlx APIs the wrapper does not cover (COPY, LISTEN). Statements
    /// run through it carry whatever the session carries at that moment.
    pub fn inner_mut(&mut self) -> &mut C {
        match self.conn.as_mut() {
            Some(c) => c,
            None => unreachable!("the connection is only taken in Drop"),
        }
    }

    /// Whether the session currently carries a trace context (or may, after an interrupted carrier write).
    pub fn carries_context(&self) -> bool {
        self.state != State::Base
    }

    /// Clears the session carrier now (one round trip if it is set).
    pub async fn reset_carrier(&mut self) -> Result<(), sqlx::Error> {
        let shared = self.shared.clone();
        let (conn, state, _, _) = self.parts();
        carrier::ensure(conn, state, State::Base, &shared, false).await
    }

    /// Starts a transaction whose statements carry the context. The carrier for the current context is
    /// folded into the `BEGIN` as a `SET LOCAL` (no extra round trip) and ends with the transaction.
    pub async fn begin(&mut self) -> Result<TracedTransaction<'_>, sqlx::Error> {
        let shared = self.shared.clone();
        let ctx = shared.current();
        let session = self.state;
        let conn = self.pg();
        TracedTransaction::begin(conn, session, ctx, shared).await
    }
}

impl<C: PgConn> Drop for TracedConnection<C> {
    fn drop(&mut self) {
        if self.state == State::Base || self.shared.mode != Mode::SessionCarrier {
            return;
        }
        let Some(mut conn) = self.conn.take() else { return };
        let reset = carrier::statement(&self.shared, &State::Base, false);
        if let (State::Set(tp), Some(stash)) = (self.state, &self.stash) {
            // Only connections from a `TracedPool` have a stash, and those are pool connections.
            let any: Box<dyn std::any::Any> = Box::new(conn);
            match any.downcast::<PoolConnection<Postgres>>() {
                Ok(pooled) => {
                    if let Err(pooled) = stash.park(*pooled, tp) {
                        pooled.release_carrying(reset);
                    }
                    return;
                }
                Err(any) => match any.downcast::<C>() {
                    Ok(c) => conn = *c,
                    Err(_) => return,
                },
            }
        }
        conn.release_carrying(reset);
    }
}

delegate_executor!([C: PgConn] TracedConnection<C>);

/// Begins a sqlx transaction, folding `carrier` (a `SET LOCAL`) into the `BEGIN`.
pub(crate) async fn begin_with_carrier<'c>(
    conn: impl Into<sqlx::pool::MaybePoolConnection<'c, Postgres>>,
    carrier: Option<String>,
) -> Result<Transaction<'c, Postgres>, sqlx::Error> {
    use sqlx::SqlSafeStr;
    let statement = carrier.map(|set| AssertSqlSafe(format!("BEGIN; {set}")).into_sql_str());
    Transaction::begin(conn, statement).await
}
