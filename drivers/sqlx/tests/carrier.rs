//! What PostgreSQL saw through the session carrier (default mode): every statement carries its own
//! request's traceparent, never another's, never a stale one.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures_util::TryStreamExt;
use opentelemetry::context::FutureExt as _;
use sqlcommenter_sqlx::{AppNameFormat, Config, Mode, OutsideTransaction, Target, TracedConnection, TracedPool};
use sqlx::{Connection, Executor, Row};

/// 24 tasks under 24 different contexts (plus 8 without one) interleave on a pool of 4, through both
/// `&pool` and a per-request `acquire()`; the server log shows each statement with its own task's span id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tasks_each_carry_their_own_context() {
    concurrent(Build::Hooked, &Config::default(), 1, "concurrent_probe").await;
}

/// The same on a pool wrapped with `TracedPool::new` (cleared on release).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tasks_on_a_wrapped_pool() {
    concurrent(Build::Wrapped, &Config::default(), 13, "wrapped_probe").await;
}

/// The same with statements outside transactions wrapped in one (the transaction-pooler mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tasks_wrapped_in_transactions() {
    let cfg = Config::builder().outside_transaction(OutsideTransaction::WrapInTransaction).build().unwrap();
    concurrent(Build::Hooked, &cfg, 15, "wrapmode_probe").await;
}

async fn concurrent(build: Build, cfg: &Config, test: u8, probe: &'static str) {
    let db = build.pool(4, cfg).await;
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let db = db.clone();
        let tp = (i < 24).then(|| tp(test, i, true));
        let work = async move {
            for round in 0..6 {
                if round % 2 == 0 {
                    let v: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT $1::int4 AS {probe}_a")))
                        .bind(i as i32)
                        .fetch_one(&db)
                        .await
                        .unwrap();
                    assert_eq!(v, i as i32);
                } else {
                    let mut conn = db.acquire().await.unwrap();
                    for _ in 0..2 {
                        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT $1::int4 AS {probe}_b")))
                            .bind(i as i32)
                            .execute(&mut conn)
                            .await
                            .unwrap();
                        tokio::task::yield_now().await;
                    }
                }
                tokio::task::yield_now().await;
            }
        };
        tasks.push(match tp {
            Some(tp) => tokio::spawn(work.with_context(otel(&tp))),
            None => tokio::spawn(work),
        });
    }
    for t in tasks {
        t.await.unwrap();
    }
    let lines = logged(&format!("marker-concurrency-{test}"));
    let mut seen = HashMap::new();
    for l in executions(&lines, probe) {
        let i: u32 = l.detail.trim_start_matches("parameters: $1 = '").trim_end_matches('\'').parse().unwrap();
        let expected = (i < 24).then(|| tp(test, i, true));
        assert_eq!(l.carried(), expected, "statement of task {i} logged as {:?}: {}", l.application_name, l.message);
        if expected.is_none() {
            assert_eq!(l.application_name, BASE_NAME);
        }
        *seen.entry(i).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 32);
    assert!(seen.values().all(|&n| n == 3 + 3 * 2), "{seen:?}");
}

/// A pooled connection returned after a traced request is cleared: the next request (without context,
/// through the wrapper or through the raw pool) sees the base name, and so does pg_stat_activity.
#[tokio::test]
async fn no_stale_context_after_reuse() {
    no_stale_context(Build::Hooked, "reuse").await;
}

#[tokio::test]
async fn no_stale_context_after_reuse_of_a_wrapped_pool() {
    no_stale_context(Build::Wrapped, "reuse2").await;
}

