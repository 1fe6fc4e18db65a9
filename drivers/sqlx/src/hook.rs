//! [`PoolHooks`]: the application keeps its own [`sqlx::PgPool`]; the pool's checkout hooks write the
//! checking-out request's context into the carrier.
//!
//! sqlx runs `before_acquire` (an idle connection) and `after_connect` (a new one) inside
//! `pool.acquire()`, in the acquiring task: the current span is the request's. So every way a connection
//! leaves the pool through `acquire` — `&PgPool` as an `Executor`, `pool.acquire()`, `pool.begin()`,
//! `Acquire` for `&PgPool`, `sqlx::migrate!().run(&pool)`, SeaORM and any library holding the pool — hands
//! out a connection whose carrier holds that request's traceparent (or nothing), with no change at the
//! call sites.
//!
//! The hooks keep no per-connection state (sqlx gives a hook the bare `PgConnection`, with no identity to
//! key a [`Tracker`](sqlcommenter::carrier::Tracker) by): every checkout writes what it needs, and the
//! pool's idle connections are kept in a known state by [`CarrierReset`].

use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_util::FutureExt;
use sqlcommenter::carrier::{Action, Scope};
use sqlcommenter::TraceParent;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, PgPool};

use crate::config::{Config, Shared};

tokio::task_local! {
    /// Set while [`PoolHooks::connect`] opens the pool's first connections: they go to the idle queue
    /// without a checkout (and without `after_release`), so they must not carry the creating task's context.
    static WARMING_UP: ();
}

/// How a pool's idle connections are kept from showing (or lending) a past request's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CarrierReset {
    /// Default. `after_release` clears the carrier of every returned connection (one statement in sqlx's
    /// release task, before its own release ping; a failed clear closes the connection). Idle connections
    /// never carry a context: `pg_stat_activity` shows none, and a `Pool::try_acquire` (which runs no
    /// hook) gets a clean connection. An untraced checkout writes nothing. Costs one round trip per
    /// checkout in the release task, also for untraced checkouts (sqlx gives the hook no way to know
    /// what the checkout did).
    #[default]
    OnRelease,
    /// Every checkout of an idle connection overwrites the carrier: the request's traceparent, or a clear
    /// for an untraced checkout. Nothing at release. With `test_before_acquire` on (sqlx's default) the
    /// write replaces the ping, so the hooked pool sends exactly as many statements as the plain pool.
    /// The price: idle connections keep showing the last request's traceparent (`pg_stat_activity`,
    /// disconnection log lines), and `Pool::try_acquire` (no hook) hands out a connection that may carry
    /// the previous checkout's context.
    OnAcquire,
}

/// The checkout hooks that make a plain [`PgPool`] carry each request's context (see the crate docs,
/// "A plain `PgPool`").
///
/// ```no_run
/// use sqlcommenter_sqlx::{Config, PoolHooks};
/// use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let connect: PgConnectOptions = "postgres://localhost/app?application_name=checkout".parse()?;
/// let config = Config::builder().build()?;
/// let pool: sqlx::PgPool =
///     PoolHooks::new(&config, &connect).connect(PgPoolOptions::new().max_connections(8), connect).await?;
/// // Everything on `pool` now carries the current span's traceparent, per checkout.
/// sqlx::query("SELECT 1").execute(&pool).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PoolHooks {
    shared: Arc<Shared>,
    reset: CarrierReset,
    ping: bool,
}

impl PoolHooks {
    /// Hooks for a pool connecting with `connect`; a clear writes back its `application_name` (unless the
    /// configuration names one with [`crate::ConfigBuilder::base_application_name`]). Only the context
    /// source, sampling and carrier [`crate::Target`] of `config` apply: a hook cannot change statement
    /// texts, so static tags and [`crate::Mode::PerQueryComment`] need the wrapper types.
    pub fn new(config: &Config, connect: &PgConnectOptions) -> Self {
        let config = config.with_default_base_name(connect.get_application_name());
        PoolHooks { shared: config.shared, reset: CarrierReset::default(), ping: true }
    }

