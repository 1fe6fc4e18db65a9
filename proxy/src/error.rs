//! The proxy's error type.

/// Errors that stop the proxy (start-up) or one session.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Invalid configuration.
    #[error("configuration error: {0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The proxy's Unix socket file could not be created.
    #[error("cannot listen on {}: {source}", path.display())]
    BindSocket {
        /// The socket file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The upstream server is unreachable.
    #[error("upstream {addr} is unreachable: {reason}")]
    UpstreamUnreachable {
        /// The upstream address.
        addr: String,
        /// The cause.
        reason: String,
    },
    /// A runtime or signal set-up failure.
    #[error("runtime error: {0}")]
    Runtime(std::io::Error),
    /// A protocol violation by a peer.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An I/O error on a session.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