async fn no_stale_context(build: Build, name: &str) {
    let db = build.pool(1, &Config::default()).await;
    let raw = db.inner().clone();
    let n = if matches!(build, Build::Hooked) { 1 } else { 3 };
    let a = tp(2, n, true);
    let probe = |p: &str| format!("{name}_probe_{p}");
    async {
        let mut conn = db.acquire().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT 1 AS {}", probe("a")))).execute(&mut conn).await.unwrap();
        assert!(conn.carries_context());
    }
    .with_context(otel(&a))
    .await;
    // Same (only) connection, next request without context, through the wrapper:
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT 2 AS {}", probe("b")))).execute(&db).await.unwrap();
    // ... and through the raw pool:
    let app: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT current_setting('application_name') AS {}",
        probe("c")
    )))
    .fetch_one(&raw)
    .await
    .unwrap();
    assert_eq!(app, BASE_NAME);
    let lines = logged(&format!("marker-{name}"));
    let a_lines = executions(&lines, &probe("a"));
    assert_eq!(a_lines.len(), 1);
    assert_eq!(a_lines[0].carried(), Some(a));
    for p in [probe("b"), probe("c")] {
        let ls = executions(&lines, &p);
        assert_eq!(ls.len(), 1, "{p}");
        assert_eq!(ls[0].application_name, BASE_NAME, "{p}");
        assert_eq!(ls[0].pid, a_lines[0].pid, "same backend reused");
    }
    // An owned connection keeps its state across requests and overwrites only when the context changes.
    let mut conn = TracedConnection::new(sqlx::PgConnection::connect(&url()).await.unwrap(), &Config::default());
    let b = tp(2, n + 1, true);
    async {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT 3 AS {}", probe("d")))).execute(&mut conn).await.unwrap();
    }
    .with_context(otel(&b))
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT 4 AS {}", probe("e")))).execute(&mut conn).await.unwrap();
    let lines = logged(&format!("marker-{name}-owned"));
    assert_eq!(executions(&lines, &probe("d"))[0].carried(), Some(b));
    assert_eq!(executions(&lines, &probe("e"))[0].application_name, BASE_NAME);
    // Idle pooled connections carry nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = pg()
        .query(&format!("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '%{}%'", a.trace_id_hex()))
        .unwrap();
    assert_eq!(idle, "0");
}

/// Within one request the carrier is written once; statements carry it; only changes cost a `SET`.
#[tokio::test]
async fn carrier_written_once_per_request_and_connection() {
    let db = traced(1, &Config::default()).await;
    let c = tp(3, 1, true);
    async {
        let mut conn = db.acquire().await.unwrap();
        for i in 0..5 {
            sqlx::query("SELECT $1::int4 AS once_probe").bind(i).fetch_one(&mut conn).await.unwrap();
        }
    }
    .with_context(otel(&c))
    .await;
    let lines = logged("marker-once");
    let execs = executions(&lines, "once_probe");
    assert_eq!(execs.len(), 5);
    assert!(execs.iter().all(|l| l.carried() == Some(c)));
    let sets: Vec<_> = lines
        .iter()
        .filter(|l| {
            l.message.contains(&format!("statement: SELECT pg_catalog.set_config(E'application_name', E'{c}', false)"))
        })
        .collect();
    assert_eq!(sets.len(), 1, "one carrier write for the request (at checkout)");
    assert!(sets
        .iter()
        .all(|l| sqlcommenter::carrier::is_carrier_statement(&l.message[l.message.find("SELECT").unwrap()..])));
}

/// Unsampled contexts are not carried by default; `sampled_only(false)` carries them; ratio 0 carries none.
#[tokio::test]
async fn sampling() {
    let unsampled = tp(4, 1, false);
    let configs = [
        (Config::default(), None, "sampling_probe_default"),
        (Config::builder().sampled_only(false).build().unwrap(), Some(unsampled), "sampling_probe_all"),
        (Config::builder().sampled_only(false).sample_ratio(0.0).build().unwrap(), None, "sampling_probe_ratio0"),
    ];
    for (cfg, _, probe) in &configs {
        let db = TracedPool::new(pool(1).await, cfg);
        let sql = format!("SELECT 1 AS {probe}");
        async { db.execute(sqlx::AssertSqlSafe(sql)).await.unwrap() }.with_context(otel(&unsampled)).await;
    }
    let lines = logged("marker-sampling");
    for (_, expected, probe) in &configs {
        let ls = executions(&lines, probe);
        assert_eq!(ls.len(), 1, "{probe}");
        assert_eq!(ls[0].carried(), *expected, "{probe}");
    }
}

