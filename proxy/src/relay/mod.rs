//! Moving one established session's bytes. [`poll`]: no TLS on either leg, sessions multiplexed on an
//! epoll loop thread (no task, no future, no wake-up per message: PgBouncer's shape). [`pump`]: TLS on
//! either leg, two async pumps in one task. Both feed the sans-I/O [`Session`] what they read with the
//! time they read it, hand its events to [`deliver`], and end a session the same way ([`Ending`]).

use bytes::BytesMut;

use crate::error::ProxyError;
use crate::frame::FrameError;
use crate::metrics::METRICS;
use crate::session::{Event, Session};
use crate::telemetry::Telemetry;

pub mod poll;
pub mod pump;

/// Which way bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Upstream,
    /// Server to client.
    Downstream,
}

impl Direction {
    /// Counts `n` bytes read from this direction's source.
    fn count_read(self, n: usize) {
        let counter = match self {
            Direction::Upstream => &METRICS.bytes_from_clients,
            Direction::Downstream => &METRICS.bytes_from_servers,
        };
        counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Counts what the session reported into the process metrics and exports its finished spans.
pub fn deliver(session: &mut Session, telemetry: Option<&Telemetry>) {
    for ev in session.events() {
        match (&ev, telemetry) {
            (Event::Span(rec), Some(t)) => t.export(rec),
            _ => METRICS.record(&ev),
        }
    }
}

/// Feeds `input`, read from `dir`'s source at `now`, to the session; appends what goes on to `out`;
/// returns the bytes consumed.
fn feed(
    session: &mut Session,
    dir: Direction,
    input: &[u8],
    out: &mut BytesMut,
    now: std::time::Instant,
    telemetry: Option<&Telemetry>,
) -> Result<usize, Ending> {
    let consumed = match dir {
        Direction::Upstream => session.client_bytes(input, out, now).map_err(Ending::BadClientFrame),
        Direction::Downstream => session.server_bytes(input, out, now).map_err(Ending::OutOfSync),
    };
    deliver(session, telemetry);
    consumed
}

/// Why a session's relay ended.
#[derive(Debug)]
pub enum Ending {
    /// One side closed its connection.
    Closed,
    /// Nothing moved for the configured idle timeout.
    Idle,
    /// The proxy is shutting down and the shutdown timeout passed.
    Shutdown,
    /// The client sent a frame that cannot be framed.
    BadClientFrame(FrameError),
    /// The server sent a frame that cannot be framed, or a reply the session's queue did not expect.
    OutOfSync(FrameError),
    /// An I/O error while moving bytes in this direction.
    Io(Direction, std::io::Error),
}

impl Ending {
    /// The FATAL error the client gets before its connection closes, if any.
    pub fn farewell(&self) -> Option<BytesMut> {
        let (code, msg) = match self {
            Ending::Idle => ("57P05", "sqlcommenter proxy: idle session timeout".to_owned()),
            Ending::BadClientFrame(e) => ("08P01", format!("sqlcommenter proxy: {e}")),
            Ending::OutOfSync(e) => ("08P01", format!("sqlcommenter proxy: {e}")),
            Ending::Closed | Ending::Shutdown | Ending::Io(..) => return None,
        };
        let mut out = BytesMut::new();
        crate::frame::write_error(&mut out, "FATAL", code, &msg);
        Some(out)
    }

    /// Logs the ending, counts upstream failures, and gives the session's result.
    pub fn into_result(self) -> Result<(), ProxyError> {
        match self {
            Ending::Closed | Ending::Shutdown => Ok(()),
            Ending::Idle => {
                tracing::debug!("closed an idle session");
                Ok(())
            }
            Ending::BadClientFrame(e) => {
                tracing::debug!(error = %e, "malformed client frame");
                Err(ProxyError::Protocol(e.to_string()))
            }
            Ending::OutOfSync(e) => {
                METRICS.upstream_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, "closed a session whose protocol state is out of sync");
                Err(ProxyError::Protocol(e.to_string()))
            }
            Ending::Io(dir, e) => {
                if dir == Direction::Downstream {
                    METRICS.upstream_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e.into())
            }
        }
    }
}
