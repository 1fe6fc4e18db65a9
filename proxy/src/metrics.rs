//! Process-wide proxy metrics: plain relaxed atomics, rendered in the Prometheus text format by
//! [`crate::admin`]. Counting costs one uncontended-ish atomic add per event; nothing is allocated.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sqlcommenter::Skip;

use crate::session::event::{Event, Protocol};

/// Upper bounds (seconds) of the request latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0];

/// Why a statement got no comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// It already carries a `traceparent`.
    HasTraceparent,
    /// Empty (or comments only).
    Empty,
    /// Ends inside an unterminated string, comment or identifier.
    Unterminated,
    /// Not UTF-8.
    NotUtf8,
    /// Larger than the decode limit (relayed in pieces).
    TooLarge,
    /// Any other reason (nothing to add, ...).
    Other,
}

impl SkipReason {
    const ALL: [SkipReason; 6] = [
        SkipReason::HasTraceparent,
        SkipReason::Empty,
        SkipReason::Unterminated,
        SkipReason::NotUtf8,
        SkipReason::TooLarge,
        SkipReason::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            SkipReason::HasTraceparent => "has_traceparent",
            SkipReason::Empty => "empty",
            SkipReason::Unterminated => "unterminated",
            SkipReason::NotUtf8 => "not_utf8",
            SkipReason::TooLarge => "too_large",
            SkipReason::Other => "other",
        }
    }

    /// The reason for a core [`Skip`].
    pub fn of(skip: Option<Skip>) -> Self {
        match skip {
            Some(Skip::AlreadyHasTraceparent) => SkipReason::HasTraceparent,
            Some(Skip::Empty) => SkipReason::Empty,
            Some(Skip::Unterminated(_)) => SkipReason::Unterminated,
            _ => SkipReason::Other,
        }
    }
}

/// All counters and gauges.
#[derive(Debug)]
pub struct Metrics {
    /// Client connections accepted.
    pub client_connections_total: AtomicU64,
    /// Client connections open.
    pub client_connections: AtomicI64,
    /// Server connections opened.
    pub server_connections_total: AtomicU64,
    /// Server connections open.
    pub server_connections: AtomicI64,
    /// Simple Query messages.
    pub statements_simple: AtomicU64,
    /// Execute messages.
    pub statements_extended: AtomicU64,
    /// Comments injected.
    pub comments: AtomicU64,
    /// Carrier statements injected.
    pub carriers: AtomicU64,
    /// Carrier statements that failed on the server.
    pub carrier_errors: AtomicU64,
    /// Error and notice positions mapped back to the client's text.
    pub positions_mapped: AtomicU64,
    /// `application_name` ParameterStatus messages kept from clients (they answered the carrier).
    pub parameter_status_hidden: AtomicU64,
    skips: [AtomicU64; 6],
    /// Bytes read from clients.
    pub bytes_from_clients: AtomicU64,
    /// Bytes read from servers.
    pub bytes_from_servers: AtomicU64,
    /// Upstream connect failures and sessions ended by an upstream I/O error.
    pub upstream_errors: AtomicU64,
    /// Clients refused because the connection limit was reached.
    pub clients_refused: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

/// The process's metrics.
pub static METRICS: Metrics = Metrics::new();

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All counters at zero.
    pub const fn new() -> Self {
        Metrics {
            client_connections_total: ZERO,
            client_connections: AtomicI64::new(0),
            server_connections_total: ZERO,
            server_connections: AtomicI64::new(0),
            statements_simple: ZERO,
            statements_extended: ZERO,
            comments: ZERO,
            carriers: ZERO,
            carrier_errors: ZERO,
            positions_mapped: ZERO,
            parameter_status_hidden: ZERO,
            skips: [ZERO; 6],
            bytes_from_clients: ZERO,
            bytes_from_servers: ZERO,
            upstream_errors: ZERO,
            clients_refused: ZERO,
            buckets: [ZERO; LATENCY_BUCKETS.len()],
            latency_count: ZERO,
            latency_sum_us: ZERO,
        }
    }