/// Transactions: the carrier rides on the BEGIN (transaction-scoped `set_config`) and ends with the
/// transaction.
#[tokio::test]
async fn transactions_commit_rollback_and_errors() {
    let db = traced(1, &Config::default()).await;
    let raw = db.inner().clone();
    raw.execute("CREATE TABLE IF NOT EXISTS tx_t (id int PRIMARY KEY)").await.unwrap();
    let c = tp(5, 1, true);
    let d = tp(5, 2, true);
    async {
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO tx_t VALUES ($1) ON CONFLICT DO NOTHING /*tx_probe_commit*/")
            .bind(1)
            .execute(&mut tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO tx_t VALUES ($1) /*tx_probe_fail*/").bind(1).execute(&mut tx).await.unwrap_err();
        tx.rollback().await.unwrap();
        let mut conn = db.acquire().await.unwrap();
        {
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("SELECT 1 /*tx_probe_conn*/").execute(&mut tx).await.unwrap();
            // a different span inside the transaction: one transaction-scoped write
            async { sqlx::query("SELECT 2 /*tx_probe_inner*/").execute(&mut tx).await.unwrap() }
                .with_context(otel(&d))
                .await;
            // dropped without commit: rolled back
        }
        sqlx::query("SELECT current_setting('application_name') /*tx_probe_after*/")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    }
    .with_context(otel(&c))
    .await;
    let name: String = sqlx::query_scalar("SELECT current_setting('application_name')").fetch_one(&raw).await.unwrap();
    assert_eq!(name, BASE_NAME);
    let lines = logged("marker-tx");
    for (probe, expected) in [
        ("tx_probe_commit", Some(c)),
        ("tx_probe_fail", Some(c)),
        ("tx_probe_conn", Some(c)),
        ("tx_probe_inner", Some(d)),
        ("tx_probe_after", Some(c)),
    ] {
        let ls: Vec<_> = lines
            .iter()
            .filter(|l| {
                (l.message.contains(probe) && !l.message.contains("parse ") && !l.message.contains("bind "))
                    || l.statement.contains(probe)
            })
            .collect();
        assert!(!ls.is_empty(), "{probe}");
        for l in ls {
            assert_eq!(l.carried(), expected, "{probe}: {}", l.message);
        }
    }
    let begins: Vec<_> = lines
        .iter()
        .filter(|l| {
            l.message.contains(&format!("BEGIN; SELECT pg_catalog.set_config(E'application_name', E'{c}', true)"))
        })
        .collect();
    // On the pool's transactions; the connection's own transaction needs none: its session already
    // carries the context.
    assert_eq!(begins.len(), 2, "the context rides on the BEGIN");
    // The BEGIN's own line carries it (the transaction is still open when it is logged); a COMMIT is
    // logged after the transaction ended, under the connection's own name.
    assert!(begins.iter().all(|l| l.carried() == Some(c)));
    let commits: Vec<_> =
        lines.iter().filter(|l| l.message.ends_with("statement: COMMIT") && l.pid == begins[0].pid).collect();
    assert!(!commits.is_empty());
    assert!(commits.iter().all(|l| l.application_name == BASE_NAME));
    let failed: Vec<_> = lines.iter().filter(|l| l.statement.contains("tx_probe_fail")).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].state_code, "23505");
}

/// Errors come back exactly as without the wrapper: same variant, same SQLSTATE.
#[tokio::test]
async fn errors_are_unchanged() {
    let raw = pool(1).await;
    let db = TracedPool::new(raw.clone(), &Config::default());
    let c = tp(6, 1, true);
    for sql in ["SELECT * FROM no_such_table_x", "SELECT 1/0", "SELEC 1"] {
        let plain = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&raw).await.unwrap_err();
        let wrapped = async { sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&db).await.unwrap_err() }
            .with_context(otel(&c))
            .await;
        let (p, w) = (plain.as_database_error().unwrap(), wrapped.as_database_error().unwrap());
        assert_eq!(p.code(), w.code(), "{sql}");
        assert_eq!(p.message(), w.message(), "{sql}");
        assert_eq!(p.kind(), w.kind(), "{sql}");
    }
    let plain = sqlx::query("SELECT 1 WHERE false").fetch_one(&raw).await.unwrap_err();
    let wrapped = sqlx::query("SELECT 1 WHERE false").fetch_one(&db).await.unwrap_err();
    assert!(matches!((plain, wrapped), (sqlx::Error::RowNotFound, sqlx::Error::RowNotFound)));
}

