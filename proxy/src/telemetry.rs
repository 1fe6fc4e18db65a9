//! Proxy spans: one client span per statement execution (simple Query, or Execute), with OpenTelemetry
//! database semantic conventions, exported over OTLP (HTTP/protobuf, or gRPC on a runtime thread of its own).
//!
//! The spans themselves are the session's (sans I/O, [`crate::session::spans`]): it returns each finished
//! [`SpanRecord`] as an event, and the relay hands it to [`Telemetry::export`] here.

use std::cell::Cell;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator as SdkIdGenerator, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use sqlcommenter::Dialect;

use crate::context::IdGenerator;
use crate::error::ProxyError;
pub use crate::session::spans::SpanRecord;

/// Span export settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Replace literals in `db.query.text` with `?` (`sqlcommenter::normalize`), so values never leave.
    pub normalize_query: bool,
    /// OTLP transport; `None`: `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`, else HTTP/protobuf.
    pub protocol: Option<OtlpProtocol>,
}

/// OTLP transport for spans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the default, as in the OpenTelemetry specification).
    #[default]
    HttpProtobuf,
    /// `grpc` (tonic).
    Grpc,
}

impl std::str::FromStr for OtlpProtocol {
    type Err = ProxyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            "grpc" => Ok(OtlpProtocol::Grpc),
            other => {
                Err(ProxyError::Config(format!("OTLP protocol {other:?} is not supported (use grpc or http/protobuf)")))
            }
        }
    }
}

/// The protocol `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` (else `OTEL_EXPORTER_OTLP_PROTOCOL`) asks for.
pub fn protocol_from_env() -> Result<OtlpProtocol, ProxyError> {
    match std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
    {
        Ok(p) => p.parse(),
        Err(_) => Ok(OtlpProtocol::HttpProtobuf),
    }
}

/// Keeps the gRPC exporter's Tokio runtime thread alive: tonic's channel runs on it, while the SDK's batch
/// processor calls the exporter from its own plain thread. Dropping this ends the runtime thread.
struct GrpcRuntime {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Builds the tonic exporter on a new current-thread runtime thread that keeps driving its channel.
fn grpc_exporter() -> Result<(opentelemetry_otlp::SpanExporter, GrpcRuntime), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("otlp-grpc".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let built = opentelemetry_otlp::SpanExporter::builder().with_tonic().build().map_err(|e| e.to_string());
                let ok = built.is_ok();
                let _ = tx.send(built);
                if ok {
                    // Drive the channel until the telemetry is dropped.
                    let _ = stopped.await;
                }
            });
        })
        .map_err(|e| e.to_string())?;
    let exporter = rx.recv().map_err(|_| "gRPC runtime thread ended".to_string())??;
    Ok((exporter, GrpcRuntime { _stop: stop }))
}

thread_local! {
    /// Ids the next span built on this thread must get (set right before building it).
    static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Hands the SDK the ids the proxy already chose (and injected downstream).
#[derive(Debug)]
struct PresetIds;

impl SdkIdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS.with(|c| c.get()).map_or_else(|| TraceId::from_bytes(fallback_id()), |(t, _)| t)
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS.with(|c| c.get()).map_or_else(|| SpanId::from_bytes(fallback_id()), |(_, s)| s)
    }
}

fn fallback_id<const N: usize>() -> [u8; N] {
    let mut g = IdGenerator::new(N as u64);
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let v = g.next_u64().to_be_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}

/// The OTLP exporter shared by all sessions of one proxy.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    cfg: TelemetryConfig,
    server_address: String,
    server_port: i64,
    root_ratio: Option<f64>,
    /// A monotonic instant and the wall-clock time it stands for: span times are monotonic instants,
    /// exported as wall-clock times.
    epoch: (Instant, SystemTime),
    /// Declared last: dropped after the provider, whose final export may still need it.
    _grpc: Option<GrpcRuntime>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// Sampling ratio for the proxy's own root contexts from `OTEL_TRACES_SAMPLER` / `_ARG`, if set.
