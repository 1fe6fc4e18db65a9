//! Per-connection state shared by every handle of one server connection: the core carrier
//! [`Tracker`], the prepared carrier statement, and the parameter-type cache of per-query-comment mode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use sqlcommenter::carrier::{Held, Tracker};
use tokio_postgres::types::Type;
use tokio_postgres::Statement;

/// Upper bound of the per-connection parameter-type cache (per-query-comment mode).
const TYPE_CACHE_MAX: usize = 1024;

/// One server connection's carrier state.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    tracker: Mutex<Tracker>,
    types: Mutex<HashMap<String, Vec<Type>>>,
    /// [`sqlcommenter::carrier::SET_CONFIG_SQL`] prepared on this connection.
    carrier_stmt: Mutex<Option<Statement>>,
    /// Set while that preparation is in flight (it is pipelined with the first carrier write).
    preparing: AtomicBool,
}

impl ConnState {
    /// Locks the tracker. Held only synchronously, while requests are put on the connection.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets what the carrier holds: the next statement writes it.
    pub(crate) fn forget(&self) {
        self.lock().forget();
    }

    /// The tracked value in effect.
    pub(crate) fn held(&self) -> Held {
        self.lock().held()
    }

    /// A connection checked out of a pool: a traceparent left by the previous request is stale (the pool's
    /// recycle step may also have reset it), so the first statement of this checkout overwrites or clears it.
    #[cfg(feature = "deadpool")]
    pub(crate) fn checkout(&self) {
        let mut tracker = self.lock();
        if tracker.in_transaction() || matches!(tracker.held(), Held::Carrying(_)) {
            *tracker = Tracker::new();
            tracker.forget();
        }
    }

    fn stmt_slot(&self) -> MutexGuard<'_, Option<Statement>> {
        self.carrier_stmt.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The prepared carrier statement, once its preparation has completed.
    pub(crate) fn carrier_stmt(&self) -> Option<Statement> {
        self.stmt_slot().clone()
    }

    /// Claims the (single) preparation of the carrier statement: true for the caller that must send it.
    pub(crate) fn claim_prepare(&self) -> bool {
        self.stmt_slot().is_none() && !self.preparing.swap(true, Ordering::AcqRel)
    }

    /// The outcome of a claimed preparation (a failure lets a later carrier write try again).
    pub(crate) fn prepared(&self, stmt: Option<Statement>) {
        if let Some(stmt) = stmt {
            *self.stmt_slot() = Some(stmt);
        }
        self.preparing.store(false, Ordering::Release);
    }

    /// The prepared carrier statement may be gone (`DISCARD ALL`, `DEALLOCATE ALL`): the next write
    /// prepares it again, pipelined. Dropping the last handle closes it on the server if it still exists.
    pub(crate) fn drop_carrier_stmt(&self) {
        let stale = self.stmt_slot().take();
        drop(stale);
    }

    pub(crate) fn types(&self, sql: &str) -> Option<Vec<Type>> {
        self.types.lock().unwrap_or_else(|p| p.into_inner()).get(sql).cloned()
    }

    pub(crate) fn cache_types(&self, sql: &str, types: Vec<Type>) {
        let mut map = self.types.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= TYPE_CACHE_MAX {
            map.clear();
        }
        map.insert(sql.to_owned(), types);
    }

    /// Number of cached parameter-type entries.
    pub(crate) fn type_cache_len(&self) -> usize {
        self.types.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
