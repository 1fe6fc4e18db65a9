//! The one monitoring query and the connection that runs it: a sample is one round trip.

use std::time::{Duration, SystemTime};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use crate::conninfo::Target;
use crate::error::{describe, TopError};
use crate::session::{Session, State};

/// Every client backend except top's own, with ages computed on the server's clock. Reading
/// `pg_stat_activity` takes no lock; `pg_blocking_pids` (which briefly takes the lock manager's partition
/// LWLocks, in shared mode) is only called for backends waiting on a heavyweight lock. Without
/// `pg_read_all_stats`, other roles' sessions come back with a NULL `backend_type`: those with a role are
/// kept (with `<insufficient privilege>` as query), so the viewer sees that something is hidden.
pub const ACTIVITY_SQL: &str = "\
SELECT a.pid, a.usename::text, a.datname::text, a.application_name, a.state, a.wait_event_type, a.wait_event,
       (extract(epoch FROM now() - a.xact_start) * 1000)::float8 AS xact_age_ms,
       (extract(epoch FROM now() - a.query_start) * 1000)::float8 AS query_age_ms,
       a.query,
       CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) ELSE '{}'::int[] END AS blocked_by
  FROM pg_stat_activity a
 WHERE (a.backend_type = 'client backend' OR (a.backend_type IS NULL AND a.usesysid IS NOT NULL))
   AND a.pid <> pg_backend_pid()
 ORDER BY a.pid";

/// One sample of the server's client backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// When the sample was taken (client clock).
    pub taken_at: SystemTime,
    /// Client backends, by pid.
    pub sessions: Vec<Session>,
}

/// Header figures of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Client backends seen.
    pub sessions: usize,
    /// `active`.
    pub active: usize,
    /// `idle in transaction` (also aborted).
    pub idle_in_transaction: usize,
    /// Waiting for a lock another backend holds.
    pub waiting: usize,
    /// With a trace context (comment or carrier).
    pub with_trace: usize,
    /// Hidden from the viewer (`<insufficient privilege>`).
    pub hidden: usize,
    /// The oldest open transaction: pid and age.
    pub oldest_xact: Option<(i32, Duration)>,
}

impl Snapshot {
    /// The session with `pid`.
    pub fn get(&self, pid: i32) -> Option<&Session> {
        self.sessions.binary_search_by_key(&pid, |s| s.pid).ok().map(|i| &self.sessions[i])
    }

    /// Header figures.
    pub fn totals(&self) -> Totals {
        let mut t = Totals { sessions: self.sessions.len(), ..Totals::default() };
        for s in &self.sessions {
            match &s.state {
                Some(State::Active) => t.active += 1,
                Some(st) if st.is_idle_in_transaction() => t.idle_in_transaction += 1,
                _ => {}
            }
            t.waiting += usize::from(s.is_blocked());
            t.with_trace += usize::from(s.trace.is_some());
            t.hidden += usize::from(s.is_hidden());
            if let Some(age) = s.xact_age {
                if t.oldest_xact.is_none_or(|(_, oldest)| age > oldest) {
                    t.oldest_xact = Some((s.pid, age));
                }
            }
        }
        t
    }
}

/// A monitoring connection with the query prepared.
pub struct Sampler {
    client: Client,
    statement: Statement,
    user: String,
    target: String,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").field("target", &self.target).finish_non_exhaustive()
    }
}

impl Sampler {
    /// Connects (on the current Tokio runtime, which drives the connection) and prepares the query.
    ///
    /// # Errors
    /// [`TopError::Connect`] with the server's or the network's reason; [`TopError::Privilege`] /
    /// [`TopError::Sample`] when the query cannot be prepared.
    pub async fn connect(target: &Target) -> Result<Sampler, TopError> {
        let tls = target.tls.connector()?;
        let (client, connection) = target
            .config
            .connect(tls)
            .await
            .map_err(|e| TopError::Connect { target: target.display.clone(), reason: describe(&e) })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let user = target.config.get_user().unwrap_or_default().to_owned();
        let statement = client.prepare(ACTIVITY_SQL).await.map_err(|e| query_error(&user, &e))?;
        Ok(Sampler { client, statement, user, target: target.display.clone() })
    }

    /// `host:port/database as user`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// One sample: one round trip.
    ///
    /// # Errors
    /// [`TopError::Privilege`] when refused for lack of privileges, else [`TopError::Sample`] (also for a
    /// lost connection; see [`Sampler::is_closed`]).
    pub async fn sample(&self) -> Result<Snapshot, TopError> {
        let rows = self.client.query(&self.statement, &[]).await.map_err(|e| query_error(&self.user, &e))?;
        let taken_at = SystemTime::now();
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let state: Option<String> = row.try_get(4).map_err(|e| TopError::Sample(describe(&e)))?;
            let blocked: Option<Vec<i32>> = row.try_get(10).map_err(|e| TopError::Sample(describe(&e)))?;
            let get_s = |i: usize| row.try_get::<_, Option<String>>(i).map_err(|e| TopError::Sample(describe(&e)));
            let get_f = |i: usize| row.try_get::<_, Option<f64>>(i).map_err(|e| TopError::Sample(describe(&e)));
            sessions.push(Session::from_columns(
                row.try_get(0).map_err(|e| TopError::Sample(describe(&e)))?,
                get_s(1)?,
                get_s(2)?,
                get_s(3)?,
                state.as_deref(),
                get_s(5)?,
                get_s(6)?,
                get_f(7)?,
                get_f(8)?,
                get_s(9)?,
                blocked.unwrap_or_default(),
            ));
        }
        Ok(Snapshot { taken_at, sessions })
    }
}

fn query_error(user: &str, e: &tokio_postgres::Error) -> TopError {
    match e.code() {
        Some(&SqlState::INSUFFICIENT_PRIVILEGE) => TopError::Privilege {
            user: user.to_owned(),
            reason: e.as_db_error().map_or_else(|| describe(e), |d| d.message().to_owned()),
        },
        _ => TopError::Sample(describe(e)),
    }
}