/// Streaming fetches carry the context; a dropped stream or future leaves the connection usable and
/// its carrier truthful.
#[tokio::test]
async fn streaming_and_dropped_futures() {
    let db = TracedPool::new(pool(1).await, &Config::default());
    let c = tp(7, 1, true);
    let d = tp(7, 2, true);
    let mut conn = db.acquire().await.unwrap();
    async {
        let rows: Vec<i32> =
            sqlx::query_scalar::<_, i32>("SELECT g::int4 FROM generate_series(1, 5000) g /*stream_probe*/")
                .fetch(&mut conn)
                .try_collect()
                .await
                .unwrap();
        assert_eq!(rows.len(), 5000);
        // a stream dropped after its first row
        let mut s = sqlx::query("SELECT g FROM generate_series(1, 100000) g /*stream_probe_dropped*/").fetch(&mut conn);
        s.try_next().await.unwrap().unwrap();
        drop(s);
        // a future dropped mid-query
        let slow = sqlx::query("SELECT pg_sleep(0.5) /*dropped_probe*/").execute(&mut conn);
        assert!(tokio::time::timeout(Duration::from_millis(50), slow).await.is_err());
    }
    .with_context(otel(&c))
    .await;
    async {
        let row = sqlx::query("SELECT current_setting('application_name') AS app /*after_drop_probe*/")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>("app"), d.to_string());
    }
    .with_context(otel(&d))
    .await;
    drop(conn);
    let lines = logged("marker-stream");
    assert_eq!(executions(&lines, "stream_probe*/")[0].carried(), Some(c));
    assert_eq!(executions(&lines, "after_drop_probe")[0].carried(), Some(d));
}

/// The custom-GUC carrier leaves application_name alone.
#[tokio::test]
async fn guc_carrier() {
    let cfg = Config::builder().carrier(Target::guc("sqlcommenter.traceparent").unwrap()).build().unwrap();
    let db = TracedPool::new(pool(1).await, &cfg);
    let c = tp(8, 1, true);
    let (guc, app): (String, String) = async {
        sqlx::query_as("SELECT current_setting('sqlcommenter.traceparent'), current_setting('application_name')")
            .fetch_one(&db)
            .await
            .unwrap()
    }
    .with_context(otel(&c))
    .await;
    assert_eq!((guc.as_str(), app.as_str()), (c.to_string().as_str(), BASE_NAME));
    let guc: String =
        sqlx::query_scalar("SELECT current_setting('sqlcommenter.traceparent', true)").fetch_one(&db).await.unwrap();
    assert_eq!(guc, "");
}

/// Static tags are in the text the server ran; a statement prepared earlier runs verbatim and still gets
/// this execution's context through the carrier.
#[tokio::test]
async fn static_tags_and_prepared_statements() {
    let cfg = Config::builder().application("shop").tag("route", "/orders/{id}").build().unwrap();
    let db = TracedPool::new(pool(1).await, &cfg);
    let c = tp(9, 1, true);
    async {
        let mut conn = db.acquire().await.unwrap();
        sqlx::query("SELECT 1 AS tags_probe").execute(&mut conn).await.unwrap();
        let stmt = (&mut conn).prepare(sqlx::SqlStr::from_static("SELECT $1::int4 AS prepared_probe")).await.unwrap();
        use sqlx::Statement;
        stmt.query().bind(5).fetch_one(&mut conn).await.unwrap();
    }
    .with_context(otel(&c))
    .await;
    let lines = logged("marker-tags");
    let l = executions(&lines, "tags_probe")[0];
    let tags = sqlcommenter::parse_tags(&l.message, sqlcommenter::Dialect::Postgres);
    assert_eq!(tags["application"], "shop");
    assert_eq!(tags["route"], "/orders/{id}");
    assert_eq!(tags["db_driver"], "sqlx:0.9");
    assert!(!tags.contains_key("traceparent"));
    let p = executions(&lines, "prepared_probe")[0];
    assert!(p.message.ends_with("SELECT $1::int4 AS prepared_probe"), "{}", p.message);
    assert_eq!(p.carried(), Some(c));
}

