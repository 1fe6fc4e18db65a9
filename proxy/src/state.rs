//! The sans-I/O protocol state of one client session: which backend responses are expected and whose
//! they are, the transaction status and the COPY state. No sockets, no clocks: the relay reports each
//! frame it sees and asks what to do.
//!
//! The model is one queue of pending *sync points*: every Query, FunctionCall and Sync the client sends
//! (and every Sync the proxy injects) makes the server answer with exactly one ReadyForQuery, in order.
//! Backend messages belong to the sync point at the head of the queue; a head the proxy injected means its
//! responses are swallowed, up to and including its ReadyForQuery. Two protocol rules bend the count and are
//! mirrored here: Syncs received during copy-in are ignored by the server, and a Sync sent ahead of the
//! COPY it ends up inside (tokio-postgres sends Bind/Execute/Sync before the data) is dropped when
//! CopyInResponse arrives.

use std::collections::VecDeque;

/// Who owns a pending sync point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The client: responses are relayed.
    Client,
    /// The proxy's own carrier statement: responses are swallowed.
    Injected(InjectedPart),
}

/// What an injected part did, to settle the carrier bookkeeping when its ReadyForQuery arrives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InjectedPart {
    /// It (re-)parsed the reserved statement.
    pub parsed: bool,
    /// The SQLSTATE of an error it got, if any.
    pub error: Option<[u8; 5]>,
}

/// The kind of message that produced a sync point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// A simple Query.
    Query,
    /// An extended-protocol Sync.
    Sync,
    /// A FunctionCall.
    FunctionCall,
}

/// A pending sync point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Whose it is.
    pub owner: Owner,
    /// What produced it.
    pub kind: SyncKind,
}

/// Transaction status from ReadyForQuery.
pub type TxnStatus = u8;
/// Idle.
pub const IDLE: TxnStatus = b'I';
/// In a transaction block.
pub const IN_TXN: TxnStatus = b'T';
/// In a failed transaction block.
pub const FAILED: TxnStatus = b'E';

/// The protocol state (see the module docs).
#[derive(Debug, Clone)]
pub struct ProtocolState {
    queue: VecDeque<Pending>,
    txn: TxnStatus,
    ready: bool,
    extended_open: bool,
    copy_in: bool,
    copy_out: bool,
    /// The open extended batch holds only statement-level messages (Parse, Describe of a statement,
    /// Close, Flush): no portal exists and nothing executed yet.
    open_prefix_only: bool,
    /// Responses still due for the open batch's messages (counted only for a prefix-only batch).
    open_due: u32,
    /// The open batch got an ErrorResponse (the server now skips until Sync).
    open_failed: bool,
}

impl Default for ProtocolState {
    fn default() -> Self {
        ProtocolState {
            queue: VecDeque::new(),
            txn: IDLE,
            ready: false,
            extended_open: false,
            copy_in: false,
            copy_out: false,
            open_prefix_only: false,
            open_due: 0,
            open_failed: false,
        }
    }
}

/// What a server message means to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Relay it.
    Relay,
    /// It belongs to an injected part: swallow it.
    Swallow,
    /// The ReadyForQuery ending an injected part (swallowed); carries that part's outcome.
    InjectedDone(InjectedPart),
    /// The first ReadyForQuery of the session (authentication and startup are over).
    StartupDone,
}

impl ProtocolState {
    /// Whether startup is over (the first ReadyForQuery was seen).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The transaction status of the last ReadyForQuery relayed.
    pub fn txn_status(&self) -> TxnStatus {
        self.txn
    }

    /// Whether COPY is in progress in either direction.
    pub fn in_copy(&self) -> bool {
        self.copy_in || self.copy_out
    }

    /// Whether the client's next message starts a new request: startup is over, no extended-protocol
    /// batch is open (the last one ended with Sync) and no COPY is running.
    pub fn at_boundary(&self) -> bool {
        self.ready && !self.extended_open && !self.copy_in && !self.copy_out
    }

