//! One client session's decisions, sans I/O: what to forward, rewrite, inject and swallow.
//!
//! The relay hands [`Session::client_bytes`] / [`Session::server_bytes`] whatever it read, with the time
//! it read it; the session appends what must be written to the other side into an output buffer and says
//! how many input bytes it consumed. Frames it does not rewrite are copied byte for byte; frames too large
//! to decode ([`MAX_DECODE`]) are streamed through in pieces, so memory stays bounded. What the outside
//! counts or exports (metrics, finished spans) the session returns as [`Event`]s ([`Session::events`]):
//! no clock, no globals, no exporter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use sqlcommenter::carrier::{self, Scope, Tracker};
use sqlcommenter::{Commenter, TraceContext};

use crate::cancel::CancelKeys;
use crate::config::InjectConfig;
use crate::context::{guc_from_options, IdGenerator};
use crate::frame::{self, FrameError, HEADER_LEN};
use crate::metrics::SkipReason;
use crate::state::{Expect, OutOfSync, Pending, ProtocolState, ServerEvent, Shift};
pub use event::{Event, Protocol};
use inject::build_commenter;
use masquerade::Masquerade;
use spans::SpanTracker;

pub mod event;
mod inject;
mod masquerade;
pub mod spans;

/// Largest frame the proxy decodes (to rewrite or read it); larger frames are streamed through untouched.
pub const MAX_DECODE: usize = 1 << 20;

/// Client frames claiming this many bytes or more are refused (ErrorResponse 08P01, disconnect).
pub const MAX_CLIENT_FRAME: usize = 1 << 30;

/// Name of the portal the reserved statement runs in (closed right after, so the client's unnamed
/// portal is never touched).
pub const RESERVED_PORTAL: &[u8] = b"__sqlc_tcp";

/// The startup parameters the session needs.
#[derive(Debug, Clone, Default)]
pub struct StartupInfo {
    /// `application_name`, if the client sent one.
    pub application_name: Option<String>,
    /// `options`, if the client sent it.
    pub options: Option<String>,
}

/// Streaming state of one direction: bytes of a large frame still to pass, and whether they are relayed.
#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    left: usize,
    relay: bool,
}

/// The client's unnamed prepared statement, which the carrier (parsed as the unnamed statement, so that
/// nothing of the proxy's shows in `pg_prepared_statements`) replaces for a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unnamed {
    /// None exists (never parsed, closed, or dropped by a simple Query).
    Absent,
    /// This Parse created it: sent again after the carrier.
    Parsed(Box<UnnamedStatement>),
    /// One exists but was too large to keep: no carrier may replace it.
    TooLarge,
}

/// Whether the server's unnamed statement is the proxy's carrier (left there by a carrier write when the
/// client had no unnamed statement to restore): then the next carrier of the same transaction binds it
/// again without a Parse. Across an idle ReadyForQuery only where the server session is the client's own:
/// behind a transaction pooler the next transaction may run on another server session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CarrierStatement {
    /// Not known to be the carrier.
    Absent,
    /// The carrier's Parse was sent; its ParseComplete has not arrived.
    Sent,
    /// The server parsed it and nothing replaced it since.
    Ready,
}

/// Whose server session the proxy talks to, as the carrier statement's `pg_backend_pid()` tells against the
/// process id in the BackendKeyData the client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerSession {
    /// No carrier has answered yet (or its row could not be read).
    Unknown,
    /// PostgreSQL's own, for this client alone (the ids match): what the proxy leaves on it (the carrier
    /// statement, a session-scoped carrier) is still there in the next transaction.
    Own,
    /// A pooler's (the ids differ: PgBouncer, pgdog and the like answer with keys of their own): the next
    /// transaction may run on another server session.
    Pooled,
}

/// The client's unnamed statement as the proxy sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnnamedStatement {
    /// The Parse frame as sent upstream.
    sent: Vec<u8>,
    /// Set when the proxy commented it: what it needs to comment it again for a later execution.
    commented: Option<Commented>,
}

/// A commented unnamed statement: its comment names one execution's context (and span), so a second
/// execution of the same statement is parsed again with its own.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Commented {
    /// Where the comment sits in the sent text (byte offset, length): the client's text is the sent one
    /// without it (kept this way: no copy of the text per Parse).
    inserted: (usize, usize),
    /// The context the comment was made for (before the proxy's span became its parent).
    ctx: Option<TraceContext>,
    /// An execution (Bind) already used the comment.
    bound: bool,
}