/// Per-query-comment mode: the traceparent is in the text the server ran, and nothing is cached.
#[tokio::test]
async fn per_query_comment_mode() {
    let cfg = Config::builder().mode(Mode::PerQueryComment).build().unwrap();
    let db = TracedPool::new(pool(1).await, &cfg);
    let c = tp(10, 1, true);
    let mut conn = db.acquire().await.unwrap();
    async {
        for i in 0..3 {
            sqlx::query("SELECT $1::int4 AS pqc_probe").bind(i).fetch_one(&mut conn).await.unwrap();
        }
    }
    .with_context(otel(&c))
    .await;
    sqlx::query("SELECT 1 AS pqc_probe_none").fetch_one(&mut conn).await.unwrap();
    let lines = logged("marker-pqc");
    let ls = executions(&lines, "pqc_probe");
    assert_eq!(ls.len(), 4);
    for l in &ls[..3] {
        assert_eq!(sqlcommenter::parse_context(&l.message, sqlcommenter::Dialect::Postgres).unwrap().traceparent, c);
        assert_eq!(l.application_name, BASE_NAME);
        assert!(l.message.contains("execute <unnamed>"), "{}", l.message);
    }
    assert!(sqlcommenter::parse_context(&ls[3].message, sqlcommenter::Dialect::Postgres).is_none());
}

/// The shape `sqlx::query_as!` / `query!` / `query_scalar!` expand to (`__query_with_result(..).try_map(..)`,
/// `__query_scalar_with_result`) runs unchanged through the wrapper and carries the context.
#[tokio::test]
async fn query_macro_expansion_shape() {
    use sqlx::Arguments as _;
    #[derive(Debug, PartialEq)]
    struct Out {
        n: i32,
    }
    let db = TracedPool::new(pool(1).await, &Config::default());
    let c = tp(12, 1, true);
    async {
        let mut query_args = <sqlx::Postgres as sqlx::Database>::Arguments::default();
        query_args.add(&41i32).unwrap();
        let query_args = Ok::<_, sqlx::error::BoxDynError>(query_args);
        let out =
            sqlx::__query_with_result::<sqlx::Postgres, _>("SELECT $1::int4 + 1 AS n /*macro_probe*/", query_args)
                .try_map(|row: sqlx::postgres::PgRow| {
                    use sqlx::Row as _;
                    let n: i32 = row.try_get_unchecked::<i32, _>(0usize)?;
                    Ok(Out { n })
                })
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(out, Out { n: 42 });
        let args = Ok::<_, sqlx::error::BoxDynError>(<sqlx::Postgres as sqlx::Database>::Arguments::default());
        let n: i64 =
            sqlx::__query_scalar_with_result::<sqlx::Postgres, i64, _>("SELECT 7::int8 /*macro_probe_scalar*/", args)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(n, 7);
    }
    .with_context(otel(&c))
    .await;
    let lines = logged("marker-macro");
    assert_eq!(executions(&lines, "macro_probe*/")[0].carried(), Some(c));
    assert_eq!(executions(&lines, "macro_probe_scalar")[0].carried(), Some(c));
}

/// Tags of a task-local scope (route/action) are in the text the server ran; outside the scope they are not.
#[tokio::test]
async fn tag_scope_tags() {
    let db = TracedPool::new(pool(1).await, &Config::default());
    let scope = sqlcommenter_sqlx::TagScope::new([("route", "/items/{id}"), ("action", "show")]).unwrap();
    scope.run(async { sqlx::query("SELECT 1 AS scope_probe_in").execute(&db).await.unwrap() }).await;
    sqlx::query("SELECT 1 AS scope_probe_out").execute(&db).await.unwrap();
    let lines = logged("marker-scope");
    let tags =
        sqlcommenter::parse_tags(&executions(&lines, "scope_probe_in")[0].message, sqlcommenter::Dialect::Postgres);
    assert_eq!((tags["route"].as_str(), tags["action"].as_str()), ("/items/{id}", "show"));
    assert_eq!(tags["db_driver"], "sqlx:0.9");
    let tags =
        sqlcommenter::parse_tags(&executions(&lines, "scope_probe_out")[0].message, sqlcommenter::Dialect::Postgres);
    assert!(!tags.contains_key("route"));
}

