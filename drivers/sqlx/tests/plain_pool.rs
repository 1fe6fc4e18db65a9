//! A plain `sqlx::PgPool` with the checkout hooks (`PoolHooks`): statements through `&PgPool`,
//! `pool.acquire()`, `pool.begin()` with `&mut *tx`, and generic `Acquire` code each carry their own
//! task's span on the server; work outside a span carries nothing; the statement caches and
//! pg_stat_statements are as without the hooks.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use common::*;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use sqlcommenter::TraceParent;
use sqlcommenter_sqlx::{CarrierReset, Config, PoolHooks};
use sqlcommenter_testpg::Cluster;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Acquire, Connection, PgPool, Postgres};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

fn current_tp() -> TraceParent {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    TraceParent::new(sc.trace_id().to_bytes(), sc.span_id().to_bytes(), sc.trace_flags().to_u8()).unwrap()
}

fn connect_options(url: &str) -> PgConnectOptions {
    url.parse().unwrap()
}

async fn hooked_pool(url: &str, max: u32, reset: CarrierReset) -> PgPool {
    let connect = connect_options(url);
    PoolHooks::new(&Config::default(), &connect)
        .reset(reset)
        .connect(PgPoolOptions::new().max_connections(max), connect)
        .await
        .unwrap()
}

fn param(l: &Line) -> u32 {
    l.detail.trim_start_matches("parameters: $1 = '").trim_end_matches('\'').parse().unwrap()
}

/// Code written for any `Acquire` (a pool, a connection), as libraries write it.
async fn via_acquire<'a, A: Acquire<'a, Database = Postgres>>(db: A, sql: &'static str, i: u32) {
    let mut conn = db.acquire().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(i as i32).execute(&mut *conn).await.unwrap();
}

