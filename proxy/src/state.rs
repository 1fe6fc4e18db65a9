//! The sans-I/O protocol state of one client session: one queue of the backend replies the session
//! expects, each with its owner (the client, whose replies are relayed, or the proxy, whose replies are
//! swallowed) and what the session measures until that reply (when the request was forwarded, the
//! statement's span), the transaction status and the COPY state. No sockets, no clocks: the session reports each
//! frame it sends upstream and each frame the server sends, and is told what to do with the latter — or
//! that the server answered something the queue did not expect ([`OutOfSync`]), which ends that client's
//! session cleanly.
//!
//! Protocol rules mirrored here: after an ErrorResponse to an extended-protocol message the server skips
//! every message up to the next Sync — client's and proxy's alike — and answers none of them; Syncs that
//! arrive during copy-in are ignored by the server, including one the client sent ahead of the COPY it
//! ends up inside (tokio-postgres sends Bind/Execute/Sync before the data).

use std::collections::VecDeque;
use std::time::Instant;

use crate::frame;
use crate::session::spans::OpenSpan;

/// Who a pending reply belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The client: relayed.
    Client,
    /// The proxy's own carrier messages: swallowed.
    Proxy,
}

/// A message the server will answer, in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expect {
    /// ParseComplete.
    Parse,
    /// BindComplete.
    Bind,
    /// ParameterDescription (statements only), then RowDescription or NoData.
    Describe,
    /// DataRow*, then CommandComplete, EmptyQueryResponse or PortalSuspended (or a COPY).
    Execute,
    /// CloseComplete.
    Close,
    /// ReadyForQuery.
    Sync,
    /// Any results, then ReadyForQuery.
    Query,
    /// FunctionCallResponse, then ReadyForQuery.
    FunctionCall,
}

/// Where the proxy inserted text into a statement the client sent: errors about that statement report
/// positions in the server's text, which the client must see in its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shift {
    /// Characters of the client's text before the insertion.
    pub at: u32,
    /// Characters inserted.
    pub len: u32,
}

impl Shift {
    /// The shift of `inserted` ASCII bytes (the proxy's comment: percent-encoded, so always ASCII) placed
    /// right after `head`, the client's text before them.
    pub fn after(head: &str, inserted: usize) -> Option<Shift> {
        let at = if head.is_ascii() { head.len() } else { head.chars().count() };
        Some(Shift { at: u32::try_from(at).ok()?, len: u32::try_from(inserted).ok()? })
    }

    /// Maps a 1-based character position in the server's text to the client's text. A position inside
    /// the inserted text cannot be about the client's text (e.g. it counts characters of a stored
    /// `PREPARE` text at `EXECUTE`): it passes unchanged, as the client would have received it directly.
    pub fn map(self, position: u32) -> u32 {
        if position <= self.at + self.len {
            position
        } else {
            position - self.len
        }
    }
}

/// One expected reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// What it answers.
    pub expect: Expect,
    /// Whose it is.
    pub owner: Owner,
    /// Text the proxy inserted into the statement this message parses or runs.
    pub shift: Option<Shift>,
    /// When a client request (Query, Sync, FunctionCall) was forwarded: its latency ends at its
    /// ReadyForQuery.
    pub started: Option<Instant>,
    /// The span of the Query or Execute, when spans are exported.
    pub span: Option<Box<OpenSpan>>,
}

impl Pending {
    fn new(expect: Expect, owner: Owner) -> Self {
        Pending { expect, owner, shift: None, started: None, span: None }
    }
}

/// What to do with a server message, and the queue item it completed (popped), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// What to do with the message.
    pub event: ServerEvent,
    /// The expected reply this message completed.
    pub done: Option<Pending>,
}

impl From<ServerEvent> for Reply {
    fn from(event: ServerEvent) -> Self {
        Reply { event, done: None }
    }
}

/// The transaction status of a ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnStatus {
    /// Not in a transaction block.
    Idle,
    /// In a transaction block.
    InTransaction,
    /// In a failed transaction block.
    Failed,
}

impl TxnStatus {
    fn from_byte(b: u8) -> Option<TxnStatus> {
        match b {
            b'I' => Some(TxnStatus::Idle),
            b'T' => Some(TxnStatus::InTransaction),
            b'E' => Some(TxnStatus::Failed),
            _ => None,
        }
    }
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Startup and authentication: everything is relayed until the first ReadyForQuery.
    Startup,
    /// Ready: requests and replies follow the queue.
    Ready,
    /// The server is receiving COPY data from the client.
    CopyIn,
    /// The server is sending COPY data.
    CopyOut,
    /// COPY BOTH (replication): data flows both ways.
    CopyBoth,
}

