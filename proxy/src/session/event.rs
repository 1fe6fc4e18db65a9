//! What a session did that the outside counts or exports. The session returns events instead of
//! writing process-wide metrics or calling an exporter, so it runs whole in a unit test; the relay
//! hands them to [`crate::metrics::Metrics::record`] and the span exporter.

use std::time::Duration;

use super::spans::SpanRecord;
use crate::metrics::SkipReason;

/// One thing a session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A statement was forwarded: a simple Query or an Execute.
    Statement(Protocol),
    /// A statement was given a comment.
    Commented,
    /// A statement was left without a comment.
    Skipped(SkipReason),
    /// A carrier write was injected before a named execution.
    Carrier,
    /// A carrier write failed on the server.
    CarrierFailed,
    /// An `application_name` ParameterStatus that answered the carrier was kept from the client.
    ParameterStatusHidden,
    /// An error or notice position was mapped back to the client's text.
    PositionMapped,
    /// A client request (Query, Sync, FunctionCall) was answered, its ReadyForQuery relayed this long
    /// after the request was forwarded.
    RequestDone(Duration),
    /// A statement span finished (span export is on).
    Span(Box<SpanRecord>),
}

/// Which protocol a statement came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A simple Query message.
    Simple,
    /// An extended-protocol Execute.
    Extended,
}
