//! Shared test support: one PostgreSQL cluster per test binary (jsonlog, every statement logged), explicit
//! trace contexts, and readers for what the server logged.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use sqlcommenter::TraceParent;
use sqlcommenter_testpg::{Cluster, LogFormat};

pub const BASE_NAME: &str = "svc";

pub fn pg() -> &'static Cluster {
    static PG: OnceLock<Cluster> = OnceLock::new();
    PG.get_or_init(|| {
        Cluster::builder()
            .setting("log_min_duration_statement", "0")
            .setting("max_connections", "60")
            .log_format(LogFormat::Json)
            .start()
            .expect("start PostgreSQL")
    })
}

pub fn url() -> String {
    format!("{}?application_name={BASE_NAME}", pg().url("postgres"))
}

/// A pool whose connections say `application_name=svc`.
pub async fn pool(max: u32) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(max).connect(&url()).await.expect("connect")
}

/// A wrapped pool of `max` connections whose checkouts write the carrier (`TracedPool::connect_with`).
pub async fn traced(max: u32, cfg: &sqlcommenter_sqlx::Config) -> sqlcommenter_sqlx::TracedPool {
    let options = sqlx::postgres::PgPoolOptions::new().max_connections(max);
    sqlcommenter_sqlx::TracedPool::connect_with(options, url().parse().unwrap(), cfg).await.expect("connect")
}

/// How a test builds its wrapped pool: both constructors must keep the same promises.
#[derive(Debug, Clone, Copy)]
pub enum Build {
    /// `TracedPool::connect_with`: the checkout hook writes the carrier.
    Hooked,
    /// `TracedPool::new` on an existing pool: cleared on release.
    Wrapped,
}

impl Build {
    pub async fn pool(self, max: u32, cfg: &sqlcommenter_sqlx::Config) -> sqlcommenter_sqlx::TracedPool {
        match self {
            Build::Hooked => traced(max, cfg).await,
            Build::Wrapped => sqlcommenter_sqlx::TracedPool::new(pool(max).await, cfg),
        }
    }
}

/// A distinct traceparent for (test, n).
pub fn tp(test: u8, n: u32, sampled: bool) -> TraceParent {
    let mut trace = [0u8; 16];
    trace[0] = 0xa0 | (test & 0x0f);
    trace[12..].copy_from_slice(&n.to_be_bytes());
    trace[1] = 0x5c;
    let mut span = [0u8; 8];
    span[0] = test;
    span[4..].copy_from_slice(&n.to_be_bytes());
    span[1] = 0x11;
    TraceParent::new(trace, span, u8::from(sampled)).unwrap()
}

/// An OpenTelemetry context whose span is `tp` (remote span context).
pub fn otel(tp: &TraceParent) -> opentelemetry::Context {
    let sc = SpanContext::new(
        TraceId::from_bytes(tp.trace_id()),
        SpanId::from_bytes(tp.parent_id()),
        TraceFlags::new(tp.flags()),
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(sc)
}

/// One jsonlog record of interest.
#[derive(Debug, Clone)]
pub struct Line {
    pub message: String,
    pub detail: String,
    /// The `statement` field (set on ERROR records).
    pub statement: String,
    pub state_code: String,
    pub application_name: String,
    pub pid: i64,
}

impl Line {
    /// The traceparent the carrier (application_name) held for this line.
    pub fn carried(&self) -> Option<TraceParent> {
        sqlcommenter::carrier::decode_application_name(&self.application_name).map(|(_, tp)| tp)
    }
}

/// Runs a marker statement and waits until it is in the log; returns all records so far.
pub fn logged(marker: &str) -> Vec<Line> {
    logged_in(pg(), marker)
}

/// [`logged`] for another (jsonlog) cluster.
pub fn logged_in(pg: &Cluster, marker: &str) -> Vec<Line> {
    pg.execute_sql(&format!("SELECT '{marker}'")).unwrap();
    let log = pg.wait_for_log(marker, Duration::from_secs(20)).unwrap();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| Line {
            message: v["message"].as_str().unwrap_or_default().to_owned(),
            detail: v["detail"].as_str().unwrap_or_default().to_owned(),
            statement: v["statement"].as_str().unwrap_or_default().to_owned(),
            state_code: v["state_code"].as_str().unwrap_or_default().to_owned(),
            application_name: v["application_name"].as_str().unwrap_or_default().to_owned(),
            pid: v["pid"].as_i64().unwrap_or_default(),
        })
        .collect()
}

/// The `pg_stat_statements` rows that are carrier statements (they mention `set_config`,
/// `application_name` or the custom setting), with their calls.
pub fn carrier_entries(pg: &Cluster) -> Vec<(String, i64)> {
    let out = pg
        .query(
            "SELECT calls || ' ' || replace(query, E'\\n', ' ') FROM pg_stat_statements \
             WHERE (query ILIKE '%set_config%' OR query ILIKE '%application_name%' OR query ILIKE '%sqlcommenter.%') \
             AND query NOT ILIKE '%pg_stat_statements%'",
        )
        .unwrap();
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (calls, query) = l.trim().split_once(' ').unwrap();
            (query.to_owned(), calls.parse().unwrap())
        })
        .collect()
}

/// Log records of executions (simple `statement:` or extended `execute`) whose text contains `needle`.
pub fn executions<'a>(lines: &'a [Line], needle: &str) -> Vec<&'a Line> {
    lines
        .iter()
        .filter(|l| {
            l.message.contains(needle) && (l.message.contains(" execute ") || l.message.contains("statement: "))
        })
        .collect()
}
