//! The opt-in sticky stash of pooled connections that still carry a context
//! ([`crate::ConfigBuilder::sticky_pool_connections`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sqlcommenter::TraceParent;
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Executor, Postgres};

struct Parked {
    conn: PoolConnection<Postgres>,
    tp: TraceParent,
    at: Instant,
}

/// Connections kept aside with a known carrier; reset and returned to the pool after `idle`.
pub(crate) struct Stash {
    items: Mutex<Vec<Parked>>,
    idle: Duration,
    reaper: AtomicBool,
    reset: String,
}

impl std::fmt::Debug for Stash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stash").field("parked", &self.lock().len()).field("idle", &self.idle).finish()
    }
}

impl Stash {
    pub(crate) fn new(idle: Duration, reset: String) -> Arc<Self> {
        Arc::new(Stash { items: Mutex::new(Vec::new()), idle, reaper: AtomicBool::new(false), reset })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Parked>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `conn` (carrying `tp`) aside; gives it back when no runtime can run the reaper.
    pub(crate) fn park(
        self: &Arc<Self>,
        conn: PoolConnection<Postgres>,
        tp: TraceParent,
    ) -> Result<(), PoolConnection<Postgres>> {
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return Err(conn) };
        self.lock().push(Parked { conn, tp, at: Instant::now() });
        if !self.reaper.swap(true, Ordering::AcqRel) {
            handle.spawn(self.clone().reap());
        }
        Ok(())
    }

    /// The most recently parked connection and what it carries.
    pub(crate) fn take(&self) -> Option<(PoolConnection<Postgres>, TraceParent)> {
        self.lock().pop().map(|p| (p.conn, p.tp))
    }

    async fn reap(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.idle).await;
            let stale: Vec<Parked> = {
                let mut items = self.lock();
                let (stale, keep): (Vec<_>, Vec<_>) = items.drain(..).partition(|p| p.at.elapsed() >= self.idle);
                *items = keep;
                stale
            };
            for mut p in stale {
                if p.conn.execute(AssertSqlSafe(self.reset.clone())).await.is_err() {
                    p.conn.close_on_drop();
                }
            }
            if self.lock().is_empty() {
                self.reaper.store(false, Ordering::Release);
                // A connection parked between the check and the store saw a running reaper: go on for it.
                if self.lock().is_empty() || self.reaper.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        }
    }
}
