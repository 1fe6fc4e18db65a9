//! The demo's error type.

/// Everything that can stop a demo run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The throwaway PostgreSQL cluster could not be started or driven. A missing installation says:
    /// "... Install them with `apt-get install postgresql` ...".
    #[error(transparent)]
    Postgres(#[from] sqlcommenter_testpg::HarnessError),
    /// The proxy did not start.
    #[error("proxy: {0}")]
    Proxy(#[from] sqlcommenter_proxy::ProxyError),
    /// A workload statement failed.
    #[error("workload ({app}): {message}")]
    Workload {
        /// The application that failed.
        app: &'static str,
        /// The driver's error.
        message: String,
    },
    /// Reading or correlating the server log failed.
    #[error("log correlation: {0}")]
    Logs(#[from] sqlcommenter_logs::LogsError),
    /// Tracing / OpenTelemetry setup or shutdown failed.
    #[error("OpenTelemetry: {0}")]
    Telemetry(String),
    /// A file could not be written.
    #[error("{context}: {source}")]
    Io {
        /// What the demo was doing.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the demo's output failed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
    /// The async runtime could not be built.
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// Ctrl-C: the run stopped early (the server was still stopped and removed).
    #[error("interrupted (Ctrl-C); the PostgreSQL cluster was stopped and removed")]
    Interrupted,
}

impl DemoError {
    pub(crate) fn workload(app: &'static str, err: impl std::fmt::Display) -> Self {
        DemoError::Workload { app, message: err.to_string() }
    }
}
