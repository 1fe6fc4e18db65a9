//! [`TracedPool`]: a `PgPool` whose connections and transactions carry the trace context.

use std::fmt;
use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{FutureExt, TryStreamExt};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, PgPool, Postgres, SqlStr};

use crate::carrier::State;
use crate::config::{Config, Shared};
use crate::connection::TracedConnection;
use crate::stash::Stash;
use crate::transaction::TracedTransaction;

/// Wraps a [`PgPool`]. `&pool` is an `Executor` (each statement takes a connection, like `&PgPool`);
/// [`TracedPool::acquire`] gives a [`TracedConnection`] for a request's several statements (the carrier is
/// then written once for all of them); [`TracedPool::begin`] gives a [`TracedTransaction`].
///
/// Use the pool only through wrappers of this crate (or reset connections yourself): a connection is
/// reset before it returns to the pool, so other users never see a stale context.
#[derive(Clone)]
pub struct TracedPool {
    pool: PgPool,
    shared: Arc<Shared>,
    stash: Option<Arc<Stash>>,
}

impl fmt::Debug for TracedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedPool").field("pool", &self.pool).field("mode", &self.shared.mode).finish()
    }
}

impl TracedPool {
    /// Wraps `pool`. The pool's `application_name` (if set) is kept in front of the traceparent unless
    /// the configuration names one.
    pub fn new(pool: PgPool, config: &Config) -> Self {
        let opts = pool.connect_options();
        let config = config.with_default_base_name(opts.get_application_name());
        let stash = config
            .shared
            .sticky
            .map(|idle| Stash::new(idle, crate::carrier::statement(&config.shared, &State::Base, false)));
        TracedPool { pool, shared: config.shared, stash }
    }

    /// The wrapped pool.
    pub fn inner(&self) -> &PgPool {
        &self.pool
    }

    /// A connection for several statements of one request.
    pub async fn acquire(&self) -> Result<TracedConnection<PoolConnection<Postgres>>, sqlx::Error> {
        if let Some((conn, tp)) = self.stash.as_ref().and_then(|s| s.take()) {
            return Ok(TracedConnection::from_pool(conn, self.shared.clone(), Some(tp), self.stash.clone()));
        }
        let conn = self.pool.acquire().await?;
        Ok(TracedConnection::from_pool(conn, self.shared.clone(), None, self.stash.clone()))
    }

    /// Begins a transaction; the current context rides on the `BEGIN` (no extra round trip). Always on a
    /// connection from the pool that carries nothing (the `SET LOCAL` ends with the transaction).
    pub async fn begin(&self) -> Result<TracedTransaction<'static>, sqlx::Error> {
        let shared = self.shared.clone();
        let ctx = shared.current();
        let conn = self.pool.acquire().await?;
        TracedTransaction::begin(conn, State::Base, ctx, shared).await
    }
}

impl<'p> Executor<'p> for &'_ TracedPool {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        // The plan (and so the context) is taken now, in the caller's span.
        let plan = crate::run::plan(&pool.shared, query);
        Box::pin(async_stream::try_stream! {
            let mut conn = pool.acquire().await?;
            let (pg, state, local, shared) = conn.parts_for_pool();
            let mut s = crate::run::fetch_many(pg, state, local, shared, plan);
            while let Some(v) = s.try_next().await? {
                yield v;
            }
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        let plan = crate::run::plan(&pool.shared, query);
        async move {
            let mut conn = pool.acquire().await?;
            let (pg, state, local, shared) = conn.parts_for_pool();
            crate::run::fetch_optional(pg, state, local, shared, plan).await
        }
        .boxed()
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.describe(sql)
    }
}