/// The server sent something the queue did not expect: the session cannot know whose it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol out of sync: server sent {got:?} while {expected} was expected")]
pub struct OutOfSync {
    /// The message type byte the server sent.
    pub got: char,
    /// What the queue's head expected.
    pub expected: String,
}

/// What to do with a server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// Relay it.
    Relay,
    /// Swallow it: it answers the proxy's own message.
    Swallow,
    /// The reply to a proxy message completed (its CommandComplete / ParseComplete): swallowed.
    ProxyDone(Expect),
    /// An ErrorResponse to a proxy message. Relayed when client messages of the same batch were skipped
    /// because of it (the client must learn why they got no answer), else swallowed.
    ProxyError {
        /// Whether to relay the error to the client.
        relay: bool,
    },
    /// A ReadyForQuery that ends a transaction (status `Idle`) was relayed.
    TransactionEnded,
    /// The first ReadyForQuery of the session (authentication and startup are over).
    StartupDone,
}

/// The protocol state (see the module docs).
#[derive(Debug, Clone)]
pub struct ProtocolState {
    queue: VecDeque<Pending>,
    txn: TxnStatus,
    phase: Phase,
    /// The server answered an extended-protocol message with an error before the batch's Sync was
    /// sent: it ignores every message up to that Sync, so none of them expects a reply.
    skip_until_sync: bool,
}

impl Default for ProtocolState {
    fn default() -> Self {
        ProtocolState { queue: VecDeque::new(), txn: TxnStatus::Idle, phase: Phase::Startup, skip_until_sync: false }
    }
}

/// The reply a frontend message expects, if any.
fn expect_of(tag: u8) -> Option<Expect> {
    match tag {
        frame::PARSE => Some(Expect::Parse),
        frame::BIND => Some(Expect::Bind),
        frame::DESCRIBE => Some(Expect::Describe),
        frame::EXECUTE => Some(Expect::Execute),
        frame::CLOSE => Some(Expect::Close),
        frame::SYNC => Some(Expect::Sync),
        frame::QUERY => Some(Expect::Query),
        frame::FUNCTION_CALL => Some(Expect::FunctionCall),
        _ => None,
    }
}

impl ProtocolState {
    /// Whether startup is over (the first ReadyForQuery was seen).
    pub fn is_ready(&self) -> bool {
        self.phase != Phase::Startup
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The transaction status of the last ReadyForQuery.
    pub fn txn_status(&self) -> TxnStatus {
        self.txn
    }

    /// Whether COPY is in progress in either direction.
    pub fn in_copy(&self) -> bool {
        matches!(self.phase, Phase::CopyIn | Phase::CopyOut | Phase::CopyBoth)
    }

    /// Number of replies still expected.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is pending: the server waits for the client.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.phase == Phase::Ready
    }

    /// Whether the proxy may put its own messages on the wire now (ahead of the client's next message):
    /// ready, not in COPY, not in a failed transaction.
    pub fn may_inject(&self) -> bool {
        self.phase == Phase::Ready && self.txn != TxnStatus::Failed
    }

    /// Records a message sent upstream: the client's, or the proxy's own. Returns whether the server will
    /// answer it (it is the queue's last item then).
    pub fn sent(&mut self, tag: u8, owner: Owner) -> bool {
        if self.phase == Phase::Startup {
            return false;
        }
        match tag {
            // The server ignores Sync and Flush while it receives COPY data.
            frame::SYNC if self.phase == Phase::CopyIn || self.phase == Phase::CopyBoth => {}
            frame::COPY_DONE | frame::COPY_FAIL if self.phase == Phase::CopyIn => self.phase = Phase::Ready,
            frame::COPY_DONE if self.phase == Phase::CopyBoth => self.phase = Phase::CopyOut,
            _ if self.skip_until_sync && tag != frame::SYNC => {}
            _ => {
                if let Some(expect) = expect_of(tag) {
                    if expect == Expect::Sync {
                        self.skip_until_sync = false;
                    }
                    self.queue.push_back(Pending::new(expect, owner));
                    return true;
                }
            }
        }
        false
    }