/// Incoming contexts keep their sampled flag (the proxy is parent-based).
pub fn sampler_ratio_from_env() -> Result<Option<f64>, ProxyError> {
    let Ok(sampler) = std::env::var("OTEL_TRACES_SAMPLER") else { return Ok(None) };
    let arg =
        || -> Result<f64, ProxyError> {
            match std::env::var("OTEL_TRACES_SAMPLER_ARG") {
                Ok(a) => a.trim().parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| {
                    ProxyError::Config(format!("OTEL_TRACES_SAMPLER_ARG {a:?} is not a ratio in [0, 1]"))
                }),
                Err(_) => Ok(1.0),
            }
        };
    match sampler.trim() {
        "always_on" | "parentbased_always_on" => Ok(Some(1.0)),
        "always_off" | "parentbased_always_off" => Ok(Some(0.0)),
        "traceidratio" | "parentbased_traceidratio" => arg().map(Some),
        other => Err(ProxyError::Config(format!("OTEL_TRACES_SAMPLER {other:?} is not supported"))),
    }
}

impl Telemetry {
    /// Builds the OTLP exporter (HTTP/protobuf or gRPC, see [`TelemetryConfig::protocol`]) from the standard
    /// `OTEL_*` variables (endpoint, headers, timeout, service name, resource attributes, sampler).
    /// `OTEL_SERVICE_NAME` defaults to `sqlcommenter-proxy`.
    pub fn from_env(cfg: TelemetryConfig, server_address: &str, server_port: u16) -> Result<Self, ProxyError> {
        let protocol = match cfg.protocol {
            Some(p) => p,
            None => protocol_from_env()?,
        };
        let root_ratio = sampler_ratio_from_env()?;
        // The blocking HTTP client must not be created (or dropped) on a runtime thread.
        let built = std::thread::spawn(move || {
            let (exporter, grpc) = match protocol {
                OtlpProtocol::HttpProtobuf => {
                    (opentelemetry_otlp::SpanExporter::builder().with_http().build().map_err(|e| e.to_string())?, None)
                }
                OtlpProtocol::Grpc => {
                    let (e, rt) = grpc_exporter()?;
                    (e, Some(rt))
                }
            };
            let mut resource = Resource::builder();
            if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
                resource = resource.with_service_name("sqlcommenter-proxy");
            }
            // A proxy emits a span per statement (thousands per second): unless the OTEL_BSP_* variables say
            // otherwise, queue more and export larger batches sooner than the SDK defaults (2048 / 512 / 5 s),
            // which drop spans at a few thousand statements per second.
            let mut batch = BatchConfigBuilder::default();
            if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
                batch = batch.with_max_queue_size(65_536);
            }
            if std::env::var_os("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_none() {
                batch = batch.with_max_export_batch_size(4096);
            }
            if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
                batch = batch.with_scheduled_delay(std::time::Duration::from_millis(500));
            }
            let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch.build()).build();
            Ok::<_, String>((
                SdkTracerProvider::builder()
                    .with_span_processor(processor)
                    .with_resource(resource.build())
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                    .with_id_generator(PresetIds)
                    .build(),
                grpc,
            ))
        })
        .join()
        .map_err(|_| ProxyError::Config("OTLP exporter setup panicked".into()))?
        .map_err(|e| ProxyError::Config(format!("OTLP exporter: {e}")))?;
        let (built, grpc) = built;
        let tracer = built.tracer("sqlcommenter-proxy");
        Ok(Telemetry {
            provider: built,
            tracer,
            cfg,
            server_address: server_address.to_owned(),
            server_port: i64::from(server_port),
            root_ratio,
            epoch: (Instant::now(), SystemTime::now()),
            _grpc: grpc,
        })
    }

    /// The root sampling ratio the environment asks for, if any.
    pub fn root_ratio(&self) -> Option<f64> {
        self.root_ratio
    }

    /// Sends everything queued and stops the exporter (on a plain thread: the HTTP client blocks, and the
    /// gRPC exporter's runtime thread stays up until the telemetry is dropped).
    pub fn shutdown(&self) {
        let provider = self.provider.clone();
        let _ = std::thread::spawn(move || {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        })
        .join();
    }

    /// The wall-clock time of a monotonic instant.
    fn wall(&self, t: Instant) -> SystemTime {
        let (mono, wall) = self.epoch;
        match t.checked_duration_since(mono) {
            Some(after) => wall + after,
            None => wall - mono.duration_since(t),
        }
    }

    /// Exports one finished statement span.
    pub fn export(&self, rec: &SpanRecord) {
        let op = operation_name(&rec.text);
        let name = match (op.is_empty(), rec.database.is_empty()) {
            (false, false) => format!("{op} {}", rec.database),
            (false, true) => op.clone(),
            (true, false) => rec.database.to_string(),
            (true, true) => "postgresql".to_owned(),
        };
        let text = if self.cfg.normalize_query {
            sqlcommenter::normalize(&rec.text, Dialect::Postgres)
        } else {
            rec.text.to_string()
        };
        let mut attrs = Vec::with_capacity(10);
        attrs.push(KeyValue::new("db.system.name", "postgresql"));
        attrs.push(KeyValue::new("db.query.text", text));
        attrs.push(KeyValue::new("server.address", self.server_address.clone()));
        attrs.push(KeyValue::new("server.port", self.server_port));
        if !rec.database.is_empty() {
            attrs.push(KeyValue::new("db.namespace", rec.database.to_string()));
        }
        if !op.is_empty() {
            attrs.push(KeyValue::new("db.operation.name", op));
        }
        if let Some(rows) = rec.rows {
            attrs.push(KeyValue::new("db.response.returned_rows", rows as i64));
        }
        if let Some((code, _)) = &rec.error {
            attrs.push(KeyValue::new("db.response.status_code", code.clone()));
            attrs.push(KeyValue::new("error.type", code.clone()));
        }
        let parent = match rec.parent {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(rec.trace_id),
                SpanId::from_bytes(p),
                TraceFlags::SAMPLED,
                true,
                TraceState::NONE,
            )),
            None => Context::new(),
        };
        NEXT_IDS.with(|c| c.set(Some((TraceId::from_bytes(rec.trace_id), SpanId::from_bytes(rec.span_id)))));
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_start_time(self.wall(rec.start))
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent);
        NEXT_IDS.with(|c| c.set(None));
        let cx = Context::new().with_span(span);
        if let Some((_, msg)) = &rec.error {
            cx.span().set_status(Status::error(msg.clone()));
        }
        cx.span().end_with_timestamp(self.wall(rec.end));
    }
}

