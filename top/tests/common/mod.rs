//! The blocking scenario of the acceptance tests, on a cluster of the test's own:
//! - A (`checkout`) holds a row lock, idle in transaction, its last statement carrying trace A in a
//!   sqlcommenter comment;
//! - B (`application_name` = a bare traceparent, trace B) waits for that row;
//! - C (`reports`) runs `pg_sleep` through the sqlcommenter proxy under trace C (a session traceparent the
//!   proxy turns into a comment).
#![allow(dead_code)]

use std::process::Output;
use std::time::{Duration, Instant};

use sqlcommenter::{Commenter, TraceContext, TraceParent};
use sqlcommenter_proxy::{ProxyConfig, ProxyHandle, Upstream};
use sqlcommenter_testpg::Cluster;

pub const TP_A: &str = "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1-a1a1a1a1a1a1a1a1-01";
pub const TP_B: &str = "00-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2-b2b2b2b2b2b2b2b2-01";
pub const TP_C: &str = "00-ccccccccccccccccccccccccccccccc3-c3c3c3c3c3c3c3c3-01";

pub fn trace_id(tp: &str) -> &str {
    &tp[3..35]
}

pub fn span_id(tp: &str) -> &str {
    &tp[36..52]
}

/// A running scenario; dropping it ends the sessions (the cluster is stopped by its owner).
pub struct Scenario {
    pub a: tokio_postgres::Client,
    pub a_pid: i32,
    pub b_pid: i32,
    pub c_pid: i32,
    pub proxy: ProxyHandle,
    _b: std::sync::Arc<tokio_postgres::Client>,
    _c: std::sync::Arc<tokio_postgres::Client>,
}

pub fn cluster() -> Cluster {
    Cluster::builder().setting("password_encryption", "scram-sha-256").start().unwrap()
}

pub async fn connect(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

async fn pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0)
}

/// Starts A, B and C and waits until PostgreSQL shows B waiting for a lock and C sleeping.
pub async fn start(pg: &Cluster) -> Scenario {
    let base = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", pg.port());
    let setup = connect(&base).await;
    setup
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, balance int);
             INSERT INTO accounts VALUES (1, 100), (2, 200) ON CONFLICT DO NOTHING;",
        )
        .await
        .unwrap();

    let a = connect(&format!("{base} application_name=checkout")).await;
    let a_pid = pid(&a).await;
    let commenter = Commenter::builder().tag("application", "checkout").build().unwrap();
    let ctx = TraceContext::new(TraceParent::parse(TP_A).unwrap());
    a.batch_execute("BEGIN").await.unwrap();
    let update = commenter.inject("UPDATE accounts SET balance = balance - 10 WHERE id = 1", Some(&ctx));
    a.batch_execute(update.as_str()).await.unwrap();

    let b = std::sync::Arc::new(connect(&format!("{base} application_name={TP_B}")).await);
    let b_pid = pid(&b).await;
    let b2 = b.clone();
    tokio::spawn(async move {
        let _ = b2.batch_execute("UPDATE accounts SET balance = balance + 10 WHERE id = 1").await;
    });

    let mut config =
        ProxyConfig::new("127.0.0.1:0".parse().unwrap(), Upstream::parse(&format!("127.0.0.1:{}", pg.port())).unwrap());
    config.shutdown_timeout = Duration::from_secs(1);
    let proxy = sqlcommenter_proxy::start(config).await.unwrap();
    let c = std::sync::Arc::new(connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres application_name=reports options='-c sqlcommenter.traceparent={TP_C}'",
        proxy.local_addr().port()
    ))
    .await);
    let c_pid = pid(&c).await;
    let c2 = c.clone();
    tokio::spawn(async move {
        let _ = c2.batch_execute("SELECT pg_sleep(60)").await;
    });

    // Wait until the server shows the scenario (from the far side, not from the tool under test).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = setup
            .query(
                "SELECT pid, wait_event FROM pg_stat_activity WHERE pid = ANY($1) AND wait_event IN ('transactionid', 'PgSleep')",
                &[&vec![b_pid, c_pid]],
            )
            .await
            .unwrap();
        if rows.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "scenario did not settle: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Scenario { a, a_pid, b_pid, c_pid, proxy, _b: b, _c: c }
}

/// Runs the `sqlcommenter-top` binary with a clean libpq and OTLP environment plus `env`.
pub async fn top(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sqlcommenter-top"));
    cmd.args(args);
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGAPPNAME",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.expect("top finished").unwrap()
}

/// `--once --format json` parsed, by pid (asserting exit code 0 and a clean stderr unless `stderr_ok`).
pub async fn once_json(conninfo: &str, env: &[(&str, &str)]) -> (serde_json::Value, String) {
    let out = top(&["--once", "--format", "json", conninfo], env).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    (serde_json::from_str(&stdout).unwrap(), stderr)
}

/// The entry for `pid` in a `{"sessions": [...]}` document.
pub fn session(doc: &serde_json::Value, pid: i32) -> &serde_json::Value {
    doc["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} in {doc:#}"))
}
