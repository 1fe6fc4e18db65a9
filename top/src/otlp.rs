//! `--otlp`: every sample as OpenTelemetry log records over OTLP/HTTP (protobuf), configured by the
//! standard `OTEL_*` variables (`OTEL_EXPORTER_OTLP_[LOGS_]ENDPOINT`, `…_HEADERS`, `…_TIMEOUT`,
//! `OTEL_SERVICE_NAME` — `postgresql` when unset —, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BLRP_*`).
//!
//! - One `db.server.query_sample` event per non-idle client backend per refresh (plain `idle` sessions
//!   describe the past, not what the server is doing), with the trace and span id of its context so
//!   backends link it to the trace.
//! - One `sqlcommenter.lock_wait` event when a backend has been seen waiting for a lock longer than
//!   `--lock-threshold`, under the waiting trace and naming the blocking one(s). The wait is measured from
//!   the first sample that saw it (a lower bound: `pg_stat_activity` has no wait start).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry::Key;
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::Resource;

use crate::error::TopError;
use crate::sample::Snapshot;
use crate::session::{Session, State, Trace};

/// Event name of a sample record (the name the OpenTelemetry Collector's database receivers use).
pub const QUERY_SAMPLE_EVENT: &str = "db.server.query_sample";

/// Event name of a lock wait over the threshold.
pub const LOCK_WAIT_EVENT: &str = "sqlcommenter.lock_wait";

/// A lock wait being watched.
#[derive(Debug, Clone, Copy)]
struct Wait {
    first_seen: Instant,
    reported: bool,
}

/// The exporter and the lock waits it watches.
pub struct OtlpExport {
    provider: SdkLoggerProvider,
    logger: SdkLogger,
    server_address: String,
    server_port: i64,
    lock_threshold: Duration,
    waits: HashMap<i32, Wait>,
}

impl std::fmt::Debug for OtlpExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExport").field("lock_threshold", &self.lock_threshold).finish_non_exhaustive()
    }
}

fn protocol_is_http_protobuf() -> Result<(), TopError> {
    for var in ["OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Ok(p) = std::env::var(var) {
            if !p.is_empty() && p != "http/protobuf" {
                return Err(TopError::Otlp(format!("{var}={p}: only http/protobuf is supported")));
            }
            return Ok(());
        }
    }
    Ok(())
}

