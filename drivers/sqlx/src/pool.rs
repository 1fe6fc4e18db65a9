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
use crate::connection::TracedConnection;
use crate::transaction::{StateRef, TracedTransaction};

tokio::task_local! {
    /// What the wrapper's checkout in this task wants the connection to carry, and what the pool's
    /// `before_acquire` hook wrote.
    static CHECKOUT: Checkout;
}

struct Checkout {
    want: Option<TraceParent>,
    wrote: Cell<Option<TraceParent>>,
}

/// Wraps a [`PgPool`]. `&pool` is an `Executor` (each statement takes a connection, like `&PgPool`);
/// [`TracedPool::acquire`] gives a [`TracedConnection`] for a request's several statements (the carrier is
/// then written once for all of them); [`TracedPool::begin`] gives a [`TracedTransaction`].
///
/// Connections wait in the pool carrying nothing: one that may carry a context is cleared in a spawned
/// task when the wrapper gives it back (one round trip after the request, off its critical path). Use the
/// pool only through this crate's wrappers (or clear connections yourself).
///
/// [`TracedPool::connect_with`] (recommended) also installs a `before_acquire` hook: a traced checkout
/// writes the request's context in place of the pool's liveness ping (`test_before_acquire`), so the
/// carrier costs no round trip before the request's first statement; [`TracedPool::new`] wraps an
/// existing pool, and the first statement writes it.
#[derive(Clone)]
pub struct TracedPool {
    pool: PgPool,
    shared: Arc<Shared>,
}

impl fmt::Debug for TracedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedPool").field("pool", &self.pool).field("mode", &self.shared.mode).finish()
    }
}

impl TracedPool {
    /// Wraps `pool`. The pool's `application_name` (if set) is the connections' own name unless the
    /// configuration names one.
    pub fn new(pool: PgPool, config: &Config) -> Self {
        let opts = pool.connect_options();
        let config = config.with_default_base_name(opts.get_application_name());
        TracedPool { pool, shared: config.shared }
    }

    /// Opens a pool with `options` whose traced checkouts write the carrier (see [`TracedPool`]). It
    /// installs its own `before_acquire` hook (replacing one set on `options`), which pings (when
    /// `test_before_acquire` was on) or writes the checking-out request's context instead. Without a
    /// session-scoped carrier ([`Mode::PerQueryComment`], [`OutsideTransaction::WrapInTransaction`])
    /// `options` are used unchanged.
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
            return Ok(TracedPool { pool, shared });
        }
        let hook_shared = shared.clone();
        let ping = options.get_test_before_acquire();
        let options = options.test_before_acquire(false).before_acquire(move |conn, _meta| {
            let want = CHECKOUT
                .try_with(|c| {
                    c.wrote.set(None);
                    c.want
                })
                .ok()
                .flatten();
            let write = want.map(|tp| (tp, hook_shared.write_sql(&Action::Set(tp), Scope::Session)));
            Box::pin(async move {
                match write {
                    Some((tp, sql)) => {
                        conn.execute(AssertSqlSafe(sql)).await?;
                        let _ = CHECKOUT.try_with(|c| c.wrote.set(Some(tp)));
                    }
                    None if ping => sqlx::Connection::ping(conn).await?,
                    None => {}
                }
                Ok(true)
            })
        });
        let pool = options.connect_with(connect).await?;
        Ok(TracedPool { pool, shared })
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
        // Pooled connections carry nothing unless the hook just wrote this checkout's context.
        let state = CarrierState::holding(wrote);
        Ok(TracedConnection::from_pool(conn?, self.shared.clone(), state))
    }

    /// A connection for several statements of one request; with [`TracedPool::connect_with`] the current
    /// context is written by the checkout itself, in place of its ping.
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
