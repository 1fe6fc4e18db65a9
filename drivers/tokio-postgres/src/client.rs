//! [`Client`]: a tokio-postgres client that carries the caller's trace context to PostgreSQL.

use std::sync::Arc;

use bytes::Buf;
use tokio_postgres::types::{BorrowToSql, ToSql, Type};
use tokio_postgres::{
    CancelToken, Client as PgClient, CopyInSink, CopyOutStream, Error, Row, RowStream, SimpleQueryMessage, Statement,
};

use crate::config::Config;
use crate::core::{Call, Core};
use crate::methods::query_methods;
use crate::state::ConnState;
use crate::statement::ToStatement;
use crate::transaction::Transaction;

/// Something that owns or derefs to a `tokio_postgres::Client`: the client itself, or a
/// deadpool-postgres `ClientWrapper` / pooled `Object` (feature `deadpool`).
pub trait PgHandle: Send + Sync {
    /// The client.
    fn pg(&self) -> &PgClient;
    /// The client, mutably (transactions).
    fn pg_mut(&mut self) -> &mut PgClient;
    /// deadpool-postgres's statement cache of this connection, if any.
    #[cfg(feature = "deadpool")]
    fn statement_cache(&self) -> Option<&Arc<deadpool_postgres::StatementCache>> {
        None
    }
}

impl PgHandle for PgClient {
    fn pg(&self) -> &PgClient {
        self
    }
    fn pg_mut(&mut self) -> &mut PgClient {
        self
    }
}

/// A wrapped `tokio_postgres::Client` with the same query methods. Every call resolves the current trace
/// context (by default the current `tracing` span) and makes sure the server sees it:
/// in [`crate::Mode::SessionCarrier`] through the session carrier, set only when the connection's context
/// changes and pipelined in front of the query; in [`crate::Mode::PerQueryComment`] text queries carry it
/// in a comment.
///
/// Share it between tasks like a plain client (`Arc<Client>`): requests from different tasks are
/// ordered so that each runs under its own task's context.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use sqlcommenter_tokio_postgres::{Client, Config};
///
/// let (pg, conn) = tokio_postgres::connect("host=localhost user=postgres", tokio_postgres::NoTls).await?;
/// tokio::spawn(conn);
/// let client = Client::new(pg, &Config::builder().application_name("shop").build()?);
/// let stmt = client.prepare("SELECT $1::int + 1").await?;
/// let row = client.query_one(&stmt, &[&41i32]).await?;
/// assert_eq!(row.get::<_, i32>(0), 42);
/// # Ok(()) }
/// ```
pub struct Client<C: PgHandle = PgClient> {
    inner: C,
    core: Core,
}

impl<C: PgHandle> std::fmt::Debug for Client<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("carrier", &self.core.conn.held()).finish_non_exhaustive()
    }
}

impl<C: PgHandle> Client<C> {
    /// Wraps a client whose connection has not been given a traceparent by anyone else.
    pub fn new(inner: C, config: &Config) -> Self {
        Client { inner, core: Core::new(config.inner.clone(), Arc::new(ConnState::default())) }
    }

    #[cfg(feature = "deadpool")]
    pub(crate) fn with_state(inner: C, config: &Config, conn: Arc<ConnState>) -> Self {
        Client { inner, core: Core::new(config.inner.clone(), conn) }
    }

    /// The wrapped client. Queries made on it directly bypass the carrier ordering: while the wrapper is
    /// in use, they may run under another request's context.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// Unwraps the client. Its connection may still hold the last traceparent in its carrier.
    pub fn into_inner(self) -> C {
        self.inner
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.pg().is_closed()
    }

    /// Number of SQL texts whose parameter types are cached (per-query-comment mode).
    pub fn param_type_cache_len(&self) -> usize {
        self.core.conn.type_cache_len()
    }