impl OtlpExport {
    /// Builds the exporter from the environment. Must not be called inside async code (the blocking
    /// HTTP client has a runtime of its own).
    ///
    /// # Errors
    /// [`TopError::Otlp`] for an unsupported protocol or an exporter that cannot be built.
    pub fn from_env(server_address: &str, server_port: u16, lock_threshold: Duration) -> Result<Self, TopError> {
        protocol_is_http_protobuf()?;
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .build()
            .map_err(|e| TopError::Otlp(e.to_string()))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("postgresql");
        }
        let provider =
            SdkLoggerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
        let logger = provider.logger("sqlcommenter-top");
        Ok(OtlpExport {
            provider,
            logger,
            server_address: server_address.to_owned(),
            server_port: i64::from(server_port),
            lock_threshold,
            waits: HashMap::new(),
        })
    }

    /// Exports one snapshot.
    pub fn record(&mut self, snapshot: &Snapshot) {
        let now = Instant::now();
        for s in &snapshot.sessions {
            if s.is_hidden() || matches!(s.state, Some(State::Idle) | None) {
                continue;
            }
            self.emit_sample(snapshot, s);
        }
        // Lock waits: forget those that ended, report those over the threshold once.
        self.waits.retain(|pid, _| snapshot.get(*pid).is_some_and(Session::is_blocked));
        let mut due = Vec::new();
        for s in snapshot.sessions.iter().filter(|s| s.is_blocked()) {
            let wait = self.waits.entry(s.pid).or_insert(Wait { first_seen: now, reported: false });
            let waited = now.duration_since(wait.first_seen);
            if !wait.reported && waited >= self.lock_threshold {
                wait.reported = true;
                due.push((s, waited));
            }
        }
        for (s, waited) in due {
            self.emit_lock_wait(snapshot, s, waited);
        }
    }

    fn base(&self, record: &mut impl LogRecord, snapshot: &Snapshot, s: &Session) {
        record.set_timestamp(snapshot.taken_at);
        record.set_observed_timestamp(SystemTime::now());
        if let Some(t) = &s.trace {
            set_trace(record, t);
        }
        record.add_attribute("db.system.name", "postgresql");
        if let Some(db) = &s.database {
            record.add_attribute("db.namespace", db.clone());
        }
        record.add_attribute("server.address", self.server_address.clone());
        record.add_attribute("server.port", self.server_port);
        record.add_attribute("postgresql.pid", i64::from(s.pid));
        if let Some(user) = &s.user {
            record.add_attribute("user.name", user.clone());
        }
        if let Some(q) = &s.query {
            record.add_attribute("db.query.text", q.clone());
        }
        if let Some(t) = &s.trace {
            record.add_attribute("sqlcommenter.context_source", t.source.as_str());
        }
    }

    fn emit_sample(&self, snapshot: &Snapshot, s: &Session) {
        let mut record = self.logger.create_log_record();
        record.set_event_name(QUERY_SAMPLE_EVENT);
        record.set_severity_number(Severity::Info);
        record.set_severity_text("INFO");
        self.base(&mut record, snapshot, s);
        let opt = |v: &Option<String>| v.clone().map(AnyValue::from);
        let attrs: [(&'static str, Option<AnyValue>); 7] = [
            ("postgresql.application_name", opt(&s.application_name)),
            ("postgresql.state", s.state.as_ref().map(|st| AnyValue::from(st.as_str().to_owned()))),
            ("postgresql.wait_event_type", opt(&s.wait_event_type)),
            ("postgresql.wait_event", opt(&s.wait_event)),
            ("postgresql.xact_age_ms", s.xact_age.map(|d| AnyValue::Int(millis(d)))),
            ("postgresql.query_age_ms", s.query_age.map(|d| AnyValue::Int(millis(d)))),
            (
                "postgresql.blocking_pids",
                (!s.blocked_by.is_empty()).then(|| {
                    AnyValue::ListAny(Box::new(s.blocked_by.iter().map(|&p| AnyValue::Int(p.into())).collect()))
                }),
            ),
        ];
        for (k, v) in attrs {
            if let Some(v) = v {
                record.add_attribute(Key::from_static_str(k), v);
            }
        }
        self.logger.emit(record);
    }

    fn emit_lock_wait(&self, snapshot: &Snapshot, s: &Session, waited: Duration) {
        let blockers: Vec<&Session> = s.blocked_by.iter().filter_map(|&p| snapshot.get(p)).collect();
        let blocking_traces: Vec<String> =
            blockers.iter().filter_map(|b| b.trace.as_ref()).map(Trace::trace_id).collect();
        let mut record = self.logger.create_log_record();
        record.set_event_name(LOCK_WAIT_EVENT);
        record.set_severity_number(Severity::Warn);
        record.set_severity_text("WARN");
        self.base(&mut record, snapshot, s);
        let label = |pid: i32, t: Option<&Trace>| match t {
            Some(t) => format!("pid {pid} (trace {})", t.trace_id()),
            None => format!("pid {pid} (no trace)"),
        };
        let holders: Vec<String> =
            s.blocked_by.iter().map(|&p| label(p, snapshot.get(p).and_then(|b| b.trace.as_ref()))).collect();
        record.set_body(AnyValue::from(format!(
            "{} has waited at least {:.1}s for a lock held by {}",
            label(s.pid, s.trace.as_ref()),
            waited.as_secs_f64(),
            holders.join(", ")
        )));
        record.add_attribute("postgresql.lock_wait_ms", millis(waited));
        if let Some(t) = &s.trace {
            record.add_attribute("sqlcommenter.waiting.trace_id", t.trace_id());
        }
        record.add_attribute(
            "postgresql.blocking_pids",
            AnyValue::ListAny(Box::new(s.blocked_by.iter().map(|&p| AnyValue::Int(p.into())).collect())),
        );
        record.add_attribute(
            "sqlcommenter.blocking.trace_ids",
            AnyValue::ListAny(Box::new(blocking_traces.into_iter().map(AnyValue::from).collect())),
        );
        if let Some(q) = blockers.first().and_then(|b| b.query.clone()) {
            record.add_attribute("sqlcommenter.blocking.query_text", q);
        }
        self.logger.emit(record);
    }

    /// Flushes what is queued and stops the exporter.
    ///
    /// # Errors
    /// [`TopError::Otlp`] when the last export failed.
    pub fn shutdown(self) -> Result<(), TopError> {
        self.provider.shutdown().map_err(|e| TopError::Otlp(e.to_string()))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn set_trace(record: &mut impl LogRecord, t: &Trace) {
    let tp = &t.traceparent;
    record.set_trace_context(
        TraceId::from_bytes(tp.trace_id()),
        SpanId::from_bytes(tp.parent_id()),
        Some(TraceFlags::new(tp.flags())),
    );
}
