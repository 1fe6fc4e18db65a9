//! The carrier in production-like set-ups (issue 11), checked from the far side: pg_stat_statements,
//! the server log (`application_name` of each execution's own line), pg_stat_activity, PgBouncer 1.24 in
//! session and transaction pooling.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{cluster, connect, init_tracing, rand_hex, traceparent_of};
use futures_util::TryStreamExt;
use sqlcommenter::TraceParent;
use sqlcommenter_testpg::{pgbouncer_or_skip, Cluster, LogFormat, PgBouncer, PoolMode};
use sqlcommenter_tokio_postgres::{CarrierScope, Client, Config, Pool};
use tokio_postgres::types::Type;
use tracing::Instrument;

/// A cluster logging every statement as JSON, with pg_stat_statements (`track_utility` on, the default).
fn stats_cluster() -> Cluster {
    Cluster::builder()
        .setting("log_min_duration_statement", "0")
        .setting("compute_query_id", "on")
        .log_format(LogFormat::Json)
        .preload(&["pg_stat_statements"])
        .create_extension("pg_stat_statements")
        .start()
        .unwrap()
}

fn deadpool(url: String, size: usize) -> deadpool_postgres::Pool {
    let mut cfg = deadpool_postgres::Config::new();
    cfg.url = Some(url);
    cfg.pool = Some(deadpool_postgres::PoolConfig::new(size));
    cfg.create_pool(Some(deadpool_postgres::Runtime::Tokio1), tokio_postgres::NoTls).unwrap()
}

/// pg_stat_statements entries that write a carrier: (query, calls).
fn carrier_entries(pg: &Cluster) -> Vec<(String, i64)> {
    let out = pg
        .query(
            "SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls FROM pg_stat_statements \
             WHERE (query ILIKE '%set_config%' OR query ILIKE '%application_name%' \
             OR query ILIKE '%sqlcommenter.traceparent%') AND query NOT ILIKE '%pg_stat_statements%'",
        )
        .unwrap();
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (q, calls) = l.rsplit_once('|').unwrap();
            (q.to_owned(), calls.parse().unwrap())
        })
        .collect()
}

/// One JSON server log record.
struct Record {
    message: String,
    detail: String,
    application_name: String,
}

fn records(pg: &Cluster, marker: &str) -> Vec<Record> {
    let log = pg.wait_for_log(marker, Duration::from_secs(10)).unwrap();
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
            Record { message: s("message"), detail: s("detail"), application_name: s("application_name") }
        })
        .collect()
}

/// The value of `$1` in an execution's `parameters:` detail.
fn first_param(detail: &str) -> Option<&str> {
    let rest = detail.split("$1 = '").nth(1)?;
    rest.split('\'').next()
}

/// 10,000 requests, each under a new trace (named statement; every tenth in a transaction): at most 3
/// carrier entries in pg_stat_statements — one, the parameterized `set_config` — for both scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_traces_leave_at_most_three_carrier_entries() {
    init_tracing();
    for scope in [CarrierScope::Session, CarrierScope::Transaction] {
        let pg = stats_cluster();
        pg.execute_sql("SELECT pg_stat_statements_reset()").unwrap();
        let pool = Pool::new(deadpool(pg.url("postgres"), 4), Config::builder().carrier_scope(scope).build().unwrap());
        let mut tasks = Vec::new();
        for task in 0..4 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                for r in 0..2_500 {
                    let span = tracing::info_span!("request", task, r);
                    async {
                        let mut c = pool.get().await.unwrap();
                        let stmt = c.prepare_cached("SELECT $1::int AS pgss_probe").await.unwrap();
                        if r % 10 == 0 {
                            let tx = c.transaction().await.unwrap();
                            tx.query_one(&stmt, &[&r]).await.unwrap();
                            tx.commit().await.unwrap();
                        } else {
                            c.query_one(&stmt, &[&r]).await.unwrap();
                        }
                    }
                    .instrument(span)
                    .await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let entries = carrier_entries(&pg);
        assert!(entries.len() <= 3, "{scope:?}: {entries:#?}");
        // ...and the carrier did run, once per request at least (each request is a new trace).
        let calls: i64 = entries.iter().map(|(_, c)| c).sum();
        assert!(calls >= 10_000, "{scope:?}: {entries:#?}");
        eprintln!("{scope:?}: {} carrier entr(y/ies), {calls} calls: {entries:?}", entries.len());
    }
}

