//! Proxy spans: one client span per statement execution (simple Query, or Execute), with OpenTelemetry
//! database semantic conventions, exported over OTLP (HTTP/protobuf, or gRPC on a runtime thread of its own).
//!
//! The per-session [`SpanTracker`] is sans-I/O: it is fed client and server frames and hands finished
//! [`SpanRecord`]s to [`Telemetry::export`]. When export is off there is no tracker, so the hot path
//! creates no span objects. Span ids are chosen *before* the statement is forwarded, so the comment or
//! carrier the proxy injects carries the proxy span's own id as parent-id: server log lines point at it.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator as SdkIdGenerator, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use sqlcommenter::{Dialect, TraceContext};

use crate::context::IdGenerator;
use crate::error::ProxyError;
use crate::frame;

/// Most open spans one session keeps (pipelined statements not yet answered); beyond, tracing stops for
/// that session so memory stays bounded.
pub const MAX_OPEN: usize = 16 * 1024;

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
            .with_start_time(rec.start)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent);
        NEXT_IDS.with(|c| c.set(None));
        let cx = Context::new().with_span(span);
        if let Some((_, msg)) = &rec.error {
            cx.span().set_status(Status::error(msg.clone()));
        }
        cx.span().end_with_timestamp(rec.end);
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

/// One finished statement execution.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// The proxy span's id (the parent-id injected downstream).
    pub span_id: [u8; 8],
    /// The client's span, or `None` for a root span.
    pub parent: Option<[u8; 8]>,
    /// The statement text as the client sent it.
    pub text: Arc<str>,
    /// `db.namespace` (the startup `database`).
    pub database: Arc<str>,
    /// When the proxy forwarded the statement.
    pub start: SystemTime,
    /// When the proxy relayed its completion.
    pub end: SystemTime,
    /// Rows from CommandComplete, when it counts them.
    pub rows: Option<u64>,
    /// SQLSTATE and message of an ErrorResponse.
    pub error: Option<(String, String)>,
}

#[derive(Debug)]
enum Entry {
    /// A simple Query: its span, and for a multi-statement one a child span per statement still to run.
    Simple(SpanRecord, Parts),
    Execute(SpanRecord),
    Sync,
}

/// The statements of a multi-statement Query not yet completed: (text, span id) each, and when the
/// current one began (the previous one's completion).
#[derive(Debug, Default)]
struct Parts {
    left: VecDeque<(Arc<str>, [u8; 8])>,
    since: Option<SystemTime>,
}

/// Ids reserved for the next Execute (chosen when its comment or carrier was written).
#[derive(Debug, Clone, Copy)]
struct Reserved {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
}

/// Per-session span bookkeeping (see the module docs).
#[derive(Debug)]
pub struct SpanTracker {
    telemetry: Arc<Telemetry>,
    database: Arc<str>,
    open: VecDeque<Entry>,
    statements: HashMap<Vec<u8>, Arc<str>>,
    portals: HashMap<Vec<u8>, Arc<str>>,
    reserved: Option<Reserved>,
    disabled: bool,
}

impl SpanTracker {
    /// A tracker for a session on `database`.
    pub fn new(telemetry: Arc<Telemetry>, database: &str) -> Self {
        SpanTracker {
            telemetry,
            database: Arc::from(database),
            open: VecDeque::new(),
            statements: HashMap::new(),
            portals: HashMap::new(),
            reserved: None,
            disabled: false,
        }
    }

    /// Spans opened and not yet finished (and Sync markers).
    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    fn reserve(&mut self, ctx: &TraceContext, client: bool, ids: &mut IdGenerator) -> Option<Reserved> {
        if self.disabled || !ctx.traceparent.is_sampled() {
            return None;
        }
        let span_id = fresh_span_id(ids);
        Some(Reserved {
            trace_id: ctx.traceparent.trace_id(),
            span_id,
            parent: client.then(|| ctx.traceparent.parent_id()),
        })
    }

    fn record(&self, r: Reserved, text: Arc<str>) -> SpanRecord {
        let now = SystemTime::now();
        SpanRecord {
            trace_id: r.trace_id,
            span_id: r.span_id,
            parent: r.parent,
            text,
            database: self.database.clone(),
            start: now,
            end: now,
            rows: None,
            error: None,
        }
    }

    fn push(&mut self, e: Entry) {
        if self.open.len() >= MAX_OPEN {
            tracing::debug!("too many unanswered statements: spans off for this session");
            self.disabled = true;
            self.open.clear();
            self.reserved = None;
            return;
        }
        self.open.push_back(e);
    }

