//! The listener: accepts clients, negotiates the first packets, connects upstream, runs the relay, and
//! shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};

use crate::cancel::CancelKeys;
use crate::config::{InjectConfig, ProxyArgs, ProxyConfig};
use crate::error::ProxyError;
use crate::metrics::{GaugeGuard, METRICS};
use crate::net::{Listener, Peer, Socket, StdSocket};
use crate::relay::poll::{Job, RelayLoop};
use crate::relay::{Direction, Ending};
use crate::session::Session;
use crate::startup::{classify, read_packet, FirstPacket};
use crate::upstream::Connection;

/// Shared by all sessions of one proxy.
struct Shared {
    config: ProxyConfig,
    inject: Arc<InjectConfig>,
    /// BackendKeyData bodies (pid + secret) of live sessions, so a CancelRequest is forwarded only for
    /// keys this proxy relayed.
    keys: Arc<CancelKeys>,
    active: AtomicUsize,
    idle: Notify,
    counter: AtomicU64,
    /// TLS for the client leg, if configured.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// TLS for the upstream leg, if configured.
    upstream_tls: Option<crate::tls::UpstreamTls>,
    /// Flips to true when open sessions must close (shutdown timeout reached).
    close_tx: watch::Sender<bool>,
    /// The span exporter, when `--otlp` is on.
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// The relay loop threads sessions without TLS run on, taken in turn.
    loops: Vec<RelayLoop>,
    next_loop: AtomicUsize,
}

/// A running proxy started with [`start`].
pub struct ProxyHandle {
    addr: SocketAddr,
    socket: Option<std::path::PathBuf>,
    admin: Option<SocketAddr>,
    stop_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl ProxyHandle {
    /// The address the proxy listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's Unix socket file (`listen_socket`), when enabled: `<dir>/.s.PGSQL.<port>`.
    pub fn socket_path(&self) -> Option<&std::path::Path> {
        self.socket.as_deref()
    }

    /// The admin endpoint's address (`/metrics`, `/health`), when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Number of client sessions open right now.
    pub fn active_sessions(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Stops accepting, lets open sessions run for up to the configured shutdown timeout, then closes
    /// them. Returns when every session is gone.
    pub async fn shutdown(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
        let timeout = self.shared.config.shutdown_timeout;
        if tokio::time::timeout(timeout, wait_idle(&self.shared)).await.is_err() {
            tracing::info!(sessions = self.shared.active.load(Ordering::SeqCst), "shutdown timeout: closing sessions");
            let _ = self.shared.close_tx.send(true);
            wait_idle(&self.shared).await;
        }
        if let Some(t) = &self.shared.telemetry {
            t.shutdown();
        }
    }
}

async fn wait_idle(shared: &Shared) {
    loop {
        let notified = shared.idle.notified();
        if shared.active.load(Ordering::SeqCst) == 0 {
            return;
        }
        notified.await;
    }
}

/// Checks that the upstream accepts connections.
async fn probe_upstream(config: &ProxyConfig) -> Result<(), ProxyError> {
    let addr = config.upstream.to_string();
    let unreachable = |reason: String| ProxyError::UpstreamUnreachable { addr: addr.clone(), reason };
    match tokio::time::timeout(config.connect_timeout, crate::upstream::connect(&config.upstream)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {:?}", config.connect_timeout))),
    }
}

/// Binds the listener, checks the upstream, and starts accepting in the background.
pub async fn start(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let upstream_tls = crate::upstream::tls(&config.upstream, config.upstream_tls, config.upstream_ca.as_deref())?;
    probe_upstream(&config).await?;
    let telemetry = match &config.telemetry {
        Some(t) => Some(Arc::new(crate::telemetry::Telemetry::from_env(
            t.clone(),
            &config.upstream.host,
            config.upstream.port,
        )?)),
        None => None,
    };
    let mut inject = config.inject.clone();
    if let Some(r) = telemetry.as_ref().and_then(|t| t.root_ratio()) {
        inject.sample_ratio = r;
    }
    let listener = Listener::bind(config.listen, config.listen_socket.as_deref()).await?;
    let addr = listener.local_addr().map_err(ProxyError::Runtime)?;
    let socket = listener.socket_path().map(ToOwned::to_owned);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (close_tx, _) = watch::channel(false);
    let threads = config
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)));
    let loops = (0..threads)
        .map(|i| RelayLoop::spawn(format!("sqlc-relay-{i}"), telemetry.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProxyError::Runtime)?;
    let shared = Arc::new(Shared {
        inject: Arc::new(inject),
        config,
        keys: Arc::new(CancelKeys::default()),
        active: AtomicUsize::new(0),
        idle: Notify::new(),
        counter: AtomicU64::new(0),
        close_tx,
        tls,
        upstream_tls,
        telemetry,
        loops,
        next_loop: AtomicUsize::new(0),
    });
    match &socket {
        Some(path) => {
            tracing::info!(%addr, socket = %path.display(), upstream = %shared.config.upstream, "proxy listening")
        }
        None => tracing::info!(%addr, upstream = %shared.config.upstream, "proxy listening"),
    }
    let workers = Workers::spawn(threads, &shared)?;
    // The admin endpoint is auxiliary: a busy port (e.g. a second proxy on one host) must not stop the proxy.
    let admin = match shared.config.admin {
        Some(a) => match crate::admin::start(a, stop_rx.clone()).await {
            Ok(bound) => Some(bound),
            Err(e) => {
                tracing::warn!(error = %e, "admin endpoint disabled (use --admin ADDR or --admin off)");
                None
            }
        },
        None => None,
    };
    let task = tokio::spawn(accept_loop(listener, shared.clone(), workers, stop_rx));
    Ok(ProxyHandle { addr, socket, admin, stop_tx, task, shared })
}