impl UnnamedStatement {
    /// The client's text and the rest of its Parse (parameter types), when the proxy commented it.
    fn client_parse(&self) -> Option<(Vec<u8>, &[u8])> {
        let (at, len) = self.commented.as_ref()?.inserted;
        let p = frame::parse_body(self.sent.get(HEADER_LEN..)?)?;
        let mut query = p.query.get(..at)?.to_vec();
        query.extend_from_slice(p.query.get(at + len..)?);
        Some((query, p.rest))
    }
}

/// One client session (see the module docs).
#[derive(Debug)]
pub struct Session {
    /// The protocol state machine.
    pub proto: ProtocolState,
    cfg: Arc<InjectConfig>,
    commenter: Commenter,
    ids: IdGenerator,
    /// The application_name the client believes it has, and the values the carrier wrote.
    app: Masquerade,
    startup_ctx: Option<TraceContext>,
    guc_ctx: Option<TraceContext>,
    /// The session GUC's value from the startup `options`: its session default, what `RESET` and
    /// `DISCARD ALL` return it to.
    options_ctx: Option<TraceContext>,
    txn_ctx: Option<TraceContext>,
    named_ctx: HashMap<Vec<u8>, TraceContext>,
    /// Named statements that cannot run inside a transaction block (no carrier may share it).
    no_txn_block: std::collections::HashSet<Vec<u8>>,
    /// Named statements whose text may change settings (their execution makes the carrier unknown).
    touches_settings: std::collections::HashSet<Vec<u8>>,
    /// A statement the client ran may have changed the carrier's setting.
    settings_dirty: bool,
    unnamed: Unnamed,
    /// Whether the server's unnamed statement is the carrier.
    carrier_statement: CarrierStatement,
    /// Whether the server session is this client's alone.
    server_session: ServerSession,
    /// What the server's carrier setting holds.
    tracker: Tracker,
    /// The scope of the last carrier write (a failed one leaves that scope's value unknown).
    carrier_scope_sent: Scope,
    /// Whether the client's transaction is open as of the messages sent so far (a pipeline's replies lag
    /// behind: a Sync outside a transaction ends the request's implicit transaction when it is sent).
    open_txn: bool,
    /// Named statements that open (`true`) or end (`false`) a transaction when executed.
    txn_control: HashMap<Vec<u8>, bool>,
    /// Named statements that set the client's session context when executed (`set_config` of the
    /// session GUC, `RESET`), with the context they leave.
    sets_context: HashMap<Vec<u8>, Option<TraceContext>>,
    /// Where the proxy's comment sits in the unnamed statement and in the unnamed portal's statement.
    unnamed_statement_shift: Option<Shift>,
    unnamed_portal_shift: Option<Shift>,
    backend_key: Option<Vec<u8>>,
    keys: Option<Arc<CancelKeys>>,
    client_stream: Stream,
    server_stream: Stream,
    /// What the session did since the relay last took its events.
    events: Vec<Event>,
    /// Statement spans, when export is on.
    spans: Option<SpanTracker>,
    /// The last carrier write's frames, sent again while the same value is written.
    carrier_write: Option<inject::CarrierWrite>,
    /// The last comment rendered and the context it was rendered for (see [`Session::write_commented`]).
    comment_cache: Option<(Option<TraceContext>, String)>,
    /// When bytes last arrived from either side (kept only when an idle timeout is configured).
    last_io: Option<Instant>,
}

