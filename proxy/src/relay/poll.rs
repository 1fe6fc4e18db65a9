//! The relay loop for sessions with no TLS on either leg (TCP or Unix sockets): one thread multiplexes many
//! sessions on epoll (mio, edge-triggered; write events only while bytes wait); a readable socket is read,
//! the bytes go through the [`Session`] and straight on to the other socket — one read and one write per
//! batch of messages, no task, no future, no cross-thread wake-up (PgBouncer's shape). Idle sessions hold no
//! buffers: reads land in the loop's scratch buffer and output is built in the loop's scratch buffer; a
//! session keeps bytes only while a frame is incomplete or its peer has not taken everything yet (then that
//! direction stops reading: backpressure).
//!
//! The async side (startup, the upstream connect) hands a session over with [`RelayLoop::submit`] and
//! awaits its [`Ending`] on a oneshot channel; dropping that receiver (shutdown) closes the session at the
//! loop's next tick.

use std::io::{self, Read, Write};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tokio::sync::oneshot;

use super::{feed, Direction, Ending};
use crate::net::StdSocket;
use crate::session::Session;
use crate::telemetry::Telemetry;

/// Bytes read per read call (the scratch buffer).
const READ_SIZE: usize = 64 * 1024;
/// The token of the loop's waker (new sessions to take).
const WAKER: Token = Token(usize::MAX);
/// How often, at most, sessions are checked for idleness and abandonment.
const TICK: Duration = Duration::from_millis(100);
/// Reads one pump makes before letting the loop's other sessions go first (fairness: a session streaming
/// a large result or COPY does not hold the thread); it continues on the loop's next turn.
const READS_PER_TURN: usize = 16;

/// A session handed to a relay loop: both sockets connected (startup packet already sent upstream).
pub struct Job {
    /// The client's socket.
    pub client: StdSocket,
    /// The server's socket.
    pub server: StdSocket,
    /// The session's decisions.
    pub session: Session,
    /// Close the session after this long without traffic.
    pub idle_timeout: Option<Duration>,
    /// Receives how the session ended; dropping its receiver closes the session.
    pub done: oneshot::Sender<Ending>,
}

/// A handle to a relay loop thread. The thread ends when every handle is gone and its sessions ended.
#[derive(Debug, Clone)]
pub struct RelayLoop {
    tx: mpsc::Sender<Job>,
    waker: Arc<Waker>,
}

impl RelayLoop {
    /// Starts a relay loop thread named `name`; finished spans go to `telemetry`.
    pub fn spawn(name: String, telemetry: Option<Arc<Telemetry>>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let mut lp = Loop {
            poll,
            rx,
            sessions: Slab::new(),
            scratch: vec![0; READ_SIZE],
            out: BytesMut::new(),
            telemetry,
            again: Vec::new(),
        };
        std::thread::Builder::new().name(name).spawn(move || lp.run())?;
        Ok(RelayLoop { tx, waker })
    }

    /// Hands a session to the loop. The job comes back when the loop is gone.
    pub fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        self.tx.send(job).map_err(|e| Box::new(e.0))?;
        // A failed wake leaves the job queued until the loop's next tick: late, not lost.
        let _ = self.waker.wake();
        Ok(())
    }
}

/// One direction's bytes kept between reads.
#[derive(Debug, Default)]
struct Side {
    /// Bytes read but not consumed: an incomplete frame.
    partial: Vec<u8>,
    /// Bytes for the destination that it did not take yet.
    unsent: Vec<u8>,
    /// The source reported its end (or an error): read it until it says so, short reads or not.
    hup: bool,
    /// The destination is registered for writability: only while `unsent` holds bytes, as PgBouncer asks
    /// for write events. A Unix socket reports writable each time its peer reads (TCP only after it ran
    /// out of space), so permanent interest would wake the loop once more per message (measured at one client
    /// on Unix sockets: 37.5 µs of CPU per transaction with it, 26.8 without; proxy/bench/RESULTS.md).
    armed: bool,
}

/// A relay loop's socket (non-blocking, registered edge-triggered).
enum Socket {
    Tcp(TcpStream),
    Unix(mio::net::UnixStream),
}

impl From<StdSocket> for Socket {
    fn from(s: StdSocket) -> Self {
        match s {
            StdSocket::Tcp(s) => Socket::Tcp(TcpStream::from_std(s)),
            StdSocket::Unix(s) => Socket::Unix(mio::net::UnixStream::from_std(s)),
        }
    }
}

impl Socket {
    #[inline(always)]
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&*s).read(buf),
            Socket::Unix(s) => (&*s).read(buf),
        }
    }

    #[inline(always)]
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&*s).write(buf),
            Socket::Unix(s) => (&*s).write(buf),
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Socket::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl mio::event::Source for Socket {
    fn register(&mut self, registry: &mio::Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.register(registry, token, interests),
            Socket::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &mio::Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.reregister(registry, token, interests),
            Socket::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.deregister(registry),
            Socket::Unix(s) => s.deregister(registry),
        }
    }
}