/// Through PgBouncer 1.24 (pool of 2, `max_prepared_statements = 200`), 8 concurrent tasks x 20
/// requests, each under its own trace, each running a named statement, an unnamed one and a named one in
/// a transaction: every execution's own log line carries its request's trace, PgBouncer replays no
/// `SET application_name`, and pg_stat_statements holds at most 5 carrier entries.
/// What one PgBouncer run showed on the server.
#[derive(Debug)]
struct Outcome {
    /// Executions of the test statements in the server log.
    executions: usize,
    /// Those whose `application_name` was not their own request's traceparent.
    wrong: usize,
    /// `SET application_name` statements in the server log (PgBouncer's replays).
    replays: usize,
    /// Carrier entries in pg_stat_statements.
    entries: Vec<(String, i64)>,
}

async fn through_pgbouncer(mode: PoolMode, scope: CarrierScope, clients: usize) -> Option<Outcome> {
    const TASKS: usize = 8;
    const REQUESTS: usize = 20;
    let bin = pgbouncer_or_skip("through_pgbouncer")?;
    let pg = stats_cluster();
    let bouncer = PgBouncer::builder(mode).binary(bin).start(&pg).unwrap();
    pg.execute_sql("SELECT pg_stat_statements_reset()").unwrap();
    let pool = Pool::new(
        deadpool(bouncer.url("postgres"), clients),
        Config::builder().application_name("pgb").carrier_scope(scope).build().unwrap(),
    );
    let tag = rand_hex();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let pool = pool.clone();
        let tag = tag.clone();
        tasks.push(tokio::spawn(async move {
            let mut expected = Vec::new();
            for r in 0..REQUESTS {
                let span = tracing::info_span!("request", task, r);
                let tp = traceparent_of(&span);
                let label = |kind: &str| format!("{tag}-{task}-{r}-{kind}");
                async {
                    let mut c = pool.get().await.unwrap();
                    let stmt = c.prepare_cached("SELECT $1::text AS pgb_named").await.unwrap();
                    let row = c.query_one(&stmt, &[&label("n")]).await.unwrap();
                    assert_eq!(row.get::<_, String>(0), label("n"));
                    c.query_typed_one("SELECT $1::text AS pgb_unnamed", &[(&label("u"), Type::TEXT)]).await.unwrap();
                    let tx = c.transaction().await.unwrap();
                    tx.query_one(&stmt, &[&label("t")]).await.unwrap();
                    tx.commit().await.unwrap();
                }
                .instrument(span)
                .await;
                for kind in ["n", "u", "t"] {
                    expected.push((label(kind), tp.clone()));
                }
            }
            expected
        }));
    }
    let mut expected = HashMap::new();
    for t in tasks {
        expected.extend(t.await.unwrap());
    }
    drop(pool);
    let marker = format!("done_{tag}");
    pg.execute_sql(&format!("SELECT '{marker}'")).unwrap();
    let log = records(&pg, &marker);
    let (mut executions, mut wrong) = (0, 0);
    for rec in &log {
        let is_exec = rec.message.contains(" execute ")
            && (rec.message.contains("pgb_named") || rec.message.contains("pgb_unnamed"));
        let Some(label) = first_param(&rec.detail).filter(|l| is_exec && l.starts_with(tag.as_str())) else {
            continue;
        };
        executions += 1;
        if rec.application_name != expected[label] {
            wrong += 1;
            eprintln!("{mode:?}/{scope:?}: {label} ran as {:?}: {}", rec.application_name, rec.message);
        }
    }
    let replays = log.iter().filter(|r| r.message.to_ascii_lowercase().contains("set application_name")).count();
    let entries = carrier_entries(&pg);
    assert_eq!(executions, TASKS * REQUESTS * 3, "{mode:?}/{scope:?}: every execution logged once");
    drop(bouncer);
    Some(Outcome { executions, wrong, replays, entries })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pgbouncer_session_pooling() {
    init_tracing();
    let Some(out) = through_pgbouncer(PoolMode::Session, CarrierScope::Session, 2).await else { return };
    assert_eq!(out.wrong, 0, "{out:?}");
    assert_eq!(out.replays, 0, "PgBouncer replayed SET application_name: {out:?}");
    assert!(out.entries.len() <= 5, "{out:?}");
    eprintln!("session pooling: {out:?}");
}