impl Session {
    /// A session for a client that sent `startup`; `salt` seeds its id generator.
    pub fn new(cfg: Arc<InjectConfig>, startup: &StartupInfo, salt: u64) -> Self {
        let app = startup.application_name.clone().unwrap_or_default();
        let startup_ctx = carrier::decode_application_name(&app).map(|(_, tp)| TraceContext::new(tp));
        let guc_ctx =
            startup.options.as_deref().and_then(|o| guc_from_options(o, &cfg.session_guc)).map(TraceContext::new);
        let commenter = build_commenter(&cfg, carrier::strip_carrier(&app));
        // What the server's carrier holds from the startup packet already: no write needed to carry it.
        let base = match cfg.carrier.as_ref() {
            // Only in the configured format (`legacy@…` is not what the bare-traceparent readers read).
            Some(t) if t.variable() == "application_name" => {
                t.read(&app).filter(|tp| t.value(carrier::strip_carrier(&app), tp) == app)
            }
            Some(t) if t.variable() == cfg.session_guc => guc_ctx.as_ref().map(|c| c.traceparent),
            _ => None,
        };
        Session {
            proto: ProtocolState::default(),
            commenter,
            ids: IdGenerator::new(salt),
            app: Masquerade::new(app),
            startup_ctx,
            options_ctx: guc_ctx.clone(),
            guc_ctx,
            txn_ctx: None,
            named_ctx: HashMap::new(),
            no_txn_block: Default::default(),
            touches_settings: Default::default(),
            settings_dirty: false,
            unnamed: Unnamed::Absent,
            carrier_statement: CarrierStatement::Absent,
            server_session: ServerSession::Unknown,
            tracker: Tracker::with_base(base),
            carrier_scope_sent: Scope::Transaction,
            open_txn: false,
            txn_control: HashMap::new(),
            sets_context: HashMap::new(),
            unnamed_statement_shift: None,
            unnamed_portal_shift: None,
            backend_key: None,
            keys: None,
            client_stream: Stream::default(),
            server_stream: Stream::default(),
            events: Vec::new(),
            spans: None,
            comment_cache: None,
            carrier_write: None,
            last_io: None,
            cfg,
        }
    }

    /// Replaces the id generator (deterministic tests).
    pub fn with_ids(mut self, ids: IdGenerator) -> Self {
        self.ids = ids;
        self
    }

    /// Records a span per statement execution on `database` (see [`spans`]), returned as events.
    pub fn with_spans(mut self, database: &str) -> Self {
        self.spans = Some(SpanTracker::new(database));
        self
    }