    /// Notes the text the proxy inserted into the statement of the message recorded last.
    pub fn set_last_shift(&mut self, shift: Option<Shift>) {
        if let Some(p) = self.queue.back_mut() {
            p.shift = shift;
        }
    }

    /// The item of the message recorded last (what its reply will complete).
    pub fn last_mut(&mut self) -> Option<&mut Pending> {
        self.queue.back_mut()
    }

    /// The inserted text of the statement the next reply is about.
    pub fn head_shift(&self) -> Option<Shift> {
        self.queue.front().and_then(|p| p.shift)
    }

    /// The span of the request the next reply is about (a multi-statement Query's, between statements).
    pub fn head_span_mut(&mut self) -> Option<&mut OpenSpan> {
        self.queue.front_mut().and_then(|p| p.span.as_deref_mut())
    }

    /// Records the client's message by its type byte; see [`ProtocolState::sent`].
    pub fn client_message(&mut self, tag: u8) -> bool {
        self.sent(tag, Owner::Client)
    }

    fn head(&self) -> Option<&Pending> {
        self.queue.front()
    }

    fn out_of_sync(&self, tag: u8) -> OutOfSync {
        let expected = match self.head() {
            Some(p) => format!("a reply to {:?} ({:?})", p.expect, p.owner),
            None => "nothing".to_owned(),
        };
        OutOfSync { got: tag as char, expected }
    }

    /// Drops the expectations the server skips after an error: every message up to (not including) the
    /// next Sync; when that Sync has not been sent yet, messages sent until it expect no reply either.
    /// Returns whether any skipped message was (or may yet be) the client's.
    fn skip_to_sync(&mut self) -> bool {
        let mut client = false;
        while let Some(p) = self.head() {
            if p.expect == Expect::Sync {
                return client;
            }
            client |= p.owner == Owner::Client;
            self.queue.pop_front();
        }
        self.skip_until_sync = true;
        true
    }

    /// Pops the head, which must be one of `expect`, and says what to do with the reply that ended it.
    fn complete(&mut self, tag: u8, expect: &[Expect]) -> Result<Reply, OutOfSync> {
        match self.queue.pop_front() {
            Some(p) if expect.contains(&p.expect) => {
                let event = match p.owner {
                    Owner::Client => ServerEvent::Relay,
                    Owner::Proxy => ServerEvent::ProxyDone(p.expect),
                };
                Ok(Reply { event, done: Some(p) })
            }
            Some(p) => {
                self.queue.push_front(p);
                Err(self.out_of_sync(tag))
            }
            None => Err(self.out_of_sync(tag)),
        }
    }

    /// A reply that belongs to the head without ending it.
    fn within(&self, tag: u8, expect: &[Expect]) -> Result<Reply, OutOfSync> {
        match self.head() {
            Some(p) if expect.contains(&p.expect) => Ok(match p.owner {
                Owner::Client => ServerEvent::Relay,
                Owner::Proxy => ServerEvent::Swallow,
            }
            .into()),
            _ => Err(self.out_of_sync(tag)),
        }
    }

