//! The one error type of the crate. Every variant renders as one line an operator can act on; the
//! operator binary prints it and exits with code 2.

use std::io;

/// What stopped `sqlcommenter top`.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The connection string could not be read.
    #[error("invalid connection string: {0}")]
    Conninfo(String),
    /// No connection could be made (unreachable server, refused, wrong password, unknown database …).
    #[error("could not connect to {target}: {reason}")]
    Connect {
        /// `host:port/dbname as user`.
        target: String,
        /// The server's or the network's reason.
        reason: String,
    },
    /// The monitoring query was refused for lack of privileges.
    #[error(
        "{reason} (connected as {user}; top needs SELECT on pg_stat_activity and EXECUTE on \
         pg_blocking_pids(integer), both granted to PUBLIC by default)"
    )]
    Privilege {
        /// The role top connected as.
        user: String,
        /// The server's message.
        reason: String,
    },
    /// The monitoring query failed for another reason (or the connection was lost in `--once` mode).
    #[error("sampling pg_stat_activity failed: {0}")]
    Sample(String),
    /// The terminal could not be set up or written to.
    #[error("terminal: {0}")]
    Terminal(io::Error),
    /// The OTLP exporter could not be built.
    #[error("OTLP: {0}")]
    Otlp(String),
    /// The Prometheus endpoint could not be bound.
    #[error("Prometheus endpoint {addr}: {reason}")]
    Prometheus {
        /// The address asked for.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// Writing the `--once` output failed.
    #[error("writing output: {0}")]
    Output(io::Error),
    /// The async runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(io::Error),
    /// Invalid combination of flags.
    #[error("{0}")]
    Usage(String),
}

/// One line for a tokio-postgres error: the server's message (with SQLSTATE) when there is one, else the
/// chain of causes (`error connecting to server: Connection refused (os error 111)`).
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