    /// What the session did since this was last called (the relay counts and exports it).
    pub fn events(&mut self) -> std::vec::Drain<'_, Event> {
        self.events.drain(..)
    }

    /// Registers the server's cancel key in `keys` while the session lives.
    pub fn with_keys(mut self, keys: Arc<CancelKeys>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The BackendKeyData body the server sent (pid + secret), once seen.
    pub fn backend_key(&self) -> Option<&[u8]> {
        self.backend_key.as_deref()
    }

    /// Tracks activity for [`Session::idle_for`] from `now` on (off until called once).
    pub fn track_idle(&mut self, now: Instant) {
        self.last_io = Some(now);
    }

    /// How long, at `now`, the session has been idle: nothing arrived from either side and no request
    /// is pending. `None` while busy (or when idle tracking is off).
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        let t = self.last_io?;
        (self.proto.is_ready() && self.proto.pending() == 0).then(|| now.saturating_duration_since(t))
    }

    /// Processes client bytes read at `now`; appends what goes upstream to `out`; returns the bytes
    /// consumed. Unconsumed bytes are an incomplete frame: call again with more; [`Session::need`] says
    /// how much to buffer.
    pub fn client_bytes(&mut self, input: &[u8], out: &mut BytesMut, now: Instant) -> Result<usize, FrameError> {
        if self.last_io.is_some() {
            self.last_io = Some(now);
        }
        let mut pos = 0;
        while pos < input.len() {
            if self.client_stream.left > 0 {
                let n = self.client_stream.left.min(input.len() - pos);
                out.put_slice(&input[pos..pos + n]);
                self.client_stream.left -= n;
                pos += n;
                continue;
            }
            let Some(h) = frame::header(&input[pos..])? else { break };
            if h.frame_len > MAX_CLIENT_FRAME {
                // No valid message is this large (PostgreSQL values stop at 1 GB): a lying length.
                return Err(FrameError::BadLength { tag: h.tag as char, len: (h.frame_len - 1) as i32 });
            }
            let avail = input.len() - pos;
            let decode = matches!(h.tag, frame::QUERY | frame::PARSE | frame::BIND | frame::CLOSE);
            if avail < h.frame_len {
                if decode && h.frame_len <= MAX_DECODE {
                    break;
                }
                // Too large to decode, or not needed: stream it.
                if self.cfg.enabled && self.proto.is_ready() && h.tag == frame::QUERY {
                    self.events.push(Event::Skipped(SkipReason::TooLarge));
                }
                if h.tag == frame::PARSE && input[pos + HEADER_LEN..].first().is_none_or(|&b| b == 0) {
                    // An unnamed statement too large to keep (or whose name is not here yet).
                    self.unnamed = Unnamed::TooLarge;
                }
                if h.tag == frame::QUERY {
                    self.unnamed = Unnamed::Absent;
                }
                if matches!(h.tag, frame::QUERY | frame::PARSE) {
                    self.carrier_statement = CarrierStatement::Absent;
                }
                let answered = self.proto.client_message(h.tag);
                self.request_started(h.tag, answered, now);
                out.put_slice(&input[pos..]);
                self.client_stream = Stream { left: h.frame_len - avail, relay: true };
                pos = input.len();
                break;
            }
            self.client_frame(&input[pos..pos + h.frame_len], out, now);
            pos += h.frame_len;
        }
        Ok(pos)
    }

    /// How many bytes the client buffer should be able to hold to make progress (an incomplete frame
    /// the session waits for in full), given the unconsumed bytes.
    pub fn need(rest: &[u8]) -> usize {
        match frame::header(rest) {
            Ok(Some(h)) if h.frame_len <= MAX_DECODE + HEADER_LEN => h.frame_len,
            _ => 0,
        }
    }

    fn client_frame(&mut self, f: &[u8], out: &mut BytesMut, now: Instant) {
        let tag = f[0];
        let body = &f[HEADER_LEN..];
        if self.carrier_statement != CarrierStatement::Absent && replaces_unnamed(tag, body) {
            self.carrier_statement = CarrierStatement::Absent;
        }
        let inject = self.cfg.enabled && self.proto.is_ready();
        if inject && tag == frame::BIND {
            self.carrier_before_bind(body, out);
            self.recomment_unnamed(body, out);
            self.named_statement_runs(body);
        }
        let answered = self.proto.client_message(tag);
        self.request_started(tag, answered, now);
        if answered {
            self.note_shift(tag, body);
        }
        if tag == frame::SYNC && !self.open_txn && self.proto.phase() == crate::state::Phase::Ready {
            self.request_ended();
        }
        if tag == frame::EXECUTE {
            self.events.push(Event::Statement(Protocol::Extended));
        }
        if self.spans.is_some() {
            self.span_frame(tag, body, answered, now);
        }
        match tag {
            frame::QUERY if inject && !self.proto.in_copy() => {
                let sql = frame::text_body(body);
                let mut ctx = self.current_ctx();
                if let Some(t) = &mut self.spans {
                    let client = self.guc_ctx.is_some() || self.startup_ctx.is_some();
                    t.check_load(self.proto.pending());
                    if let Some(c) = ctx {
                        let (c, span) = t.query(sql, c, client, &mut self.ids, now);
                        if let Some(p) = self.proto.last_mut().filter(|_| answered) {
                            p.span = span;
                        }
                        ctx = Some(c);
                    }
                }
                match self.write_commented(sql, ctx.as_ref(), |parts| frame::write_query(out, parts)) {
                    Some(i) if answered => self.proto.set_last_shift(i.shift),
                    Some(_) => {}
                    None => out.put_slice(f),
                }
                // A simple Query drops the unnamed statement.
                self.unnamed = Unnamed::Absent;
                // Its effects (a BEGIN, a SET of the session context) apply from the next request on.
                self.client_statement(None, sql);
                if !self.open_txn {
                    self.request_ended();
                }
            }
            frame::PARSE if inject => match frame::parse_body(body) {
                Some(p) => {
                    let start = out.len();
                    self.client_statement(Some(p.name), p.query);
                    if let Some(t) = &mut self.spans {
                        t.statement(p.name, p.query);
                    }
                    if p.name.is_empty() {
                        let ctx = self.current_ctx();
                        let commented = self.comment_unnamed(p.query, p.rest, ctx, answered, out);
                        if commented.is_none() {
                            out.put_slice(f);
                        }
                        match &mut self.unnamed {
                            // The last one's buffer is reused: no allocation per Parse.
                            Unnamed::Parsed(u) => {
                                u.sent.clear();
                                u.sent.extend_from_slice(&out[start..]);
                                u.commented = commented;
                            }
                            unnamed => {
                                let sent = out[start..].to_vec();
                                *unnamed = Unnamed::Parsed(Box::new(UnnamedStatement { sent, commented }));
                            }
                        }
                    } else {
                        // Named: text untouched; remember a context the text itself carries.
                        let own = std::str::from_utf8(p.query)
                            .ok()
                            .filter(|s| s.contains("traceparent"))
                            .and_then(|s| sqlcommenter::parse_context(s, self.commenter.dialect()));
                        match own {
                            Some(c) => {
                                self.named_ctx.insert(p.name.to_vec(), c);
                            }
                            None => {
                                if !self.named_ctx.is_empty() {
                                    self.named_ctx.remove(p.name);
                                }
                            }
                        }
                        out.put_slice(f);
                    }
                }
                None => out.put_slice(f),
            },
            frame::CLOSE => {
                if body.first() == Some(&b'S') {
                    if let Some((name, _)) = frame::cstr(&body[1..]) {
                        if name.is_empty() {
                            self.unnamed = Unnamed::Absent;
                        }
                        self.forget_statement(name);
                    }
                }
                out.put_slice(f);
            }
            _ => out.put_slice(f),
        }
    }

    /// The client's request ended its implicit transaction (a Sync or Query sent outside a transaction
    /// block): the transaction-scoped carrier is gone from then on, and the next request gets a new root.
    fn request_ended(&mut self) {
        self.tracker.transaction_ended(true);
        self.txn_ctx = None;
    }

    /// A request the server answers with ReadyForQuery (Query, Sync, FunctionCall) was forwarded at
    /// `now`: its latency is measured from then (on its queue item, when the server will answer it).
    fn request_started(&mut self, tag: u8, answered: bool, now: Instant) {
        if !matches!(tag, frame::QUERY | frame::SYNC | frame::FUNCTION_CALL) || !self.proto.is_ready() {
            return;
        }
        if tag == frame::QUERY {
            self.events.push(Event::Statement(Protocol::Simple));
        }
        if let Some(p) = self.proto.last_mut().filter(|_| answered) {
            p.started = Some(now);
        }
    }

    /// Span bookkeeping for extended-protocol frames (Parse and Query are handled where they are rewritten).
    fn span_frame(&mut self, tag: u8, body: &[u8], answered: bool, now: Instant) {
        if !matches!(tag, frame::BIND | frame::CLOSE | frame::EXECUTE) {
            return;
        }
        let ctx = if tag == frame::EXECUTE { self.current_ctx() } else { None };
        let client = self.guc_ctx.is_some() || self.startup_ctx.is_some();
        let Some(t) = &mut self.spans else { return };
        match (tag, ctx) {
            (frame::BIND, _) => t.bind(body),
            (frame::CLOSE, _) => t.close(body),
            (frame::EXECUTE, Some(ctx)) => {
                t.check_load(self.proto.pending());
                let span = t.execute(body, &ctx, client, &mut self.ids, now);
                // An Execute the server will skip (after an error in its batch) gets no span: it never runs.
                if let Some(p) = self.proto.last_mut().filter(|_| answered) {
                    p.span = span;
                }
            }
            _ => {}
        }
    }

    /// A server message was relayed at `now`: ends what it completed — the latency and span of the
    /// request of `done` (the queue item it completed), or one statement of the multi-statement Query
    /// the head's span measures.
    fn replied(&mut self, tag: u8, body: &[u8], done: Option<Pending>, now: Instant) {
        let statement = || match tag {
            frame::COMMAND_COMPLETE => Some((spans::rows(frame::text_body(body)), None)),
            frame::EMPTY_QUERY | frame::PORTAL_SUSPENDED => Some((None, None)),
            frame::ERROR_RESPONSE => Some((None, Some(spans::error_fields(body)))),
            _ => None,
        };
        let Some(p) = done else {
            if let Some(span) = self.proto.head_span_mut() {
                if let Some(child) = statement().and_then(|(rows, err)| span.statement_done(now, rows, err)) {
                    self.events.push(Event::Span(Box::new(child)));
                }
            }
            return;
        };
        if let Some(t) = p.started {
            self.events.push(Event::RequestDone(now.saturating_duration_since(t)));
        }
        if let Some(mut span) = p.span {
            if let Some((rows, err)) = statement() {
                span.statement_done(now, rows, err);
            }
            self.events.push(Event::Span(Box::new(span.finish(now))));
        }
    }

    /// Processes server bytes read at `now`; appends what goes to the client to `out`; returns the bytes
    /// consumed.
    pub fn server_bytes(&mut self, input: &[u8], out: &mut BytesMut, now: Instant) -> Result<usize, FrameError> {
        if self.last_io.is_some() {
            self.last_io = Some(now);
        }
        // Frames relayed unchanged are copied in runs: one copy per read in the common case.
        let mut run = Run::default();
        let mut pos = 0;
        while pos < input.len() {
            if self.server_stream.left > 0 {
                let n = self.server_stream.left.min(input.len() - pos);
                if self.server_stream.relay {
                    run.relay(input, pos..pos + n, out);
                }
                self.server_stream.left -= n;
                pos += n;
                continue;
            }
            let Some(h) = frame::header(&input[pos..])? else { break };
            let avail = input.len() - pos;
            if avail < h.frame_len {
                let decode = matches!(
                    h.tag,
                    frame::READY_FOR_QUERY
                        | frame::PARAMETER_STATUS
                        | frame::COMMAND_COMPLETE
                        | frame::ERROR_RESPONSE
                        | frame::NOTICE_RESPONSE
                        | frame::BACKEND_KEY_DATA
                );
                if decode && h.frame_len <= MAX_DECODE {
                    break;
                }
                let reply = self.proto.server_message(h.tag, &[])?;
                let relay = relays(reply.event);
                if relay {
                    self.replied(h.tag, &[], reply.done, now);
                    run.relay(input, pos..input.len(), out);
                }
                self.server_stream = Stream { left: h.frame_len - avail, relay };
                pos = input.len();
                break;
            }
            let range = pos..pos + h.frame_len;
            match self.server_frame(&input[range.clone()], now)? {
                Fate::Relay => run.relay(input, range, out),
                Fate::Drop => {}
                Fate::Replace(with) => {
                    run.flush(input, out);
                    out.put_slice(&with);
                }
            }
            pos += h.frame_len;
        }
        run.flush(input, out);
        Ok(pos)
    }

    fn server_frame(&mut self, f: &[u8], now: Instant) -> Result<Fate, OutOfSync> {
        let tag = f[0];
        let body = &f[HEADER_LEN..];
        match tag {
            frame::PARAMETER_STATUS => {
                if let Some((name, value)) = frame::parameter_status(body) {
                    if name == b"application_name" && !self.app.relays(value, self.proto.is_ready()) {
                        self.events.push(Event::ParameterStatusHidden);
                        return Ok(Fate::Drop);
                    }
                }
                return Ok(Fate::Relay);
            }
            frame::BACKEND_KEY_DATA if !self.proto.is_ready() => {
                if let Some(keys) = &self.keys {
                    keys.insert(body);
                }
                self.backend_key = Some(body.to_vec());
            }
            frame::COMMAND_COMPLETE => self.command_tag(frame::text_body(body)),
            _ => {}
        }
        if tag == frame::READY_FOR_QUERY && body.first() == Some(&b'I') && self.server_session != ServerSession::Own {
            // Idle: a transaction pooler behind the proxy may give the next transaction another server
            // session, whose unnamed statement is not the carrier (or someone else's).
            self.carrier_statement = CarrierStatement::Absent;
        }
        let shift = match tag {
            frame::ERROR_RESPONSE => {
                // The server may have skipped the carrier's Parse: parse it again next time.
                self.carrier_statement = CarrierStatement::Absent;
                self.proto.head_shift()
            }
            frame::NOTICE_RESPONSE => self.proto.head_shift(),
            _ => None,
        };
        let reply = self.proto.server_message(tag, body)?;
        match reply.event {
            ev @ (ServerEvent::Relay | ServerEvent::TransactionEnded) => {
                self.replied(tag, body, reply.done, now);
                if tag == frame::READY_FOR_QUERY && self.proto.pending() == 0 {
                    // Nothing in flight: the server's status is the truth about the transaction.
                    self.open_txn = ev != ServerEvent::TransactionEnded;
                    if !self.open_txn {
                        self.tracker.transaction_ended(true);
                    }
                }
                match shift.and_then(|s| map_position(s, tag, body)) {
                    Some(with) => {
                        self.events.push(Event::PositionMapped);
                        Ok(Fate::Replace(with))
                    }
                    None => Ok(Fate::Relay),
                }
            }
            ServerEvent::StartupDone => Ok(Fate::Relay),
            ServerEvent::ProxyDone(Expect::Parse) => {
                if self.carrier_statement == CarrierStatement::Sent {
                    self.carrier_statement = CarrierStatement::Ready;
                }
                Ok(Fate::Drop)
            }
            ServerEvent::Swallow if tag == frame::DATA_ROW => {
                // The proxy runs one statement with rows: the carrier.
                self.carrier_row(body);
                Ok(Fate::Drop)
            }
            ServerEvent::Swallow | ServerEvent::ProxyDone(_) => Ok(Fate::Drop),
            ServerEvent::ProxyError { relay } => {
                self.events.push(Event::CarrierFailed);
                self.tracker.failed(self.carrier_scope_sent);
                tracing::debug!(
                    sqlstate = %String::from_utf8_lossy(frame::sqlstate(body).unwrap_or(b"")),
                    "carrier statement failed"
                );
                Ok(if relay { Fate::Relay } else { Fate::Drop })
            }
        }
    }

    /// The carrier's row: its second column is the server process's id. The server session is the proxy's
    /// own while that is the process named in the BackendKeyData; once another answers, never again.
    fn carrier_row(&mut self, row: &[u8]) {
        let pid = frame::data_row_column(row, 1).and_then(|v| std::str::from_utf8(v).ok()?.parse::<i32>().ok());
        let key = self.backend_key.as_deref().and_then(|k| <[u8; 4]>::try_from(k.get(..4)?).ok());
        let was = self.server_session;
        self.server_session = match (pid, key.map(i32::from_be_bytes)) {
            (Some(pid), Some(key)) if pid == key && was != ServerSession::Pooled => ServerSession::Own,
            (Some(_), _) => ServerSession::Pooled,
            (None, _) => was,
        };
        if self.server_session != was {
            tracing::debug!(server_session = ?self.server_session, ?pid, "whose server session");
        }
    }

    fn command_tag(&mut self, tag: &[u8]) {
        if matches!(tag, b"DEALLOCATE ALL" | b"DISCARD ALL") {
            self.carrier_statement = CarrierStatement::Absent;
            self.named_ctx.clear();
            self.no_txn_block.clear();
            self.touches_settings.clear();
            self.txn_control.clear();
            self.sets_context.clear();
        }
    }
}