    /// A simple Query: opens its span; returns the context to inject (parent-id = the span's id).
    /// `client` says whether `ctx` came from the client (else it is the proxy's root).
    pub fn query(&mut self, sql: &[u8], ctx: TraceContext, client: bool, ids: &mut IdGenerator) -> TraceContext {
        // A statement with its own traceparent keeps it: the span is that context's child.
        let (ctx, client) = match own_context(sql) {
            Some(own) => (own, true),
            None => (ctx, client),
        };
        let Some(r) = self.reserve(&ctx, client, ids) else { return ctx };
        let rec = self.record(r, Arc::from(String::from_utf8_lossy(sql)));
        let mut parts = Parts::default();
        // A `;` before the end may separate statements: each gets its own child span.
        if sql.trim_ascii_end().strip_suffix(b";").unwrap_or(sql).contains(&b';') {
            let text = String::from_utf8_lossy(sql);
            let stmts = sqlcommenter::lexer::split_statements(&text, Dialect::Postgres);
            if stmts.len() > 1 {
                parts.since = Some(rec.start);
                parts.left = stmts.into_iter().map(|t| (Arc::from(t), fresh_span_id(ids))).collect();
            }
        }
        self.push(Entry::Simple(rec, parts));
        with_parent(ctx, r.span_id)
    }

    /// A Parse (named or not): remembers the statement's text for its executions.
    pub fn statement(&mut self, name: &[u8], sql: &[u8]) {
        if self.disabled {
            return;
        }
        if self.statements.len() < MAX_OPEN || self.statements.contains_key(name) {
            self.statements.insert(name.to_vec(), Arc::from(String::from_utf8_lossy(sql)));
        }
    }

    /// A Parse of the unnamed statement: reserves the next Execute's span; returns the context to inject.
    pub fn parse_unnamed(
        &mut self,
        sql: &[u8],
        ctx: TraceContext,
        client: bool,
        ids: &mut IdGenerator,
    ) -> TraceContext {
        let (ctx, client) = match own_context(sql) {
            Some(own) => (own, true),
            None => (ctx, client),
        };
        self.reserved = self.reserve(&ctx, client, ids);
        match self.reserved {
            Some(r) => with_parent(ctx, r.span_id),
            None => ctx,
        }
    }

    /// A named execution's carrier is about to be written: reserves the span and returns its context.
    pub fn carrier(&mut self, ctx: TraceContext, client: bool, ids: &mut IdGenerator) -> TraceContext {
        self.reserved = self.reserve(&ctx, client, ids);
        match self.reserved {
            Some(r) => with_parent(ctx, r.span_id),
            None => ctx,
        }
    }

    /// A Bind: maps its portal to the statement's text.
    pub fn bind(&mut self, body: &[u8]) {
        if self.disabled {
            return;
        }
        let Some((portal, rest)) = frame::cstr(body) else { return };
        let Some((stmt, _)) = frame::cstr(rest) else { return };
        match self.statements.get(stmt) {
            Some(t) if self.portals.len() < MAX_OPEN || self.portals.contains_key(portal) => {
                self.portals.insert(portal.to_vec(), t.clone());
            }
            _ => {
                self.portals.remove(portal);
            }
        }
    }

    /// A Close of a statement or portal.
    pub fn close(&mut self, body: &[u8]) {
        let Some((&kind, rest)) = body.split_first() else { return };
        let Some((name, _)) = frame::cstr(rest) else { return };
        match kind {
            b'S' => self.statements.remove(name),
            _ => self.portals.remove(name),
        };
    }

    /// An Execute: opens its span with the reserved ids, else fresh ones under `ctx`.
    pub fn execute(&mut self, body: &[u8], ctx: &TraceContext, client: bool, ids: &mut IdGenerator) {
        let r = match self.reserved.take() {
            Some(r) => Some(r),
            None => self.reserve(ctx, client, ids),
        };
        let Some(r) = r else { return };
        let portal = frame::cstr(body).map_or(&b""[..], |(p, _)| p);
        let text = self.portals.get(portal).cloned().unwrap_or_else(|| Arc::from(""));
        let rec = self.record(r, text);
        self.push(Entry::Execute(rec));
    }

    /// A Sync from the client.
    pub fn sync(&mut self) {
        if !self.disabled && !self.open.is_empty() {
            self.push(Entry::Sync);
        }
    }

