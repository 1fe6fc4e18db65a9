//! What the session adds to the client's statements: the comment (simple Query, unnamed Parse) and the
//! carrier before named executions, and what client statements do to both.

use bytes::{BufMut, BytesMut};
use sqlcommenter::carrier::{self, Action, Effect, Scope, Target, Want, SET_CONFIG_PID_SQL};
use sqlcommenter::{Commenter, Skip, Splice, TraceContext, TraceParent};

use super::Event;
use super::{CarrierStatement, Commented, ServerSession, Session, Unnamed, RESERVED_PORTAL};
use crate::config::{CarrierScope, InjectConfig};
use crate::frame;
use crate::metrics::SkipReason;
use crate::state::{Owner, Shift};

/// Where the proxy's comment went in a statement.
pub(super) struct Inserted {
    /// Byte offset in the client's text.
    at: usize,
    /// Bytes inserted there.
    bytes: usize,
    /// The same in characters, for error positions (`None` past `u32`; the comment is ASCII).
    pub(super) shift: Option<Shift>,
}

impl Session {
    /// The context the session carries now: the client's session context, else this transaction's root.
    /// `None` when there is nothing to carry: no client context, no span export, no roots configured.
    pub(super) fn current_ctx(&mut self) -> Option<TraceContext> {
        if let Some(c) = self.guc_ctx.as_ref().or(self.startup_ctx.as_ref()) {
            return Some(c.clone());
        }
        if self.spans.is_none() && !self.cfg.root_contexts {
            return None;
        }
        let (ids, ratio) = (&mut self.ids, self.cfg.sample_ratio);
        Some(self.txn_ctx.get_or_insert_with(|| ids.root(ratio)).clone())
    }

    /// Writes `sql`, a statement the client sent, with the comment for `ctx` through `write` (a frame
    /// writer, given the text's pieces: nothing joins them in between), and reports it commented or
    /// skipped; returns where the comment went. Not commented (`None`: the caller sends the client's frame):
    /// text that is not UTF-8, statements whose text the server keeps and shows back (`PREPARE … AS`,
    /// `DECLARE … CURSOR`) — their uses carry the context — and whatever the commenter skips.
    pub(super) fn write_commented(
        &mut self,
        sql: &[u8],
        ctx: Option<&TraceContext>,
        write: impl FnOnce(&[&str]),
    ) -> Option<Inserted> {
        let placed = match std::str::from_utf8(sql) {
            Ok(text) => self.place_comment(text, ctx).map(|(splice, comment)| (text, splice, comment)),
            Err(_) => Err(SkipReason::NotUtf8),
        };
        match placed {
            Ok((text, splice, comment)) => {
                write(&splice.pieces(text, comment));
                let bytes = splice.added(comment);
                self.events.push(Event::Commented);
                Some(Inserted { at: splice.at, bytes, shift: Shift::after(&text[..splice.at], bytes) })
            }
            Err(reason) => {
                self.events.push(Event::Skipped(reason));
                None
            }
        }
    }

    /// Where the comment for `ctx` goes in `sql`, and the comment. The rendered comment is kept while the
    /// context stays the same (the whole session, for a client context without spans): no encoding per
    /// statement.
    fn place_comment(&mut self, sql: &str, ctx: Option<&TraceContext>) -> Result<(Splice, &str), SkipReason> {
        if carrier::stores_text(sql) {
            return Err(SkipReason::of(Some(Skip::NothingToAdd)));
        }
        match &mut self.comment_cache {
            Some((c, _)) if c.as_ref() == ctx => {}
            slot => *slot = Some((ctx.cloned(), self.commenter.comment(ctx))),
        }
        let comment = self.comment_cache.as_ref().map_or("", |(_, text)| text.as_str());
        if comment.is_empty() {
            return Err(SkipReason::of(Some(Skip::NothingToAdd)));
        }
        let splice = self.commenter.splice(sql).map_err(|skip| SkipReason::of(Some(skip)))?;
        Ok((splice, comment))
    }

    /// Writes the unnamed statement's Parse with its comment for `ctx` (reserving the next Execute's span);
    /// `None` when it is left unchanged (the caller sends the client's frame).
    pub(super) fn comment_unnamed(
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
        let i = self.write_commented(query, with_span.as_ref(), |parts| frame::write_parse(out, b"", parts, rest));
        self.unnamed_statement_shift = i.as_ref().and_then(|i| i.shift);
        let i = i?;
        if answered {
            self.proto.set_last_shift(i.shift);
        }
        Some(Commented { inserted: (i.at, i.bytes), ctx, bound: false })
    }

