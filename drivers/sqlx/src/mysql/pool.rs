//! [`TracedMySqlPool`]: a `MySqlPool` whose statements carry the trace context in their text.

use std::fmt;
use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use sqlx::mysql::{MySqlPoolOptions, MySqlQueryResult, MySqlRow, MySqlStatement, MySqlTypeInfo};
use sqlx::pool::PoolConnection;
use sqlx::{Describe, Either, Execute, Executor, MySql, MySqlPool, SqlStr};

use super::config::{MySqlConfig, Shared};
use super::connection::{TracedMySqlConnection, TracedMySqlTransaction};
use super::execute::{comment, Commented};

/// Wraps a [`MySqlPool`]. `&pool` is an `Executor` (each statement takes a connection, like
/// `&MySqlPool`); [`TracedMySqlPool::acquire`] gives a [`TracedMySqlConnection`];
/// [`TracedMySqlPool::begin`] a [`TracedMySqlTransaction`]. Nothing is written to the session, so the
/// pool can be shared with code that uses it directly.
///
/// With sqlx 0.9.0, connect over the server's Unix socket: over TCP each traced statement with arguments
/// waits ~40 ms for a delayed ACK (see [the module docs](crate::mysql)).
#[derive(Clone)]
pub struct TracedMySqlPool {
    pool: MySqlPool,
    shared: Arc<Shared>,
}

impl fmt::Debug for TracedMySqlPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedMySqlPool").field("pool", &self.pool).finish()
    }
}

impl TracedMySqlPool {
    /// Wraps `pool`.
    pub fn new(pool: MySqlPool, config: &MySqlConfig) -> Self {
        TracedMySqlPool { pool, shared: config.shared.clone() }
    }

    /// Opens a pool on `url` with default options.
    pub async fn connect(url: &str, config: &MySqlConfig) -> Result<Self, sqlx::Error> {
        Ok(Self::new(MySqlPoolOptions::new().connect(url).await?, config))
    }

    /// The wrapped pool (statements run through it carry no comment).
    pub fn inner(&self) -> &MySqlPool {
        &self.pool
    }

    /// A connection for several statements.
    pub async fn acquire(&self) -> Result<TracedMySqlConnection<PoolConnection<MySql>>, sqlx::Error> {
        Ok(TracedMySqlConnection::from_parts(self.pool.acquire().await?, self.shared.clone()))
    }

    /// Begins a transaction; its `BEGIN` carries the current context.
    pub async fn begin(&self) -> Result<TracedMySqlTransaction<'static>, sqlx::Error> {
        let (sql, _) = comment(SqlStr::from_static("BEGIN"), &self.shared);
        Ok(TracedMySqlConnection::from_parts(self.pool.begin_with(sql).await?, self.shared.clone()))
    }
}

impl<'p> Executor<'p> for &'_ TracedMySqlPool {
    type Database = MySql;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<MySqlQueryResult, MySqlRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, MySql>,
    {
        // The comment (and so the context) is taken now, in the caller's span.
        let query = Commented::new(query, &self.shared);
        self.pool.fetch_many(query)
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<MySqlRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, MySql>,
    {
        let query = Commented::new(query, &self.shared);
        self.pool.fetch_optional(query)
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [MySqlTypeInfo],
    ) -> BoxFuture<'e, Result<MySqlStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<MySql>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.describe(sql)
    }
}
