//! One client session's decisions, sans I/O: what to forward, rewrite, inject and swallow.
//!
//! The relay hands [`Session::client_bytes`] / [`Session::server_bytes`] whatever it read; the session
//! appends what must be written to the other side into an output buffer and says how many input bytes it
//! consumed. Frames it does not rewrite are copied byte for byte; frames too large to decode
//! ([`MAX_DECODE`]) are streamed through in pieces, so memory stays bounded.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use sqlcommenter::carrier::{self, Effect, Scope, Tracker, Want, SET_CONFIG_SQL};
use sqlcommenter::{Commenter, Injected, TraceContext, TraceParent};

use crate::config::InjectConfig;
use crate::context::{guc_from_options, IdGenerator};
use crate::frame::{self, FrameError, HEADER_LEN};
use crate::metrics::{SkipReason, METRICS};
use crate::state::{OutOfSync, Owner, ProtocolState, ServerEvent, Shift};
use std::sync::atomic::Ordering::Relaxed;

/// Largest frame the proxy decodes (to rewrite or read it); larger frames are streamed through untouched.
pub const MAX_DECODE: usize = 1 << 20;

/// Client frames claiming this many bytes or more are refused (ErrorResponse 08P01, disconnect).
pub const MAX_CLIENT_FRAME: usize = 1 << 30;

/// Name of the portal the reserved statement runs in (closed right after, so the client's unnamed
/// portal is never touched).
pub const RESERVED_PORTAL: &[u8] = b"__sqlc_tcp";

/// Counters for what the session did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Statements (Query / unnamed Parse) given a comment.
    pub commented: u64,
    /// Statements left unchanged (already had a traceparent, not UTF-8, too large, unterminated, ...).
    pub comment_skipped: u64,
    /// Carrier statements injected.
    pub carriers: u64,
    /// Carrier statements that failed on the server.
    pub carrier_errors: u64,
    /// ParameterStatus messages swallowed or rewritten.
    pub parameter_status_hidden: u64,
    /// Error/notice positions mapped back to the client's text.
    pub positions_mapped: u64,
}

/// The startup parameters the session needs.
#[derive(Debug, Clone, Default)]
pub struct StartupInfo {
    /// `application_name`, if the client sent one.
    pub application_name: Option<String>,
    /// `options`, if the client sent it.
    pub options: Option<String>,
}

/// The BackendKeyData bodies (pid + secret) of live sessions: a CancelRequest is forwarded only for a key
/// this proxy relayed. The server's key is passed to the client unchanged.
#[derive(Debug, Default)]
pub struct CancelKeys(std::sync::Mutex<std::collections::HashSet<Vec<u8>>>);

