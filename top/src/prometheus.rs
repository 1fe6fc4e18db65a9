//! `--prometheus ADDR`: the latest sample as Prometheus metrics on `http://ADDR/metrics`
//! (prometheus-client for the text format, tiny_http on a thread of its own for serving).
//!
//! - `sqlcommenter_top_sessions{state, wait_event_type, wait_event}`: client backends in the last sample.
//! - `sqlcommenter_top_blocked_sessions`, `sqlcommenter_top_oldest_transaction_seconds`.
//! - `sqlcommenter_top_samples_total{context="comment"|"application_name"|"none"}`: non-idle backends
//!   sampled, by where their trace context came from — the live propagation-gap figure.
//! - `sqlcommenter_top_up`: 1 while the last sample succeeded.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::TopError;
use crate::sample::Snapshot;
use crate::session::State;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    state: String,
    wait_event_type: String,
    wait_event: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContextLabels {
    context: &'static str,
}

/// The metrics and the server that exposes them.
pub struct PrometheusExport {
    sessions: Family<SessionLabels, Gauge>,
    blocked: Gauge,
    oldest: Gauge<f64, AtomicU64>,
    samples: Family<ContextLabels, Counter>,
    up: Gauge,
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
}

impl std::fmt::Debug for PrometheusExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusExport").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl PrometheusExport {
    /// Registers the metrics and starts serving `GET /metrics` on `addr` (port 0 picks a free port).
    ///
    /// # Errors
    /// [`TopError::Prometheus`] when `addr` cannot be bound.
    pub fn start(addr: SocketAddr) -> Result<Self, TopError> {
        let mut registry = Registry::default();
        let sessions = Family::<SessionLabels, Gauge>::default();
        let blocked = Gauge::default();
        let oldest = Gauge::<f64, AtomicU64>::default();
        let samples = Family::<ContextLabels, Counter>::default();
        let up = Gauge::default();
        registry.register("sqlcommenter_top_sessions", "Client backends by state and wait event", sessions.clone());
        registry.register("sqlcommenter_top_blocked_sessions", "Client backends waiting for a lock", blocked.clone());
        registry.register(
            "sqlcommenter_top_oldest_transaction_seconds",
            "Age of the oldest open transaction",
            oldest.clone(),
        );
        registry.register(
            "sqlcommenter_top_samples",
            "Non-idle client backends sampled, by where their trace context came from",
            samples.clone(),
        );
        registry.register("sqlcommenter_top_up", "1 when the last sample succeeded", up.clone());
        let server = tiny_http::Server::http(addr)
            .map_err(|e| TopError::Prometheus { addr: addr.to_string(), reason: e.to_string() })?;
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        let server = Arc::new(server);
        let serving = server.clone();
        let registry = Arc::new(registry);
        std::thread::Builder::new()
            .name("top-prometheus".into())
            .spawn(move || serve(&serving, &registry))
            .map_err(|e| TopError::Prometheus { addr: addr.to_string(), reason: e.to_string() })?;
        Ok(PrometheusExport { sessions, blocked, oldest, samples, up, server, addr: bound })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Records one snapshot, or a failed sample (`None`).
    pub fn record(&self, snapshot: Option<&Snapshot>) {
        let Some(snapshot) = snapshot else {
            self.up.set(0);
            return;
        };
        self.up.set(1);
        self.sessions.clear();
        for s in &snapshot.sessions {
            let labels = SessionLabels {
                state: s.state.as_ref().map_or("unknown", State::as_str).to_owned(),
                wait_event_type: s.wait_event_type.clone().unwrap_or_default(),
                wait_event: s.wait_event.clone().unwrap_or_default(),
            };
            self.sessions.get_or_create(&labels).inc();
            if s.is_hidden() || s.state == Some(State::Idle) {
                continue;
            }
            let context = s.trace.as_ref().map_or("none", |t| t.source.as_str());
            self.samples.get_or_create(&ContextLabels { context }).inc();
        }
        let totals = snapshot.totals();
        self.blocked.set(i64::try_from(totals.waiting).unwrap_or(i64::MAX));
        self.oldest.set(totals.oldest_xact.map_or(0.0, |(_, d)| d.as_secs_f64()));
    }
}

impl Drop for PrometheusExport {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn serve(server: &tiny_http::Server, registry: &Registry) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let response = if *request.method() != tiny_http::Method::Get {
            tiny_http::Response::from_string("method not allowed\n").with_status_code(405)
        } else if path == "/metrics" {
            let mut body = String::new();
            if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
                body = "# encoding failed\n".into();
            }
            let ctype = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            let header = tiny_http::Header::from_bytes("Content-Type", ctype).ok();
            let r = tiny_http::Response::from_string(body);
            match header {
                Some(h) => r.with_header(h),
                None => r,
            }
        } else {
            tiny_http::Response::from_string("not found\n").with_status_code(404)
        };
        let _ = request.respond(response);
    }
}