    /// Whether an injected statement may be sent now: at a boundary and not in a failed transaction.
    pub fn may_inject(&self) -> bool {
        self.at_boundary() && self.txn != FAILED
    }

    /// Whether an injected part may go in *inside* an open extended batch: the batch so far only
    /// prepared or described statements (e.g. asyncpg's Parse/Describe/Flush before Bind/Execute/Sync),
    /// every response to it has arrived, none was an error, and no earlier sync point is pending. The
    /// injected part's own Sync then ends only the statement-level work, which is unaffected.
    pub fn may_inject_mid_batch(&self) -> bool {
        self.ready
            && self.extended_open
            && self.open_prefix_only
            && self.open_due == 0
            && !self.open_failed
            && self.queue.is_empty()
            && !self.copy_in
            && !self.copy_out
            && self.txn != FAILED
    }

    /// Records a client extended-protocol message with its body (for the prefix-only bookkeeping of
    /// [`ProtocolState::may_inject_mid_batch`]); call before [`ProtocolState::client_message`].
    pub fn client_extended(&mut self, tag: u8, body: &[u8]) {
        use crate::frame::*;
        if !self.ready {
            return;
        }
        if !self.extended_open {
            self.open_prefix_only = true;
            self.open_due = 0;
            self.open_failed = false;
        }
        match tag {
            PARSE | CLOSE => self.open_due += 1,
            DESCRIBE if body.first() == Some(&b'S') => self.open_due += 2,
            FLUSH => {}
            _ => self.open_prefix_only = false,
        }
    }

    /// Number of pending sync points.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Records the proxy's own injected part (ending with its own Sync).
    pub fn push_injected(&mut self, part: InjectedPart) {
        self.queue.push_back(Pending { owner: Owner::Injected(part), kind: SyncKind::Sync });
    }

    /// Records a client message by its type byte.
    pub fn client_message(&mut self, tag: u8) {
        use crate::frame::*;
        match tag {
            QUERY => {
                self.extended_open = false;
                self.queue.push_back(Pending { owner: Owner::Client, kind: SyncKind::Query });
            }
            FUNCTION_CALL => self.queue.push_back(Pending { owner: Owner::Client, kind: SyncKind::FunctionCall }),
            // The server ignores Sync during copy-in.
            SYNC if !self.copy_in => {
                self.extended_open = false;
                self.queue.push_back(Pending { owner: Owner::Client, kind: SyncKind::Sync });
            }
            PARSE | BIND | DESCRIBE | EXECUTE | CLOSE | FLUSH if self.ready => self.extended_open = true,
            COPY_DONE | COPY_FAIL => self.copy_in = false,
            _ => {}
        }
    }

    fn head_is_injected(&self) -> bool {
        matches!(self.queue.front(), Some(Pending { owner: Owner::Injected(_), .. }))
    }

