//! One client session's decisions, sans I/O: what to forward, rewrite, inject and swallow.
//!
//! The relay hands [`Session::client_bytes`] / [`Session::server_bytes`] whatever it read; the session
//! appends what must be written to the other side into an output buffer and says how many input bytes it
//! consumed. Frames it does not rewrite are copied byte for byte; frames too large to decode
//! ([`MAX_DECODE`]) are streamed through in pieces, so memory stays bounded.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use sqlcommenter::{carrier, Commenter, Injected, TraceContext, TraceParent};

use crate::config::{CarrierTarget, InjectConfig};
use crate::context::{guc_change, guc_from_options, GucChange, IdGenerator};
use crate::frame::{self, FrameError, HEADER_LEN};
use crate::metrics::{SkipReason, METRICS};
use crate::state::{InjectedPart, ProtocolState, ServerEvent, IDLE};
use std::sync::atomic::Ordering::Relaxed;

/// Largest frame the proxy decodes (to rewrite or read it); larger frames are streamed through untouched.
pub const MAX_DECODE: usize = 1 << 20;

/// Client frames claiming this many bytes or more are refused (ErrorResponse 08P01, disconnect).
pub const MAX_CLIENT_FRAME: usize = 1 << 30;

/// Name of the proxy's reserved prepared statement on each server connection.
pub const RESERVED_STATEMENT: &[u8] = b"__sqlc_tc";
/// Name of the portal the reserved statement runs in inside a transaction (closed right after).
pub const RESERVED_PORTAL: &[u8] = b"__sqlc_tcp";
/// The reserved statement's text.
pub const RESERVED_SQL: &[u8] = b"SELECT pg_catalog.set_config($1, $2, false)";

