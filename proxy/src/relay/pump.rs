//! The async relay, for sessions with TLS on either leg: two pumps in one task, each reading one side,
//! letting the [`Session`] decide, and writing the result to the other side in one write per read. A pump
//! does not read again before its write completed, so a slow reader slows its writer (backpressure) and
//! each direction holds at most one read buffer and one output buffer.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{feed, Direction, Ending};
use crate::session::Session;
use crate::telemetry::Telemetry;

/// Initial and minimum read size per direction.
const READ_CHUNK: usize = 8 * 1024;
/// Output buffers larger than this are given back after use.
const KEEP_OUT: usize = 64 * 1024;

/// Relays until either side closes, an error, or (with `idle_timeout`) inactivity; the client is told why
/// when it should be ([`Ending::farewell`]).
pub async fn run<CR, CW, UR, UW>(
    cr: CR,
    mut cw: CW,
    ur: UR,
    uw: UW,
    session: Session,
    telemetry: Option<&Telemetry>,
    idle_timeout: Option<Duration>,
) -> Ending
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let session = Mutex::new(session);
    let ending = {
        let up = pump(Direction::Upstream, cr, uw, &session, telemetry);
        let down = pump(Direction::Downstream, ur, &mut cw, &session, telemetry);
        // Polled in this order on every wake-up: the server's replies first (an error must reach a client
        // that is still streaming its batch as soon as possible: asyncpg stops an `executemany` on it), then
        // the client's bytes. No random start: a pump yields at its coop budget, so neither starves.
        tokio::select! {
            biased;
            e = down => e,
            e = up => e,
            () = idle_watch(&session, idle_timeout) => Ending::Idle,
        }
    };
    if let Some(msg) = ending.farewell() {
        let _ = cw.write_all(&msg).await;
        let _ = cw.shutdown().await;
    }
    ending
}

/// Moves bytes one way until EOF or an error.
async fn pump<R, W>(
    dir: Direction,
    mut rd: R,
    mut wr: W,
    session: &Mutex<Session>,
    telemetry: Option<&Telemetry>,
) -> Ending
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
        let n = match rd.read_buf(&mut inbuf).await {
            Ok(0) => return Ending::Closed,
            Ok(n) => n,
            Err(e) => return Ending::Io(dir, e),
        };
        dir.count_read(n);
        let consumed = {
            let mut s = session.lock().unwrap_or_else(|p| p.into_inner());
            match feed(&mut s, dir, &inbuf, &mut out, Instant::now(), telemetry) {
                Ok(c) => c,
                Err(e) => return e,
            }
        };
        inbuf.advance(consumed);
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                return Ending::Io(dir, e);
            }
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

/// Completes when the session has been idle (see [`Session::idle_for`]) for `timeout`; never without one.
async fn idle_watch(session: &Mutex<Session>, timeout: Option<Duration>) {
    let Some(timeout) = timeout else { return std::future::pending().await };
    let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        let idle = session.lock().unwrap_or_else(|p| p.into_inner()).idle_for(Instant::now());
        if idle.is_some_and(|d| d >= timeout) {
            return;
        }
    }
}
