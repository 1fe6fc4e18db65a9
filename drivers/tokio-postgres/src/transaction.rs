//! [`Transaction`]: a wrapped `tokio_postgres::Transaction`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Buf;
use tokio_postgres::types::{BorrowToSql, ToSql, Type};
use tokio_postgres::{
    CancelToken, Client as PgClient, CopyInSink, CopyOutStream, Error, Row, RowStream, SimpleQueryMessage, Statement,
    Transaction as PgTransaction,
};

use sqlcommenter::carrier::Effect;

use crate::core::{Call, Core};
use crate::methods::query_methods;
use crate::statement::ToStatement;

/// A database transaction with the same query methods as [`crate::Client`]; rolled back on drop.
///
/// Inside it the carrier is transaction-scoped (`set_config(…, true)`), written before the first
/// statement that needs it (pipelined) and again only when the context changes: it ends with the
/// transaction, so nothing is left on the connection and a pooler has nothing to replay. A rollback to a
/// savepoint makes the next statement write it again. Once a statement has failed, the transaction is
/// aborted and the carrier is left alone until it ends (every statement but ROLLBACK would fail anyway).
pub struct Transaction<'a> {
    inner: Option<PgTransaction<'a>>,
    core: Core,
    aborted: Arc<AtomicBool>,
    parent_aborted: Option<Arc<AtomicBool>>,
    #[cfg(feature = "deadpool")]
    cache: Option<Arc<deadpool_postgres::StatementCache>>,
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(
        inner: PgTransaction<'a>,
        core: Core,
        parent_aborted: Option<Arc<AtomicBool>>,
        #[cfg(feature = "deadpool")] cache: Option<Arc<deadpool_postgres::StatementCache>>,
    ) -> Self {
        Transaction {
            inner: Some(inner),
            core,
            aborted: Arc::new(AtomicBool::new(false)),
            parent_aborted,
            #[cfg(feature = "deadpool")]
            cache,
        }
    }

    fn txn(&self) -> &PgTransaction<'a> {
        match &self.inner {
            Some(t) => t,
            None => unreachable!("only commit/rollback take the transaction, and they consume self"),
        }
    }

    fn pg(&self) -> &PgClient {
        self.txn().client()
    }

    fn core(&self) -> &Core {
        &self.core
    }

    fn call(&self) -> Call {
        self.core.call(self.aborted.load(Ordering::Relaxed))
    }

    fn observe<T>(&self, r: &Result<T, Error>) {
        if let Err(e) = r {
            if e.code().is_some() {
                self.aborted.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Whether this is a savepoint inside another transaction.
    fn is_savepoint(&self) -> bool {
        self.parent_aborted.is_some()
    }

    /// Commits (or releases the savepoint).
    pub async fn commit(mut self) -> Result<(), Error> {
        let Some(txn) = self.inner.take() else { return Ok(()) };
        let r = txn.commit().await;
        match (&r, self.is_savepoint()) {
            (Ok(()), true) => {}
            // COMMIT of an aborted transaction rolls it back; a failed COMMIT too.
            (Ok(()), false) if !self.aborted.load(Ordering::Relaxed) => self.core.ended(&Effect::Commit),
            (_, false) => self.core.ended(&Effect::Rollback),
            (Err(_), true) => {
                self.core.conn.forget();
                if let Some(p) = &self.parent_aborted {
                    p.store(true, Ordering::Relaxed);
                }
            }
        }
        r
    }

    /// Rolls back (to the savepoint); settings made in it revert.
    pub async fn rollback(mut self) -> Result<(), Error> {
        let Some(txn) = self.inner.take() else { return Ok(()) };
        let r = txn.rollback().await;
        match (&r, self.is_savepoint()) {
            (Ok(()), true) => self.core.ended(&Effect::RollbackToSavepoint),
            (Ok(()), false) => self.core.ended(&Effect::Rollback),
            (Err(_), _) => self.core.conn.forget(),
        }
        r
    }

    /// A nested transaction (savepoint), like `tokio_postgres::Transaction::transaction`.
    pub async fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
        let core = self.core.clone();
        let parent = self.aborted.clone();
        #[cfg(feature = "deadpool")]
        let cache = self.cache.clone();
        let Some(txn) = self.inner.as_mut() else { unreachable!("transaction is live") };
        let nested = txn.transaction().await?;
        Ok(Transaction::new(
            nested,
            core,
            Some(parent),
            #[cfg(feature = "deadpool")]
            cache,
        ))
    }

    /// Like deadpool-postgres's `Transaction::prepare_cached` (plain `prepare` without a cache).
    #[cfg(feature = "deadpool")]
    pub async fn prepare_cached(&self, query: &str) -> Result<Statement, Error> {
        let call = self.call();
        let r = match &self.cache {
            Some(cache) => self.core.prepare_cached(self.pg(), cache, &call, query, &[]).await,
            None => self.core.prepare(self.pg(), &call, query, &[]).await,
        };
        self.observe(&r);
        r
    }

    query_methods!();
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            // The inner transaction's drop queues ROLLBACK (TO SAVEPOINT), which reverts settings made in it.
            let effect = if self.is_savepoint() { Effect::RollbackToSavepoint } else { Effect::Rollback };
            self.core.ended(&effect);
        }
    }
}
