//! [`Tagged`]: fixed tags appended to every statement SeaORM runs through it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult, IsolationLevel,
    QueryResult, Statement, TransactionError, TransactionOptions, TransactionSession, TransactionTrait,
};
use sqlcommenter::Commenter;

/// The `db_driver` tag value [`Tags`] adds.
pub const DB_DRIVER: &str = "sea-orm:2";

/// A bad tag set (empty, reserved or duplicate key), reported by [`Tags::new`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid static tag: {0}")]
pub struct TagsError(#[from] sqlcommenter::ConfigError);

/// Fixed tags for statement texts: `db_driver='sea-orm:2'` plus yours (`application`, `framework`, …).
/// Values must be few and fixed: each distinct text is one more entry in the statement caches.
#[derive(Clone)]
pub struct Tags {
    commenter: Arc<Commenter>,
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tags").field("pairs", &self.commenter.static_pairs()).finish()
    }
}

impl Tags {
    /// `db_driver='sea-orm:2'` and `tags`.
    pub fn new<K: Into<String>, V: Into<String>>(tags: impl IntoIterator<Item = (K, V)>) -> Result<Self, TagsError> {
        let mut b = Commenter::builder().sampled_only(false).tag("db_driver", DB_DRIVER);
        for (k, v) in tags {
            b = b.tag(k, v);
        }
        Ok(Tags { commenter: Arc::new(b.build()?) })
    }

    fn apply(&self, mut stmt: Statement) -> Statement {
        if let std::borrow::Cow::Owned(sql) = self.commenter.inject(&stmt.sql, None).into_cow() {
            stmt.sql = sql;
        }
        stmt
    }

    fn apply_str<'a>(&self, sql: &'a str) -> std::borrow::Cow<'a, str> {
        self.commenter.inject(sql, None).into_cow()
    }
}

/// A SeaORM connection or transaction whose statements carry fixed tags in their text: use `&Tagged<_>`
/// wherever SeaORM takes a `&impl ConnectionTrait` (`Entity::find().all(&db)`, `model.insert(&db)`, …)
/// or a `TransactionTrait` (`db.begin()`, `db.transaction(…)` give `Tagged<DatabaseTransaction>`).
///
/// ```no_run
/// # async fn demo(db: sea_orm::DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
/// use sea_orm::ConnectionTrait;
/// use sqlcommenter_sea_orm::{Tagged, Tags};
/// let db = Tagged::new(db, Tags::new([("application", "checkout")])?);
/// db.execute_unprepared("SELECT 1").await?; // SELECT 1 /*application='checkout',db_driver='sea-orm%3A2'*/
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Tagged<C> {
    inner: C,
    tags: Tags,
}

impl<C> Tagged<C> {
    /// Wraps `inner`.
    pub fn new(inner: C, tags: Tags) -> Self {
        Tagged { inner, tags }
    }

    /// The wrapped connection (statements run through it carry no tags).
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Unwraps.
    pub fn into_inner(self) -> C {
        self.inner
    }
}

#[async_trait::async_trait]
impl<C: ConnectionTrait + Send> ConnectionTrait for Tagged<C> {
    fn get_database_backend(&self) -> DbBackend {
        self.inner.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.inner.execute_raw(self.tags.apply(stmt)).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.inner.execute_unprepared(&self.tags.apply_str(sql)).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.inner.query_one_raw(self.tags.apply(stmt)).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.inner.query_all_raw(self.tags.apply(stmt)).await
    }

    fn support_returning(&self) -> bool {
        self.inner.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.inner.is_mock_connection()
    }
}

#[async_trait::async_trait]
impl TransactionSession for Tagged<DatabaseTransaction> {
    async fn commit(self) -> Result<(), DbErr> {
        self.inner.commit().await
    }

    async fn rollback(self) -> Result<(), DbErr> {
        self.inner.rollback().await
    }
}

impl Tagged<DatabaseTransaction> {
    /// Commits.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.inner.commit().await
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.inner.rollback().await
    }
}

/// Runs `callback` in `txn`, then commits (or rolls back after an error), as SeaORM's own `transaction`.
async fn run<F, T, E>(txn: Tagged<DatabaseTransaction>, callback: F) -> Result<T, TransactionError<E>>
where
    F: for<'c> FnOnce(&'c Tagged<DatabaseTransaction>) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
        + Send,
    T: Send,
    E: fmt::Display + fmt::Debug + Send,
{
    let result = callback(&txn).await;
    match result {
        Ok(v) => {
            txn.inner.commit().await.map_err(TransactionError::Connection)?;
            Ok(v)
        }
        Err(e) => {
            txn.inner.rollback().await.map_err(TransactionError::Connection)?;
            Err(TransactionError::Transaction(e))
        }
    }
}

macro_rules! tagged_transactions {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl TransactionTrait for Tagged<$ty> {
            type Transaction = Tagged<DatabaseTransaction>;

            async fn begin(&self) -> Result<Self::Transaction, DbErr> {
                Ok(Tagged::new(self.inner.begin().await?, self.tags.clone()))
            }

            async fn begin_with_config(
                &self,
                isolation_level: Option<IsolationLevel>,
                access_mode: Option<AccessMode>,
            ) -> Result<Self::Transaction, DbErr> {
                Ok(Tagged::new(self.inner.begin_with_config(isolation_level, access_mode).await?, self.tags.clone()))
            }

            async fn begin_with_options(&self, options: TransactionOptions) -> Result<Self::Transaction, DbErr> {
                Ok(Tagged::new(self.inner.begin_with_options(options).await?, self.tags.clone()))
            }

            async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
            where
                F: for<'c> FnOnce(&'c Self::Transaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
                    + Send,
                T: Send,
                E: fmt::Display + fmt::Debug + Send,
            {
                let txn = self.begin().await.map_err(TransactionError::Connection)?;
                run(txn, callback).await
            }

            async fn transaction_with_config<F, T, E>(
                &self,
                callback: F,
                isolation_level: Option<IsolationLevel>,
                access_mode: Option<AccessMode>,
            ) -> Result<T, TransactionError<E>>
            where
                F: for<'c> FnOnce(&'c Self::Transaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
                    + Send,
                T: Send,
                E: fmt::Display + fmt::Debug + Send,
            {
                let txn =
                    self.begin_with_config(isolation_level, access_mode).await.map_err(TransactionError::Connection)?;
                run(txn, callback).await
            }
        }
    };
}

tagged_transactions!(DatabaseConnection);
tagged_transactions!(DatabaseTransaction);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_tags_are_appended_once_and_bad_tags_fail_early() {
        let tags = Tags::new([("application", "checkout")]).unwrap();
        let stmt = Statement::from_string(DbBackend::Postgres, "SELECT \"kv\".\"id\" FROM \"kv\" WHERE \"id\" = $1");
        let sql = tags.apply(stmt).sql;
        assert_eq!(
            sql,
            "SELECT \"kv\".\"id\" FROM \"kv\" WHERE \"id\" = $1 /*application='checkout',db_driver='sea-orm%3A2'*/"
        );
        // the same text every time: one cache entry per query
        let again = tags
            .apply(Statement::from_string(DbBackend::Postgres, "SELECT \"kv\".\"id\" FROM \"kv\" WHERE \"id\" = $1"));
        assert_eq!(again.sql, sql);
        assert!(Tags::new([("traceparent", "x")]).is_err());
        assert!(Tags::new([("db_driver", "x")]).is_err(), "duplicate key");
        assert!(Tags::new([("", "x")]).is_err());
    }
}