/// `db.operation.name`: the first keyword, uppercased, after leading comments and blanks.
pub fn operation_name(sql: &str) -> String {
    let mut s = sql.trim_start();
    while let Some(r) = s.strip_prefix("/*") {
        s = r.find("*/").map_or("", |e| &r[e + 2..]).trim_start();
    }
    let end = s.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(s.len());
    s[..end].to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_variables() {
        // The only unit test reading these variables.
        std::env::remove_var("OTEL_TRACES_SAMPLER_ARG");
        std::env::remove_var("OTEL_TRACES_SAMPLER");
        assert_eq!(sampler_ratio_from_env().unwrap(), None);
        std::env::set_var("OTEL_TRACES_SAMPLER", "parentbased_traceidratio");
        std::env::set_var("OTEL_TRACES_SAMPLER_ARG", "0.25");
        assert_eq!(sampler_ratio_from_env().unwrap(), Some(0.25));
        std::env::set_var("OTEL_TRACES_SAMPLER_ARG", "2");
        assert!(sampler_ratio_from_env().is_err());
        std::env::set_var("OTEL_TRACES_SAMPLER", "always_off");
        assert_eq!(sampler_ratio_from_env().unwrap(), Some(0.0));
        std::env::set_var("OTEL_TRACES_SAMPLER", "jaeger_remote");
        assert!(sampler_ratio_from_env().is_err());
        std::env::remove_var("OTEL_TRACES_SAMPLER_ARG");
        std::env::remove_var("OTEL_TRACES_SAMPLER");
    }

    #[test]
    fn operations() {
        assert_eq!(operation_name("/* x */ select 1"), "SELECT");
        assert_eq!(operation_name("  "), "");
    }
}
