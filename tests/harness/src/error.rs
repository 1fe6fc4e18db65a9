//! The harness error type.

use std::io;
use std::time::Duration;

/// Result alias used throughout the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, driving or stopping a cluster.
///
/// Variants that come from a failed external command carry that command's
/// standard error, so a test failure shows PostgreSQL's own explanation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`) could not be found.
    #[error(
        "PostgreSQL server binaries not found (looked in: {searched}). Install them with \
         `apt-get install postgresql` (Debian/Ubuntu), or set PG_BINDIR to the directory \
         that contains initdb, pg_ctl and postgres"
    )]
    BinariesNotFound {
        /// The places that were searched, in order.
        searched: String,
    },

    /// The harness runs as root but there is no `postgres` system user to run the server as.
    #[error(
        "running as root, but the `postgres` system user could not be looked up \
         (PostgreSQL refuses to run as root; `apt-get install postgresql` creates that user): {stderr}"
    )]
    NoPostgresUser {
        /// Standard error of the failed `id postgres` lookup.
        stderr: String,
    },

    /// An external command could not be spawned at all.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command line that was attempted.
        command: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// An external command ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line that failed.
        command: String,
        /// How it exited (exit code or signal).
        status: String,
        /// What it printed on standard output.
        stdout: String,
        /// What it printed on standard error.
        stderr: String,
    },

    /// The server did not come up (after retrying on port collisions).
    #[error(
        "PostgreSQL server failed to start after {attempts} attempt(s): {stderr}\n\
         --- server log ---\n{log}"
    )]
    StartFailed {
        /// Number of start attempts made.
        attempts: u32,
        /// Standard error of the last `pg_ctl start`.
        stderr: String,
        /// The server's own log output from the last attempt.
        log: String,
    },

    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// A setting name contained characters other than ASCII letters, digits, `_` and `.`.
    #[error("invalid PostgreSQL setting name {0:?}")]
    InvalidSettingName(String),

    /// Waiting for a condition (a log line, a configuration reload, ...) timed out.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long the harness waited.
        waited: Duration,
    },

    /// The `pgbouncer` binary was not found.
    #[error(
        "PgBouncer binary not found (looked at: {searched}). Build PgBouncer 1.24 with \
         `../shared/tools/pgbouncer-build.sh` (it prints the path), or set PGBOUNCER_BIN"
    )]
    PgBouncerNotFound {
        /// The paths that were looked at.
        searched: String,
    },

    /// The `pgbouncer` binary predates prepared-statement support in transaction pooling.
    #[error("{binary} is {version:?}; the tests need PgBouncer 1.21 or later (max_prepared_statements)")]
    PgBouncerTooOld {
        /// The binary that was checked.
        binary: String,
        /// The first line of its `--version`.
        version: String,
    },

    /// PgBouncer exited before accepting connections (after retrying on port collisions).
    #[error("PgBouncer failed to start after {attempts} attempt(s)\n--- pgbouncer log ---\n{log}")]
    PgBouncerStartFailed {
        /// Number of start attempts made.
        attempts: u32,
        /// PgBouncer's log from the last attempt.
        log: String,
    },

    /// The process-wide shared cluster failed to start (the message of the original error).
    #[error("the shared test cluster failed to start: {0}")]
    SharedStartFailed(String),
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        HarnessError::Io { context: context.into(), source }
    }
}
