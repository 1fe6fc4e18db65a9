//! The `application_name` masquerade: the client keeps seeing its own name while the carrier writes
//! traceparents into the server's `application_name`.

use std::collections::VecDeque;

/// How many of the proxy's recent values are remembered (their ParameterStatus arrives later: at the
/// ReadyForQuery of an explicit transaction, or of a pipeline's batch).
const REMEMBERED: usize = 8;

/// What the client believes its `application_name` is, and the values the proxy's carrier wrote lately.
#[derive(Debug, Clone, Default)]
pub(super) struct Masquerade {
    client: String,
    written: VecDeque<String>,
}

impl Masquerade {
    /// A client that connected with `client` as its name.
    pub(super) fn new(client: String) -> Self {
        Masquerade { client, written: VecDeque::new() }
    }

    /// The name the client believes it has.
    pub(super) fn client(&self) -> &str {
        &self.client
    }

    /// The carrier wrote `value`: its report is the proxy's, not the client's.
    pub(super) fn wrote(&mut self, value: String) {
        if self.written.len() == REMEMBERED {
            self.written.pop_front();
        }
        self.written.push_back(value);
    }

    /// Whether a ParameterStatus reporting `value` reaches the client: during startup and for the client's
    /// own changes (which become its name), never for the proxy's values or the revert to the client's name
    /// when a transaction-scoped value ended.
    pub(super) fn relays(&mut self, value: &[u8], ready: bool) -> bool {
        let value = String::from_utf8_lossy(value);
        if ready && (self.written.iter().any(|w| *w == value) || value == self.client) {
            return false;
        }
        self.client = value.into_owned();
        true
    }
}