/// Runs the proxy until `shutdown` completes, then shuts down gracefully.
pub async fn run(config: ProxyConfig, shutdown: impl Future<Output = ()>) -> Result<(), ProxyError> {
    let handle = start(config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

/// Resolves `args`, builds a multi-threaded runtime and runs until SIGTERM or SIGINT. For the operator
/// binary: print the error (one line) and exit non-zero on `Err`.
pub fn run_blocking(args: ProxyArgs) -> Result<(), ProxyError> {
    // The file's settings too (the log format among them), whoever the caller is.
    let args = args.with_file()?;
    let config = args.resolve()?;
    crate::logging::init(args.log_format.as_deref())?;
    // The control plane (accept loop, signals) needs little; sessions run on their own threads.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ProxyError::Runtime)?;
    rt.block_on(async move {
        let signals = shutdown_signal().map_err(ProxyError::Runtime)?;
        run(config, signals).await
    })
}

/// A future completing on the first SIGTERM or SIGINT.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Session threads: each runs its own single-threaded tokio runtime, and a session lives on one thread
/// for its whole life, so socket wake-ups never cross threads (measured: a multi-threaded work-stealing
/// runtime spent most of its time in task switches and cross-thread wake-ups under pgbench).
struct Workers {
    senders: Vec<tokio::sync::mpsc::UnboundedSender<(StdSocket, Peer)>>,
    next: usize,
}

impl Workers {
    fn spawn(n: usize, shared: &Arc<Shared>) -> Result<Self, ProxyError> {
        let mut senders = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ProxyError::Runtime)?;
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("sqlc-proxy-{i}"))
                .spawn(move || rt.block_on(worker(rx, shared)))
                .map_err(ProxyError::Runtime)?;
            senders.push(tx);
        }
        Ok(Workers { senders, next: 0 })
    }

    fn dispatch(&mut self, sock: StdSocket, peer: Peer) -> bool {
        let i = self.next % self.senders.len();
        self.next = self.next.wrapping_add(1);
        self.senders[i].send((sock, peer)).is_ok()
    }
}

async fn worker(mut rx: tokio::sync::mpsc::UnboundedReceiver<(StdSocket, Peer)>, shared: Arc<Shared>) {
    while let Some((sock, peer)) = rx.recv().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let _open = GaugeGuard::new(&METRICS.client_connections, &METRICS.client_connections_total);
            let mut close = shared.close_tx.subscribe();
            match Socket::from_std(sock) {
                Ok(sock) => {
                    tokio::select! {
                        r = handle_client(sock, &shared) => {
                            if let Err(e) = r {
                                tracing::debug!(%peer, error = %e, "session ended with an error");
                            }
                        }
                        _ = close.wait_for(|c| *c) => {}
                    }
                }
                Err(e) => tracing::warn!(%peer, error = %e, "cannot register client socket"),
            }
            if shared.active.fetch_sub(1, Ordering::SeqCst) == 1 {
                shared.idle.notify_waiters();
            }
        });
    }
    // No more new sessions: keep this runtime (and its sessions) alive until all sessions are gone.
    wait_idle(&shared).await;
}