/// Transaction pooling needs `CarrierScope::Transaction`; the control run shows why (and that the replay
/// count can fail): with a session-scoped carrier PgBouncer re-syncs the changing `application_name`
/// onto each server it links the client to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pgbouncer_transaction_pooling() {
    init_tracing();
    let Some(out) = through_pgbouncer(PoolMode::Transaction, CarrierScope::Transaction, 8).await else { return };
    assert_eq!(out.wrong, 0, "{out:?}");
    assert_eq!(out.replays, 0, "PgBouncer replayed SET application_name: {out:?}");
    assert!(out.entries.len() <= 5, "{out:?}");
    eprintln!("transaction pooling: {out:?}");
    let Some(control) = through_pgbouncer(PoolMode::Transaction, CarrierScope::Session, 8).await else { return };
    assert!(control.replays > 0, "{control:?}");
    eprintln!(
        "transaction pooling, session-scoped carrier (control): {} executions, {} wrong, {} replays, {} carrier entries",
        control.executions,
        control.wrong,
        control.replays,
        control.entries.len()
    );
}

/// The OpenTelemetry Collector's postgresql receiver reads `application_name` from pg_stat_activity as
/// a bare W3C traceparent while a query runs: it parses, with the running request's trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_stat_activity_shows_a_bare_w3c_traceparent() {
    init_tracing();
    let client = Client::new(connect().await, &Config::default());
    let tag = rand_hex();
    let span = tracing::info_span!("slow request");
    let tp = traceparent_of(&span);
    let sql = format!("SELECT pg_sleep(1), 'otel_{tag}'");
    let running = tokio::spawn(async move { client.query_one(&sql, &[]).instrument(span).await.map(drop) });
    let observer = connect().await;
    let probe =
        format!("SELECT application_name FROM pg_stat_activity WHERE query LIKE '%otel_{tag}''%' AND state = 'active' AND pid <> pg_backend_pid()");
    let mut seen = None;
    for _ in 0..100 {
        if let Some(row) = observer.query_opt(&probe, &[]).await.unwrap() {
            seen = Some(row.get::<_, String>(0));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.await.unwrap().unwrap();
    let seen = seen.expect("the traced query was seen in pg_stat_activity");
    let parsed = TraceParent::parse(&seen).expect("application_name is a bare W3C traceparent");
    assert_eq!(parsed.to_string(), tp);
}

/// `CarrierScope::Transaction` on a direct connection: the wrapped statement carries its context and
/// leaves nothing behind; an error at the wrap's COMMIT (a deferred constraint) is returned exactly as the
/// plain client's implicit commit returns it, and nothing is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_scope_wrap_keeps_commit_errors_and_leaves_nothing() {
    init_tracing();
    let tag = rand_hex();
    let plain = connect().await;
    plain
        .batch_execute(&format!(
            "CREATE TABLE parent_{tag} (id int PRIMARY KEY); \
             CREATE TABLE child_{tag} (pid int REFERENCES parent_{tag} DEFERRABLE INITIALLY DEFERRED)"
        ))
        .await
        .unwrap();
    let insert = format!("INSERT INTO child_{tag} VALUES ($1)");
    let expected = plain.execute(&insert, &[&42i32]).await.unwrap_err();
    assert_eq!(expected.code(), Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION));

    let cfg = Config::builder().carrier_scope(CarrierScope::Transaction).build().unwrap();
    let client = Client::new(connect().await, &cfg);
    let pid: i32 = client.get_ref().query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let span = tracing::info_span!("wrapped");
    let tp = traceparent_of(&span);
    async {
        let got = client.execute(&insert, &[&42i32]).await.unwrap_err();
        assert_eq!(got.to_string(), expected.to_string());
        assert_eq!(got.code(), expected.code());
        client.query_one(&format!("SELECT 1 AS wrapped_{tag}"), &[]).await.unwrap();
        // DISCARD ALL refuses a transaction block: not wrapped; it also drops the carrier statement
        client.batch_execute("DISCARD ALL").await.unwrap();
        client.query_one(&format!("SELECT 2 AS wrapped_{tag}"), &[]).await.unwrap();
        // streaming results and COPY are not wrapped (they run, without a context outside a transaction)
        let rows: Vec<tokio_postgres::Row> = client
            .query_raw("SELECT generate_series(1, 3)", std::iter::empty::<i32>())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(rows.len(), 3);
        let out = client.copy_out(&format!("COPY parent_{tag} TO STDOUT")).await.unwrap();
        let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
        assert!(chunks.is_empty());
    }
    .instrument(span)
    .await;
    let n: i64 = plain.query_one(&format!("SELECT count(*) FROM child_{tag}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "the failed wrap committed nothing");
    let seen: String =
        plain.query_one("SELECT application_name FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap().get(0);
    assert_eq!(seen, "", "nothing left on the connection");
    let lines = common::log_lines().await;
    let l = common::executions(&lines, &format!("wrapped_{tag}"));
    assert_eq!(l.len(), 2, "{l:#?}");
    for line in l {
        assert_eq!(line.application_name, tp, "{line:?}");
    }
    let _ = cluster();
}