/// 32 tasks, each in its own traced span, share a plain pool of 4 connections: every statement's own
/// log line carries its task's trace id, and statements of tasks spawned without the span carry none.
async fn thirty_two_spans(reset: CarrierReset, probe: &'static str) {
    init_tracing();
    let pool = hooked_pool(&url(), 4, reset).await;
    let seen: Arc<Mutex<HashMap<u32, TraceParent>>> = Arc::default();
    let sql = |suffix: &str| -> &'static str { format!("SELECT $1::int4 AS {probe}_{suffix}").leak() };
    let (q_pool, q_conn, q_tx, q_acq, q_none) = (sql("pool"), sql("conn"), sql("tx"), sql("acq"), sql("none"));
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let (pool, seen) = (pool.clone(), seen.clone());
        let span = tracing::info_span!("request", i);
        tasks.push(tokio::spawn(
            async move {
                seen.lock().unwrap().insert(i, current_tp());
                for round in 0..2 {
                    // `&PgPool`: one checkout per statement.
                    sqlx::query(sqlx::AssertSqlSafe(q_pool)).bind(i as i32).fetch_one(&pool).await.unwrap();
                    tokio::task::yield_now().await;
                    // one checkout, two statements
                    let mut conn = pool.acquire().await.unwrap();
                    for _ in 0..2 {
                        sqlx::query(sqlx::AssertSqlSafe(q_conn)).bind(i as i32).execute(&mut *conn).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    drop(conn);
                    // sqlx's own transaction, `&mut *tx`
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query(sqlx::AssertSqlSafe(q_tx)).bind(i as i32).execute(&mut *tx).await.unwrap();
                    if round == 0 {
                        tx.commit().await.unwrap();
                    } else {
                        tx.rollback().await.unwrap();
                    }
                    via_acquire(&pool, q_acq, i).await;
                }
                // spawned from inside the span, not instrumented: no context
                let pool2 = pool.clone();
                tokio::spawn(async move {
                    sqlx::query(sqlx::AssertSqlSafe(q_none)).bind(i as i32).execute(&pool2).await.unwrap();
                })
                .await
                .unwrap();
            }
            .instrument(span),
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let traces: std::collections::HashSet<_> = seen.values().map(|t| t.trace_id()).collect();
    assert_eq!(traces.len(), 32, "distinct traces");
    let lines = logged(&format!("marker-{probe}"));
    for (q, per_task) in [(q_pool, 2), (q_conn, 4), (q_tx, 2), (q_acq, 2)] {
        let probe = &q[q.find(" AS ").unwrap() + 4..];
        let ls = executions(&lines, probe);
        assert_eq!(ls.len(), 32 * per_task, "{probe}");
        let mut count = HashMap::new();
        for l in ls {
            let i = param(l);
            let carried = l.carried().unwrap_or_else(|| panic!("{probe} of task {i} without context: {l:?}"));
            assert_eq!(carried.trace_id(), seen[&i].trace_id(), "{probe} of task {i}");
            *count.entry(i).or_insert(0) += 1;
        }
        assert!(count.len() == 32 && count.values().all(|&n| n == per_task), "{probe}: {count:?}");
    }
    let none = executions(&lines, &q_none[q_none.find(" AS ").unwrap() + 4..]);
    assert_eq!(none.len(), 32);
    for l in none {
        assert!(l.carried().is_none() && l.application_name == BASE_NAME, "unspanned: {l:?}");
    }
    if reset == CarrierReset::OnRelease {
        // idle connections carry nothing (the clears run in sqlx's release tasks)
        tokio::time::sleep(Duration::from_millis(300)).await;
        let carrying = pg()
            .query(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name IN ({})",
                seen.values().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ")
            ))
            .unwrap();
        assert_eq!(carrying, "0");
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_spans_on_a_plain_pool_cleared_on_release() {
    thirty_two_spans(CarrierReset::OnRelease, "hook_release").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_spans_on_a_plain_pool_overwritten_on_acquire() {
    thirty_two_spans(CarrierReset::OnAcquire, "hook_acquire").await;
}

/// One connection, reused: a traced checkout, then untraced ones (through the hook, and for
/// `OnRelease` through `try_acquire`, which runs no hook) see the connection's own name.
async fn no_stale_context(reset: CarrierReset, test: u8, probe: &str) {
    let pool = hooked_pool(&url(), 1, reset).await;
    let a = tp(test, 1, true);
    let q = |s: &str| sqlx::AssertSqlSafe(format!("SELECT current_setting('application_name') AS {probe}_{s}"));
    let traced: String =
        async { sqlx::query_scalar(q("a")).fetch_one(&pool).await.unwrap() }.with_context(otel(&a)).await;
    assert_eq!(traced, a.to_string());
    let untraced: String = sqlx::query_scalar(q("b")).fetch_one(&pool).await.unwrap();
    assert_eq!(untraced, BASE_NAME);
    // unsampled contexts are not carried (the default), never a wrong one
    let unsampled: String = async { sqlx::query_scalar(q("c")).fetch_one(&pool).await.unwrap() }
        .with_context(otel(&tp(test, 2, false)))
        .await;
    assert_eq!(unsampled, BASE_NAME);
    if reset == CarrierReset::OnRelease {
        async { sqlx::query_scalar::<_, String>(q("d")).fetch_one(&pool).await.unwrap() }.with_context(otel(&a)).await;
        // the clear runs in sqlx's release task before the connection is idle again
        let mut conn = loop {
            match pool.try_acquire() {
                Some(c) => break c,
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let name: String = sqlx::query_scalar(q("e")).fetch_one(&mut *conn).await.unwrap();
        assert_eq!(name, BASE_NAME, "try_acquire runs no hook, the release cleared it");
    }
    let lines = logged(&format!("marker-{probe}"));
    let a_line = executions(&lines, &format!("{probe}_a"));
    assert_eq!(a_line.len(), 1);
    assert_eq!(a_line[0].carried(), Some(a));
    for s in ["b", "c"] {
        let ls = executions(&lines, &format!("{probe}_{s}"));
        assert_eq!(ls.len(), 1);
        assert_eq!(ls[0].application_name, BASE_NAME);
        assert_eq!(ls[0].pid, a_line[0].pid, "same backend");
    }
    pool.close().await;
}

#[tokio::test]
async fn no_stale_context_cleared_on_release() {
    no_stale_context(CarrierReset::OnRelease, 3, "stale_release").await;
}

#[tokio::test]
async fn no_stale_context_overwritten_on_acquire() {
    no_stale_context(CarrierReset::OnAcquire, 4, "stale_acquire").await;
}

/// A pool opened inside a traced span: the connections sqlx opens up front go idle without a checkout,
/// and must not carry the span.
#[tokio::test]
async fn pool_opened_inside_a_span_lends_nothing() {
    let a = tp(5, 1, true);
    let pool = async {
        let connect = connect_options(&url());
        PoolHooks::new(&Config::default(), &connect)
            .connect(PgPoolOptions::new().max_connections(3).min_connections(3), connect)
            .await
            .unwrap()
    }
    .with_context(otel(&a))
    .await;
    let carrying =
        pg().query(&format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{a}'")).unwrap();
    assert_eq!(carrying, "0");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = pool.acquire().await.unwrap();
        let name: String =
            sqlx::query_scalar("SELECT current_setting('application_name')").fetch_one(&mut *c).await.unwrap();
        assert_eq!(name, BASE_NAME);
        held.push(c);
    }
    drop(held);
    pool.close().await;
}

const QUERIES: [&str; 5] = [
    "SELECT $1::int4 AS hook_cache_1",
    "SELECT $1::int4 + 1 AS hook_cache_2",
    "SELECT $1::int4 + 2 AS hook_cache_3",
    "SELECT $1::int4 + 3 AS hook_cache_4",
    "SELECT $1::int4 + 4 AS hook_cache_5",
];

/// Requests `n0..n0+count` under new traces, on 2 tasks.
async fn requests(pool: &PgPool, test: u8, n0: u32, count: u32) {
    let mut tasks = Vec::new();
    for t in 0..2 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for r in (n0 + t..n0 + count).step_by(2) {
                async {
                    match r % 3 {
                        0 => {
                            for q in QUERIES {
                                sqlx::query(q).bind(r as i32).fetch_one(&pool).await.unwrap();
                            }
                        }
                        1 => {
                            let mut c = pool.acquire().await.unwrap();
                            for q in QUERIES {
                                sqlx::query(q).bind(r as i32).fetch_one(&mut *c).await.unwrap();
                            }
                        }
                        _ => {
                            let mut tx = pool.begin().await.unwrap();
                            for q in QUERIES {
                                sqlx::query(q).bind(r as i32).fetch_one(&mut *tx).await.unwrap();
                            }
                            tx.commit().await.unwrap();
                        }
                    }
                }
                .with_context(otel(&tp(test, r, true)))
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Server-side prepared statements and client cache entries, summed over the pool's connections.
async fn caches(pool: &PgPool, size: u32) -> (i64, usize) {
    let mut held = Vec::new();
    let (mut server, mut client) = (0, 0);
    for _ in 0..size {
        let mut c = pool.acquire().await.unwrap();
        client += c.cached_statements_size();
        let n: i64 = sqlx::Row::get(
            &sqlx::raw_sql("SELECT count(*) FROM pg_prepared_statements").fetch_one(&mut *c).await.unwrap(),
            0,
        );
        server += n;
        held.push(c);
    }
    (server, client)
}

/// 1,000 traces through each reset mode leave one carrier entry in pg_stat_statements, and the server's
/// prepared statements (and sqlx's caches) equal a plain pool's after the same work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_traces_one_carrier_entry_and_plain_caches() {
    let pg = Cluster::builder()
        .setting("max_connections", "30")
        .preload(&["pg_stat_statements"])
        .create_extension("pg_stat_statements")
        .start()
        .unwrap();
    let url = format!("{}?application_name={BASE_NAME}", pg.url("postgres"));
    let plain = PgPoolOptions::new().max_connections(2).min_connections(2).connect(&url).await.unwrap();
    requests(&plain, 6, 0, 300).await;
    let plain_caches = caches(&plain, 2).await;
    assert_eq!(plain_caches, (10, 10));
    plain.close().await;
    pg.execute_sql("SELECT pg_stat_statements_reset()").unwrap();
    for (k, reset) in [CarrierReset::OnRelease, CarrierReset::OnAcquire].into_iter().enumerate() {
        let connect = connect_options(&url);
        let pool = PoolHooks::new(&Config::default(), &connect)
            .reset(reset)
            .connect(PgPoolOptions::new().max_connections(2).min_connections(2), connect)
            .await
            .unwrap();
        requests(&pool, 7 + k as u8, 0, 1_000).await;
        assert_eq!(caches(&pool, 2).await, plain_caches, "{reset:?}: caches as without the hooks");
        pool.close().await;
    }
    let entries = carrier_entries(&pg);
    for (query, calls) in &entries {
        eprintln!("{calls:>7}  {query}");
    }
    assert_eq!(entries.len(), 1, "one carrier entry for 2,000 traces: {entries:#?}");
    assert!(entries[0].1 >= 2_000, "the carrier was written for every trace: {entries:?}");
}

/// `sqlx::migrate!` / `Migrator::run(&pool)` takes one connection through `Acquire for &PgPool`: the
/// migrations and sqlx's own bookkeeping run under the caller's span.
#[tokio::test]
async fn migrations_run_under_the_callers_span() {
    let pool = hooked_pool(&url(), 2, CarrierReset::OnRelease).await;
    let a = tp(8, 1, true);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/migrations");
    let migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    async { migrator.run(&pool).await.unwrap() }.with_context(otel(&a)).await;
    let lines = logged("marker-migrate");
    let migrations: Vec<_> = lines
        .iter()
        .filter(|l| l.message.contains("CREATE TABLE hook_migrated") || l.message.contains("hook_migrated_row"))
        .collect();
    assert_eq!(migrations.len(), 2, "both migrations logged: {migrations:?}");
    let bookkeeping = executions(&lines, "_sqlx_migrations");
    assert!(!bookkeeping.is_empty());
    for l in migrations.into_iter().chain(bookkeeping) {
        assert_eq!(l.carried(), Some(a), "{}", l.message);
    }
    pool.close().await;
}
