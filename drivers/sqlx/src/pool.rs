//! [`TracedPool`]: a `PgPool` whose connections and transactions carry the trace context.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{FutureExt, TryStreamExt};
use sqlcommenter::carrier::{Action, Scope, Want};
use sqlcommenter::TraceParent;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{AssertSqlSafe, Describe, Either, Execute, Executor, PgPool, Postgres, SqlStr};

use crate::carrier::CarrierState;
use crate::config::{Config, Mode, OutsideTransaction, Shared};
use crate::connection::{Release, TracedConnection};
use crate::transaction::{StateRef, TracedTransaction};

tokio::task_local! {
    /// What the wrapper's checkout in this task wants the connection to carry, and what the pool's
    /// `before_acquire` hook wrote (`Some(None)`: cleared).
    static CHECKOUT: Checkout;
}

struct Checkout {
    want: Option<TraceParent>,
    wrote: Cell<Option<Option<TraceParent>>>,
}

/// Wraps a [`PgPool`]. `&pool` is an `Executor` (each statement takes a connection, like `&PgPool`);
/// [`TracedPool::acquire`] gives a [`TracedConnection`] for a request's several statements (the carrier is
/// then written once for all of them); [`TracedPool::begin`] gives a [`TracedTransaction`].
///
/// Two ways to build one, differing in who clears a session-scoped carrier before a connection is reused:
/// - [`TracedPool::connect_with`] (recommended) installs a `before_acquire` hook that writes every
///   checked-out connection's carrier (the wrapper's context, or cleared for anyone else) in place of the
///   pool's liveness ping (`test_before_acquire`): the write is the ping, so a traced request costs no
///   round trip more than plain sqlx, and raw pool users never see a context. Idle connections may keep
///   the last context until their next checkout.
/// - [`TracedPool::new`] wraps an existing pool: a connection that may carry a context is cleared in a
///   spawned task when the wrapper gives it back (one round trip after the request). Use that pool only
///   through this crate's wrappers (or clear connections yourself).
#[derive(Clone)]
pub struct TracedPool {
    pool: PgPool,
    shared: Arc<Shared>,
    release: Release,
}

impl fmt::Debug for TracedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedPool")
            .field("pool", &self.pool)
            .field("mode", &self.shared.mode)
            .field("release", &self.release)
            .finish()
    }
}

impl TracedPool {
    /// Wraps `pool`; connections carrying a context are cleared when the wrapper gives them back. The
    /// pool's `application_name` (if set) is the connections' own name unless the configuration names one.
    pub fn new(pool: PgPool, config: &Config) -> Self {
        let opts = pool.connect_options();
        let config = config.with_default_base_name(opts.get_application_name());
        TracedPool { pool, shared: config.shared, release: Release::Clear }
    }

    /// Opens a pool with `options` whose checkouts write the carrier (see [`TracedPool`]). It installs its
    /// own `before_acquire` hook (replacing one set on `options`) and runs the carrier write in place of
    /// `test_before_acquire`'s ping; with `test_before_acquire(false)` the write still runs on every
    /// checkout. Without a session-scoped carrier ([`Mode::PerQueryComment`],
    /// [`OutsideTransaction::WrapInTransaction`]) `options` are used unchanged.
    pub async fn connect_with(
        options: PgPoolOptions,
        connect: PgConnectOptions,
        config: &Config,
    ) -> Result<Self, sqlx::Error> {
        let config = config.with_default_base_name(connect.get_application_name());
        let shared = config.shared;
        let hooked = shared.mode == Mode::SessionCarrier && shared.outside == OutsideTransaction::Session;
        if !hooked {
            let pool = options.connect_with(connect).await?;
            return Ok(TracedPool { pool, shared, release: Release::Clear });
        }
        let hook_shared = shared.clone();
        let options = options.test_before_acquire(false).before_acquire(move |conn, _meta| {
            let want = CHECKOUT
                .try_with(|c| {
                    c.wrote.set(None);
                    c.want
                })
                .ok()
                .flatten();
            let action = want.map_or(Action::Clear, Action::Set);
            let sql = hook_shared.write_sql(&action, Scope::Session);
            Box::pin(async move {
                conn.execute(AssertSqlSafe(sql)).await?;
                let _ = CHECKOUT.try_with(|c| c.wrote.set(Some(want)));
                Ok(true)
            })
        });
        let pool = options.connect_with(connect).await?;
        Ok(TracedPool { pool, shared, release: Release::Checkout })
    }

    /// [`TracedPool::connect_with`] with default pool options and `url`.
    pub async fn connect(url: &str, config: &Config) -> Result<Self, sqlx::Error> {
        Self::connect_with(PgPoolOptions::new(), url.parse()?, config).await
    }

    /// The wrapped pool.
    pub fn inner(&self) -> &PgPool {
        &self.pool
    }

    /// A connection whose carrier the checkout left holding `want`'s traceparent (or nothing).
    async fn checkout(&self, want: Want) -> Result<TracedConnection<PoolConnection<Postgres>>, sqlx::Error> {
        let want = match want {
            Want::Carry(tp) => Some(tp),
            _ => None,
        };
        let checkout = Checkout { want, wrote: Cell::new(None) };
        let pool = self.pool.clone();
        let (conn, wrote) = CHECKOUT
            .scope(checkout, async move {
                let conn = pool.acquire().await;
                (conn, CHECKOUT.with(|c| c.wrote.get()))
            })
            .await;
        // No hook ran: a new connection, or a pool whose connections are cleared on release.
        let state = CarrierState::holding(wrote.flatten());
        Ok(TracedConnection::from_pool(conn?, self.shared.clone(), state, self.release))
    }

    /// A connection for several statements of one request; with [`TracedPool::connect_with`] the current
    /// context is written by the checkout itself.
    pub async fn acquire(&self) -> Result<TracedConnection<PoolConnection<Postgres>>, sqlx::Error> {
        let want = self.shared.current().map_or(Want::Clean, |c| Want::Carry(c.traceparent));
        self.checkout(want).await
    }

    /// Begins a transaction; the current context rides on the `BEGIN` (no extra round trip), scoped to
    /// the transaction.
    pub async fn begin(&self) -> Result<TracedTransaction<'static>, sqlx::Error> {
        let shared = self.shared.clone();
        let ctx = shared.current();
        let (pooled, state) = self.checkout(Want::Clean).await?.into_parts();
        TracedTransaction::begin(pooled, StateRef::Owned(state), ctx, shared).await
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
            let mut conn = pool.checkout(plan.want.unwrap_or(Want::Clean)).await?;
            let (pg, state, shared) = conn.parts();
            let mut s = crate::run::fetch_many(pg, state, shared.clone(), plan);
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
            let mut conn = pool.checkout(plan.want.unwrap_or(Want::Clean)).await?;
            let (pg, state, shared) = conn.parts();
            crate::run::fetch_optional(pg, state, shared.clone(), plan).await
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