/// The error/notice with its position (`P`) mapped back to the client's text; `None` when it has none.
fn map_position(shift: Shift, tag: u8, body: &[u8]) -> Option<BytesMut> {
    let p: u32 = std::str::from_utf8(frame::error_field(body, b'P')?).ok()?.parse().ok()?;
    let mut out = BytesMut::new();
    frame::write_with_error_field(&mut out, tag, body, b'P', shift.map(p).to_string().as_bytes())?;
    Some(out)
}

/// What becomes of a server frame.
enum Fate {
    /// Relayed unchanged.
    Relay,
    /// Kept from the client (it answers the proxy's own messages, or reports the carrier's value).
    Drop,
    /// Replaced by these bytes (an error position mapped back to the client's text).
    Replace(BytesMut),
}

/// A run of input bytes to relay unchanged, copied at once when it ends.
#[derive(Default)]
struct Run {
    start: usize,
    end: usize,
}

impl Run {
    /// Relays `range` of `input`: extends the run when it follows on, else copies the run and starts anew.
    fn relay(&mut self, input: &[u8], range: std::ops::Range<usize>, out: &mut BytesMut) {
        if self.end != range.start {
            self.flush(input, out);
            self.start = range.start;
        }
        self.end = range.end;
    }

    /// Copies the run to `out`.
    fn flush(&mut self, input: &[u8], out: &mut BytesMut) {
        if self.start < self.end {
            out.put_slice(&input[self.start..self.end]);
        }
        self.start = self.end;
    }
}

/// Whether this client message replaces or drops the server's unnamed statement (a simple Query, a Parse
/// or Close of the unnamed statement).
fn replaces_unnamed(tag: u8, body: &[u8]) -> bool {
    match tag {
        frame::QUERY => true,
        frame::PARSE => body.first() == Some(&0),
        frame::CLOSE => body.starts_with(b"S\0"),
        _ => false,
    }
}

/// Whether a server message with this event reaches the client.
fn relays(ev: ServerEvent) -> bool {
    match ev {
        ServerEvent::Relay | ServerEvent::TransactionEnded | ServerEvent::StartupDone => true,
        ServerEvent::ProxyError { relay } => relay,
        ServerEvent::Swallow | ServerEvent::ProxyDone(_) => false,
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let (Some(keys), Some(k)) = (&self.keys, &self.backend_key) {
            keys.remove(k);
        }
    }
}

#[cfg(test)]
mod tests;