    /// Records a server message (`body` is needed for ReadyForQuery; others may pass an empty or partial
    /// body) and says what to do with it.
    pub fn server_message(&mut self, tag: u8, body: &[u8]) -> Result<Reply, OutOfSync> {
        use Expect::*;
        if self.phase == Phase::Startup {
            if tag == frame::READY_FOR_QUERY {
                self.txn = body.first().copied().and_then(TxnStatus::from_byte).unwrap_or(TxnStatus::Idle);
                self.phase = Phase::Ready;
                return Ok(ServerEvent::StartupDone.into());
            }
            return Ok(ServerEvent::Relay.into());
        }
        match tag {
            // Asynchronous: may come at any time; owned by nobody in particular.
            frame::NOTIFICATION | frame::PARAMETER_STATUS => Ok(ServerEvent::Relay.into()),
            frame::NOTICE_RESPONSE => Ok(match self.head() {
                Some(Pending { owner: Owner::Proxy, .. }) => ServerEvent::Swallow,
                _ => ServerEvent::Relay,
            }
            .into()),
            frame::READY_FOR_QUERY => {
                let status =
                    body.first().copied().and_then(TxnStatus::from_byte).ok_or_else(|| self.out_of_sync(tag))?;
                self.phase = Phase::Ready;
                let mut reply = self.complete(tag, &[Sync, Query, FunctionCall])?;
                self.txn = status;
                reply.event = match reply.event {
                    // Idle: the request's transaction (implicit or explicit) is over.
                    ServerEvent::Relay if status == TxnStatus::Idle => ServerEvent::TransactionEnded,
                    ServerEvent::ProxyDone(_) => ServerEvent::Swallow,
                    other => other,
                };
                Ok(reply)
            }
            frame::ERROR_RESPONSE => {
                if matches!(self.phase, Phase::CopyIn | Phase::CopyOut | Phase::CopyBoth) {
                    self.phase = Phase::Ready;
                }
                if frame::is_fatal(body) {
                    // The server closes the connection: whoever's it is, the client must see it.
                    return Ok(ServerEvent::Relay.into());
                }
                match self.head() {
                    // A simple Query or FunctionCall: its ReadyForQuery follows. Or an error at the Sync
                    // itself (a deferred constraint at the implicit commit).
                    Some(Pending { expect: Query | FunctionCall | Sync, owner, .. }) => Ok(match owner {
                        Owner::Client => ServerEvent::Relay,
                        Owner::Proxy => ServerEvent::ProxyError { relay: false },
                    }
                    .into()),
                    // An extended-protocol message failed: it is done, and the server skips the rest of
                    // its batch.
                    Some(_) => {
                        let mut done = self.queue.pop_front();
                        // A Parse or Bind that fails is its statement's failure: the span of the execution
                        // it was for (the batch's first) ends with this error.
                        if let Some(d) = done.as_mut().filter(|d| d.span.is_none()) {
                            d.span = self.queue.iter_mut().take_while(|p| p.expect != Sync).find_map(|p| p.span.take());
                        }
                        let client_skipped = self.skip_to_sync();
                        let event = match done.as_ref().map(|p| p.owner) {
                            Some(Owner::Proxy) => ServerEvent::ProxyError { relay: client_skipped },
                            _ => ServerEvent::Relay,
                        };
                        Ok(Reply { event, done })
                    }
                    // An error outside any request (e.g. FATAL at shutdown): the client should see it.
                    None => Ok(ServerEvent::Relay.into()),
                }
            }
            frame::PARSE_COMPLETE => self.complete(tag, &[Parse]),
            frame::BIND_COMPLETE => self.complete(tag, &[Bind]),
            frame::CLOSE_COMPLETE => self.complete(tag, &[Close]),
            frame::PARAMETER_DESCRIPTION => self.within(tag, &[Describe]),
            frame::NO_DATA => self.complete(tag, &[Describe]),
            frame::ROW_DESCRIPTION => match self.head() {
                Some(Pending { expect: Query, .. }) => self.within(tag, &[Query]),
                _ => self.complete(tag, &[Describe]),
            },
            frame::DATA_ROW => self.within(tag, &[Execute, Query]),
            frame::COMMAND_COMPLETE | frame::EMPTY_QUERY => match self.head() {
                Some(Pending { expect: Query, .. }) => self.within(tag, &[Query]),
                _ => {
                    if self.phase != Phase::Ready {
                        self.phase = Phase::Ready;
                    }
                    self.complete(tag, &[Execute])
                }
            },
            frame::PORTAL_SUSPENDED => self.complete(tag, &[Execute]),
            frame::FUNCTION_CALL_RESPONSE => self.within(tag, &[FunctionCall]),
            frame::COPY_IN_RESPONSE | frame::COPY_OUT_RESPONSE | frame::COPY_BOTH_RESPONSE => {
                let ev = self.within(tag, &[Execute, Query])?;
                self.phase = match tag {
                    frame::COPY_IN_RESPONSE => Phase::CopyIn,
                    frame::COPY_OUT_RESPONSE => Phase::CopyOut,
                    _ => Phase::CopyBoth,
                };
                if tag != frame::COPY_OUT_RESPONSE && self.head().map(|p| p.expect) == Some(Execute) {
                    // A Sync the client sent after this COPY's Execute is read (and ignored) by the
                    // server's copy-in loop.
                    if let Some(i) = self.queue.iter().position(|p| p.expect == Sync) {
                        if self.queue.iter().take(i).skip(1).all(|p| p.owner == Owner::Client) {
                            self.queue.remove(i);
                        }
                    }
                }
                Ok(ev)
            }
            frame::COPY_DATA => match self.phase {
                Phase::CopyOut | Phase::CopyBoth => Ok(ServerEvent::Relay.into()),
                _ => Err(self.out_of_sync(tag)),
            },
            frame::COPY_DONE => match self.phase {
                Phase::CopyOut => {
                    self.phase = Phase::Ready;
                    Ok(ServerEvent::Relay.into())
                }
                Phase::CopyBoth => {
                    self.phase = Phase::CopyIn;
                    Ok(ServerEvent::Relay.into())
                }
                _ => Err(self.out_of_sync(tag)),
            },
            // Negotiation replies that may come later (NegotiateProtocolVersion), unknown types: relay.
            _ => Ok(ServerEvent::Relay.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::*;

    fn ready() -> ProtocolState {
        let mut s = ProtocolState::default();
        assert_eq!(ev(&mut s, READY_FOR_QUERY, b"I"), Ok(ServerEvent::StartupDone));
        s
    }

    fn ev(s: &mut ProtocolState, tag: u8, body: &[u8]) -> Result<ServerEvent, OutOfSync> {
        s.server_message(tag, body).map(|r| r.event)
    }

    fn client(s: &mut ProtocolState, tags: &[u8]) {
        for &t in tags {
            s.client_message(t);
        }
    }

    fn proxy(s: &mut ProtocolState, tags: &[u8]) {
        for &t in tags {
            s.sent(t, Owner::Proxy);
        }
    }

    fn server(s: &mut ProtocolState, tags: &[(u8, &[u8])]) -> Vec<ServerEvent> {
        tags.iter().map(|(t, b)| ev(s, *t, b).unwrap()).collect()
    }

    use ServerEvent::*;

    #[test]
    fn startup_then_simple_query() {
        let mut s = ProtocolState::default();
        assert!(!s.is_ready());
        assert_eq!(ev(&mut s, b'R', b""), Ok(Relay));
        assert_eq!(ev(&mut s, READY_FOR_QUERY, b"I"), Ok(StartupDone));
        client(&mut s, &[QUERY]);
        assert_eq!(
            server(&mut s, &[(b'T', b""), (b'D', b""), (b'C', b""), (b'Z', b"T")]),
            [Relay, Relay, Relay, Relay]
        );
        assert_eq!(s.txn_status(), TxnStatus::InTransaction);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn inline_proxy_messages_are_swallowed_and_the_clients_relayed() {
        // Client batch: Bind(named) Execute Sync, with the proxy's Parse/Bind/Execute/Close before it.
        let mut s = ready();
        proxy(&mut s, &[PARSE, BIND, EXECUTE, CLOSE]);
        client(&mut s, &[BIND, EXECUTE, SYNC]);
        let events = server(
            &mut s,
            &[
                (b'1', b""),
                (b'2', b""),
                (b'D', b""),
                (b'C', b""),
                (b'3', b""),
                (b'2', b""),
                (b'D', b""),
                (b'C', b""),
                (b'Z', b"I"),
            ],
        );
        assert_eq!(
            events,
            [
                ProxyDone(Expect::Parse),
                ProxyDone(Expect::Bind),
                Swallow,
                ProxyDone(Expect::Execute),
                ProxyDone(Expect::Close),
                Relay,
                Relay,
                Relay,
                TransactionEnded
            ]
        );
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn an_error_skips_everything_up_to_sync_including_proxy_messages() {
        let mut s = ready();
        // Pipeline: client statement 1 fails; proxy carrier and client statement 2 are skipped.
        client(&mut s, &[BIND, EXECUTE]);
        proxy(&mut s, &[BIND, EXECUTE, CLOSE]);
        client(&mut s, &[BIND, EXECUTE, SYNC]);
        assert_eq!(server(&mut s, &[(b'2', b""), (b'E', b""), (b'Z', b"I")]), [Relay, Relay, TransactionEnded]);
        assert_eq!(s.pending(), 0);
        // The proxy's message fails: the client's skipped messages need the error.
        proxy(&mut s, &[BIND, EXECUTE, CLOSE]);
        client(&mut s, &[BIND, EXECUTE, SYNC]);
        assert_eq!(
            server(&mut s, &[(b'2', b""), (b'E', b""), (b'Z', b"I")]),
            [ProxyDone(Expect::Bind), ProxyError { relay: true }, TransactionEnded]
        );
    }

    #[test]
    fn messages_sent_after_an_error_before_the_sync_expect_nothing() {
        // asyncpg executemany: Bind/Execute pairs stream out; the server fails one; more pairs and the
        // Sync follow after the error reached the proxy.
        let mut s = ready();
        client(&mut s, &[BIND, EXECUTE, BIND, EXECUTE]);
        assert_eq!(server(&mut s, &[(b'2', b""), (b'C', b""), (b'2', b""), (b'E', b"")]), [Relay; 4]);
        client(&mut s, &[BIND, EXECUTE]);
        proxy(&mut s, &[BIND, EXECUTE, CLOSE]);
        client(&mut s, &[BIND, EXECUTE, SYNC]);
        assert_eq!(s.pending(), 1);
        assert_eq!(server(&mut s, &[(b'Z', b"I")]), [TransactionEnded]);
        client(&mut s, &[BIND, EXECUTE, SYNC]);
        assert_eq!(s.pending(), 3, "after the Sync replies are expected again");
    }

    #[test]
    fn positions_map_back_to_the_clients_text() {
        // "SELECT 1 UNION;" commented as "SELECT 1 UNION /*traceparent='x'*/;"
        let shift = Shift::after("SELECT 1 UNION", " /*traceparent='x'*/".len()).unwrap();
        assert_eq!(shift, Shift { at: 14, len: 20 });
        assert_eq!(shift.map(15), 15, "inside the comment: not about the client's text, unchanged");
        assert_eq!(shift.map(35), 15, "the ';' after it");
        assert_eq!(shift.map(3), 3);
        assert_eq!(Shift::after("/*é*/ select x", 6), Some(Shift { at: 14, len: 6 }));
        assert_eq!(Shift::after("", 6), Some(Shift { at: 0, len: 6 }));
    }

    #[test]
    fn unexpected_replies_are_a_protocol_error() {
        let mut s = ready();
        assert!(s.server_message(b'2', b"").is_err());
        client(&mut s, &[PARSE, SYNC]);
        assert!(s.server_message(b'2', b"").is_err(), "BindComplete for a Parse");
        let mut s = ready();
        client(&mut s, &[SYNC]);
        assert!(s.server_message(b'Z', b"?").is_err());
    }

    #[test]
    fn copy_in_extended_with_early_sync() {
        // tokio-postgres: Bind, Execute, Sync, then (after CopyInResponse) data, CopyDone, Sync.
        let mut s = ready();
        client(&mut s, &[BIND, EXECUTE, SYNC]);
        assert_eq!(server(&mut s, &[(b'2', b""), (COPY_IN_RESPONSE, b"")]), [Relay, Relay]);
        assert_eq!(s.pending(), 1, "the early Sync is ignored by the server");
        assert!(s.in_copy() && !s.may_inject());
        client(&mut s, &[COPY_DATA, SYNC, COPY_DONE, SYNC]);
        assert_eq!(server(&mut s, &[(b'C', b""), (b'Z', b"I")]), [Relay, TransactionEnded]);
        assert_eq!(s.pending(), 0);
        assert!(s.may_inject());
    }

    #[test]
    fn copy_out_simple_query() {
        let mut s = ready();
        client(&mut s, &[QUERY]);
        server(&mut s, &[(COPY_OUT_RESPONSE, b""), (COPY_DATA, b"")]);
        assert!(!s.may_inject());
        assert_eq!(server(&mut s, &[(COPY_DONE, b""), (b'C', b""), (b'Z', b"I")]), [Relay, Relay, TransactionEnded]);
        assert!(s.may_inject());
    }

    #[test]
    fn failed_transaction_blocks_injection() {
        let mut s = ready();
        client(&mut s, &[QUERY]);
        server(&mut s, &[(b'E', b""), (b'Z', b"E")]);
        assert!(!s.may_inject());
    }

    #[test]
    fn portal_suspended_and_describe() {
        let mut s = ready();
        client(&mut s, &[PARSE, DESCRIBE, BIND, EXECUTE, SYNC]);
        let ev = server(
            &mut s,
            &[(b'1', b""), (b't', b""), (b'T', b""), (b'2', b""), (b'D', b""), (b's', b""), (b'Z', b"T")],
        );
        assert!(ev.iter().all(|e| *e == Relay), "{ev:?}");
        assert_eq!(s.pending(), 0);
    }

    /// A model server: the replies to `msgs` in order, by the protocol's rules (after an error in an
    /// extended-protocol message, everything up to the next Sync is skipped); each reply is tagged with
    /// the index of the message it answers.
    fn model_replies(msgs: &[(u8, Owner, bool)]) -> Vec<(usize, u8)> {
        let mut out = Vec::new();
        let mut skipping = false;
        for (i, &(tag, _, fail)) in msgs.iter().enumerate() {
            if skipping && tag != SYNC {
                continue;
            }
            let mut reply = |t: u8| out.push((i, t));
            match (tag, fail) {
                (PARSE | BIND | EXECUTE, true) => {
                    reply(ERROR_RESPONSE);
                    skipping = true;
                }
                (PARSE, false) => reply(b'1'),
                (BIND, false) => reply(b'2'),
                (DESCRIBE, _) => {
                    reply(b't');
                    reply(b'T');
                }
                (EXECUTE, false) => {
                    reply(b'D');
                    reply(b'C');
                }
                (CLOSE, _) => reply(b'3'),
                (SYNC, _) => {
                    reply(READY_FOR_QUERY);
                    skipping = false;
                }
                (QUERY, true) => {
                    reply(ERROR_RESPONSE);
                    reply(READY_FOR_QUERY);
                }
                (QUERY, false) => {
                    for t in [b'T', b'D', b'C', READY_FOR_QUERY] {
                        reply(t);
                    }
                }
                _ => {}
            }
        }
        out
    }

    proptest::proptest! {
        /// Random valid client batches, with proxy carriers before some Binds and failures anywhere,
        /// sent and answered in a random interleaving: the queue never loses sync, the client's replies
        /// are relayed and the proxy's swallowed, and nothing is left pending.
        #[test]
        fn random_pipelines_stay_in_sync_with_a_model_server(
            batches in proptest::collection::vec(
                (0u8..4, proptest::collection::vec((0u8..3, proptest::bool::weighted(0.1), proptest::bool::ANY), 0..5)),
                1..12,
            ),
            schedule in proptest::collection::vec(proptest::bool::ANY, 0..400),
        ) {
            let mut msgs: Vec<(u8, Owner, bool)> = Vec::new();
            for (kind, stmts) in &batches {
                if *kind == 0 {
                    msgs.push((QUERY, Owner::Client, stmts.first().is_some_and(|s| s.1)));
                    continue;
                }
                for &(shape, fail, carrier) in stmts {
                    if carrier {
                        for t in [PARSE, BIND, EXECUTE, CLOSE] {
                            msgs.push((t, Owner::Proxy, fail && t == EXECUTE));
                        }
                    }
                    if shape == 0 {
                        msgs.push((PARSE, Owner::Client, false));
                        msgs.push((DESCRIBE, Owner::Client, false));
                    }
                    msgs.push((BIND, Owner::Client, fail && shape == 1));
                    msgs.push((EXECUTE, Owner::Client, fail && shape == 2));
                }
                msgs.push((SYNC, Owner::Client, false));
            }
            let replies = model_replies(&msgs);
            let mut s = ready();
            let (mut sent, mut got) = (0, 0);
            let mut steps = schedule.into_iter();
            while got < replies.len() {
                let deliverable = replies[got].0 < sent;
                let send = sent < msgs.len() && (!deliverable || steps.next().unwrap_or(false));
                if send {
                    let (tag, owner, _) = msgs[sent];
                    s.sent(tag, owner);
                    sent += 1;
                    continue;
                }
                let (i, tag) = replies[got];
                got += 1;
                let body: &[u8] = if tag == READY_FOR_QUERY { b"I" } else { b"" };
                let ev = ev(&mut s, tag, body);
                proptest::prop_assert!(ev.is_ok(), "{ev:?} at reply {got} to {:?}", msgs[i]);
                let relayed = matches!(ev, Ok(Relay | TransactionEnded | ProxyError { relay: true }));
                match msgs[i].1 {
                    Owner::Client => proptest::prop_assert!(relayed, "client reply {} swallowed", tag as char),
                    Owner::Proxy if tag != ERROR_RESPONSE => {
                        proptest::prop_assert!(!relayed, "proxy reply {} relayed", tag as char)
                    }
                    Owner::Proxy => {}
                }
            }
            while sent < msgs.len() {
                s.sent(msgs[sent].0, msgs[sent].1);
                sent += 1;
            }
            proptest::prop_assert_eq!(s.pending(), 0);
        }
    }
}