    /// Counts what a session reported (spans are the exporter's, not counted here).
    pub fn record(&self, ev: &Event) {
        let counter = match ev {
            Event::Statement(Protocol::Simple) => &self.statements_simple,
            Event::Statement(Protocol::Extended) => &self.statements_extended,
            Event::Commented => &self.comments,
            Event::Skipped(r) => &self.skips[*r as usize],
            Event::Carrier => &self.carriers,
            Event::CarrierFailed => &self.carrier_errors,
            Event::ParameterStatusHidden => &self.parameter_status_hidden,
            Event::PositionMapped => &self.positions_mapped,
            Event::RequestDone(d) => return self.observe(*d),
            Event::Span(_) => return,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Skips counted for `reason`.
    pub fn skips(&self, reason: SkipReason) -> u64 {
        self.skips[reason as usize].load(Relaxed)
    }

    /// Records one request's latency (client Query or Sync to the server's ReadyForQuery).
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let c = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
        };
        let g = |o: &mut String, name: &str, help: &str, v: i64| {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        };
        let l = |a: &AtomicU64| a.load(Relaxed);
        c(
            &mut o,
            "sqlc_proxy_client_connections_total",
            "Client connections accepted.",
            l(&self.client_connections_total),
        );
        g(&mut o, "sqlc_proxy_client_connections", "Client connections open.", self.client_connections.load(Relaxed));
        c(
            &mut o,
            "sqlc_proxy_server_connections_total",
            "Server connections opened.",
            l(&self.server_connections_total),
        );
        g(&mut o, "sqlc_proxy_server_connections", "Server connections open.", self.server_connections.load(Relaxed));
        let _ = write!(
            o,
            "# HELP sqlc_proxy_statements_total Statements by protocol.\n# TYPE sqlc_proxy_statements_total counter\n\
             sqlc_proxy_statements_total{{kind=\"simple\"}} {}\nsqlc_proxy_statements_total{{kind=\"extended\"}} {}\n",
            l(&self.statements_simple),
            l(&self.statements_extended)
        );
        let _ = write!(
            o,
            "# HELP sqlc_proxy_injections_total Trace context injected, by kind.\n\
             # TYPE sqlc_proxy_injections_total counter\n\
             sqlc_proxy_injections_total{{kind=\"comment\"}} {}\nsqlc_proxy_injections_total{{kind=\"carrier\"}} {}\n",
            l(&self.comments),
            l(&self.carriers)
        );
        c(
            &mut o,
            "sqlc_proxy_carrier_errors_total",
            "Carrier statements that failed on the server.",
            l(&self.carrier_errors),
        );
        c(
            &mut o,
            "sqlc_proxy_positions_mapped_total",
            "Error and notice positions mapped back to the client's text.",
            l(&self.positions_mapped),
        );
        c(
            &mut o,
            "sqlc_proxy_parameter_status_hidden_total",
            "application_name reports of the carrier's own writes kept from clients.",
            l(&self.parameter_status_hidden),
        );
        o.push_str("# HELP sqlc_proxy_skips_total Statements left without a comment, by reason.\n");
        o.push_str("# TYPE sqlc_proxy_skips_total counter\n");
        for r in SkipReason::ALL {
            let _ = writeln!(o, "sqlc_proxy_skips_total{{reason=\"{}\"}} {}", r.label(), self.skips(r));
        }
        let _ = write!(
            o,
            "# HELP sqlc_proxy_bytes_total Bytes relayed, by source.\n# TYPE sqlc_proxy_bytes_total counter\n\
             sqlc_proxy_bytes_total{{from=\"client\"}} {}\nsqlc_proxy_bytes_total{{from=\"server\"}} {}\n",
            l(&self.bytes_from_clients),
            l(&self.bytes_from_servers)
        );
        c(&mut o, "sqlc_proxy_upstream_errors_total", "Upstream connect or I/O failures.", l(&self.upstream_errors));
        c(
            &mut o,
            "sqlc_proxy_clients_refused_total",
            "Clients refused at the connection limit.",
            l(&self.clients_refused),
        );
        o.push_str("# HELP sqlc_proxy_request_duration_seconds Client request (Query or Sync) to ReadyForQuery.\n");
        o.push_str("# TYPE sqlc_proxy_request_duration_seconds histogram\n");
        let mut cum = 0;
        for (b, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cum += l(n);
            let _ = writeln!(o, "sqlc_proxy_request_duration_seconds_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = l(&self.latency_count);
        let _ = writeln!(o, "sqlc_proxy_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(o, "sqlc_proxy_request_duration_seconds_sum {}", l(&self.latency_sum_us) as f64 / 1e6);
        let _ = writeln!(o, "sqlc_proxy_request_duration_seconds_count {count}");
        o
    }
}

/// Decrements a gauge when dropped (open connections).
#[derive(Debug)]
pub struct GaugeGuard(&'static AtomicI64);

impl GaugeGuard {
    /// Increments `gauge` (and `total`) now, decrements `gauge` on drop.
    pub fn new(gauge: &'static AtomicI64, total: &'static AtomicU64) -> Self {
        gauge.fetch_add(1, Relaxed);
        total.fetch_add(1, Relaxed);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new();
        m.observe(Duration::from_micros(50));
        m.observe(Duration::from_millis(3));
        m.observe(Duration::from_secs(20));
        let text = m.render();
        assert!(text.contains("sqlc_proxy_request_duration_seconds_bucket{le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("sqlc_proxy_request_duration_seconds_bucket{le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("sqlc_proxy_request_duration_seconds_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("sqlc_proxy_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("sqlc_proxy_request_duration_seconds_count 3\n"));
    }
}