    /// A server message relayed to the client (the proxy's own injected parts excluded).
    pub fn server(&mut self, tag: u8, body: &[u8]) {
        if self.open.is_empty() {
            return;
        }
        const EMPTY_QUERY: u8 = b'I';
        const PORTAL_SUSPENDED: u8 = b's';
        match tag {
            frame::COMMAND_COMPLETE | EMPTY_QUERY | PORTAL_SUSPENDED => {
                let rows = if tag == frame::COMMAND_COMPLETE { rows(frame::text_body(body)) } else { None };
                match self.open.front_mut() {
                    Some(Entry::Simple(rec, parts)) => {
                        if let Some(n) = rows {
                            rec.rows = Some(rec.rows.unwrap_or(0) + n);
                        }
                        if let Some(child) = part_done(rec, parts, rows, None) {
                            self.telemetry.export(&child);
                        }
                    }
                    Some(Entry::Execute(_)) => {
                        if let Some(Entry::Execute(mut rec)) = self.open.pop_front() {
                            rec.rows = rows;
                            self.finish(rec);
                        }
                    }
                    _ => {}
                }
            }
            frame::ERROR_RESPONSE => {
                let err = error_fields(body);
                match self.open.front_mut() {
                    Some(Entry::Simple(rec, parts)) => {
                        // The failing statement ends its child; the server skips the rest.
                        let child = part_done(rec, parts, None, Some(err.clone()));
                        parts.left.clear();
                        rec.error = Some(err);
                        if let Some(child) = child {
                            self.telemetry.export(&child);
                        }
                    }
                    Some(Entry::Execute(_)) => {
                        if let Some(Entry::Execute(mut rec)) = self.open.pop_front() {
                            rec.error = Some(err);
                            self.finish(rec);
                        }
                    }
                    _ => {}
                }
            }
            frame::READY_FOR_QUERY => {
                // Executes still open were skipped after an error: they did not run.
                while let Some(Entry::Execute(_)) = self.open.front() {
                    self.open.pop_front();
                }
                match self.open.pop_front() {
                    Some(Entry::Simple(rec, _)) => self.finish(rec),
                    Some(Entry::Sync) | None => {}
                    Some(Entry::Execute(_)) => {}
                }
            }
            _ => {}
        }
    }

    fn finish(&self, mut rec: SpanRecord) {
        rec.end = SystemTime::now();
        self.telemetry.export(&rec);
    }
}

/// The next statement of a multi-statement Query completed: its child span, ended now.
fn part_done(
    parent: &SpanRecord,
    parts: &mut Parts,
    rows: Option<u64>,
    error: Option<(String, String)>,
) -> Option<SpanRecord> {
    let (text, span_id) = parts.left.pop_front()?;
    let now = SystemTime::now();
    let start = parts.since.replace(now).unwrap_or(now);
    Some(SpanRecord {
        trace_id: parent.trace_id,
        span_id,
        parent: Some(parent.span_id),
        text,
        database: parent.database.clone(),
        start,
        end: now,
        rows,
        error,
    })
}

fn fresh_span_id(ids: &mut IdGenerator) -> [u8; 8] {
    loop {
        let id = ids.next_u64().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

fn with_parent(ctx: TraceContext, span_id: [u8; 8]) -> TraceContext {
    match ctx.traceparent.with_parent_id(span_id) {
        Ok(tp) => TraceContext { traceparent: tp, tracestate: ctx.tracestate },
        Err(_) => ctx,
    }
}

fn own_context(sql: &[u8]) -> Option<TraceContext> {
    frame::find_ci(sql, b"traceparent")?;
    sqlcommenter::parse_context(std::str::from_utf8(sql).ok()?, Dialect::Postgres)
}

/// The row count of a CommandComplete tag (`SELECT 5`, `INSERT 0 5`, `UPDATE 3`, `FETCH 2`, `COPY 7`).
pub fn rows(tag: &[u8]) -> Option<u64> {
    let tag = std::str::from_utf8(tag).ok()?;
    let verb = tag.split(' ').next()?;
    if !matches!(verb, "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "FETCH" | "MOVE" | "COPY") {
        return None;
    }
    tag.rsplit(' ').next()?.parse().ok()
}

/// SQLSTATE (`C`) and message (`M`) of an ErrorResponse body.
fn error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut msg = String::new();
    let mut rest = body;
    while let Some((&t, r)) = rest.split_first() {
        if t == 0 {
            break;
        }
        let Some((v, r)) = frame::cstr(r) else { break };
        match t {
            b'C' => code = String::from_utf8_lossy(v).into_owned(),
            b'M' => msg = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
        rest = r;
    }
    (code, msg)
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
    fn row_counts_and_operations() {
        assert_eq!(rows(b"SELECT 5"), Some(5));
        assert_eq!(rows(b"INSERT 0 7"), Some(7));
        assert_eq!(rows(b"BEGIN"), None);
        assert_eq!(rows(b"CREATE TABLE"), None);
        assert_eq!(operation_name("/* x */ select 1"), "SELECT");
        assert_eq!(operation_name("  "), "");
        let body = b"SERROR\0C22012\0Mdivision by zero\0\0";
        assert_eq!(error_fields(body), ("22012".into(), "division by zero".into()));
    }
}
