//! deadpool-postgres integration: a [`Pool`] wrapper whose `get()` yields a wrapped client.

use std::sync::{Arc, Mutex, Weak};

use deadpool_postgres::{ClientWrapper, Object, PoolError, StatementCache};
use tokio_postgres::Client as PgClient;

use crate::client::{Client, PgHandle};
use crate::config::Config;
use crate::state::ConnState;

impl PgHandle for ClientWrapper {
    fn pg(&self) -> &PgClient {
        self
    }
    fn pg_mut(&mut self) -> &mut PgClient {
        self
    }
    fn statement_cache(&self) -> Option<&Arc<StatementCache>> {
        Some(&self.statement_cache)
    }
}

impl PgHandle for Object {
    fn pg(&self) -> &PgClient {
        self
    }
    fn pg_mut(&mut self) -> &mut PgClient {
        self
    }
    fn statement_cache(&self) -> Option<&Arc<StatementCache>> {
        Some(&self.statement_cache)
    }
}

/// A pooled connection, wrapped. Returned to the pool on drop.
pub type PooledClient = Client<Object>;

/// Wraps a `deadpool_postgres::Pool`: the one line to change in an application.
///
/// Each server connection keeps its carrier state (the core [`sqlcommenter::carrier::Tracker`]) across
/// checkouts, keyed by the connection's statement cache, which lives exactly as long as the connection.
/// A connection checked out again never reports the previous request's context: a session-scoped
/// traceparent left in its carrier ([`crate::CarrierScope::Session`]) is treated as stale and the first
/// statement of the next checkout overwrites it (or clears it, if that request carries no context),
/// pipelined with that statement. This also covers deadpool's `RecyclingMethod::Clean`, whose `RESET ALL`
/// resets `application_name` behind the wrapper's back. Transaction-scoped carriers (inside transactions,
/// and everywhere with [`crate::CarrierScope::Transaction`]) leave nothing to clear.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use sqlcommenter_tokio_postgres::{Config, Pool};
///
/// let mut cfg = deadpool_postgres::Config::new();
/// cfg.url = Some("postgres://postgres@localhost/postgres".into());
/// let pool = cfg.create_pool(Some(deadpool_postgres::Runtime::Tokio1), tokio_postgres::NoTls)?;
/// let pool = Pool::new(pool, Config::builder().application_name("shop").build()?);
///
/// let client = pool.get().await?;
/// let stmt = client.prepare_cached("SELECT 1").await?;
/// client.query(&stmt, &[]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: deadpool_postgres::Pool,
    config: Config,
    conns: Arc<Mutex<Vec<ConnEntry>>>,
}

/// A live connection's statement cache (its identity) and its carrier state.
type ConnEntry = (Weak<StatementCache>, Arc<ConnState>);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Pool {
    /// Wraps `pool`.
    pub fn new(pool: deadpool_postgres::Pool, config: Config) -> Self {
        Pool { inner: pool, config, conns: Arc::new(Mutex::new(Vec::new())) }
    }

    /// The wrapped pool.
    pub fn get_ref(&self) -> &deadpool_postgres::Pool {
        &self.inner
    }

    /// Checks out a connection, wrapped.
    pub async fn get(&self) -> Result<PooledClient, PoolError> {
        let obj = self.inner.get().await?;
        let state = self.state_for(&obj.statement_cache);
        state.checkout();
        Ok(Client::with_state(obj, &self.config, state))
    }

    fn state_for(&self, cache: &Arc<StatementCache>) -> Arc<ConnState> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, state)) = conns.iter().find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(cache))) {
            return state.clone();
        }
        // A new connection: drop entries of connections that are gone (their address may be reused).
        conns.retain(|(w, _)| w.strong_count() > 0);
        let state = Arc::new(ConnState::default());
        conns.push((Arc::downgrade(cache), state.clone()));
        state
    }
}