/// Counters for what the session did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Statements (Query / unnamed Parse) given a comment.
    pub commented: u64,
    /// Statements left unchanged (already had a traceparent, not UTF-8, too large, unterminated, ...).
    pub comment_skipped: u64,
    /// Carrier statements injected.
    pub carriers: u64,
    /// Carrier statements that failed on the server (swallowed).
    pub carrier_errors: u64,
    /// ParameterStatus messages swallowed or rewritten.
    pub parameter_status_hidden: u64,
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
    txn_ctx: Option<TraceContext>,
    named_ctx: HashMap<Vec<u8>, TraceContext>,
    reserved_parsed: bool,
    /// The value our carrier GUC has (or will have, once in-flight parts run) on the server.
    carrier_sent: Option<String>,
    /// The traceparent `carrier_sent` encodes, when known (skips re-encoding an unchanged context).
    carrier_for: Option<TraceParent>,
    /// Recent application_name carrier values we sent, with the client's name at the time.
    sent_names: [(String, String); 2],
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
        Session {
            proto: ProtocolState::default(),
            commenter,
            ids: IdGenerator::new(salt),
            client_app: app,
            startup_ctx,
            guc_ctx,
            txn_ctx: None,
            named_ctx: HashMap::new(),
            reserved_parsed: false,
            carrier_sent: None,
            carrier_for: None,
            sent_names: Default::default(),
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
    fn current_ctx(&mut self) -> TraceContext {
        if let Some(c) = self.guc_ctx.as_ref().or(self.startup_ctx.as_ref()) {
            return c.clone();
        }
        let (ids, ratio) = (&mut self.ids, self.cfg.sample_ratio);
        self.txn_ctx.get_or_insert_with(|| ids.root(ratio)).clone()
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
                if matches!(h.tag, frame::PARSE | frame::BIND | frame::DESCRIBE | frame::EXECUTE | frame::CLOSE) {
                    self.proto.client_extended(h.tag, &[]);
                }
                self.proto.client_message(h.tag);
                self.request_started(h.tag);
                out.put_slice(&input[pos..]);
                self.client_stream = Stream { left: h.frame_len - avail, relay: true };
                pos = input.len();
                break;
            }
            self.client_frame(&input[pos..pos + h.frame_len], &input[pos..], out);
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

    fn client_frame(&mut self, f: &[u8], ahead: &[u8], out: &mut BytesMut) {
        let tag = f[0];
        let body = &f[HEADER_LEN..];
        let inject = self.cfg.enabled && self.proto.is_ready();
        if inject
            && matches!(tag, frame::PARSE | frame::BIND | frame::DESCRIBE | frame::EXECUTE | frame::CLOSE)
            && (self.proto.may_inject() || (tag == frame::BIND && self.proto.may_inject_mid_batch()))
        {
            self.begin_batch(ahead, out);
        }
        if matches!(tag, frame::PARSE | frame::BIND | frame::DESCRIBE | frame::EXECUTE | frame::CLOSE | frame::FLUSH) {
            self.proto.client_extended(tag, body);
        }
        self.proto.client_message(tag);
        self.request_started(tag);
        if tag == frame::EXECUTE {
            METRICS.statements_extended.fetch_add(1, Relaxed);
        }
        if self.spans.is_some() {
            self.span_frame(tag, body);
        }
        match tag {
            frame::QUERY if inject && !self.proto.in_copy() => {
                let sql = frame::text_body(body);
                self.track_guc(sql);
                let mut ctx = self.current_ctx();
                if let Some(t) = &mut self.spans {
                    let client = self.guc_ctx.is_some() || self.startup_ctx.is_some();
                    ctx = t.query(sql, ctx, client, &mut self.ids);
                }
                match std::str::from_utf8(sql).ok().map(|s| self.commenter.inject(s, Some(&ctx))) {
                    Some(Injected::Commented(s)) => {
                        self.counters.commented += 1;
                        METRICS.comments.fetch_add(1, Relaxed);
                        frame::write_query(out, s.as_bytes());
                    }
                    other => {
                        self.counters.comment_skipped += 1;
                        METRICS.skip(other.map_or(SkipReason::NotUtf8, |i| SkipReason::of(i.skipped())));
                        out.put_slice(f);
                    }
                }
            }
            frame::PARSE if inject => match frame::parse_body(body) {
                Some(p) => {
                    self.track_guc(p.query);
                    if let Some(t) = &mut self.spans {
                        t.statement(p.name, p.query);
                    }
                    if p.name.is_empty() {
                        let mut ctx = self.current_ctx();
                        if let Some(t) = &mut self.spans {
                            let client = self.guc_ctx.is_some() || self.startup_ctx.is_some();
                            ctx = t.parse_unnamed(p.query, ctx, client, &mut self.ids);
                        }
                        match std::str::from_utf8(p.query).ok().map(|s| self.commenter.inject(s, Some(&ctx))) {
                            Some(Injected::Commented(s)) => {
                                self.counters.commented += 1;
                                METRICS.comments.fetch_add(1, Relaxed);
                                frame::write_parse(out, p.name, s.as_bytes(), p.rest);
                            }
                            other => {
                                self.counters.comment_skipped += 1;
                                METRICS.skip(other.map_or(SkipReason::NotUtf8, |i| SkipReason::of(i.skipped())));
                                out.put_slice(f);
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
                if body.first() == Some(&b'S') && !self.named_ctx.is_empty() {
                    if let Some((name, _)) = frame::cstr(&body[1..]) {
                        self.named_ctx.remove(name);
                    }
                }
                out.put_slice(f);
            }
            _ => out.put_slice(f),
        }
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
        let ctx = (tag == frame::EXECUTE).then(|| self.current_ctx());
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

    fn track_guc(&mut self, sql: &[u8]) {
        match guc_change(sql, &self.cfg.session_guc) {
            Some(GucChange::Set(tp)) => self.guc_ctx = Some(TraceContext::new(tp)),
            Some(GucChange::Clear) => self.guc_ctx = None,
            None => {}
        }
    }

    /// At a request boundary: if the batch executes a named statement, writes the carrier part first.
    fn begin_batch(&mut self, ahead: &[u8], out: &mut BytesMut) {
        if self.cfg.carrier == CarrierTarget::Off {
            return;
        }
        let Some(stmt) = first_named_bind(ahead) else { return };
        let (mut ctx, client) = match self.named_ctx.get(stmt) {
            Some(c) => (c.clone(), true),
            None => (self.current_ctx(), self.guc_ctx.is_some() || self.startup_ctx.is_some()),
        };
        if let Some(t) = &mut self.spans {
            ctx = t.carrier(ctx, client, &mut self.ids);
        }
        self.write_carrier(&ctx, out);
    }

    fn carrier_value(&self, ctx: &TraceContext) -> String {
        match &self.cfg.carrier {
            CarrierTarget::ApplicationName => carrier::encode_application_name(&self.client_app, &ctx.traceparent),
            CarrierTarget::PgTracing => carrier::encode_pg_tracing(&ctx.traceparent),
            CarrierTarget::Guc(_) | CarrierTarget::Off => ctx.traceparent.to_string(),
        }
    }

    /// Writes the injected part setting the carrier to `ctx`, unless the server already has that value.
    fn write_carrier(&mut self, ctx: &TraceContext, out: &mut BytesMut) {
        let Some(guc) = self.cfg.carrier.guc() else { return };
        if self.carrier_sent.is_some() && self.carrier_for == Some(ctx.traceparent) {
            return;
        }
        let value = self.carrier_value(ctx);
        if self.carrier_sent.as_deref() == Some(value.as_str()) {
            return;
        }
        let parsed = !self.reserved_parsed;
        if parsed {
            // Close first: a stale copy may exist if an earlier part's outcome was unknown.
            frame::write_close(out, b'S', RESERVED_STATEMENT);
            frame::write_parse_untyped(out, RESERVED_STATEMENT, RESERVED_SQL);
            self.reserved_parsed = true;
        }
        // The unnamed portal when the server is known to be idle (no transaction, nothing pending: no
        // client portal can exist); otherwise a named portal, closed right after, so a client's suspended
        // unnamed portal inside a transaction survives.
        let portal: &[u8] =
            if self.proto.txn_status() == IDLE && self.proto.pending() == 0 { b"" } else { RESERVED_PORTAL };
        frame::write_bind_text(out, portal, RESERVED_STATEMENT, &[guc.as_bytes(), value.as_bytes()]);
        frame::write_execute(out, portal);
        if !portal.is_empty() {
            frame::write_close(out, b'P', portal);
        }
        frame::write_sync(out);
        self.proto.push_injected(InjectedPart { parsed, error: None });
        if self.cfg.carrier == CarrierTarget::ApplicationName {
            self.sent_names.swap(0, 1);
            self.sent_names[1] = (value.clone(), self.client_app.clone());
        }
        self.carrier_sent = Some(value);
        self.carrier_for = Some(ctx.traceparent);
        self.counters.carriers += 1;
        METRICS.carriers.fetch_add(1, Relaxed);
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
                let relay = !matches!(self.proto.server_message(h.tag, &[]), ServerEvent::Swallow);
                if relay {
                    out.put_slice(&input[pos..]);
                }
                self.server_stream = Stream { left: h.frame_len - avail, relay };
                pos = input.len();
                break;
            }
            self.server_frame(&input[pos..pos + h.frame_len], out);
            pos += h.frame_len;
        }
        Ok(pos)
    }

    fn server_frame(&mut self, f: &[u8], out: &mut BytesMut) {
        let tag = f[0];
        let body = &f[HEADER_LEN..];
        match tag {
            frame::PARAMETER_STATUS => {
                if let Some((name, value)) = frame::parameter_status(body) {
                    if name == b"application_name" {
                        self.application_name_status(value, f, out);
                        return;
                    }
                }
                out.put_slice(f);
                return;
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
        match self.proto.server_message(tag, body) {
            ServerEvent::Relay => {
                if let Some(t) = &mut self.spans {
                    t.server(tag, body);
                }
                if tag == frame::READY_FOR_QUERY {
                    self.request_done();
                }
                if tag == frame::READY_FOR_QUERY && self.proto.txn_status() == IDLE {
                    self.txn_ctx = None;
                }
                out.put_slice(f);
            }
            ServerEvent::StartupDone => out.put_slice(f),
            ServerEvent::Swallow => {}
            ServerEvent::InjectedDone(part) => {
                if let Some(code) = part.error {
                    self.counters.carrier_errors += 1;
                    self.carrier_sent = None;
                    self.carrier_for = None;
                    if part.parsed || &code == b"26000" {
                        self.reserved_parsed = false;
                    }
                    tracing::debug!(sqlstate = %String::from_utf8_lossy(&code), "carrier statement failed");
                }
            }
        }
    }

    fn command_tag(&mut self, tag: &[u8]) {
        match tag {
            b"DEALLOCATE ALL" => {
                self.reserved_parsed = false;
                self.named_ctx.clear();
            }
            b"DISCARD ALL" => {
                self.reserved_parsed = false;
                self.named_ctx.clear();
                self.carrier_sent = None;
                self.guc_ctx = None;
            }
            b"ROLLBACK" | b"RESET" if self.cfg.carrier != CarrierTarget::ApplicationName => {
                self.carrier_sent = None;
            }
            _ => {}
        }
    }

    fn application_name_status(&mut self, value: &[u8], f: &[u8], out: &mut BytesMut) {
        let value = String::from_utf8_lossy(value);
        let ours = self.cfg.carrier == CarrierTarget::ApplicationName;
        if !self.proto.is_ready() {
            self.client_app = value.into_owned();
            if ours {
                self.carrier_sent = Some(self.client_app.clone());
            }
            out.put_slice(f);
            return;
        }
        if let Some((_, view)) = self.sent_names.iter().find(|(v, _)| !v.is_empty() && *v == value) {
            let view = view.clone();
            if self.sent_names[1].0 != value {
                self.carrier_for = None;
            }
            self.carrier_sent = Some(value.into_owned());
            self.counters.parameter_status_hidden += 1;
            if view != self.client_app {
                frame::write_parameter_status(out, b"application_name", view.as_bytes());
                self.client_app = view;
            }
            return;
        }
        // The client's own change (SET application_name, RESET, a revert to its earlier name).
        self.carrier_for = None;
        self.client_app = value.into_owned();
        if ours {
            self.carrier_sent = Some(self.client_app.clone());
        }
        out.put_slice(f);
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

/// The statement name of the first Bind in the batch at the start of `buf` (up to its Sync), if that
/// Bind names a statement and comes before any Execute. Only complete frames are looked at.
pub fn first_named_bind(buf: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    while let Ok(Some(h)) = frame::header(&buf[pos..]) {
        let end = (pos + h.frame_len).min(buf.len());
        match h.tag {
            frame::BIND => {
                let stmt = frame::bind_statement(&buf[pos + HEADER_LEN..end])?;
                return (!stmt.is_empty()).then_some(stmt);
            }
            frame::PARSE | frame::DESCRIBE | frame::CLOSE | frame::FLUSH => {}
            _ => return None,
        }
        if pos + h.frame_len > buf.len() {
            return None;
        }
        pos += h.frame_len;
    }
    None
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

    fn session() -> Session {
        let info = StartupInfo { application_name: Some("app".into()), options: None };
        let mut s = Session::new(Arc::new(InjectConfig::default()), &info, 1).with_ids(IdGenerator::seeded(3));
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

    #[test]
    fn named_execution_gets_a_carrier_whose_responses_are_swallowed() {
        let mut s = session();
        let batch = named_batch();
        let out = feed_client(&mut s, &batch);
        assert!(out.ends_with(&batch), "client bytes follow unchanged");
        let injected = &out[..out.len() - batch.len()];
        let text = String::from_utf8_lossy(injected);
        assert!(text.contains("__sqlc_tc") && text.contains("application_name") && text.contains("app@00-"), "{text}");
        assert_eq!(s.proto.pending(), 2);
        // The server's answers: injected part first, then the client's.
        let at = text.find("app@00-").unwrap();
        let value = &text[at..at + 4 + 55];
        assert!(sqlcommenter::carrier::decode_application_name(value).is_some(), "{value}");
        let mut server = Vec::new();
        for t in [b'3', b'1', b'2'] {
            server.extend(msg(t, b""));
        }
        server.extend(msg(b'D', b"\0\x01\0\0\0\x01x"));
        server.extend(msg(b'C', b"SELECT 1\0"));
        server.extend(msg(b'3', b""));
        server.extend(status("application_name", value));
        server.extend(msg(b'Z', b"I"));
        let client_part = [msg(b'2', b""), msg(b'C', b"SELECT 0\0"), msg(b'Z', b"I")].concat();
        server.extend(&client_part);
        let out = feed_server(&mut s, &server);
        assert_eq!(&out[..], &client_part[..], "only the client's responses reach the client");
        assert_eq!(s.counters.parameter_status_hidden, 1);
        // Same transaction context is not re-sent... a new transaction gets a new root: new carrier.
        let out = feed_client(&mut s, &batch);
        assert!(out.len() > batch.len());
        assert!(!String::from_utf8_lossy(&out).contains("SELECT pg_catalog.set_config"), "parsed once");
    }

    #[test]
    fn no_carrier_in_failed_transaction_or_mid_batch() {
        let mut s = session();
        feed_client(&mut s, &msg(b'Q', b"BEGIN\0"));
        let z = [msg(b'C', b"BEGIN\0"), msg(b'Z', b"E")].concat();
        feed_server(&mut s, &z);
        let batch = named_batch();
        assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
        // Mid-batch (after a Flush) in a good state: no carrier either.
        feed_server(&mut s, &[msg(b'Z', b"I")].concat());
        let mut s = session();
        let p = [msg(b'P', b"stmt1\0select 1\0\0\0"), msg(b'H', b"")].concat();
        let out = feed_client(&mut s, &p);
        assert_eq!(&out[..], &p[..]);
        assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
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
        let mut s = session();
        let st = status("application_name", "renamed");
        assert_eq!(&feed_server(&mut s, &st)[..], &st[..]);
        let out = feed_client(&mut s, &named_batch());
        assert!(String::from_utf8_lossy(&out).contains("renamed@00-"));
    }

    #[test]
    fn large_frames_stream_through_in_pieces() {
        let mut s = session();
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

    #[test]
    fn first_named_bind_lookahead() {
        let b = named_batch();
        assert_eq!(first_named_bind(&b), Some(&b"stmt1"[..]));
        let p = [msg(b'P', b"s\0select 1\0\0\0"), b].concat();
        assert_eq!(first_named_bind(&p), Some(&b"stmt1"[..]));
        assert_eq!(first_named_bind(&msg(b'B', b"\0\0\0\0\0\0\0\0")), None);
        assert_eq!(first_named_bind(&msg(b'S', b"")), None);
        assert_eq!(first_named_bind(b"B\0\0"), None);
    }
}