impl CancelKeys {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<Vec<u8>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` belongs to a live session.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.set().contains(key)
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.set().len()
    }

    /// Whether no key is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
    /// The client's text and the rest of its Parse (parameter types).
    query: String,
    rest: Vec<u8>,
    /// The context the comment was made for (before the proxy's span became its parent).
    ctx: Option<TraceContext>,
    /// An execution (Bind) already used the comment.
    bound: bool,
}

/// One client session (see the module docs).
#[derive(Debug)]
pub struct Session {
    /// The protocol state machine.
    pub proto: ProtocolState,
    cfg: Arc<InjectConfig>,
    commenter: Commenter,
    ids: IdGenerator,
    /// The application_name the client believes it has.
    client_app: String,
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
    /// What the server's carrier setting holds (the proxy writes it transaction-scoped only).
    tracker: Tracker,
    /// The `application_name` values the proxy wrote lately (their ParameterStatus, reported at the
    /// ReadyForQuery of an explicit transaction, is hidden from the client).
    written: std::collections::VecDeque<String>,
    /// Whether the client's transaction is open as of the messages sent so far (a pipeline's replies lag
    /// behind: a Sync outside a transaction ends the request's implicit transaction when it is sent).
    open_txn: bool,
    /// Named statements that open (`true`) or end (`false`) a transaction when executed.
    txn_control: HashMap<Vec<u8>, bool>,
    /// Where the proxy's comment sits in the unnamed statement and in the unnamed portal's statement.
    unnamed_statement_shift: Option<Shift>,
    unnamed_portal_shift: Option<Shift>,
    backend_key: Option<Vec<u8>>,
    keys: Option<Arc<CancelKeys>>,
    client_stream: Stream,
    server_stream: Stream,
    /// What the session did so far.
    pub counters: Counters,
    /// Statement spans, when export is on.
    spans: Option<crate::telemetry::SpanTracker>,
    /// When each unanswered client request (Query, Sync, FunctionCall) was forwarded, for the latency
    /// histogram; `unmeasured` counts later requests not recorded because the queue was full.
    requests: std::collections::VecDeque<std::time::Instant>,
    unmeasured: usize,
    /// When bytes last arrived from either side (kept only when an idle timeout is configured).
    last_io: Option<std::time::Instant>,
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
            Some(t) if t.variable() == "application_name" => t.read(&app),
            Some(t) if t.variable() == cfg.session_guc => guc_ctx.as_ref().map(|c| c.traceparent),
            _ => None,
        };
        Session {
            proto: ProtocolState::default(),
            commenter,
            ids: IdGenerator::new(salt),
            client_app: app,
            startup_ctx,
            options_ctx: guc_ctx.clone(),
            guc_ctx,
            txn_ctx: None,
            named_ctx: HashMap::new(),
            no_txn_block: Default::default(),
            touches_settings: Default::default(),
            settings_dirty: false,
            unnamed: Unnamed::Absent,
            tracker: Tracker::with_base(base),
            written: Default::default(),
            open_txn: false,
            txn_control: HashMap::new(),
            unnamed_statement_shift: None,
            unnamed_portal_shift: None,
            backend_key: None,
            keys: None,
            client_stream: Stream::default(),
            server_stream: Stream::default(),
            counters: Counters::default(),
            spans: None,
            requests: std::collections::VecDeque::new(),
            unmeasured: 0,
            last_io: None,
            cfg,
        }
    }

    /// Replaces the id generator (deterministic tests).
    pub fn with_ids(mut self, ids: IdGenerator) -> Self {
        self.ids = ids;
        self
    }

    /// Records a span per statement execution (see [`crate::telemetry`]).
    pub fn with_spans(mut self, spans: crate::telemetry::SpanTracker) -> Self {
        self.spans = Some(spans);
        self
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

    /// The context the session carries now: the client's session context, else this transaction's root.
    /// `None` when there is nothing to carry: no client context, no span export, no roots configured.
    fn current_ctx(&mut self) -> Option<TraceContext> {
        if let Some(c) = self.guc_ctx.as_ref().or(self.startup_ctx.as_ref()) {
            return Some(c.clone());
        }
        if self.spans.is_none() && !self.cfg.root_contexts {
            return None;
        }
        let (ids, ratio) = (&mut self.ids, self.cfg.sample_ratio);
        Some(self.txn_ctx.get_or_insert_with(|| ids.root(ratio)).clone())
    }

    /// Tracks activity for [`Session::idle_for`] (off until called once).
    pub fn track_idle(&mut self) {
        self.last_io = Some(std::time::Instant::now());
    }

    /// How long the session has been idle: nothing arrived from either side and no request is pending.
    /// `None` while busy (or when idle tracking is off).
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        let t = self.last_io?;
        (self.proto.is_ready() && self.proto.pending() == 0 && self.requests.is_empty()).then(|| t.elapsed())
    }

    /// Processes client bytes; appends what goes upstream to `out`; returns the bytes consumed. Unconsumed
    /// bytes are an incomplete frame: call again with more; [`Session::need`] says how much to buffer.
    pub fn client_bytes(&mut self, input: &[u8], out: &mut BytesMut) -> Result<usize, FrameError> {
        if self.last_io.is_some() {
            self.track_idle();
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
                    self.counters.comment_skipped += 1;
                    METRICS.skip(SkipReason::TooLarge);
                }
                if h.tag == frame::PARSE && input[pos + HEADER_LEN..].first().is_none_or(|&b| b == 0) {
                    // An unnamed statement too large to keep (or whose name is not here yet).
                    self.unnamed = Unnamed::TooLarge;
                }
                if h.tag == frame::QUERY {
                    self.unnamed = Unnamed::Absent;
                }
                self.proto.client_message(h.tag);
                self.request_started(h.tag);
                out.put_slice(&input[pos..]);
                self.client_stream = Stream { left: h.frame_len - avail, relay: true };
                pos = input.len();
                break;
            }
            self.client_frame(&input[pos..pos + h.frame_len], out);
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

    fn client_frame(&mut self, f: &[u8], out: &mut BytesMut) {
        let tag = f[0];
        let body = &f[HEADER_LEN..];
        let inject = self.cfg.enabled && self.proto.is_ready();
        if inject && tag == frame::BIND {
            self.carrier_before_bind(body, out);
            self.recomment_unnamed(body, out);
        }
        let answered = self.proto.client_message(tag);
        self.request_started(tag);
        if answered {
            self.note_shift(tag, body);
        }
        if tag == frame::SYNC && !self.open_txn && self.proto.phase() == crate::state::Phase::Ready {
            self.request_ended();
        }
        if tag == frame::EXECUTE {
            METRICS.statements_extended.fetch_add(1, Relaxed);
        }
        if self.spans.is_some() {
            self.span_frame(tag, body);
        }
        match tag {
            frame::QUERY if inject && !self.proto.in_copy() => {
                let sql = frame::text_body(body);
                let mut ctx = self.current_ctx();
                if let Some(t) = &mut self.spans {
                    let client = self.guc_ctx.is_some() || self.startup_ctx.is_some();
                    ctx = ctx.map(|c| t.query(sql, c, client, &mut self.ids));
                }
                let text = std::str::from_utf8(sql).ok();
                match text.map(|s| self.comment(s, ctx.as_ref())) {
                    Some(Injected::Commented(s)) => {
                        self.counters.commented += 1;
                        METRICS.comments.fetch_add(1, Relaxed);
                        frame::write_query(out, s.as_bytes());
                        if answered {
                            self.proto.set_last_shift(text.and_then(|o| Shift::between(o, &s)));
                        }
                    }
                    other => {
                        self.counters.comment_skipped += 1;
                        METRICS.skip(other.map_or(SkipReason::NotUtf8, |i| SkipReason::of(i.skipped())));
                        out.put_slice(f);
                    }
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
                        self.unnamed =
                            Unnamed::Parsed(Box::new(UnnamedStatement { sent: out[start..].to_vec(), commented }));
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

    /// The comment for a statement the client sent, unless the server keeps its text and shows it back
    /// (`PREPARE … AS`, `DECLARE … CURSOR`): those are left as written, their uses carry the context.
    fn comment<'q>(&self, sql: &'q str, ctx: Option<&TraceContext>) -> Injected<'q> {
        if carrier::stores_text(sql) {
            return Injected::Unchanged(sql, sqlcommenter::Skip::NothingToAdd);
        }
        self.commenter.inject(sql, ctx)
    }

    /// Writes the unnamed statement's Parse with its comment for `ctx` (reserving the next Execute's span);
    /// `None` when it is left unchanged (the caller sends the client's frame).
    fn comment_unnamed(
        &mut self,
        query: &[u8],
        rest: &[u8],
        ctx: Option<TraceContext>,
        answered: bool,
        out: &mut BytesMut,
    ) -> Option<Commented> {
        let mut with_span = ctx.clone();
        if let Some(t) = &mut self.spans {
            let client = self.guc_ctx.is_some() || self.startup_ctx.is_some();
            with_span = with_span.map(|c| t.parse_unnamed(query, c, client, &mut self.ids));
        }
        self.unnamed_statement_shift = None;
        let text = std::str::from_utf8(query).ok();
        match text.map(|s| self.comment(s, with_span.as_ref())) {
            Some(Injected::Commented(s)) => {
                self.counters.commented += 1;
                METRICS.comments.fetch_add(1, Relaxed);
                frame::write_parse(out, b"", s.as_bytes(), rest);
                let shift = text.and_then(|o| Shift::between(o, &s));
                self.unnamed_statement_shift = shift;
                if answered {
                    self.proto.set_last_shift(shift);
                }
                let query = text.unwrap_or_default().to_owned();
                Some(Commented { query, rest: rest.to_vec(), ctx, bound: false })
            }
            other => {
                self.counters.comment_skipped += 1;
                METRICS.skip(other.map_or(SkipReason::NotUtf8, |i| SkipReason::of(i.skipped())));
                None
            }
        }
    }

    /// Before a Bind of the unnamed statement that an earlier execution already bound: its comment names
    /// that execution's context, so it is parsed again (the proxy's Parse, its reply swallowed) with this
    /// execution's — when that differs: a new span, a new transaction's root, a changed client context.
    fn recomment_unnamed(&mut self, body: &[u8], out: &mut BytesMut) {
        if frame::bind_statement(body).is_none_or(|s| !s.is_empty()) {
            return;
        }
        let Unnamed::Parsed(u) = &mut self.unnamed else { return };
        let Some(c) = &mut u.commented else { return };
        if !std::mem::replace(&mut c.bound, true) || !self.proto.may_inject() {
            return;
        }
        let (query, rest, old) = (std::mem::take(&mut c.query), std::mem::take(&mut c.rest), c.ctx.clone());
        let ctx = self.current_ctx();
        let start = out.len();
        let again = if self.spans.is_none() && ctx == old {
            None
        } else {
            self.comment_unnamed(query.as_bytes(), &rest, ctx, false, out)
        };
        let Unnamed::Parsed(u) = &mut self.unnamed else { return };
        match again {
            Some(mut c) => {
                self.proto.sent(frame::PARSE, Owner::Proxy);
                u.sent = out[start..].to_vec();
                c.bound = true;
                u.commented = Some(c);
            }
            None => {
                out.truncate(start);
                u.commented = Some(Commented { query, rest, ctx: old, bound: true });
            }
        }
    }

    /// Bind and Execute of the unnamed statement/portal: errors about them report positions in the
    /// commented text.
    fn note_shift(&mut self, tag: u8, body: &[u8]) {
        match tag {
            frame::BIND => {
                let Some((portal, rest)) = frame::cstr(body) else { return };
                let Some((stmt, _)) = frame::cstr(rest) else { return };
                let shift = if stmt.is_empty() { self.unnamed_statement_shift } else { None };
                if portal.is_empty() {
                    self.unnamed_portal_shift = shift;
                }
                self.proto.set_last_shift(shift);
            }
            frame::EXECUTE if body.first() == Some(&0) => self.proto.set_last_shift(self.unnamed_portal_shift),
            _ => {}
        }
    }

    /// What a statement text the client sent does to the carrier and the session context: a Query's
    /// effects are noted now; a named statement's when it is bound (see [`Session::carrier_before_bind`]).
    fn client_statement(&mut self, name: Option<&[u8]>, sql: &[u8]) {
        // Cheap pre-check: no keyword that could change settings or need its own transaction.
        let hinted = carrier::may_have_effect(sql);
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            self.forget_statement(name);
        }
        let Some(text) = std::str::from_utf8(sql).ok().filter(|_| hinted) else { return };
        // A Query or an unnamed statement runs now; a named one when it is executed.
        let runs_now = name.is_none_or(<[u8]>::is_empty);
        for effect in carrier::statements(text) {
            let touches = match &effect {
                Effect::Set { variable, value, scope, computed } => {
                    if *variable == self.cfg.session_guc && *scope == Scope::Session && runs_now {
                        // The client's own session context (`SET sqlcommenter.traceparent = '…'`).
                        self.guc_ctx = match (value, computed) {
                            (Some(v), false) => TraceParent::parse(v.trim()).ok().map(TraceContext::new),
                            // RESET / DEFAULT: back to the session default (the startup options').
                            (None, false) => self.options_ctx.clone(),
                            (_, true) => None,
                        };
                    }
                    self.cfg.carrier.as_ref().is_some_and(|t| t.variable() == variable)
                }
                Effect::ResetAll => {
                    if runs_now {
                        self.guc_ctx = self.options_ctx.clone();
                    }
                    true
                }
                Effect::UnknownSettings | Effect::RollbackToSavepoint => true,
                Effect::NoTransactionBlock => {
                    if let Some(n) = name.filter(|n| !n.is_empty()) {
                        self.no_txn_block.insert(n.to_vec());
                    }
                    false
                }
                Effect::Begin | Effect::Commit | Effect::Rollback => {
                    let opens = effect == Effect::Begin;
                    match name.filter(|n| !n.is_empty()) {
                        Some(n) => {
                            self.txn_control.insert(n.to_vec(), opens);
                        }
                        None => self.open_txn = opens,
                    }
                    false
                }
                Effect::Other => false,
            };
            if touches {
                match name {
                    None => self.settings_dirty = true,
                    Some(n) => {
                        self.touches_settings.insert(n.to_vec());
                    }
                }
            }
        }
    }

    fn forget_statement(&mut self, name: &[u8]) {
        if !self.named_ctx.is_empty() {
            self.named_ctx.remove(name);
        }
        self.no_txn_block.remove(name);
        self.touches_settings.remove(name);
        self.txn_control.remove(name);
    }

    /// The client's request ended its implicit transaction (a Sync or Query sent outside a transaction
    /// block): the transaction-scoped carrier is gone from then on, and the next request gets a new root.
    fn request_ended(&mut self) {
        self.tracker.transaction_ended(true);
        self.txn_ctx = None;
    }

    /// Notes when a request the server answers with ReadyForQuery was forwarded.
    fn request_started(&mut self, tag: u8) {
        if !matches!(tag, frame::QUERY | frame::SYNC | frame::FUNCTION_CALL) || !self.proto.is_ready() {
            return;
        }
        if tag == frame::QUERY {
            METRICS.statements_simple.fetch_add(1, Relaxed);
        }
        if self.requests.len() < crate::telemetry::MAX_OPEN && self.unmeasured == 0 {
            self.requests.push_back(std::time::Instant::now());
        } else {
            self.unmeasured += 1;
        }
    }

    /// A ReadyForQuery reached the client: the oldest request is answered.
    fn request_done(&mut self) {
        match self.requests.pop_front() {
            Some(t) => METRICS.observe(t.elapsed()),
            None => self.unmeasured = self.unmeasured.saturating_sub(1),
        }
    }

    /// Span bookkeeping for extended-protocol frames (Parse and Query are handled where they are rewritten).
    fn span_frame(&mut self, tag: u8, body: &[u8]) {
        if !matches!(tag, frame::BIND | frame::CLOSE | frame::EXECUTE | frame::SYNC) {
            return;
        }
        let ctx = if tag == frame::EXECUTE { self.current_ctx() } else { None };
        let client = self.guc_ctx.is_some() || self.startup_ctx.is_some();
        let Some(t) = &mut self.spans else { return };
        match (tag, ctx) {
            (frame::BIND, _) => t.bind(body),
            (frame::CLOSE, _) => t.close(body),
            (frame::EXECUTE, Some(ctx)) => t.execute(body, &ctx, client, &mut self.ids),
            (frame::SYNC, _) => t.sync(),
            _ => {}
        }
    }

    /// Before a Bind of a named statement: writes the carrier for that execution's context, unless the
    /// server's transaction already carries it. The write is the core's `set_config` with
    /// `is_local = true` in the proxy's own portal, with no Sync: it shares the batch's implicit
    /// transaction (or the client's explicit one) and ends with it. Its replies are swallowed.
    fn carrier_before_bind(&mut self, body: &[u8], out: &mut BytesMut) {
        let Some(stmt) = frame::bind_statement(body).filter(|s| !s.is_empty()) else { return };
        if self.settings_dirty {
            self.settings_dirty = false;
            self.tracker.forget();
        }
        let stmt = stmt.to_vec();
        if let Some(&opens) = self.txn_control.get(&stmt) {
            self.open_txn = opens;
        }
        let touches = self.touches_settings.contains(&stmt);
        let Some(target) = self.cfg.carrier.clone() else { return };
        if !self.proto.may_inject() || self.no_txn_block.contains(&stmt) || self.unnamed == Unnamed::TooLarge {
            if touches {
                self.tracker.forget();
            }
            return;
        }
        let (mut ctx, client) = match self.named_ctx.get(&stmt) {
            Some(c) => (Some(c.clone()), true),
            None => (self.current_ctx(), self.guc_ctx.is_some() || self.startup_ctx.is_some()),
        };
        if let Some(t) = &mut self.spans {
            ctx = ctx.map(|c| t.carrier(c, client, &mut self.ids));
        }
        // Nothing to carry: a value written earlier in this transaction must not stay on.
        let want = ctx.map_or(Want::Clean, |c| Want::Carry(c.traceparent));
        if let Some(action) = self.tracker.plan(want, Scope::Transaction) {
            let write = target.write(&action, Scope::Transaction, &self.client_app);
            // The carrier as the unnamed statement in the proxy's own portal, then the client's unnamed
            // statement restored: nothing of the proxy's stays on the server.
            frame::write_parse_untyped(out, b"", SET_CONFIG_SQL.as_bytes());
            let params = write.params();
            frame::write_bind_text(out, RESERVED_PORTAL, b"", &params.map(str::as_bytes));
            frame::write_execute(out, RESERVED_PORTAL);
            frame::write_close(out, b'P', RESERVED_PORTAL);
            for tag in [frame::PARSE, frame::BIND, frame::EXECUTE, frame::CLOSE] {
                self.proto.sent(tag, Owner::Proxy);
            }
            if let Unnamed::Parsed(u) = &self.unnamed {
                out.put_slice(&u.sent);
                self.proto.sent(frame::PARSE, Owner::Proxy);
            }
            if write.variable == "application_name" {
                if self.written.len() == 8 {
                    self.written.pop_front();
                }
                self.written.push_back(write.value);
            }
            self.counters.carriers += 1;
            METRICS.carriers.fetch_add(1, Relaxed);
        }
        if touches {
            // This statement may change the setting when it runs: the next execution writes again.
            self.settings_dirty = true;
        }
    }

    /// Processes server bytes; appends what goes to the client to `out`; returns the bytes consumed.
    pub fn server_bytes(&mut self, input: &[u8], out: &mut BytesMut) -> Result<usize, FrameError> {
        if self.last_io.is_some() {
            self.track_idle();
        }
        let mut pos = 0;
        while pos < input.len() {
            if self.server_stream.left > 0 {
                let n = self.server_stream.left.min(input.len() - pos);
                if self.server_stream.relay {
                    out.put_slice(&input[pos..pos + n]);
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
                let relay = relays(self.proto.server_message(h.tag, &[])?);
                if relay {
                    out.put_slice(&input[pos..]);
                }
                self.server_stream = Stream { left: h.frame_len - avail, relay };
                pos = input.len();
                break;
            }
            self.server_frame(&input[pos..pos + h.frame_len], out)?;
            pos += h.frame_len;
        }
        Ok(pos)
    }

    fn server_frame(&mut self, f: &[u8], out: &mut BytesMut) -> Result<(), OutOfSync> {
        let tag = f[0];
        let body = &f[HEADER_LEN..];
        match tag {
            frame::PARAMETER_STATUS => {
                if let Some((name, value)) = frame::parameter_status(body) {
                    if name == b"application_name" {
                        self.application_name_status(value, f, out);
                        return Ok(());
                    }
                }
                out.put_slice(f);
                return Ok(());
            }
            frame::BACKEND_KEY_DATA if !self.proto.is_ready() => {
                if let Some(keys) = &self.keys {
                    keys.set().insert(body.to_vec());
                }
                self.backend_key = Some(body.to_vec());
            }
            frame::COMMAND_COMPLETE => self.command_tag(frame::text_body(body)),
            _ => {}
        }
        let shift = match tag {
            frame::ERROR_RESPONSE | frame::NOTICE_RESPONSE => self.proto.head_shift(),
            _ => None,
        };
        match self.proto.server_message(tag, body)? {
            ev @ (ServerEvent::Relay | ServerEvent::TransactionEnded) => {
                if let Some(t) = &mut self.spans {
                    t.server(tag, body);
                }
                if tag == frame::READY_FOR_QUERY {
                    self.request_done();
                }
                if tag == frame::READY_FOR_QUERY && self.proto.pending() == 0 {
                    // Nothing in flight: the server's status is the truth about the transaction.
                    self.open_txn = ev != ServerEvent::TransactionEnded;
                    if !self.open_txn {
                        self.tracker.transaction_ended(true);
                    }
                }
                match shift.and_then(|s| map_position(s, tag, body, out)) {
                    Some(()) => self.counters.positions_mapped += 1,
                    None => out.put_slice(f),
                }
            }
            ServerEvent::StartupDone => out.put_slice(f),
            ServerEvent::Swallow => {}
            ServerEvent::ProxyDone(_) => {}
            ServerEvent::ProxyError { relay } => {
                self.counters.carrier_errors += 1;
                self.tracker.failed(Scope::Transaction);
                tracing::debug!(
                    sqlstate = %String::from_utf8_lossy(frame::sqlstate(body).unwrap_or(b"")),
                    "carrier statement failed"
                );
                if relay {
                    if let Some(t) = &mut self.spans {
                        t.server(tag, body);
                    }
                    out.put_slice(f);
                }
            }
        }
        Ok(())
    }

    fn command_tag(&mut self, tag: &[u8]) {
        if matches!(tag, b"DEALLOCATE ALL" | b"DISCARD ALL") {
            self.named_ctx.clear();
            self.no_txn_block.clear();
            self.touches_settings.clear();
            self.txn_control.clear();
        }
    }

    /// `application_name` reports: the values the proxy's carrier writes are hidden (the client keeps
    /// seeing its own name); the client's own changes are relayed and become its name.
    fn application_name_status(&mut self, value: &[u8], f: &[u8], out: &mut BytesMut) {
        let value = String::from_utf8_lossy(value);
        if !self.proto.is_ready() {
            self.client_app = value.into_owned();
            out.put_slice(f);
            return;
        }
        if self.written.iter().any(|w| *w == value) || value == self.client_app {
            // Ours, or the revert to the client's own name when our transaction-scoped value ended.
            self.counters.parameter_status_hidden += 1;
            return;
        }
        self.client_app = value.into_owned();
        out.put_slice(f);
    }
}

/// Writes the error/notice with its position (`P`) mapped back to the client's text; `None` (nothing
/// written) when it has no position.
fn map_position(shift: Shift, tag: u8, body: &[u8], out: &mut BytesMut) -> Option<()> {
    let p: u32 = std::str::from_utf8(frame::error_field(body, b'P')?).ok()?.parse().ok()?;
    frame::write_with_error_field(out, tag, body, b'P', shift.map(p).to_string().as_bytes())
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
            keys.set().remove(k);
        }
    }
}

fn build_commenter(cfg: &InjectConfig, app: &str) -> Commenter {
    let mut b = Commenter::builder().placement(cfg.placement);
    for (k, v) in &cfg.tags {
        b = b.tag(k, v);
    }
    if cfg.application_tag && !app.is_empty() && !cfg.tags.iter().any(|(k, _)| k == "application") {
        b = b.tag("application", app);
    }
    // Tags were validated with the configuration; fall back to no tags rather than fail a session.
    b.build().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn status(name: &str, value: &str) -> Vec<u8> {
        msg(b'S', format!("{name}\0{value}\0").as_bytes())
    }

    /// A session that invents roots and tags the application (the mechanics under test need a context).
    fn session() -> Session {
        let cfg = InjectConfig { root_contexts: true, application_tag: true, ..InjectConfig::default() };
        session_with(cfg)
    }

    fn session_with(cfg: InjectConfig) -> Session {
        let info = StartupInfo { application_name: Some("app".into()), options: None };
        let mut s = Session::new(Arc::new(cfg), &info, 1).with_ids(IdGenerator::seeded(3));
        let mut startup = msg(b'R', &[0, 0, 0, 0]);
        startup.extend(status("application_name", "app"));
        startup.extend(msg(b'K', &[0, 0, 0, 9, 1, 2, 3, 4]));
        startup.extend(msg(b'Z', b"I"));
        let mut out = BytesMut::new();
        assert_eq!(s.server_bytes(&startup, &mut out).unwrap(), startup.len());
        assert_eq!(&out[..], &startup[..], "startup is relayed unchanged");
        assert_eq!(s.backend_key(), Some(&[0, 0, 0, 9, 1, 2, 3, 4][..]));
        s
    }

    fn feed_client(s: &mut Session, bytes: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        assert_eq!(s.client_bytes(bytes, &mut out).unwrap(), bytes.len());
        out
    }

    fn feed_server(s: &mut Session, bytes: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        assert_eq!(s.server_bytes(bytes, &mut out).unwrap(), bytes.len());
        out
    }

    fn named_batch() -> Vec<u8> {
        let mut b = msg(b'B', b"\0stmt1\0\0\0\0\0\0\0");
        b.extend(msg(b'E', b"\0\0\0\0\0"));
        b.extend(msg(b'S', b""));
        b
    }

    /// The server's replies to the proxy's carrier (Parse/Bind/Execute/Close, and `restore`: the
    /// client's unnamed statement parsed again) and a client Bind/Execute/Sync, ending in `status`.
    fn replies(restore: bool, status: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut server = Vec::new();
        server.extend(msg(b'1', b""));
        server.extend(msg(b'2', b""));
        server.extend(msg(b'D', b"\0\x01\0\0\0\x01x"));
        server.extend(msg(b'C', b"SELECT 1\0"));
        server.extend(msg(b'3', b""));
        if restore {
            server.extend(msg(b'1', b""));
        }
        let client_part = [msg(b'2', b""), msg(b'C', b"SELECT 0\0"), msg(b'Z', status)].concat();
        server.extend(&client_part);
        (server, client_part)
    }

    #[test]
    fn named_execution_gets_a_transaction_scoped_carrier_inline() {
        let mut s = session();
        let batch = named_batch();
        let out = feed_client(&mut s, &batch);
        assert!(out.ends_with(&batch), "client bytes follow unchanged");
        let injected = &out[..out.len() - batch.len()];
        let text = String::from_utf8_lossy(injected);
        assert!(text.contains("__sqlc_tcp") && text.contains(SET_CONFIG_SQL), "{text}");
        assert!(text.contains("application_name\0") && text.contains("true\0"), "transaction-scoped: {text}");
        let mut pos = 0;
        while let Ok(Some(h)) = frame::header(&injected[pos..]) {
            assert_ne!(h.tag, frame::SYNC, "no Sync of its own");
            pos += h.frame_len;
        }
        assert_eq!(pos, injected.len());
        // The bare traceparent is the value.
        let at = text.find("00-").unwrap();
        assert!(TraceParent::parse(&text[at..at + 55]).is_ok(), "{text}");
        assert_eq!(s.proto.pending(), 4 + 3);
        let (server, client_part) = replies(false, b"I");
        let out = feed_server(&mut s, &server);
        assert_eq!(&out[..], &client_part[..], "only the client's replies reach the client");
        assert_eq!(s.proto.pending(), 0);
        // The next transaction gets a new root context: a new carrier.
        let out = feed_client(&mut s, &batch);
        assert!(out.len() > batch.len());
    }

    #[test]
    fn the_clients_unnamed_statement_is_restored_after_the_carrier() {
        let mut s = session();
        let parse = msg(b'P', b"\0select $1\0\0\0");
        let out = feed_client(&mut s, &[parse, msg(b'S', b"")].concat());
        let sent_parse = out[..out.len() - 5].to_vec();
        feed_server(&mut s, &[msg(b'1', b""), msg(b'Z', b"I")].concat());
        let out = feed_client(&mut s, &named_batch());
        let injected = &out[..out.len() - named_batch().len()];
        assert!(injected.ends_with(&sent_parse), "the client's unnamed Parse (as sent) follows the carrier");
        let (server, client_part) = replies(true, b"I");
        assert_eq!(&feed_server(&mut s, &server)[..], &client_part[..]);
        // A simple Query drops the unnamed statement: nothing to restore then.
        feed_client(&mut s, &msg(b'Q', b"select 1\0"));
        feed_server(&mut s, &[msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat());
        let out = feed_client(&mut s, &named_batch());
        assert!(!out.windows(sent_parse.len()).any(|w| w == &sent_parse[..]));
    }

    #[test]
    fn a_pipeline_carries_every_named_execution_once_per_transaction() {
        let mut s = session();
        let one = [msg(b'B', b"\0stmt1\0\0\0\0\0\0\0"), msg(b'E', b"\0\0\0\0\0")].concat();
        let pipeline = [one.clone(), one.clone(), one, msg(b'S', b"")].concat();
        let out = feed_client(&mut s, &pipeline);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("__sqlc_tcp").count(), 3, "one carrier (Bind, Execute, Close) for the batch");
        // In an explicit transaction, after its ReadyForQuery the carrier is still in effect.
        let mut s = session();
        feed_client(&mut s, &msg(b'Q', b"BEGIN\0"));
        feed_server(&mut s, &[msg(b'C', b"BEGIN\0"), msg(b'Z', b"T")].concat());
        let batch = named_batch();
        assert!(feed_client(&mut s, &batch).len() > batch.len());
        feed_server(&mut s, &replies(false, b"T").0);
        assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..], "same transaction, same context");
        // The application's ROLLBACK TO SAVEPOINT may have undone it: written again.
        feed_server(&mut s, &[msg(b'2', b""), msg(b'C', b"SELECT 0\0"), msg(b'Z', b"T")].concat());
        feed_client(&mut s, &msg(b'Q', b"ROLLBACK TO SAVEPOINT a\0"));
        feed_server(&mut s, &[msg(b'C', b"ROLLBACK\0"), msg(b'Z', b"T")].concat());
        assert!(feed_client(&mut s, &batch).len() > batch.len());
    }

    #[test]
    fn an_error_before_the_carrier_skips_it_and_the_batch() {
        let mut s = session();
        let failing = [msg(b'B', b"\0stmt0\0\0\0\0\0\0\0"), msg(b'E', b"\0\0\0\0\0")].concat();
        let pipeline = [failing, named_batch()].concat();
        feed_client(&mut s, &pipeline);
        // stmt0's Bind fails: the server skips the carrier and the rest up to Sync.
        let err = msg(b'E', b"SERROR\0VERROR\0C26000\0Mno\0\0");
        let out = feed_server(&mut s, &[err.clone(), msg(b'Z', b"I")].concat());
        assert_eq!(&out[..], &[err, msg(b'Z', b"I")].concat()[..]);
        assert_eq!(s.proto.pending(), 0);
        // The carrier is written again next time.
        let out = feed_client(&mut s, &named_batch());
        assert!(String::from_utf8_lossy(&out).contains(SET_CONFIG_SQL));
    }

    #[test]
    fn a_failing_carrier_tells_the_client_why_its_batch_got_no_answer() {
        let mut s = session();
        feed_client(&mut s, &named_batch());
        let err = msg(b'E', b"SERROR\0VERROR\0C57014\0Mcanceling statement due to user request\0\0");
        let out = feed_server(&mut s, &[msg(b'1', b""), err.clone(), msg(b'Z', b"I")].concat());
        assert_eq!(&out[..], &[err, msg(b'Z', b"I")].concat()[..]);
        assert_eq!(s.counters.carrier_errors, 1);
    }

    #[test]
    fn out_of_sync_replies_are_an_error() {
        let mut s = session();
        let mut out = BytesMut::new();
        assert!(s.server_bytes(&msg(b'2', b""), &mut out).is_err());
    }

    #[test]
    fn reset_returns_the_session_context_to_the_startup_options() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let info = StartupInfo { application_name: None, options: Some(format!("-c sqlcommenter.traceparent={tp}")) };
        let mut s = Session::new(Arc::new(InjectConfig::default()), &info, 1);
        feed_server(&mut s, &msg(b'Z', b"I"));
        for reset in ["DISCARD ALL", "RESET ALL", "RESET sqlcommenter.traceparent"] {
            feed_client(&mut s, &msg(b'Q', format!("{reset}\0").as_bytes()));
            feed_server(&mut s, &[msg(b'C', b"DISCARD ALL\0"), msg(b'Z', b"I")].concat());
            let out = feed_client(&mut s, &msg(b'Q', b"select 1\0"));
            assert!(String::from_utf8_lossy(&out).contains(tp), "after {reset}");
            feed_server(&mut s, &[msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat());
        }
    }

    #[test]
    fn nothing_to_carry_means_nothing_injected() {
        // Default: no client context, no span export, no configured tags.
        let mut s = session_with(InjectConfig::default());
        let q = msg(b'Q', b"select 1;\0");
        assert_eq!(&feed_client(&mut s, &q)[..], &q[..]);
        let batch = named_batch();
        assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
        // A client context (the session GUC) is carried.
        let mut s = session_with(InjectConfig::default());
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        feed_client(&mut s, &msg(b'Q', format!("SET sqlcommenter.traceparent = '{tp}'\0").as_bytes()));
        feed_server(&mut s, &[msg(b'C', b"SET\0"), msg(b'Z', b"I")].concat());
        assert!(String::from_utf8_lossy(&feed_client(&mut s, &q)).contains(tp));
        assert!(String::from_utf8_lossy(&feed_client(&mut s, &batch)).contains(tp));
    }

    #[test]
    fn a_context_the_server_holds_from_startup_is_not_written_again() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        // The client connected with the bare traceparent as its application_name: the server's
        // application_name carries it already, so named executions need no carrier.
        let info = StartupInfo { application_name: Some(tp.into()), options: None };
        let mut s = Session::new(Arc::new(InjectConfig::default()), &info, 1);
        feed_server(&mut s, &[msg(b'R', &[0, 0, 0, 0]), msg(b'Z', b"I")].concat());
        let batch = named_batch();
        assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
        // Its simple statements still get the comment.
        assert!(String::from_utf8_lossy(&feed_client(&mut s, &msg(b'Q', b"select 1\0"))).contains(tp));
        // The same context in the startup options, with the application_name carrier: written per batch.
        let info = StartupInfo { application_name: None, options: Some(format!("-c sqlcommenter.traceparent={tp}")) };
        let mut s = Session::new(Arc::new(InjectConfig::default()), &info, 1);
        feed_server(&mut s, &[msg(b'R', &[0, 0, 0, 0]), msg(b'Z', b"I")].concat());
        assert!(String::from_utf8_lossy(&feed_client(&mut s, &batch)).contains(tp));
        // ... and with the GUC as the carrier: the server holds it from the options.
        let cfg = InjectConfig {
            carrier: Some(sqlcommenter::carrier::Target::guc("sqlcommenter.traceparent").unwrap()),
            ..InjectConfig::default()
        };
        let mut s = Session::new(Arc::new(cfg), &info, 1);
        feed_server(&mut s, &[msg(b'R', &[0, 0, 0, 0]), msg(b'Z', b"I")].concat());
        assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
    }

    #[test]
    fn an_unnamed_statement_executed_again_carries_the_new_context() {
        let mut s = session();
        let tps = |b: &[u8]| -> Vec<String> {
            let t = String::from_utf8_lossy(b).into_owned();
            t.match_indices("traceparent='").map(|(i, _)| t[i + 13..i + 68].to_owned()).collect()
        };
        let exec = [msg(b'B', b"\0\0\0\0\0\0"), msg(b'E', b"\0\0\0\0\0")].concat();
        // One batch: Parse, two executions — one transaction, one root: the comment holds for both.
        let batch = [msg(b'P', b"\0select 1\0\0\0"), exec.clone(), exec.clone(), msg(b'S', b"")].concat();
        let out = feed_client(&mut s, &batch);
        let first = tps(&out);
        assert_eq!(first.len(), 1, "{:?}", String::from_utf8_lossy(&out));
        let reply = |n: usize| {
            let mut r = msg(b'1', b"");
            for _ in 0..n {
                r.extend([msg(b'2', b""), msg(b'C', b"SELECT 1\0")].concat());
            }
            r.extend(msg(b'Z', b"I"));
            r
        };
        assert_eq!(&feed_server(&mut s, &reply(2))[..], &reply(2)[..]);
        // The next request executes the statement again in a new transaction (a new root): parsed again
        // with that context first, its ParseComplete swallowed.
        let again = [exec.clone(), msg(b'S', b"")].concat();
        let out = feed_client(&mut s, &again);
        assert!(out.ends_with(&again));
        let second = tps(&out);
        assert_eq!(second.len(), 1);
        assert_ne!(second, first);
        let server = [msg(b'1', b""), msg(b'2', b""), msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat();
        let client = [msg(b'2', b""), msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat();
        assert_eq!(&feed_server(&mut s, &server)[..], &client[..]);
        assert_eq!(s.proto.pending(), 0);
        // A constant client context needs no new Parse.
        let mut s = session_with(InjectConfig::default());
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        feed_client(&mut s, &msg(b'Q', format!("SET sqlcommenter.traceparent = '{tp}'\0").as_bytes()));
        feed_server(&mut s, &[msg(b'C', b"SET\0"), msg(b'Z', b"I")].concat());
        assert_eq!(tps(&feed_client(&mut s, &batch)), vec![tp.to_owned()]);
        feed_server(&mut s, &reply(2));
        assert_eq!(&feed_client(&mut s, &again)[..], &again[..]);
    }

    #[test]
    fn no_carrier_in_failed_transaction() {
        let mut s = session();
        feed_client(&mut s, &msg(b'Q', b"BEGIN\0"));
        let z = [msg(b'C', b"BEGIN\0"), msg(b'Z', b"E")].concat();
        feed_server(&mut s, &z);
        let batch = named_batch();
        assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
    }

    #[test]
    fn statements_that_cannot_share_a_transaction_get_no_carrier() {
        let mut s = session();
        let p = [msg(b'P', b"v\0VACUUM t\0\0\0"), msg(b'S', b"")].concat();
        feed_client(&mut s, &p);
        feed_server(&mut s, &[msg(b'1', b""), msg(b'Z', b"I")].concat());
        let b = [msg(b'B', b"\0v\0\0\0\0\0\0\0"), msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")].concat();
        assert_eq!(&feed_client(&mut s, &b)[..], &b[..]);
    }

    #[test]
    fn simple_query_and_unnamed_parse_are_commented() {
        let mut s = session();
        let out = feed_client(&mut s, &msg(b'Q', b"select 1;\0"));
        let text = String::from_utf8_lossy(&out[5..]);
        assert!(text.starts_with("select 1 /*application='app',traceparent='00-"), "{text}");
        assert!(text.ends_with("*/;\0"));
        assert_eq!(frame::header(&out).unwrap().unwrap().frame_len, out.len());
        let p = msg(b'P', b"\0select $1\0\0\x01\0\0\0\x17");
        let out = feed_client(&mut s, &p);
        let body = frame::parse_body(&out[5..]).unwrap();
        assert!(String::from_utf8_lossy(body.query).contains("traceparent="));
        assert_eq!(body.rest, b"\0\x01\0\0\0\x17", "parameter types kept");
        // An existing traceparent is left alone; non-UTF-8 text is relayed as is.
        let own = msg(b'Q', b"select 2 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/\0");
        assert_eq!(&feed_client(&mut s, &own)[..], &own[..]);
        let latin1 = msg(b'Q', b"select '\xe9'\0");
        assert_eq!(&feed_client(&mut s, &latin1)[..], &latin1[..]);
    }

    #[test]
    fn client_application_name_change_is_relayed_and_used() {
        let info = StartupInfo { application_name: Some("app".into()), options: None };
        let cfg = InjectConfig {
            carrier: Some(carrier::Target::ApplicationName(carrier::AppNameFormat::Named)),
            root_contexts: true,
            ..InjectConfig::default()
        };
        let mut s = Session::new(Arc::new(cfg), &info, 1).with_ids(IdGenerator::seeded(3));
        feed_server(&mut s, &[status("application_name", "app"), msg(b'Z', b"I")].concat());
        let st = status("application_name", "renamed");
        assert_eq!(&feed_server(&mut s, &st)[..], &st[..]);
        let out = feed_client(&mut s, &named_batch());
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.contains("renamed@00-"), "{text}");
        // The server reports our value at the end of an explicit transaction's request: hidden.
        let at = text.find("renamed@00-").unwrap();
        let ours = status("application_name", &text[at..at + 8 + 55]);
        assert_eq!(&feed_server(&mut s, &ours)[..], b"");
    }

    #[test]
    fn large_frames_stream_through_in_pieces() {
        let mut s = session();
        feed_client(&mut s, &msg(b'Q', b"select big\0"));
        let big = msg(b'D', &vec![7u8; 3 * MAX_DECODE]);
        let mut relayed = Vec::new();
        let mut pending = Vec::new();
        for chunk in big.chunks(8192) {
            pending.extend_from_slice(chunk);
            let mut out = BytesMut::new();
            let used = s.server_bytes(&pending, &mut out).unwrap();
            pending.drain(..used);
            relayed.extend_from_slice(&out);
            assert!(pending.len() < 16, "bounded buffering");
        }
        assert!(relayed == big);
        // A 2 MB query is relayed untouched in pieces too.
        let mut q = vec![b'Q'];
        let text = vec![b'x'; 2 * MAX_DECODE];
        q.extend_from_slice(&((text.len() + 5) as i32).to_be_bytes());
        q.extend_from_slice(&text);
        q.push(0);
        let mut relayed = Vec::new();
        let mut pending = Vec::new();
        for chunk in q.chunks(100_000) {
            pending.extend_from_slice(chunk);
            let mut out = BytesMut::new();
            let used = s.client_bytes(&pending, &mut out).unwrap();
            pending.drain(..used);
            relayed.extend_from_slice(&out);
        }
        assert!(relayed == q);
    }
}