    /// Before a Bind of the unnamed statement that an earlier execution already bound: its comment names
    /// that execution's context, so it is parsed again (the proxy's Parse, its reply swallowed) with this
    /// execution's — when that differs: a new span, a new transaction's root, a changed client context.
    pub(super) fn recomment_unnamed(&mut self, body: &[u8], out: &mut BytesMut) {
        if frame::bind_statement(body).is_none_or(|s| !s.is_empty()) {
            return;
        }
        let Unnamed::Parsed(u) = &mut self.unnamed else { return };
        let Some(c) = &mut u.commented else { return };
        if !std::mem::replace(&mut c.bound, true) || !self.proto.may_inject() {
            return;
        }
        let old = c.ctx.clone();
        let ctx = self.current_ctx();
        if self.spans.is_none() && ctx == old {
            return;
        }
        let Unnamed::Parsed(u) = &self.unnamed else { return };
        let Some((query, rest)) = u.client_parse().map(|(q, r)| (q, r.to_vec())) else { return };
        let start = out.len();
        let again = self.comment_unnamed(&query, &rest, ctx, false, out);
        let Unnamed::Parsed(u) = &mut self.unnamed else { return };
        match again {
            Some(mut c) => {
                self.proto.sent(frame::PARSE, Owner::Proxy);
                self.carrier_statement = CarrierStatement::Absent;
                u.sent = out[start..].to_vec();
                c.bound = true;
                u.commented = Some(c);
            }
            // Not commented this time (cannot happen for a text commented before): the old one stays.
            None => out.truncate(start),
        }
    }

