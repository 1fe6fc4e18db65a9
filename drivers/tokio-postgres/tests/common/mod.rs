//! Shared test setup: one PostgreSQL cluster per test binary logging every statement as JSON, and a
//! global tracing subscriber exporting to OpenTelemetry (always sampled).

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use sqlcommenter_testpg::{Cluster, LogFormat};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

pub fn cluster() -> &'static Cluster {
    static PG: OnceLock<Cluster> = OnceLock::new();
    PG.get_or_init(|| {
        Cluster::builder().setting("log_min_duration_statement", "0").log_format(LogFormat::Json).start().unwrap()
    })
}

pub fn init_tracing() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("sqlcommenter-tokio-postgres-tests");
        let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// The traceparent the server should see for `span`, from the span's own OpenTelemetry context.
pub fn traceparent_of(span: &tracing::Span) -> String {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    assert!(sc.is_valid());
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

pub async fn connect() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&cluster().keyword_conn_str("postgres"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

pub fn pool(size: usize) -> deadpool_postgres::Pool {
    let mut cfg = deadpool_postgres::Config::new();
    cfg.url = Some(cluster().url("postgres"));
    cfg.pool = Some(deadpool_postgres::PoolConfig::new(size));
    cfg.create_pool(Some(deadpool_postgres::Runtime::Tokio1), tokio_postgres::NoTls).unwrap()
}

/// One server log line.
#[derive(Debug, Clone)]
pub struct Line {
    pub message: String,
    pub application_name: String,
    pub detail: String,
    pub state_code: String,
    pub pid: i64,
}

/// Flushes the server log with a marker statement and returns every line.
pub async fn log_lines() -> Vec<Line> {
    let marker = format!("flush-{}", rand_hex());
    let client = connect().await;
    client.simple_query(&format!("SELECT '{marker}'")).await.unwrap();
    let log = cluster().wait_for_log(&marker, Duration::from_secs(10)).unwrap();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
            Line {
                message: s("message"),
                application_name: s("application_name"),
                detail: s("detail"),
                state_code: s("state_code"),
                pid: v.get("pid").and_then(|x| x.as_i64()).unwrap_or(0),
            }
        })
        .collect()
}

/// Lines whose message or detail contains `needle`.
pub fn lines_with<'a>(lines: &'a [Line], needle: &str) -> Vec<&'a Line> {
    lines.iter().filter(|l| l.message.contains(needle) || l.detail.contains(needle)).collect()
}

/// `execute` lines (the statement executions) containing `needle`.
pub fn executions<'a>(lines: &'a [Line], needle: &str) -> Vec<&'a Line> {
    lines
        .iter()
        .filter(|l| {
            (l.message.contains(" execute ") || l.message.contains(" statement: ")) && l.message.contains(needle)
        })
        .collect()
}

pub fn rand_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    format!("{:016x}", h.finish())
}
