//! The full-duplex relay of one established session: two pumps in one task, each reading one side,
//! letting the [`Session`] decide, and writing the result to the other side in one write per read.
//! A pump does not read again before its write completed, so a slow reader slows its writer
//! (backpressure) and each direction holds at most one read buffer and one output buffer. The relay is
//! the session's clock (the time of each read) and takes its events: counted into the process metrics,
//! spans handed to the exporter.

use std::sync::Mutex;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::metrics::METRICS;
use crate::session::{Event, Session};
use crate::telemetry::Telemetry;

/// Initial and minimum read size per direction.
const READ_CHUNK: usize = 8 * 1024;
/// Output buffers larger than this are given back after use.
const KEEP_OUT: usize = 64 * 1024;

/// Which way a pump moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Upstream,
    /// Server to client.
    Downstream,
}

/// Moves bytes one way until EOF or an error.
pub async fn pump<R, W>(
    dir: Direction,
    mut rd: R,
    mut wr: W,
    session: &Mutex<Session>,
    telemetry: Option<&Telemetry>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    loop {
        let need = Session::need(&inbuf).max(inbuf.len() + READ_CHUNK);
        if inbuf.capacity() < need {
            inbuf.reserve(need - inbuf.len());
        }
        let n = rd.read_buf(&mut inbuf).await?;
        if n == 0 {
            return Ok(());
        }
        let counter = match dir {
            Direction::Upstream => &METRICS.bytes_from_clients,
            Direction::Downstream => &METRICS.bytes_from_servers,
        };
        counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        let now = std::time::Instant::now();
        let consumed = {
            let mut s = session.lock().unwrap_or_else(|p| p.into_inner());
            let consumed = match dir {
                Direction::Upstream => s.client_bytes(&inbuf, &mut out, now),
                Direction::Downstream => s.server_bytes(&inbuf, &mut out, now),
            };
            for ev in s.events() {
                match (&ev, telemetry) {
                    (Event::Span(rec), Some(t)) => t.export(rec),
                    _ => METRICS.record(&ev),
                }
            }
            consumed
        }
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        inbuf.advance(consumed);
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
            if out.capacity() > KEEP_OUT {
                out = BytesMut::with_capacity(READ_CHUNK);
            }
        }
        if inbuf.is_empty() && inbuf.capacity() > KEEP_OUT {
            inbuf = BytesMut::with_capacity(READ_CHUNK);
        }
    }
}
