//! Sockets of either family, on both legs: TCP, or Unix-domain (a client on the proxy's socket file, the
//! server's socket file upstream). [`Socket`] is the async one negotiation and the TLS pumps use; it becomes a
//! [`StdSocket`] when a session moves to a relay loop. [`Listener`] accepts on the TCP address and, when
//! configured, on the proxy's own socket file, which it creates and removes.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::error::ProxyError;

/// A connected socket (non-blocking, on a tokio runtime).
#[derive(Debug)]
pub enum Socket {
    /// TCP (`TCP_NODELAY` set).
    Tcp(TcpStream),
    /// A Unix-domain stream socket.
    Unix(tokio::net::UnixStream),
}

/// A connected socket as the standard library holds it, to hand to a relay loop.
#[derive(Debug)]
pub enum StdSocket {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// A Unix-domain stream socket.
    Unix(std::os::unix::net::UnixStream),
}

impl Socket {
    /// The std socket, for a relay loop.
    pub fn into_std(self) -> io::Result<StdSocket> {
        match self {
            Socket::Tcp(s) => s.into_std().map(StdSocket::Tcp),
            Socket::Unix(s) => s.into_std().map(StdSocket::Unix),
        }
    }

    /// Registers a std socket (non-blocking) with the current tokio runtime.
    pub fn from_std(s: StdSocket) -> io::Result<Socket> {
        match s {
            StdSocket::Tcp(s) => TcpStream::from_std(s).map(Socket::Tcp),
            StdSocket::Unix(s) => tokio::net::UnixStream::from_std(s).map(Socket::Unix),
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Who connected: a TCP peer's address, or a client on the proxy's socket file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client.
    Tcp(SocketAddr),
    /// A client on the Unix socket (local; the kernel gives no address).
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix socket"),
        }
    }
}

/// The proxy's listening sockets: the TCP address, and the socket file when configured.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    unix: Option<(tokio::net::UnixListener, PathBuf)>,
}

/// The socket file PostgreSQL clients look for in `dir` for `port`: `dir/.s.PGSQL.<port>`.
pub fn socket_file(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

impl Listener {
    /// Binds `addr`, and with `socket_dir` the socket file named for the port bound (as PgBouncer's
    /// `unix_socket_dir`), readable and writable by everyone like PostgreSQL's own. A socket file left by a
    /// proxy that is gone is replaced; one that answers is in use.
    pub async fn bind(addr: SocketAddr, socket_dir: Option<&Path>) -> Result<Listener, ProxyError> {
        let tcp = TcpListener::bind(addr).await.map_err(|source| ProxyError::Bind { addr, source })?;
        let Some(dir) = socket_dir else { return Ok(Listener { tcp, unix: None }) };
        let port = tcp.local_addr().map_err(ProxyError::Runtime)?.port();
        let path = socket_file(dir, port);
        let bind_err = |source| ProxyError::BindSocket { path: path.clone(), source };
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(bind_err(io::Error::new(io::ErrorKind::AddrInUse, "another process answers on it")));
            }
            std::fs::remove_file(&path).map_err(bind_err)?;
        }
        let unix = tokio::net::UnixListener::bind(&path).map_err(bind_err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).map_err(bind_err)?;
        Ok(Listener { tcp, unix: Some((unix, path)) })
    }

    /// The TCP address bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The socket file, when there is one.
    pub fn socket_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|(_, p)| p.as_path())
    }

    /// The next client on either socket, as a std socket for a session thread.
    pub async fn accept(&self) -> io::Result<(StdSocket, Peer)> {
        let unix = async {
            match &self.unix {
                Some((l, _)) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = self.tcp.accept() => {
                let (s, peer) = r?;
                let _ = s.set_nodelay(true);
                Ok((StdSocket::Tcp(s.into_std()?), Peer::Tcp(peer)))
            }
            r = unix => Ok((StdSocket::Unix(r?.0.into_std()?), Peer::Unix)),
        }
    }
}

impl Drop for Listener {
    /// Removes the socket file: a client that looks for it later finds no proxy rather than a dead file.
    fn drop(&mut self) {
        if let Some(path) = self.socket_path() {
            let _ = std::fs::remove_file(path);
        }
    }
}