    /// Forgets what the carrier holds, so the next statement writes it. Call this after changing
    /// `application_name` (or the carrier setting), or ending a transaction, with a prepared statement the
    /// wrapper cannot see.
    pub fn reset_carrier_state(&self) {
        self.core.conn.forget();
    }

    /// Like `tokio_postgres::Client::transaction`: a wrapped [`Transaction`] (rolled back on drop).
    pub async fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
        let call = self.core.call(false);
        self.core.before_begin(self.inner.pg(), call.want()).await;
        #[cfg(feature = "deadpool")]
        let cache = self.inner.statement_cache().cloned();
        let txn = self.inner.pg_mut().transaction().await?;
        self.core.began();
        Ok(Transaction::new(
            txn,
            self.core.clone(),
            None,
            #[cfg(feature = "deadpool")]
            cache,
        ))
    }

    /// Like `tokio_postgres::Client::build_transaction`: isolation level, read-only, deferrable.
    pub fn build_transaction(&mut self) -> TransactionBuilder<'_, C> {
        TransactionBuilder { client: self, isolation: None, read_only: None, deferrable: None }
    }

    fn pg(&self) -> &PgClient {
        self.inner.pg()
    }

    fn core(&self) -> &Core {
        &self.core
    }

    fn call(&self) -> Call {
        self.core.call(false)
    }

    fn observe<T>(&self, _: &Result<T, Error>) {}

    query_methods!();
}

/// Builds a wrapped [`Transaction`] with settings, like `tokio_postgres::TransactionBuilder`.
pub struct TransactionBuilder<'a, C: PgHandle> {
    client: &'a mut Client<C>,
    isolation: Option<tokio_postgres::IsolationLevel>,
    read_only: Option<bool>,
    deferrable: Option<bool>,
}

impl<'a, C: PgHandle> TransactionBuilder<'a, C> {
    /// Sets the isolation level.
    pub fn isolation_level(mut self, level: tokio_postgres::IsolationLevel) -> Self {
        self.isolation = Some(level);
        self
    }

    /// Sets the access mode.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = Some(read_only);
        self
    }

    /// Sets deferrability (serializable read-only transactions).
    pub fn deferrable(mut self, deferrable: bool) -> Self {
        self.deferrable = Some(deferrable);
        self
    }

    /// Begins the transaction.
    pub async fn start(self) -> Result<Transaction<'a>, Error> {
        let client = self.client;
        let call = client.core.call(false);
        client.core.before_begin(client.inner.pg(), call.want()).await;
        #[cfg(feature = "deadpool")]
        let cache = client.inner.statement_cache().cloned();
        let mut builder = client.inner.pg_mut().build_transaction();
        if let Some(level) = self.isolation {
            builder = builder.isolation_level(level);
        }
        if let Some(ro) = self.read_only {
            builder = builder.read_only(ro);
        }
        if let Some(d) = self.deferrable {
            builder = builder.deferrable(d);
        }
        let txn = builder.start().await?;
        client.core.began();
        Ok(Transaction::new(
            txn,
            client.core.clone(),
            None,
            #[cfg(feature = "deadpool")]
            cache,
        ))
    }
}

#[cfg(feature = "deadpool")]
impl<C: PgHandle> Client<C> {
    /// Like deadpool-postgres's `prepare_cached`: keyed by the text with the static tags, which is the
    /// same for every request, so the cache holds one statement per query as without the wrapper.
    /// Without a statement cache (a plain client) this prepares a new statement.
    pub async fn prepare_cached(&self, query: &str) -> Result<Statement, Error> {
        self.prepare_typed_cached(query, &[]).await
    }

    /// Like deadpool-postgres's `prepare_typed_cached`.
    pub async fn prepare_typed_cached(&self, query: &str, types: &[Type]) -> Result<Statement, Error> {
        let call = self.call();
        match self.inner.statement_cache() {
            Some(cache) => self.core.prepare_cached(self.pg(), cache, &call, query, types).await,
            None => self.core.prepare(self.pg(), &call, query, types).await,
        }
    }
}