/// The application's own `RESET ALL`, `SET application_name` and `RESET application_name` in the middle of a traced
/// request (issue 11: the next statement reached the server with no context): the wrapper sees what they
/// did and the next statement carries the context again; inside a transaction too, and after a
/// `ROLLBACK TO SAVEPOINT` that undid a write.
#[tokio::test]
async fn application_resets_are_followed() {
    let db = traced(1, &Config::default()).await;
    let (c, d) = (tp(16, 1, true), tp(16, 2, true));
    async {
        let mut conn = db.acquire().await.unwrap();
        // (DISCARD ALL would also drop sqlx's prepared statements, with or without the wrapper.)
        for (i, reset) in [
            "RESET ALL",
            "SET application_name = 'mine'",
            "reset application_name",
            "SET SESSION application_name TO DEFAULT",
        ]
        .into_iter()
        .enumerate()
        {
            sqlx::query("SELECT $1::int4 AS reset_probe_before").bind(i as i32).execute(&mut conn).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(reset)).execute(&mut conn).await.unwrap();
            sqlx::query("SELECT $1::int4 AS reset_probe_after").bind(i as i32).execute(&mut conn).await.unwrap();
        }
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT 1 AS reset_probe_tx_before").execute(&mut tx).await.unwrap();
        sqlx::raw_sql("RESET ALL").execute(&mut tx).await.unwrap();
        sqlx::query("SELECT 1 AS reset_probe_tx_after").execute(&mut tx).await.unwrap();
        sqlx::raw_sql("SAVEPOINT s").execute(&mut tx).await.unwrap();
        async {
            sqlx::query("SELECT 1 AS reset_probe_tx_d").execute(&mut tx).await.unwrap();
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT s").execute(&mut tx).await.unwrap();
            sqlx::query("SELECT 1 AS reset_probe_tx_e").execute(&mut tx).await.unwrap();
        }
        .with_context(otel(&d))
        .await;
        tx.commit().await.unwrap();
        sqlx::query("SELECT 1 AS reset_probe_end").execute(&mut conn).await.unwrap();
    }
    .with_context(otel(&c))
    .await;
    let lines = logged("marker-resets");
    for (probe, n, expected) in [
        ("reset_probe_before", 4, c),
        ("reset_probe_after", 4, c),
        ("reset_probe_tx_before", 1, c),
        ("reset_probe_tx_after", 1, c),
        ("reset_probe_tx_d", 1, d),
        ("reset_probe_tx_e", 1, d),
        ("reset_probe_end", 1, c),
    ] {
        let ls = executions(&lines, probe);
        assert_eq!(ls.len(), n, "{probe}");
        for l in ls {
            assert_eq!(l.carried(), Some(expected), "{probe}: {} under {:?}", l.message, l.application_name);
        }
    }
}

/// `AppNameFormat::Named` keeps the connection's name in front (`svc@traceparent`).
#[tokio::test]
async fn named_application_name_format() {
    let cfg = Config::builder().carrier(Target::ApplicationName(AppNameFormat::Named)).build().unwrap();
    let db = traced(1, &cfg).await;
    let c = tp(17, 1, true);
    let app: String = async {
        sqlx::query_scalar("SELECT current_setting('application_name') AS named_probe").fetch_one(&db).await.unwrap()
    }
    .with_context(otel(&c))
    .await;
    assert_eq!(app, format!("{BASE_NAME}@{c}"));
    let lines = logged("marker-named");
    assert_eq!(executions(&lines, "named_probe")[0].application_name, format!("{BASE_NAME}@{c}"));
}

