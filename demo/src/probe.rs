//! What the workload ran: every statement gets a probe id (`demo-00042`, in its text or parameters) and is
//! recorded with the trace and span it ran under.

use std::sync::{Arc, Mutex, PoisonError};

use sqlcommenter::TraceContext;

use crate::completeness::StatementPath;

/// One statement the workload ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    /// Which way in it took.
    pub path: StatementPath,
    /// Whether it ran inside an explicit transaction.
    pub in_tx: bool,
    /// The probe id in its text or parameters.
    pub probe: String,
    /// The span it ran under (`None`: the workload had no span, which counts as a miss).
    pub context: Option<TraceContext>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u32,
    expected: Vec<Expected>,
    showcase: Option<String>,
}

/// Shared record of the workload's statements.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

impl Recorder {
    /// Records a statement about to run under the current `tracing` span and returns its probe id.
    pub fn probe(&self, path: StatementPath, in_tx: bool) -> String {
        self.probe_with(path, in_tx, TraceContext::current_span())
    }

    /// Records a statement that runs under `context` (for a context fixed at connect time).
    pub fn probe_with(&self, path: StatementPath, in_tx: bool, context: Option<TraceContext>) -> String {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.next += 1;
        let probe = format_probe(inner.next);
        inner.expected.push(Expected { path, in_tx, probe: probe.clone(), context });
        probe
    }

    /// Marks the current span's trace as the one to print as a tree.
    pub fn mark_showcase(&self) {
        if let Some(ctx) = TraceContext::current_span() {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.showcase = Some(ctx.traceparent.trace_id_hex());
        }
    }

    /// The trace marked with [`mark_showcase`](Self::mark_showcase).
    pub fn showcase_trace(&self) -> Option<String> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).showcase.clone()
    }

    /// Everything recorded so far.
    pub fn take(&self) -> Vec<Expected> {
        std::mem::take(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner).expected)
    }
}

/// Fixed width, so no probe id is a prefix of another.
fn format_probe(n: u32) -> String {
    format!("demo-{n:06}")
}

/// Every probe id in `text`.
pub(crate) fn find_probes(text: &str) -> impl Iterator<Item = &str> + '_ {
    text.match_indices("demo-").filter_map(move |(i, _)| {
        let candidate = text.get(i..i + 11)?;
        candidate[5..].bytes().all(|b| b.is_ascii_digit()).then_some(candidate)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_found_in_text_and_parameters() {
        assert_eq!(format_probe(42), "demo-000042");
        let found: Vec<_> = find_probes("SELECT 'demo-000042' AS p /* demo-x */ $1 = 'demo-000007'").collect();
        assert_eq!(found, ["demo-000042", "demo-000007"]);
        assert_eq!(find_probes("demo-00004").count(), 0);
    }
}