    /// Bind and Execute of the unnamed statement/portal: errors about them report positions in the
    /// commented text.
    pub(super) fn note_shift(&mut self, tag: u8, body: &[u8]) {
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
    pub(super) fn client_statement(&mut self, name: Option<&[u8]>, sql: &[u8]) {
        // Cheap pre-check: no keyword that could change settings or need its own transaction.
        let hinted = carrier::may_have_effect(sql);
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            self.forget_statement(name);
        }
        if !hinted {
            return;
        }
        let Ok(text) = std::str::from_utf8(sql) else { return };
        // A Query or an unnamed statement runs now; a named one when it is executed.
        let runs_now = name.is_none_or(<[u8]>::is_empty);
        for effect in carrier::statements(text) {
            let touches = match &effect {
                Effect::Set { variable, value, scope, computed } => {
                    if *variable == self.cfg.session_guc && *scope == Scope::Session {
                        // The client's own session context (`SET sqlcommenter.traceparent = '…'`).
                        let ctx = match (value, computed) {
                            (Some(v), false) => TraceParent::parse(v.trim()).ok().map(TraceContext::new),
                            // RESET / DEFAULT: back to the session default (the startup options').
                            (None, false) => self.options_ctx.clone(),
                            (_, true) => None,
                        };
                        self.session_context_from(name, runs_now, ctx);
                    }
                    self.cfg.carrier.as_ref().is_some_and(|t| t.variable() == variable)
                }
                Effect::ResetAll => {
                    self.session_context_from(name, runs_now, self.options_ctx.clone());
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

    /// A statement sets the client's session context to `ctx`: now, or — a named statement — whenever
    /// it is executed (drivers that prepare everything: JDBC `prepareThreshold`, tokio-postgres, asyncpg).
    fn session_context_from(&mut self, name: Option<&[u8]>, runs_now: bool, ctx: Option<TraceContext>) {
        match name.filter(|_| !runs_now) {
            Some(n) => {
                self.sets_context.insert(n.to_vec(), ctx);
            }
            None => self.guc_ctx = ctx,
        }
    }

    /// After the carrier for a named execution: the statement's own effect on the session context, from
    /// the moment it runs (the replies lag behind; what follows it in the pipeline runs after it).
    pub(super) fn named_statement_runs(&mut self, body: &[u8]) {
        if self.sets_context.is_empty() {
            return;
        }
        let Some(stmt) = frame::bind_statement(body).filter(|s| !s.is_empty()) else { return };
        if let Some(ctx) = self.sets_context.get(stmt) {
            self.guc_ctx = ctx.clone();
        }
    }

    pub(super) fn forget_statement(&mut self, name: &[u8]) {
        if !self.sets_context.is_empty() {
            self.sets_context.remove(name);
        }
        if !self.named_ctx.is_empty() {
            self.named_ctx.remove(name);
        }
        self.no_txn_block.remove(name);
        self.touches_settings.remove(name);
        self.txn_control.remove(name);
    }

    /// Before a Bind of a named statement: writes the carrier for that execution's context, unless the
    /// server's transaction already carries it. The write is the core's `set_config` with
    /// `is_local = true` in the proxy's own portal, with no Sync: it shares the batch's implicit
    /// transaction (or the client's explicit one) and ends with it. Its replies are swallowed.
    pub(super) fn carrier_before_bind(&mut self, body: &[u8], out: &mut BytesMut) {
        let Some(stmt) = frame::bind_statement(body).filter(|s| !s.is_empty()) else { return };
        if self.settings_dirty {
            self.settings_dirty = false;
            self.tracker.client_changed();
        }
        if let Some(&opens) = self.txn_control.get(stmt) {
            self.open_txn = opens;
        }
        let touches = self.touches_settings.contains(stmt);
        let Some(target) = self.cfg.carrier.clone() else { return };
        if !self.proto.may_inject() || self.no_txn_block.contains(stmt) || self.unnamed == Unnamed::TooLarge {
            if touches {
                self.tracker.client_changed();
            }
            return;
        }
        let (mut ctx, client) = match self.named_ctx.get(stmt) {
            Some(c) => (Some(c.clone()), true),
            None => (self.current_ctx(), self.guc_ctx.is_some() || self.startup_ctx.is_some()),
        };
        // The client's own session context may stay on the session (configured, or where the server
        // session is the client's alone): written once per change.
        let session_ok = match self.cfg.carrier_scope {
            CarrierScope::Auto => self.server_session == ServerSession::Own,
            CarrierScope::Fixed(scope) => scope == Scope::Session,
        };
        let scope = match (session_ok, &self.spans, self.named_ctx.contains_key(stmt)) {
            (true, None, false) if client || ctx.is_none() => Scope::Session,
            _ => Scope::Transaction,
        };
        if let Some(t) = &mut self.spans {
            ctx = ctx.map(|c| t.carrier(c, client, &mut self.ids));
        }
        // Nothing to carry: a value written earlier in this transaction must not stay on.
        let want = ctx.map_or(Want::Clean, |c| Want::Carry(c.traceparent));
        if let Some(action) = self.tracker.plan(want, scope) {
            self.carrier_scope_sent = scope;
            // The carrier as the unnamed statement in the proxy's own portal, then the client's unnamed
            // statement restored: nothing of the proxy's stays on the server. With no client statement to
            // restore the carrier stays the unnamed statement: bound again by the next carrier, when nothing
            // is in flight that could have replaced it and no transaction ended on a server session that may
            // be a pooler's (see `CarrierStatement`).
            let restore = matches!(self.unnamed, Unnamed::Parsed(_));
            let parsed = !restore && self.carrier_statement == CarrierStatement::Ready && self.proto.pending() == 0;
            if !parsed {
                frame::write_parse_untyped(out, b"", SET_CONFIG_PID_SQL);
                self.proto.sent(frame::PARSE, Owner::Proxy);
            }
            out.put_slice(self.carrier_frames(&target, action, scope));
            for tag in [frame::BIND, frame::EXECUTE, frame::CLOSE] {
                self.proto.sent(tag, Owner::Proxy);
            }
            if let Unnamed::Parsed(u) = &self.unnamed {
                out.put_slice(&u.sent);
                self.proto.sent(frame::PARSE, Owner::Proxy);
                self.carrier_statement = CarrierStatement::Absent;
            } else if !parsed {
                self.carrier_statement = CarrierStatement::Sent;
            }
            self.events.push(Event::Carrier);
        }
        if touches {
            // This statement may change the setting when it runs: the next execution writes again.
            self.settings_dirty = true;
        }
    }

    /// The carrier write's Bind/Execute/Close for `action` in `scope`: built (and its `application_name`
    /// value noted as the proxy's) when it differs from the last one, else the last one's bytes again —
    /// one context per session, or per transaction, is written many times.
    fn carrier_frames(&mut self, target: &Target, action: Action, scope: Scope) -> &[u8] {
        let base = self.app.client();
        let fresh =
            self.carrier_write.as_ref().is_none_or(|w| (w.action, w.scope) != (action, scope) || w.base != base);
        if fresh {
            let write = target.write(&action, scope, base);
            let mut frames = BytesMut::new();
            frame::write_bind_text(&mut frames, RESERVED_PORTAL, b"", &write.params().map(str::as_bytes));
            frame::write_execute(&mut frames, RESERVED_PORTAL);
            frame::write_close(&mut frames, b'P', RESERVED_PORTAL);
            let base = base.to_owned();
            if write.variable == "application_name" {
                self.app.wrote(write.value);
            }
            self.carrier_write = Some(CarrierWrite { action, scope, base, frames });
        }
        self.carrier_write.as_ref().map_or(&[], |w| &w.frames)
    }
}

pub(super) fn build_commenter(cfg: &InjectConfig, app: &str) -> Commenter {
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

/// The last carrier write the session sent (see [`Session::carrier_frames`]).
#[derive(Debug)]
pub(super) struct CarrierWrite {
    action: Action,
    scope: Scope,
    /// The client's `application_name` it was written for (the `named` format and a clear use it).
    base: String,
    /// Bind, Execute and Close of the proxy's portal.
    frames: BytesMut,
}