/// Transaction-pooler mode: a traced statement outside a transaction runs in one the wrapper opens, so
/// its own log line carries the context while the session never does; statements that cannot run in a
/// transaction block still work; a dropped statement's transaction is committed before the next use.
#[tokio::test]
async fn wrap_in_transaction_mode() {
    let cfg = Config::builder().outside_transaction(OutsideTransaction::WrapInTransaction).build().unwrap();
    let db = traced(1, &cfg).await;
    let raw = db.inner().clone();
    raw.execute("CREATE TABLE IF NOT EXISTS wrap_t (id int)").await.unwrap();
    let c = tp(18, 1, true);
    async {
        let mut conn = db.acquire().await.unwrap();
        sqlx::query("INSERT INTO wrap_t VALUES ($1) /*wrap_probe_insert*/").bind(1).execute(&mut conn).await.unwrap();
        let app: String = sqlx::query_scalar("SELECT current_setting('application_name') AS wrap_probe_read")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(app, c.to_string());
        sqlx::query("VACUUM wrap_t").execute(&mut conn).await.unwrap();
        sqlx::query("SELECT 1/0 AS wrap_probe_fail").execute(&mut conn).await.unwrap_err();
        let slow =
            sqlx::query("INSERT INTO wrap_t SELECT 2 FROM pg_sleep(0.3) /*wrap_probe_dropped*/").execute(&mut conn);
        assert!(tokio::time::timeout(Duration::from_millis(50), slow).await.is_err());
        sqlx::query("SELECT 1 AS wrap_probe_next").execute(&mut conn).await.unwrap();
    }
    .with_context(otel(&c))
    .await;
    // Committed, like autocommit: both rows are visible to another connection.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM wrap_t").fetch_one(&raw).await.unwrap();
    assert_eq!(n, 2);
    let app: String = sqlx::query_scalar("SELECT current_setting('application_name')").fetch_one(&raw).await.unwrap();
    assert_eq!(app, BASE_NAME);
    let lines = logged("marker-wrap");
    for probe in ["wrap_probe_insert", "wrap_probe_read", "wrap_probe_next"] {
        let ls = executions(&lines, probe);
        assert_eq!(ls.len(), 1, "{probe}");
        assert_eq!(ls[0].carried(), Some(c), "{probe}");
    }
    let failed: Vec<_> = lines.iter().filter(|l| l.statement.contains("wrap_probe_fail")).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].state_code, "22012");
    let pid = executions(&lines, "wrap_probe_insert")[0].pid;
    // Nothing session-scoped was ever written on this connection.
    assert!(!lines.iter().any(|l| l.pid == pid && l.message.contains("', false)")));
    let vacuum: Vec<_> = executions(&lines, "VACUUM wrap_t").into_iter().filter(|l| l.pid == pid).collect();
    assert_eq!(vacuum.len(), 1);
}

/// What the OpenTelemetry Collector's postgresql receiver reads: `application_name` of a running statement
/// in `pg_stat_activity`, parsed as a bare W3C traceparent, has the request's trace id.
#[tokio::test]
async fn pg_stat_activity_shows_a_bare_traceparent_while_the_statement_runs() {
    let db = traced(1, &Config::default()).await;
    let c = tp(19, 1, true);
    let running = tokio::spawn(
        async move {
            sqlx::query("SELECT pg_sleep(1.5) AS otel_collector_probe").execute(&db).await.unwrap();
        }
        .with_context(otel(&c)),
    );
    let mut sampled = None;
    for _ in 0..100 {
        let app = pg()
            .query(
                "SELECT application_name FROM pg_stat_activity \
                 WHERE state = 'active' AND query LIKE '%otel_collector_probe%' AND query NOT LIKE '%pg_stat_activity%'",
            )
            .unwrap();
        if !app.is_empty() {
            sampled = Some(app);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.await.unwrap();
    let app = sampled.expect("the statement was seen running");
    let parsed = sqlcommenter::TraceParent::parse(&app).expect("a bare W3C traceparent");
    assert_eq!(parsed.trace_id(), c.trace_id());
    assert_eq!(parsed, c);
}
