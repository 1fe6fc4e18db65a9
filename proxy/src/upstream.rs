//! Connecting to the PostgreSQL server: over TCP, or over its Unix-domain socket when the upstream's host is a
//! socket directory ([`Upstream::socket_path`]: no TCP stack on the local leg, as PgBouncer's `host=/dir`);
//! TLS negotiated per `upstream_tls`, on TCP only (PostgreSQL offers none on its socket).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Upstream;
use crate::error::ProxyError;
use crate::net::Socket;
use crate::tls::{UpstreamTls, UpstreamTlsMode};

/// Opens a connection to the server: its socket file when `upstream` names a socket directory, else TCP.
pub async fn connect(upstream: &Upstream) -> io::Result<Socket> {
    if let Some(path) = upstream.socket_path() {
        return tokio::net::UnixStream::connect(&path).await.map(Socket::Unix);
    }
    let s = TcpStream::connect((upstream.host.as_str(), upstream.port)).await?;
    s.set_nodelay(true)?;
    Ok(Socket::Tcp(s))
}

/// The TLS to negotiate with `upstream`: none on its Unix socket, where `prefer` means plain and `require` or
/// `verify-full` is a configuration error (PostgreSQL answers no to TLS there).
pub fn tls(
    upstream: &Upstream,
    mode: UpstreamTlsMode,
    ca: Option<&std::path::Path>,
) -> Result<Option<UpstreamTls>, ProxyError> {
    match (upstream.socket_path(), mode) {
        (None, _) => crate::tls::upstream(mode, ca, &upstream.host),
        (Some(_), UpstreamTlsMode::Disable | UpstreamTlsMode::Prefer) => Ok(None),
        (Some(path), mode) => Err(ProxyError::Config(format!(
            "upstream_tls {} cannot hold on the Unix socket {}: PostgreSQL offers no TLS there",
            if mode == UpstreamTlsMode::Require { "require" } else { "verify-full" },
            path.display()
        ))),
    }
}

/// A server connection ready for the startup packet, plain or TLS.
pub enum Connection {
    /// No TLS.
    Plain(Socket),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to the server and negotiates TLS per `tls`.
pub async fn open(upstream: &Upstream, tls: Option<&UpstreamTls>) -> io::Result<Connection> {
    let socket = connect(upstream).await?;
    let (tls, mut tcp) = match (tls, socket) {
        (Some(tls), Socket::Tcp(tcp)) => (tls, tcp),
        (_, socket) => return Ok(Connection::Plain(socket)),
    };
    let mut req = 8i32.to_be_bytes().to_vec();
    req.extend_from_slice(&80877103i32.to_be_bytes());
    tcp.write_all(&req).await?;
    match tcp.read_u8().await? {
        b'S' => Ok(Connection::Tls(Box::new(tls.connector.connect(tls.server_name.clone(), tcp).await?))),
        b'N' if tls.mode == UpstreamTlsMode::Prefer => Ok(Connection::Plain(Socket::Tcp(tcp))),
        other => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("upstream refused TLS (answered {:?})", other as char),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_tls_on_a_unix_socket() {
        let socket = Upstream::parse("/run/postgresql").unwrap();
        assert!(tls(&socket, UpstreamTlsMode::Disable, None).unwrap().is_none());
        assert!(tls(&socket, UpstreamTlsMode::Prefer, None).unwrap().is_none());
        for (mode, name) in [(UpstreamTlsMode::Require, "require"), (UpstreamTlsMode::VerifyFull, "verify-full")] {
            let err = tls(&socket, mode, None).err().expect("refused");
            assert!(matches!(err, ProxyError::Config(_)), "{err}");
            assert!(
                err.to_string().contains(name) && err.to_string().contains("/run/postgresql/.s.PGSQL.5432"),
                "{err}"
            );
        }
        let tcp = Upstream::parse("localhost").unwrap();
        assert!(tls(&tcp, UpstreamTlsMode::Require, None).unwrap().is_some());
    }
}