struct Conn {
    client: Socket,
    server: Socket,
    session: Session,
    up: Side,
    down: Side,
    idle_timeout: Option<Duration>,
    done: oneshot::Sender<Ending>,
}

impl Conn {
    fn parts(&mut self, dir: Direction) -> (&Socket, &Socket, &mut Side, &mut Session) {
        match dir {
            Direction::Upstream => (&self.client, &self.server, &mut self.up, &mut self.session),
            Direction::Downstream => (&self.server, &self.client, &mut self.down, &mut self.session),
        }
    }

    /// `dir`'s destination socket with its token, and `dir`'s side.
    fn destination(&mut self, key: usize, dir: Direction) -> (&mut Socket, Token, &mut Side) {
        match dir {
            Direction::Upstream => (&mut self.server, Token(key * 2 + 1), &mut self.up),
            Direction::Downstream => (&mut self.client, Token(key * 2), &mut self.down),
        }
    }
}

struct Loop {
    poll: Poll,
    rx: mpsc::Receiver<Job>,
    sessions: Slab<Conn>,
    /// Where every read lands first.
    scratch: Vec<u8>,
    /// Where every session writes what goes on.
    out: BytesMut,
    telemetry: Option<Arc<Telemetry>>,
    /// Pumps that stopped at their turn's budget with bytes left to read: resumed on the next turn (no
    /// readiness event will announce those bytes again).
    again: Vec<(usize, Direction)>,
}