/// Accepts until stopped; dropping the listener at the end removes the socket file.
async fn accept_loop(listener: Listener, shared: Arc<Shared>, mut workers: Workers, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    shared.active.fetch_add(1, Ordering::SeqCst);
                    if !workers.dispatch(sock, peer) && shared.active.fetch_sub(1, Ordering::SeqCst) == 1 {
                        shared.idle.notify_waiters();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn handle_client(mut client: Socket, shared: &Shared) -> Result<(), ProxyError> {
    // Negotiation: SSLRequest gets `S` and a TLS handshake when TLS is configured, else `N`; GSSENCRequest
    // always gets `N`; then the real first packet.
    let deadline = tokio::time::Instant::now() + shared.config.startup_timeout;
    let first = loop {
        let packet = match within(deadline, read_packet(&mut client)).await {
            Ok(p) => p,
            Err(e @ ProxyError::Protocol(_)) => {
                reject(&mut client, &e).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        match classify(&packet) {
            Ok(FirstPacket::Ssl) => {
                if let Some(acceptor) = &shared.tls {
                    client.write_all(b"S").await?;
                    let mut stream = within(deadline, async { Ok(acceptor.accept(client).await?) }).await?;
                    let packet = within(deadline, read_packet(&mut stream)).await?;
                    let first = match classify(&packet) {
                        Ok(f @ (FirstPacket::Startup { .. } | FirstPacket::Cancel { .. })) => f,
                        Ok(_) => return Err(ProxyError::Protocol("encryption request inside TLS".into())),
                        Err(e) => return Err(e),
                    };
                    return serve(ClientIo::Tls(Box::new(stream)), first, shared).await;
                }
                client.write_all(b"N").await?
            }
            Ok(FirstPacket::GssEnc) => client.write_all(b"N").await?,
            Ok(other) => break other,
            Err(e) => {
                reject(&mut client, &e).await;
                return Err(e);
            }
        }
    };
    serve(ClientIo::Plain(client), first, shared).await
}

/// Runs a negotiation step, failing with a protocol error at the startup deadline.
async fn within<T>(
    deadline: tokio::time::Instant,
    step: impl Future<Output = Result<T, ProxyError>>,
) -> Result<T, ProxyError> {
    tokio::time::timeout_at(deadline, step)
        .await
        .unwrap_or_else(|_| Err(ProxyError::Protocol("startup packet not received in time".into())))
}

/// Sends a FATAL protocol-violation error and ends the connection without a reset: unread input would
/// make the kernel answer the close with RST, which can destroy the error before the client reads it.
async fn reject(client: &mut Socket, e: &ProxyError) {
    use tokio::io::AsyncReadExt;
    let mut out = BytesMut::new();
    crate::frame::write_error(&mut out, "FATAL", "08P01", &format!("sqlcommenter proxy: {e}"));
    if client.write_all(&out).await.is_err() || client.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while let Ok(n) = client.read(&mut sink).await {
            total += n;
            if n == 0 || total > 1 << 20 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

/// A client connection after negotiation.
enum ClientIo {
    Plain(Socket),
    Tls(Box<tokio_rustls::server::TlsStream<Socket>>),
}

impl ClientIo {
    /// Writes `msg` (an error before the relay starts), then ends the connection when `close`.
    async fn tell(&mut self, msg: &[u8], close: bool) {
        let _ = match self {
            ClientIo::Plain(s) => s.write_all(msg).await,
            ClientIo::Tls(s) => s.write_all(msg).await,
        };
        if close {
            let _ = match self {
                ClientIo::Plain(s) => s.shutdown().await,
                ClientIo::Tls(s) => s.shutdown().await,
            };
        }
    }
}

async fn serve(mut client: ClientIo, first: FirstPacket, shared: &Shared) -> Result<(), ProxyError> {
    // `require_tls` holds for TCP clients: one on the Unix socket is local (PostgreSQL's `hostssl` does not
    // apply to `local` either, and libpq asks for no TLS there).
    let secure = matches!(client, ClientIo::Tls(_) | ClientIo::Plain(Socket::Unix(_)));
    let (raw, params) = match first {
        FirstPacket::Cancel { raw, key } => return forward_cancel(shared, &raw, &key).await,
        FirstPacket::Startup { raw, params } => (raw, params),
        FirstPacket::Ssl | FirstPacket::GssEnc => return Ok(()),
    };
    if shared.config.require_tls && !secure {
        let mut out = BytesMut::new();
        crate::frame::write_error(&mut out, "FATAL", "28000", "sqlcommenter proxy: TLS is required");
        client.tell(&out, false).await;
        return Ok(());
    }
    if let Some(max) = shared.config.max_clients {
        if shared.active.load(Ordering::SeqCst) > max {
            METRICS.clients_refused.fetch_add(1, Ordering::Relaxed);
            let mut out = BytesMut::new();
            crate::frame::write_error(&mut out, "FATAL", "53300", "sqlcommenter proxy: too many connections");
            client.tell(&out, true).await;
            return Ok(());
        }
    }
    let info = FirstPacket::startup_info(&params);
    let opening = crate::upstream::open(&shared.config.upstream, shared.upstream_tls.as_ref());
    let upstream = match tokio::time::timeout(shared.config.connect_timeout, opening).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refuse(client, shared, e.to_string()).await,
        Err(_) => return refuse(client, shared, "connect timeout".into()).await,
    };
    let _server = GaugeGuard::new(&METRICS.server_connections, &METRICS.server_connections_total);
    let salt = shared.counter.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(shared.inject.clone(), &info, salt).with_keys(shared.keys.clone());
    if shared.telemetry.is_some() {
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let database = param("database").or_else(|| param("user")).unwrap_or("");
        session = session.with_spans(database);
    }
    if shared.config.idle_timeout.is_some() {
        session.track_idle(std::time::Instant::now());
    }
    let telemetry = shared.telemetry.as_deref();
    let idle_timeout = shared.config.idle_timeout;
    let ending = match (client, upstream) {
        // No TLS on either leg: the session moves to a relay loop thread.
        (ClientIo::Plain(client), Connection::Plain(mut up)) => {
            up.write_all(&raw).await?;
            let (done, ended) = tokio::sync::oneshot::channel();
            let job = Job { client: client.into_std()?, server: up.into_std()?, session, idle_timeout, done };
            let n = shared.next_loop.fetch_add(1, Ordering::Relaxed);
            shared.loops[n % shared.loops.len()]
                .submit(job)
                .map_err(|_| ProxyError::Runtime(std::io::Error::other("the relay loop is gone")))?;
            ended.await.unwrap_or_else(|_| {
                Ending::Io(Direction::Downstream, std::io::Error::other("the relay loop ended the session"))
            })
        }
        (client, upstream) => {
            let (cr, cw) = match client {
                ClientIo::Plain(s) => halves(s),
                ClientIo::Tls(s) => halves(*s),
            };
            let (ur, mut uw) = match upstream {
                Connection::Plain(s) => halves(s),
                Connection::Tls(s) => halves(*s),
            };
            uw.write_all(&raw).await?;
            crate::relay::pump::run(cr, cw, ur, uw, session, telemetry, idle_timeout).await
        }
    };
    ending.into_result()
}

/// The two halves of a stream, boxed (the async pumps take any mix of plain and TLS legs).
fn halves<S>(s: S) -> (Box<dyn AsyncRead + Unpin + Send>, Box<dyn AsyncWrite + Unpin + Send>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (r, w) = tokio::io::split(s);
    (Box::new(r), Box::new(w))
}

async fn refuse(mut client: ClientIo, shared: &Shared, reason: String) -> Result<(), ProxyError> {
    let addr = shared.config.upstream.to_string();
    METRICS.upstream_errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(upstream = %addr, %reason, "upstream connect failed");
    let mut out = BytesMut::new();
    crate::frame::write_error(
        &mut out,
        "FATAL",
        "08006",
        &format!("sqlcommenter proxy: cannot connect to upstream {addr}: {reason}"),
    );
    client.tell(&out, false).await;
    Err(ProxyError::UpstreamUnreachable { addr, reason })
}

/// How long a forwarded CancelRequest may take: connecting upstream, and the server ending that connection.
const CANCEL_BOUND: Duration = Duration::from_secs(5);

/// Forwards a CancelRequest for a live session and returns only once the server has ended the forwarded
/// connection (or [`CANCEL_BOUND`] passed). Clients (libpq's `PQcancel`, asyncpg) take the end of their
/// cancel connection as "the cancel has been processed" and send their next statement at once; ending it
/// before the server has signalled the backend lets the cancel hit that next statement instead. An unknown
/// key ends the client's connection at once; nothing is held per session.
async fn forward_cancel(shared: &Shared, raw: &[u8], key: &[u8]) -> Result<(), ProxyError> {
    use tokio::io::AsyncReadExt;
    if !shared.keys.contains(key) {
        tracing::debug!("cancel request for an unknown key ignored");
        return Ok(());
    }
    let forward = async {
        let mut up = crate::upstream::connect(&shared.config.upstream).await?;
        up.write_all(raw).await?;
        // The server sends nothing back: read until it closes (bounded in bytes as in time).
        let mut sink = [0u8; 256];
        let mut total = 0usize;
        loop {
            match up.read(&mut sink).await? {
                0 => return Ok::<(), std::io::Error>(()),
                n => total += n,
            }
            if total > 4096 {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "upstream answered a cancel request"));
            }
        }
    };
    match tokio::time::timeout(CANCEL_BOUND, forward).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "forwarding a cancel request failed");
            Err(e.into())
        }
        Err(_) => {
            tracing::warn!("the upstream did not end a forwarded cancel request within {CANCEL_BOUND:?}");
            Ok(())
        }
    }
}
