//! Shared test support: one PostgreSQL cluster per test binary (jsonlog, every statement logged,
//! pg_stat_statements), explicit trace contexts, and readers for what the server logged.
#![allow(dead_code)]

pub mod spans;

use std::sync::OnceLock;
use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use sqlcommenter::TraceParent;
use sqlcommenter_testpg::{Cluster, LogFormat};

pub const BASE_NAME: &str = "svc";

diesel::table! {
    items (id) {
        id -> Int4,
        task -> Int4,
        note -> Text,
    }
}

pub fn pg() -> &'static Cluster {
    static PG: OnceLock<Cluster> = OnceLock::new();
    PG.get_or_init(|| {
        let pg = Cluster::builder()
            .setting("log_min_duration_statement", "0")
            .setting("max_connections", "80")
            .preload(&["pg_stat_statements"])
            .create_extension("pg_stat_statements")
            .log_format(LogFormat::Json)
            .start()
            .expect("start PostgreSQL");
        pg.execute_sql("CREATE TABLE items (id serial PRIMARY KEY, task int4 NOT NULL, note text NOT NULL)")
            .expect("schema");
        pg
    })
}

pub fn url() -> String {
    format!("{}?application_name={BASE_NAME}", pg().url("postgres"))
}

/// A plain diesel-async connection (the baseline).
pub async fn plain() -> AsyncPgConnection {
    AsyncPgConnection::establish(&url()).await.expect("connect")
}

/// A distinct sampled traceparent for (test, n).
pub fn tp(test: u8, n: u32) -> TraceParent {
    let mut trace = [0u8; 16];
    trace[0] = 0xd0 | (test & 0x0f);
    trace[1] = 0x1e;
    trace[12..].copy_from_slice(&n.to_be_bytes());
    let mut span = [0u8; 8];
    span[0] = test;
    span[1] = 0x5e;
    span[4..].copy_from_slice(&n.to_be_bytes());
    TraceParent::new(trace, span, 1).unwrap()
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

/// One jsonlog record.
#[derive(Debug, Clone)]
pub struct Line {
    pub message: String,
    pub detail: String,
    pub application_name: String,
    pub pid: i64,
    /// The `statement` field (set on ERROR records).
    pub statement: String,
    pub state_code: String,
}

impl Line {
    /// The traceparent the carrier (application_name) held for this line.
    pub fn carried(&self) -> Option<TraceParent> {
        sqlcommenter::carrier::decode_application_name(&self.application_name).map(|(_, tp)| tp)
    }

    /// The first bind parameter's value (`parameters: $1 = '7', …`).
    pub fn first_param(&self) -> Option<&str> {
        let rest = self.detail.strip_prefix("parameters: $1 = '")?;
        rest.split('\'').next()
    }
}

/// Runs a marker statement and waits until it is in the log; returns all records so far.
pub fn logged(marker: &str) -> Vec<Line> {
    let pg = pg();
    pg.execute_sql(&format!("SELECT '{marker}'")).unwrap();
    let log = pg.wait_for_log(marker, Duration::from_secs(20)).unwrap();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| Line {
            message: v["message"].as_str().unwrap_or_default().to_owned(),
            detail: v["detail"].as_str().unwrap_or_default().to_owned(),
            application_name: v["application_name"].as_str().unwrap_or_default().to_owned(),
            pid: v["pid"].as_i64().unwrap_or_default(),
            statement: v["statement"].as_str().unwrap_or_default().to_owned(),
            state_code: v["state_code"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// Log records of executions (extended `execute` or simple `statement:`) whose text contains `needle`.
pub fn executions<'a>(lines: &'a [Line], needle: &str) -> Vec<&'a Line> {
    lines
        .iter()
        .filter(|l| {
            l.message.contains(needle) && (l.message.contains(" execute ") || l.message.contains("statement: "))
        })
        .collect()
}

/// Carrier statements in the log (the core recogniser on the logged text).
pub fn carrier_lines(lines: &[Line]) -> Vec<&Line> {
    lines
        .iter()
        .filter(|l| {
            l.message.split_once("statement: ").is_some_and(|(_, sql)| sqlcommenter::carrier::is_carrier_statement(sql))
        })
        .collect()
}

/// The `pg_stat_statements` rows that mention `set_config`, with their calls.
pub fn carrier_entries() -> Vec<(String, i64)> {
    let out = pg()
        .query(
            "SELECT calls || ' ' || replace(query, E'\\n', ' ') FROM pg_stat_statements \
             WHERE query ILIKE '%set_config%' AND query NOT ILIKE '%pg_stat_statements%'",
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

#[derive(diesel::QueryableByName, Debug)]
pub struct Count {
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

#[derive(diesel::QueryableByName, Debug)]
pub struct Stmt {
    #[diesel(sql_type = Text)]
    pub statement: String,
}

/// The statements prepared on this connection's server session (`pg_prepared_statements`; the listing
/// query itself is among them while it runs).
pub async fn prepared<C>(conn: &mut C) -> Vec<String>
where
    C: diesel_async::AsyncConnection<Backend = diesel::pg::Pg> + 'static,
{
    let rows: Vec<Stmt> = diesel::sql_query("SELECT statement FROM pg_catalog.pg_prepared_statements ORDER BY 1")
        .load(conn)
        .await
        .unwrap();
    rows.into_iter().map(|r| r.statement).collect()
}
