//! The admin endpoint: `GET /metrics` (Prometheus text) and `GET /health`, a tiny HTTP/1.1 responder on
//! tokio (one request per connection). Bound to localhost by default (`--admin`, `off` to disable).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::error::ProxyError;
use crate::metrics::METRICS;

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// Binds `addr` and serves until `stop` flips; returns the bound address.
pub async fn start(addr: SocketAddr, mut stop: watch::Receiver<bool>) -> Result<SocketAddr, ProxyError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ProxyError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(ProxyError::Runtime)?;
    tracing::info!(addr = %bound, "admin endpoint listening (/metrics, /health)");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                r = listener.accept() => if let Ok((sock, _)) = r {
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(5), respond(sock)).await;
                    });
                }
            }
        }
    });
    Ok(bound)
}

async fn respond(mut sock: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    let path = path.split(|&b| b == b'?').next().unwrap_or(&[]);
    let (status, ctype, body) = match (method, path) {
        (b"GET", b"/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", METRICS.render()),
        (b"GET", b"/health") => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_owned()),
        (b"GET", _) => ("404 Not Found", "text/plain; charset=utf-8", "not found\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "method not allowed\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}