    /// Records a server message by its type byte (`body` is needed for ReadyForQuery and ErrorResponse;
    /// other messages may pass an empty or partial body) and says what to do with it.
    pub fn server_message(&mut self, tag: u8, body: &[u8]) -> ServerEvent {
        use crate::frame::*;
        let injected = self.head_is_injected();
        match tag {
            READY_FOR_QUERY => {
                if let Some(&status) = body.first() {
                    self.txn = status;
                }
                self.copy_in = false;
                self.copy_out = false;
                if !self.ready {
                    self.ready = true;
                    return ServerEvent::StartupDone;
                }
                match self.queue.pop_front() {
                    Some(Pending { owner: Owner::Injected(part), .. }) => ServerEvent::InjectedDone(part),
                    _ => ServerEvent::Relay,
                }
            }
            ERROR_RESPONSE => {
                self.copy_in = false;
                if self.queue.is_empty() {
                    self.open_failed = true;
                }
                if injected {
                    if let Some(Pending { owner: Owner::Injected(part), .. }) = self.queue.front_mut() {
                        if part.error.is_none() {
                            part.error = Some(sqlstate(body).and_then(|s| s.try_into().ok()).unwrap_or(*b"XX000"));
                        }
                    }
                    ServerEvent::Swallow
                } else {
                    ServerEvent::Relay
                }
            }
            // Notifications are never the injected part's.
            NOTIFICATION => ServerEvent::Relay,
            COPY_IN_RESPONSE | COPY_BOTH_RESPONSE => {
                self.copy_in = true;
                // A Sync the client sent after this COPY's Execute was (or will be) ignored by the server.
                if let Some(Pending { owner: Owner::Client, kind: SyncKind::Sync }) = self.queue.front() {
                    self.queue.pop_front();
                    self.extended_open = true;
                }
                if tag == COPY_BOTH_RESPONSE {
                    self.copy_out = true;
                }
                ServerEvent::Relay
            }
            COPY_OUT_RESPONSE => {
                self.copy_out = true;
                ServerEvent::Relay
            }
            COPY_DONE => {
                self.copy_out = false;
                ServerEvent::Relay
            }
            _ if injected => ServerEvent::Swallow,
            // ParseComplete, ParameterDescription, RowDescription, NoData, CloseComplete of the open batch.
            b'1' | b't' | b'T' | b'n' | b'3' => {
                if self.queue.is_empty() && self.open_prefix_only {
                    self.open_due = self.open_due.saturating_sub(1);
                }
                ServerEvent::Relay
            }
            _ => ServerEvent::Relay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::*;

    fn ready() -> ProtocolState {
        let mut s = ProtocolState::default();
        assert_eq!(s.server_message(READY_FOR_QUERY, b"I"), ServerEvent::StartupDone);
        s
    }

    #[test]
    fn startup_then_simple_query() {
        let mut s = ProtocolState::default();
        assert!(!s.at_boundary());
        s.client_message(b'p');
        assert_eq!(s.server_message(b'R', b""), ServerEvent::Relay);
        assert_eq!(s.server_message(READY_FOR_QUERY, b"I"), ServerEvent::StartupDone);
        assert!(s.at_boundary());
        s.client_message(QUERY);
        assert_eq!(s.pending(), 1);
        assert_eq!(s.server_message(b'T', b""), ServerEvent::Relay);
        assert_eq!(s.server_message(READY_FOR_QUERY, b"T"), ServerEvent::Relay);
        assert_eq!(s.txn_status(), IN_TXN);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn injected_part_is_swallowed_up_to_its_ready() {
        let mut s = ready();
        assert!(s.may_inject());
        s.push_injected(InjectedPart { parsed: true, error: None });
        for m in [PARSE, BIND, EXECUTE, SYNC] {
            s.client_message(m);
        }
        assert!(!s.at_boundary() || s.pending() == 2);
        for t in [b'1', b'2', b'D', COMMAND_COMPLETE, NOTICE_RESPONSE] {
            assert_eq!(s.server_message(t, b""), ServerEvent::Swallow);
        }
        assert_eq!(s.server_message(NOTIFICATION, b""), ServerEvent::Relay);
        assert_eq!(
            s.server_message(READY_FOR_QUERY, b"I"),
            ServerEvent::InjectedDone(InjectedPart { parsed: true, error: None })
        );
        for t in [b'1', b'2', b'D', COMMAND_COMPLETE] {
            assert_eq!(s.server_message(t, b""), ServerEvent::Relay);
        }
        assert_eq!(s.server_message(READY_FOR_QUERY, b"I"), ServerEvent::Relay);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn injected_error_is_recorded_and_swallowed() {
        let mut s = ready();
        s.push_injected(InjectedPart::default());
        assert_eq!(s.server_message(ERROR_RESPONSE, b"SERROR\0C26000\0\0"), ServerEvent::Swallow);
        assert_eq!(
            s.server_message(READY_FOR_QUERY, b"I"),
            ServerEvent::InjectedDone(InjectedPart { parsed: false, error: Some(*b"26000") })
        );
    }

    #[test]
    fn failed_transaction_blocks_injection() {
        let mut s = ready();
        s.client_message(QUERY);
        s.server_message(ERROR_RESPONSE, b"");
        s.server_message(READY_FOR_QUERY, b"E");
        assert!(s.at_boundary());
        assert!(!s.may_inject());
    }

    #[test]
    fn open_extended_batch_is_not_a_boundary() {
        let mut s = ready();
        s.client_message(PARSE);
        s.client_message(DESCRIBE);
        s.client_message(FLUSH);
        assert!(!s.at_boundary());
        s.client_message(BIND);
        s.client_message(EXECUTE);
        s.client_message(SYNC);
        assert!(s.at_boundary());
    }

    #[test]
    fn describe_prefix_allows_injection_once_answered() {
        let mut s = ready();
        for (m, body) in [(PARSE, &b"s1\0select 1\0\0\0"[..]), (DESCRIBE, b"Ss1\0"), (FLUSH, b"")] {
            s.client_extended(m, body);
            s.client_message(m);
        }
        assert!(!s.may_inject_mid_batch(), "responses still due");
        s.server_message(b'1', b"");
        s.server_message(b't', b"");
        assert!(!s.may_inject_mid_batch());
        s.server_message(b'T', b"");
        assert!(s.may_inject_mid_batch());
        // After a Bind the batch is no longer prefix-only.
        s.client_extended(BIND, b"");
        s.client_message(BIND);
        assert!(!s.may_inject_mid_batch());
        // An error in the prefix forbids it (the server skips until Sync).
        let mut s = ready();
        s.client_extended(PARSE, b"");
        s.client_message(PARSE);
        s.client_extended(FLUSH, b"");
        s.client_message(FLUSH);
        s.server_message(ERROR_RESPONSE, b"");
        assert!(!s.may_inject_mid_batch());
    }

    #[test]
    fn copy_in_extended_with_early_sync() {
        // tokio-postgres: Bind, Execute, Sync, then (after CopyInResponse) data, CopyDone, Sync.
        let mut s = ready();
        for m in [BIND, EXECUTE, SYNC] {
            s.client_message(m);
        }
        assert_eq!(s.pending(), 1);
        s.server_message(b'2', b"");
        s.server_message(COPY_IN_RESPONSE, b"");
        assert_eq!(s.pending(), 0, "the early Sync is ignored by the server");
        assert!(s.in_copy() && !s.at_boundary());
        s.client_message(COPY_DATA);
        s.client_message(SYNC); // ignored during copy-in
        assert_eq!(s.pending(), 0);
        s.client_message(COPY_DONE);
        s.client_message(SYNC);
        assert_eq!(s.pending(), 1);
        s.server_message(COMMAND_COMPLETE, b"");
        assert_eq!(s.server_message(READY_FOR_QUERY, b"I"), ServerEvent::Relay);
        assert_eq!(s.pending(), 0);
        assert!(s.may_inject());
    }

    #[test]
    fn copy_in_simple_query_keeps_its_ready() {
        let mut s = ready();
        s.client_message(QUERY);
        s.server_message(COPY_IN_RESPONSE, b"");
        assert_eq!(s.pending(), 1);
        s.client_message(COPY_DATA);
        s.client_message(COPY_DONE);
        s.server_message(COMMAND_COMPLETE, b"");
        assert_eq!(s.server_message(READY_FOR_QUERY, b"I"), ServerEvent::Relay);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn copy_out_blocks_injection_until_done() {
        let mut s = ready();
        s.client_message(QUERY);
        s.server_message(COPY_OUT_RESPONSE, b"");
        assert!(!s.at_boundary());
        s.server_message(COPY_DATA, b"");
        s.server_message(COPY_DONE, b"");
        s.server_message(COMMAND_COMPLETE, b"");
        s.server_message(READY_FOR_QUERY, b"I");
        assert!(s.may_inject());
    }
}