impl Loop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        // Compared, not subtracted, on every wake-up: a subtraction of instants costs more than the compare.
        let mut next_tick = Instant::now() + TICK;
        loop {
            let timeout = if !self.again.is_empty() {
                Duration::ZERO
            } else if self.sessions.is_empty() {
                Duration::from_secs(1)
            } else {
                TICK
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "relay loop cannot poll: its sessions end");
                    for c in self.sessions.drain() {
                        let _ = c.done.send(Ending::Io(Direction::Downstream, io::Error::new(e.kind(), e.to_string())));
                    }
                    return;
                }
            }
            let now = Instant::now();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let (key, dir_of_socket) = (ev.token().0 / 2, ev.token().0 % 2);
                let Some(conn) = self.sessions.get_mut(key) else { continue };
                // Readable on a socket: pump from it. Writable: pump toward it, if it owes anything.
                let (from, toward) = match dir_of_socket {
                    0 => (Direction::Upstream, Direction::Downstream),
                    _ => (Direction::Downstream, Direction::Upstream),
                };
                let closed = ev.is_read_closed() || ev.is_error();
                let mut result = Ok(());
                if ev.is_writable() && !side(conn, toward).unsent.is_empty() {
                    result = self.pump(key, toward, false, now);
                }
                if result.is_ok() && (ev.is_readable() || closed) {
                    result = self.pump(key, from, closed, now);
                }
                if let Err(ending) = result {
                    self.end(key, ending);
                }
            }
            for (key, dir) in std::mem::take(&mut self.again) {
                if let Err(ending) = self.pump(key, dir, false, now) {
                    self.end(key, ending);
                }
            }
            if !self.take_jobs(now) {
                return;
            }
            if now >= next_tick {
                next_tick = now + TICK;
                self.tick(now);
            }
        }
    }

    /// Registers new sessions; `false` when every handle is gone and no session is left.
    fn take_jobs(&mut self, now: Instant) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(job) => self.add(job, now),
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return !self.sessions.is_empty(),
            }
        }
    }

    fn add(&mut self, job: Job, now: Instant) {
        let Job { client, server, session, idle_timeout, done } = job;
        let (mut client, mut server) = (Socket::from(client), Socket::from(server));
        let entry = self.sessions.vacant_entry();
        let key = entry.key();
        let registered = self
            .poll
            .registry()
            .register(&mut client, Token(key * 2), Interest::READABLE)
            .and_then(|()| self.poll.registry().register(&mut server, Token(key * 2 + 1), Interest::READABLE));
        if let Err(e) = registered {
            let _ = done.send(Ending::Io(Direction::Upstream, e));
            return;
        }
        let mut session = session;
        if idle_timeout.is_some() {
            session.track_idle(now);
        }
        entry.insert(Conn { client, server, session, up: Side::default(), down: Side::default(), idle_timeout, done });
        // Bytes may have arrived before registration (the server's first reply): edge-triggered readiness
        // reports them anyway on registration, but reading now costs one call and removes the doubt.
        for dir in [Direction::Downstream, Direction::Upstream] {
            if let Err(ending) = self.pump(key, dir, false, now) {
                self.end(key, ending);
                return;
            }
        }
    }

    /// Moves bytes from `dir`'s source to its destination: first what the destination still owes, then
    /// reads until the source has nothing more (`drain`: read until it says so; else a short read says
    /// it — edge-triggered readiness reports any byte that arrives after it) or the destination blocks
    /// (then it resumes when the destination is writable).
    fn pump(&mut self, key: usize, dir: Direction, drain: bool, now: Instant) -> Result<(), Ending> {
        let moved = self.move_bytes(key, dir, drain, now);
        // Writability interest follows `unsent` (one compare per pump; a system call only when it changes).
        let Some(conn) = self.sessions.get_mut(key) else { return moved };
        let (dst, token, side) = conn.destination(key, dir);
        let want = !side.unsent.is_empty();
        if want != side.armed {
            side.armed = want;
            let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            self.poll.registry().reregister(dst, token, interest).map_err(|e| Ending::Io(dir, e))?;
        }
        moved
    }

    /// [`Loop::pump`]'s work: the bytes themselves.
    fn move_bytes(&mut self, key: usize, dir: Direction, drain: bool, now: Instant) -> Result<(), Ending> {
        let telemetry = self.telemetry.as_deref();
        let Some(conn) = self.sessions.get_mut(key) else { return Ok(()) };
        let (src, dst, side, session) = conn.parts(dir);
        side.hup |= drain;
        if !side.unsent.is_empty() {
            let n = write_some(dst, &side.unsent).map_err(|e| Ending::Io(dir, e))?;
            side.unsent.drain(..n);
            if !side.unsent.is_empty() {
                return Ok(());
            }
            side.unsent = Vec::new();
        }
        for _ in 0..READS_PER_TURN {
            // Read into the scratch buffer, or behind an incomplete frame.
            let (n, room) = if side.partial.is_empty() {
                match read_some(src, &mut self.scratch) {
                    Ok(n) => (n, self.scratch.len()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(Ending::Io(dir, e)),
                }
            } else {
                let have = side.partial.len();
                let room = Session::need(&side.partial).saturating_sub(have).max(READ_SIZE);
                side.partial.resize(have + room, 0);
                let r = read_some(src, &mut side.partial[have..]);
                side.partial.truncate(have + *r.as_ref().unwrap_or(&0));
                match r {
                    Ok(n) => (n, room),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(Ending::Io(dir, e)),
                }
            };
            if n == 0 {
                return Err(Ending::Closed);
            }
            dir.count_read(n);
            self.out.clear();
            if side.partial.is_empty() {
                let input = &self.scratch[..n];
                let used = feed(session, dir, input, &mut self.out, now, telemetry)?;
                side.partial.extend_from_slice(&input[used..]);
            } else {
                let used = feed(session, dir, &side.partial, &mut self.out, now, telemetry)?;
                side.partial.drain(..used);
                if side.partial.is_empty() {
                    side.partial = Vec::new();
                }
            }
            if !self.out.is_empty() {
                let sent = write_some(dst, &self.out).map_err(|e| Ending::Io(dir, e))?;
                if sent < self.out.len() {
                    side.unsent.extend_from_slice(&self.out[sent..]);
                    return Ok(());
                }
            }
            if n < room && !side.hup {
                return Ok(());
            }
        }
        self.again.push((key, dir));
        Ok(())
    }

    /// Ends idle sessions and those whose owner stopped waiting (shutdown).
    fn tick(&mut self, now: Instant) {
        let ended: Vec<(usize, Ending)> = self
            .sessions
            .iter()
            .filter_map(|(key, c)| {
                if c.done.is_closed() {
                    return Some((key, Ending::Shutdown));
                }
                let timeout = c.idle_timeout?;
                c.session.idle_for(now).filter(|d| *d >= timeout).map(|_| (key, Ending::Idle))
            })
            .collect();
        for (key, ending) in ended {
            self.end(key, ending);
        }
    }

    /// Closes a session: tells the client why (when it should be told), then reports the ending.
    fn end(&mut self, key: usize, ending: Ending) {
        let Some(mut conn) = self.sessions.try_remove(key) else { return };
        let _ = self.poll.registry().deregister(&mut conn.client);
        let _ = self.poll.registry().deregister(&mut conn.server);
        if let Some(msg) = ending.farewell() {
            // Best effort without waiting: a client that does not read it loses nothing else.
            let _ = write_some(&conn.client, &msg);
            let _ = conn.client.shutdown_write();
        }
        let _ = conn.done.send(ending);
    }
}

fn side(conn: &Conn, dir: Direction) -> &Side {
    match dir {
        Direction::Upstream => &conn.up,
        Direction::Downstream => &conn.down,
    }
}

// `read_some` and `write_some` (and the socket's `read`/`write`) are forced inline: once the socket became an
// enum, LTO left them as calls, ~30 instructions each, four per transaction (callgrind, prepared: 3,540 →
// 3,670 for the relay).
#[inline(always)]
fn read_some(src: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match src.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Writes what the socket takes now; `Ok(n)` with `n` short of `buf.len()` when it would block.
#[inline(always)]
fn write_some(dst: &Socket, buf: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < buf.len() {
        match dst.write(&buf[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}
