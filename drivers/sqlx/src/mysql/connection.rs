//! [`TracedMySqlConnection`]: a MySQL connection (owned, pooled, or a transaction) whose statements carry
//! the current trace context in their text.

use std::fmt;
use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use sqlx::mysql::{MySqlQueryResult, MySqlRow, MySqlStatement, MySqlTypeInfo};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Describe, Either, Execute, Executor, MySql, MySqlConnection, SqlStr, Transaction};

use super::config::{MySqlConfig, Shared};
use super::execute::{comment, Commented};

/// A MySQL connection the wrapper can hold: an owned [`MySqlConnection`], a [`PoolConnection`], or a
/// [`Transaction`].
pub trait MySqlConn: Send + fmt::Debug {
    /// The connection itself.
    fn mysql(&mut self) -> &mut MySqlConnection;
}

impl MySqlConn for MySqlConnection {
    fn mysql(&mut self) -> &mut MySqlConnection {
        self
    }
}

impl MySqlConn for PoolConnection<MySql> {
    fn mysql(&mut self) -> &mut MySqlConnection {
        self
    }
}

impl MySqlConn for Transaction<'_, MySql> {
    fn mysql(&mut self) -> &mut MySqlConnection {
        self
    }
}

/// A connection whose statements carry the current trace context: a drop-in `sqlx::Executor`
/// (`&mut conn`) for `sqlx::query`, `query_as`, `query_scalar`, `raw_sql`, `query!` output, `execute`,
/// `fetch*`. It keeps no state of its own: each statement's comment is decided when it is issued.
pub struct TracedMySqlConnection<C: MySqlConn = PoolConnection<MySql>> {
    conn: C,
    shared: Arc<Shared>,
}

/// A transaction whose statements (and its `BEGIN`) carry the current trace context.
pub type TracedMySqlTransaction<'c> = TracedMySqlConnection<Transaction<'c, MySql>>;

impl<C: MySqlConn> fmt::Debug for TracedMySqlConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedMySqlConnection").field("conn", &self.conn).finish()
    }
}

impl<C: MySqlConn> TracedMySqlConnection<C> {
    /// Wraps a connection.
    pub fn new(conn: C, config: &MySqlConfig) -> Self {
        TracedMySqlConnection { conn, shared: config.shared.clone() }
    }

    pub(super) fn from_parts(conn: C, shared: Arc<Shared>) -> Self {
        TracedMySqlConnection { conn, shared }
    }

    /// The wrapped connection (statements run through it carry no comment).
    pub fn inner_mut(&mut self) -> &mut C {
        &mut self.conn
    }

    /// Unwraps the connection.
    pub fn into_inner(self) -> C {
        self.conn
    }

    /// Starts a transaction whose `BEGIN` carries the current context (inside a transaction: a
    /// savepoint, with sqlx's own `SAVEPOINT` text).
    pub async fn begin(&mut self) -> Result<TracedMySqlTransaction<'_>, sqlx::Error> {
        let shared = self.shared.clone();
        let conn = self.conn.mysql();
        let tx = if conn.is_in_transaction() {
            conn.begin().await?
        } else {
            let (sql, _) = comment(SqlStr::from_static("BEGIN"), &shared);
            conn.begin_with(sql).await?
        };
        Ok(TracedMySqlConnection { conn: tx, shared })
    }
}

impl<'c> TracedMySqlConnection<Transaction<'c, MySql>> {
    /// Commits (sqlx's `COMMIT`, without a comment).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.conn.commit().await
    }

    /// Rolls back (sqlx's `ROLLBACK`, without a comment). Dropping the transaction rolls back too.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.conn.rollback().await
    }
}

impl<'c, C: MySqlConn> Executor<'c> for &'c mut TracedMySqlConnection<C> {
    type Database = MySql;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<MySqlQueryResult, MySqlRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, MySql>,
    {
        let query = Commented::new(query, &self.shared);
        self.conn.mysql().fetch_many(query)
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<MySqlRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, MySql>,
    {
        let query = Commented::new(query, &self.shared);
        self.conn.mysql().fetch_optional(query)
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [MySqlTypeInfo],
    ) -> BoxFuture<'e, Result<MySqlStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        self.conn.mysql().prepare_with(sql, parameters)
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<MySql>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.conn.mysql().describe(sql)
    }
}