    /// How idle connections are kept clean (default [`CarrierReset::OnRelease`]).
    #[must_use]
    pub fn reset(mut self, reset: CarrierReset) -> Self {
        self.reset = reset;
        self
    }

    /// Installs the hooks on `options`, replacing any `after_connect`, `before_acquire` and `after_release`
    /// set there (call [`PoolHooks::before_acquire`] and the others from your own hooks to combine them).
    /// `test_before_acquire` is turned off and done by the hook instead: a checkout that writes the carrier
    /// needs no ping (the write is a round trip that proves the connection alive).
    ///
    /// Open the pool with [`PoolHooks::connect`], `connect_lazy_with`, or outside any traced span: sqlx's
    /// `connect_with` opens `min_connections` connections in the calling task and puts them in the pool
    /// without a checkout, so inside a span they would carry it.
    pub fn install(&self, options: PgPoolOptions) -> PgPoolOptions {
        let mut hooks = self.clone();
        hooks.ping = options.get_test_before_acquire();
        let (connect, acquire, release) = (hooks.clone(), hooks.clone(), hooks.clone());
        let options = options
            .test_before_acquire(false)
            .after_connect(move |conn, _meta| connect.after_connect(conn))
            .before_acquire(move |conn, _meta| acquire.before_acquire(conn));
        match hooks.reset {
            CarrierReset::OnRelease => options.after_release(move |conn, _meta| release.after_release(conn)),
            CarrierReset::OnAcquire => options,
        }
    }

    /// [`PoolHooks::install`] on `options`, then opens the pool; the connections it opens up front
    /// (`min_connections`) carry nothing, whatever span this runs in.
    pub async fn connect(&self, options: PgPoolOptions, connect: PgConnectOptions) -> Result<PgPool, sqlx::Error> {
        WARMING_UP.scope((), self.install(options).connect_with(connect)).await
    }

    /// The context the acquiring task's checkout should carry now.
    fn current(&self) -> Option<TraceParent> {
        if WARMING_UP.try_with(|_| ()).is_ok() {
            return None;
        }
        self.shared.current().map(|c| c.traceparent)
    }

    fn write(&self, action: Action) -> String {
        self.shared.write_sql(&action, Scope::Session)
    }

    /// The `before_acquire` hook (an idle connection leaves the pool): writes the acquiring task's
    /// traceparent session-scoped; an untraced checkout clears the carrier ([`CarrierReset::OnAcquire`])
    /// or only pings (when `test_before_acquire` was on). Always `Ok(true)` unless the connection failed.
    pub fn before_acquire<'c>(&self, conn: &'c mut PgConnection) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        // Decided now, synchronously inside the acquiring task's poll.
        let sql = match (self.current(), self.reset) {
            (Some(tp), _) => Some(self.write(Action::Set(tp))),
            (None, CarrierReset::OnAcquire) => Some(self.write(Action::Clear)),
            (None, CarrierReset::OnRelease) => None,
        };
        let ping = self.ping;
        async move {
            match sql {
                Some(sql) => {
                    conn.execute(AssertSqlSafe(sql)).await?;
                }
                None if ping => conn.ping().await?,
                None => {}
            }
            Ok(true)
        }
        .boxed()
    }

    /// The `after_connect` hook (a new connection, which carries nothing yet): writes the acquiring task's
    /// traceparent, if any. sqlx also opens connections in its own maintenance tasks, outside any span:
    /// those stay clean.
    pub fn after_connect<'c>(&self, conn: &'c mut PgConnection) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        let sql = self.current().map(|tp| self.write(Action::Set(tp)));
        async move {
            if let Some(sql) = sql {
                conn.execute(AssertSqlSafe(sql)).await?;
            }
            Ok(())
        }
        .boxed()
    }

    /// The `after_release` hook ([`CarrierReset::OnRelease`]): clears the carrier of a returned connection.
    /// An error closes the connection instead of returning it.
    pub fn after_release<'c>(&self, conn: &'c mut PgConnection) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        let sql = self.write(Action::Clear);
        async move {
            conn.execute(AssertSqlSafe(sql)).await?;
            Ok(true)
        }
        .boxed()
    }
}
