//! `--otlp`: each correlated statement becomes a span under its traceparent, so the database's own time shows
//! up inside the application's trace. Start = log time − duration. Names and attributes follow the
//! OpenTelemetry database semantic conventions: span name `{db.query.summary}` (`SELECT orders`),
//! `db.query.text` normalized (literals removed), `db.namespace`, `db.response.status_code`. An
//! auto_explain plan becomes child spans, one per plan node, nested like the plan, with rows, loops and
//! (under `log_analyze`) the node's own time: the executor is placed at the end of the statement. The exporter (OTLP over HTTP/protobuf) is
//! configured by the standard `OTEL_EXPORTER_OTLP_*` variables; the resource by `OTEL_SERVICE_NAME` /
//! `OTEL_RESOURCE_ATTRIBUTES` (service name `postgresql` when unset).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::plan::PlanNode;
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

/// `db.query.summary`: the operation and its first target (`SELECT orders`, `INSERT items`,
/// `UPDATE accounts`), or the operation alone; from a normalized query (no comments, no literals).
pub fn query_summary(normalized: &str) -> Option<String> {
    let words: Vec<&str> = normalized
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | ';'))
        .filter(|w| !w.is_empty())
        .collect();
    let op = words.first()?.to_ascii_uppercase();
    if !op.bytes().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let after = |kw: &str| words.iter().position(|w| w.eq_ignore_ascii_case(kw)).and_then(|i| words.get(i + 1));
    let target = match op.as_str() {
        "SELECT" | "DELETE" => after("from"),
        "INSERT" => after("into"),
        "UPDATE" => words.get(1).filter(|w| !w.eq_ignore_ascii_case("only")).or_else(|| words.get(2)),
        _ => None,
    };
    let target = target.filter(|t| t.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'"')));
    Some(match target {
        Some(t) => format!("{op} {}", t.replace('"', "")),
        None => op,
    })
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
        let text = sqlcommenter::normalize(&st.query, sqlcommenter::Dialect::Postgres);
        let summary = query_summary(&text);
        let name = match (&summary, &st.database) {
            (Some(s), _) => s.clone(),
            (None, Some(db)) => db.clone(),
            (None, None) => "postgresql".to_owned(),
        };
        let mut attrs = vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.query.text", text),
            KeyValue::new("db.postgresql.statement.kind", st.kind.as_str()),
            KeyValue::new("db.postgresql.context_source", st.source.as_str()),
        ];
        if !op.is_empty() {
            attrs.push(KeyValue::new("db.operation.name", op));
        }
        if let Some(s) = summary {
            attrs.push(KeyValue::new("db.query.summary", s));
        }
        if let Some(db) = &st.database {
            attrs.push(KeyValue::new("db.namespace", db.clone()));
        }
        if let Some(user) = &st.user {
            attrs.push(KeyValue::new("db.postgresql.user", user.clone()));
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
        if let Some(root) = st.plan_format.and_then(|f| crate::plan::parse(&st.plan, f)) {
            // The executor ends with the statement: place the plan's time at its end.
            let exec_start = match root.total_ms {
                Some(t) => end.checked_sub(Duration::from_secs_f64(t.max(0.0) / 1000.0)).unwrap_or(start).max(start),
                None => start,
            };
            self.plan_spans(&root, &cx, exec_start, (start, end));
        }
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

    /// One span per plan node under `parent`, nested like the plan, within `bounds`.
    fn plan_spans(&self, node: &PlanNode, parent: &Context, exec_start: SystemTime, bounds: (SystemTime, SystemTime)) {
        let at = |ms: Option<f64>, default: SystemTime| {
            ms.map_or(default, |ms| exec_start + Duration::from_secs_f64(ms.max(0.0) / 1000.0))
                .clamp(bounds.0, bounds.1)
        };
        // From the executor's start to the node's last row: its inclusive time (the first row's time is
        // an attribute; the plan says nothing of when a node was first called).
        let start = at(node.total_ms.map(|_| 0.0), bounds.0);
        let end = at(node.total_ms, bounds.1).max(start);
        let mut attrs = vec![KeyValue::new("db.postgresql.plan.node_type", node.node_type.clone())];
        if let Some(r) = &node.relation {
            attrs.push(KeyValue::new("db.postgresql.plan.relation", r.clone()));
        }
        for (k, v) in [
            ("db.postgresql.plan.plan_rows", node.plan_rows),
            ("db.postgresql.plan.rows", node.rows),
            ("db.postgresql.plan.loops", node.loops),
            ("db.postgresql.plan.startup_ms", node.startup_ms),
            ("db.postgresql.plan.total_ms", node.total_ms),
        ] {
            if let Some(v) = v {
                attrs.push(KeyValue::new(k, v));
            }
        }
        if node.never_executed {
            attrs.push(KeyValue::new("db.postgresql.plan.never_executed", true));
        }
        let span = self
            .tracer
            .span_builder(node.label())
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, parent);
        let cx = parent.with_span(span);
        for child in &node.children {
            self.plan_spans(child, &cx, exec_start, (start, end));
        }
        cx.span().end_with_timestamp(end);
    }

    /// Flushes and shuts the exporter down.
    pub fn shutdown(self) -> Result<(), OtlpError> {
        self.provider.force_flush().map_err(|e| OtlpError(e.to_string()))?;
        self.provider.shutdown().map_err(|e| OtlpError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        for (q, want) in [
            ("select name from items where id = $?", Some("SELECT items")),
            ("SELECT ? as step, pg_sleep(?)", Some("SELECT")),
            ("insert into public.orders (id) values (?)", Some("INSERT public.orders")),
            ("update only accounts set x = ?", Some("UPDATE accounts")),
            ("delete from \"Orders\" where id = ?", Some("DELETE Orders")),
            ("begin", Some("BEGIN")),
            ("", None),
        ] {
            assert_eq!(query_summary(q).as_deref(), want, "{q}");
        }
    }
}
