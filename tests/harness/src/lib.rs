//! Throwaway PostgreSQL clusters for sqlcommenter's integration tests.
//!
//! Dev-only, synchronous (plain `std::process`), no async runtime. Each [`Cluster`] is
//! a private server: its own data directory (a copy of an `initdb` template made once
//! per test process), its own free TCP port on `127.0.0.1`, its own unix socket
//! directory, superuser `postgres` with trust authentication, and durability switched
//! off (`fsync`, `synchronous_commit`, `full_page_writes`) for speed. Everything lives
//! in a scratch directory `<root>/pgh-<pid>-<n>/` where `<root>` is `/dev/shm` (tmpfs,
//! fast to copy into; mind the RAM for big data sets) when writable, else `/tmp`;
//! `SQLCOMMENTER_PG_SCRATCH` overrides it (keep it short: unix socket paths are limited
//! to ~107 bytes).
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use sqlcommenter_testpg::{Cluster, LogFormat};
//!
//! # fn main() -> Result<(), sqlcommenter_testpg::HarnessError> {
//! let pg = Cluster::builder()
//!     .setting("log_min_duration_statement", "0")
//!     .setting("compute_query_id", "on")
//!     .log_format(LogFormat::Stderr { prefix: "%m [%p] %q%u@%d %a ".into() })
//!     .preload(&["pg_stat_statements", "auto_explain"])
//!     .start()?;
//!
//! pg.execute_sql("/*app='demo'*/ SELECT 1")?;
//! let log = pg.wait_for_log("app='demo'", Duration::from_secs(5))?;
//! assert!(log.contains("duration:"));
//! assert_eq!(pg.query("SHOW log_min_duration_statement")?, "0");
//! println!("connect with {}", pg.url("postgres"));
//! # Ok(()) }
//! // Dropping `pg` stops the server and deletes its directories.
//! ```
//!
//! Add it to another workspace member with
//!
//! ```toml
//! [dev-dependencies]
//! sqlcommenter-testpg.workspace = true
//! ```
//!
//! # Shared cluster and `DATABASE_URL`
//!
//! [`shared()`] starts one cluster per test binary on first use (configuration:
//! [`ClusterBuilder::shared_defaults`]) and hands out `&'static` references to it.
//! [`shared_url()`] returns `DATABASE_URL` when it is set and the shared cluster's URL
//! otherwise, for suites that only need *some* PostgreSQL. Suites that depend on
//! particular server settings — logging format, `log_min_duration_statement`,
//! preloaded libraries — must start their own [`Cluster`] and never use
//! `DATABASE_URL`, since an external server's configuration is unknown.
//!
//! # PgBouncer
//!
//! [`PgBouncer::builder`]`(`[`PoolMode`]`)…start(&cluster)` starts PgBouncer (1.21+;
//! the tests use 1.24) in front of a cluster on a free port of `127.0.0.1`: every
//! database name routed to the cluster, trust authentication for `postgres`, pool of 2,
//! `max_prepared_statements = 200`, admin console `pgbouncer`; other settings with
//! [`PgBouncerBuilder::setting`]. The binary comes from `PGBOUNCER_BIN`, else
//! [`DEFAULT_PGBOUNCER_BIN`] (where `../shared/tools/pgbouncer-build.sh` installs it).
//! Tests that need it start with [`pgbouncer_or_skip`]: a loud `SKIPPED` line when the
//! binary is missing, a failure under `CI=true`. As root it runs as `postgres`;
//! dropping it kills it and removes its directory (the watchdog does so after a crash).
//!
//! ```no_run
//! use sqlcommenter_testpg::{pgbouncer_or_skip, Cluster, PgBouncer, PoolMode};
//!
//! let Some(bin) = pgbouncer_or_skip("my_test") else { return };
//! let pg = Cluster::builder().start().unwrap();
//! let bouncer = PgBouncer::builder(PoolMode::Transaction).binary(bin).start(&pg).unwrap();
//! let url = bouncer.url("postgres"); // connect the client under test here
//! assert_eq!(bouncer.query("postgres", "SHOW port").unwrap(), pg.port().to_string());
//! println!("{}", bouncer.query("pgbouncer", "SHOW POOLS").unwrap());
//! ```
//!
//! # Root, cleanup and environment
//!
//! * When the tests run as root, `initdb`, `pg_ctl` and the server run as the
//!   `postgres` system user through `runuser -u postgres --`, and the cluster
//!   directories are owned by that user (root can still read the logs; the collector's
//!   log files are created with mode 0644).
//! * Dropping a [`Cluster`] stops it (`pg_ctl stop -m immediate`) and removes its
//!   directory. Statics are never dropped, so the first cluster of a process also starts
//!   a small detached watchdog (`sh`) that waits for the test process to exit and then
//!   stops every server still running from `<root>/pgh-<pid>-*` and removes those
//!   directories. Directories left by processes that were killed together with their
//!   watchdog are reaped when the next test process starts its first cluster.
//! * `PG_BINDIR` overrides where the binaries are looked up (see [`find_bindir`]).
//! * `SQLCOMMENTER_KEEP_PG=1` keeps cluster directories (servers are still stopped).
//! * `PGBOUNCER_BIN` names the PgBouncer binary (see [`find_pgbouncer`]).
//! * `DATABASE_URL` is only consulted by [`external_url`] and [`shared_url`].

#![warn(missing_docs)]

mod cluster;
mod error;
mod pgbouncer;
mod sys;

use std::sync::OnceLock;

pub use cluster::{Cluster, ClusterBuilder, LogFormat, LogKind, DEFAULT_STDERR_PREFIX, HOST, USER};
pub use error::{HarnessError, Result};
pub use pgbouncer::{
    find_pgbouncer, pgbouncer_or_skip, PgBouncer, PgBouncerBuilder, PoolMode, DEFAULT_PGBOUNCER_BIN, PGBOUNCER_BIN_ENV,
};
pub use sys::{find_bindir, KEEP_ENV, PG_BINDIR_ENV, SCRATCH_ENV};

/// Environment variable naming an external server for [`external_url`] / [`shared_url`].
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

static SHARED: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();

/// The process-wide shared cluster, started on first use with
/// [`ClusterBuilder::shared_defaults`]. Concurrent first calls block until it is up;
/// every call returns the same cluster. It is stopped and removed by the watchdog
/// after the test process exits.
///
/// # Panics
/// If the cluster cannot be started (the panic message carries the error). Use
/// [`try_shared`] to handle that instead.
pub fn shared() -> &'static Cluster {
    match try_shared() {
        Ok(cluster) => cluster,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`shared`], but returns the start error (the same one on every call) instead
/// of panicking.
///
/// # Errors
/// [`HarnessError::SharedStartFailed`] with the original error's message.
pub fn try_shared() -> Result<&'static Cluster> {
    SHARED
        .get_or_init(|| ClusterBuilder::shared_defaults().start().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| HarnessError::SharedStartFailed(e.clone()))
}

/// The value of `DATABASE_URL`, if set and non-empty.
pub fn external_url() -> Option<String> {
    std::env::var(DATABASE_URL_ENV).ok().filter(|url| !url.trim().is_empty())
}

/// `DATABASE_URL` when set, else the shared cluster's `postgres://…/postgres` URL
/// (starting it if needed). Only for tests that work against any PostgreSQL.
///
/// # Panics
/// As [`shared`], when `DATABASE_URL` is unset and the shared cluster cannot start.
pub fn shared_url() -> String {
    external_url().unwrap_or_else(|| shared().url("postgres"))
}
