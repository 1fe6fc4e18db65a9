//! `--otlp`: each correlated statement becomes a span under its traceparent, so the database's own time shows
//! up inside the application's trace. Start = log time − duration. The exporter (OTLP over HTTP/protobuf) is
//! configured by the standard `OTEL_EXPORTER_OTLP_*` variables; the resource by `OTEL_SERVICE_NAME` /
//! `OTEL_RESOURCE_ATTRIBUTES` (service name `postgresql` when unset).

use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::statement::Statement;

/// Spans between two waits for the exporter (below the batch processor's default queue size).
const FLUSH_EVERY: u64 = 1024;

/// An OTLP span exporter for statements.
pub struct OtlpExporter {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    exported: u64,
}

/// An OTLP setup or export failure.
#[derive(Debug, thiserror::Error)]
#[error("OTLP: {0}")]
pub struct OtlpError(pub String);

/// `db.operation.name`: the statement's first keyword, uppercased (after leading comments).
pub fn operation_name(query: &str) -> String {
    let mut s = query.trim_start();
    while let Some(r) = s.strip_prefix("/*") {
        s = r.find("*/").map_or("", |e| &r[e + 2..]).trim_start();
    }
    s.split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("").to_ascii_uppercase()
}

impl OtlpExporter {
    /// Builds the exporter from the environment.
    pub fn from_env() -> Result<Self, OtlpError> {
        let exporter =
            opentelemetry_otlp::SpanExporter::builder().with_http().build().map_err(|e| OtlpError(e.to_string()))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("postgresql");
        }
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
        let tracer = provider.tracer("sqlcommenter-logs");
        Ok(OtlpExporter { provider, tracer, exported: 0 })
    }

    /// Spans exported so far.
    pub fn exported(&self) -> u64 {
        self.exported
    }

    /// Exports `st` as a span when it has a sampled trace context and a log time; returns whether it did.
    pub fn export(&mut self, st: &Statement) -> bool {
        let (Some(ctx), Some(end_us)) = (&st.context, st.time_us) else { return false };
        let tp = &ctx.traceparent;
        if st.carrier || !tp.is_sampled() || end_us < 0 {
            return false;
        }
        let end = UNIX_EPOCH + Duration::from_micros(end_us as u64);
        let dur = Duration::from_secs_f64(st.duration_ms.unwrap_or(0.0).max(0.0) / 1000.0);
        let start = end.checked_sub(dur).unwrap_or(end);
        let parent_sc = SpanContext::new(
            TraceId::from_bytes(tp.trace_id()),
            SpanId::from_bytes(tp.parent_id()),
            TraceFlags::new(tp.flags()),
            true,
            TraceState::NONE,
        );
        let parent = Context::new().with_remote_span_context(parent_sc);
        let op = operation_name(&st.query);
        let name = match (op.is_empty(), &st.database) {
            (false, Some(db)) => format!("{op} {db}"),
            (false, None) => op.clone(),
            _ => "postgresql".to_owned(),
        };
        let mut attrs = vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.query.text", sqlcommenter::normalize(&st.query, sqlcommenter::Dialect::Postgres)),
            KeyValue::new("db.postgresql.statement.kind", st.kind.as_str()),
            KeyValue::new("db.postgresql.context_source", st.source.as_str()),
        ];
        if !op.is_empty() {
            attrs.push(KeyValue::new("db.operation.name", op));
        }
        if let Some(db) = &st.database {
            attrs.push(KeyValue::new("db.namespace", db.clone()));
        }
        if let Some(user) = &st.user {
            attrs.push(KeyValue::new("db.user", user.clone()));
        }
        if !st.application_name.is_empty() {
            attrs.push(KeyValue::new("db.postgresql.application_name", st.application_name.clone()));
        }
        if let Some(pid) = st.pid {
            attrs.push(KeyValue::new("db.postgresql.pid", i64::from(pid)));
        }
        if let Some(q) = st.query_id {
            attrs.push(KeyValue::new("db.postgresql.query_id", q));
        }
        if !st.name.is_empty() {
            attrs.push(KeyValue::new("db.postgresql.prepared_statement", st.name.clone()));
        }
        if let Some(d) = st.duration_ms {
            attrs.push(KeyValue::new("db.postgresql.duration_ms", d));
        }
        if !st.plan.is_empty() {
            attrs.push(KeyValue::new("db.postgresql.plan", st.plan.clone()));
            if let Some(f) = st.plan_format {
                attrs.push(KeyValue::new("db.postgresql.plan_format", f.as_str()));
            }
        }
        for (k, v) in &st.tags {
            attrs.push(KeyValue::new(format!("db.sqlcommenter.{k}"), v.clone()));
        }
        if let Some(e) = &st.error {
            let code = e.sql_state.clone().unwrap_or_else(|| "_OTHER".to_owned());
            if e.sql_state.is_some() {
                attrs.push(KeyValue::new("db.response.status_code", code.clone()));
            }
            attrs.push(KeyValue::new("error.type", code));
        }
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent);
        let cx = Context::current_with_span(span);
        if let Some(e) = &st.error {
            cx.span().set_status(Status::error(e.message.clone()));
        }
        cx.span().end_with_timestamp(end);
        self.exported += 1;
        // Backpressure: a log is read much faster than spans can be sent, and the batch processor drops
        // spans once its queue (2048 by default) is full. Wait for the queue to drain regularly.
        if self.exported % FLUSH_EVERY == 0 {
            let _ = self.provider.force_flush();
        }
        true
    }

    /// Flushes and shuts the exporter down.
    pub fn shutdown(self) -> Result<(), OtlpError> {
        self.provider.force_flush().map_err(|e| OtlpError(e.to_string()))?;
        self.provider.shutdown().map_err(|e| OtlpError(e.to_string()))
    }
}
