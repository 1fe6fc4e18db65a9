//! Integration tests against a real PostgreSQL (harness cluster, every statement logged as JSON). Every
//! assertion about context is checked on what the server logged or reported.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, TryStreamExt};
use sqlcommenter::carrier::decode_application_name;
use sqlcommenter_tokio_postgres::{AppNameFormat, Client, Config, Mode, Pool, Target};
use tracing::Instrument;

fn config() -> Config {
    Config::builder().application_name("tp-test").build().unwrap()
}

/// The traceparent a log line's application_name carries, if any.
fn carried(line: &Line) -> Option<String> {
    decode_application_name(&line.application_name).map(|(_, tp)| tp.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepared_statement_execution_carries_the_executing_span() {
    init_tracing();
    let client = Client::new(connect().await, &config());
    let tag = rand_hex();
    let sql = format!("SELECT $1::int AS prep_{tag}");
    let stmt = client.prepare(&sql).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..3 {
        let span = tracing::info_span!("request", i);
        expected.push(traceparent_of(&span));
        let row = client.query_one(&stmt, &[&i]).instrument(span).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i);
    }
    let lines = log_lines().await;
    let execs = executions(&lines, &format!("prep_{tag}"));
    assert_eq!(execs.len(), 3, "{execs:#?}");
    for (line, tp) in execs.iter().zip(&expected) {
        // the default carrier is the bare W3C traceparent (what OpenTelemetry's tools read)
        assert_eq!(&line.application_name, tp, "{line:?}");
        // the statement text carries only the fixed tags
        assert!(line.message.contains("db_driver='tokio-postgres%3A0.7'"), "{}", line.message);
        assert!(!line.message.contains("traceparent"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tasks_on_one_shared_client_never_see_another_tasks_context() {
    init_tracing();
    let client = Arc::new(Client::new(connect().await, &config()));
    let tag = rand_hex();
    let mut handles = Vec::new();
    let mut expected = Vec::new();
    for task in 0..16 {
        let client = client.clone();
        let sql = format!("SELECT {task} AS shared_{tag}_{task}");
        // every third task runs without a span: it must never show a traceparent
        let span = if task % 3 == 2 { None } else { Some(tracing::info_span!("task", task)) };
        expected.push(span.as_ref().map(traceparent_of));
        let work = async move {
            let stmt = client.prepare(&sql).await.unwrap();
            for _ in 0..20 {
                let row = client.query_one(&stmt, &[]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), task);
                client.query(&sql, &[]).await.unwrap();
                tokio::task::yield_now().await;
            }
        };
        handles.push(match span {
            Some(span) => tokio::spawn(work.instrument(span)),
            None => tokio::spawn(work),
        });
    }
    for h in handles {
        h.await.unwrap();
    }
    let lines = log_lines().await;
    for (task, tp) in expected.iter().enumerate() {
        let mine = lines_with(&lines, &format!("shared_{tag}_{task} "));
        // parse + execute (prepared) and parse/bind/execute (text) lines
        assert!(mine.len() >= 40, "task {task}: {} lines", mine.len());
        for line in mine {
            assert_eq!(carried(line), tp.clone(), "task {task}: {line:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_tasks_interleaving_and_connection_reuse() {
    init_tracing();
    let pool = Pool::new(pool(4), config());
    let tag = rand_hex();
    let mut handles = Vec::new();
    let mut expected = Vec::new();
    for task in 0..24 {
        let pool = pool.clone();
        let sql = format!("SELECT $1::int AS pooled_{tag}_{task}");
        let span = if task % 4 == 3 { None } else { Some(tracing::info_span!("request", task)) };
        expected.push(span.as_ref().map(traceparent_of));
        let work = async move {
            let mut seen = Vec::new();
            for round in 0..5 {
                let client = pool.get().await.unwrap();
                let stmt = client.prepare_cached(&sql).await.unwrap();
                client.query_one(&stmt, &[&round]).await.unwrap();
                // what the server reports for this session right now
                let row = client.query_one("SELECT current_setting('application_name')", &[]).await.unwrap();
                seen.push(row.get::<_, String>(0));
                drop(client);
                tokio::task::yield_now().await;
            }
            seen
        };
        handles.push(match span {
            Some(span) => tokio::spawn(work.instrument(span)),
            None => tokio::spawn(work),
        });
    }
    for (task, h) in handles.into_iter().enumerate() {
        for now in h.await.unwrap() {
            let got = decode_application_name(&now).map(|(_, tp)| tp.to_string());
            assert_eq!(got, expected[task], "task {task} saw application_name {now:?}");
        }
    }
    let lines = log_lines().await;
    for (task, tp) in expected.iter().enumerate() {
        let mine = executions(&lines, &format!("pooled_{tag}_{task} "));
        assert_eq!(mine.len(), 5, "task {task}");
        for line in mine {
            assert_eq!(carried(line), tp.clone(), "task {task}: {line:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_never_leaks_into_the_next_checkout() {
    init_tracing();
    let pool = Pool::new(pool(1), config());
    let traced = tracing::info_span!("traced");
    let tp = traceparent_of(&traced);
    async {
        let c = pool.get().await.unwrap();
        let row = c.query_one("SELECT current_setting('application_name')", &[]).await.unwrap();
        assert_eq!(decode_application_name(row.get(0)).map(|(_, t)| t.to_string()), Some(tp.clone()));
    }
    .instrument(traced)
    .await;
    // the same (only) connection, next request without a span
    let c = pool.get().await.unwrap();
    let row = c.query_one("SELECT current_setting('application_name'), pg_backend_pid()", &[]).await.unwrap();
    let name: String = row.get(0);
    assert!(decode_application_name(&name).is_none(), "stale context leaked: {name}");
    // and pg_stat_activity, seen from another session, agrees
    let pid: i32 = row.get(1);
    drop(c);
    let other = connect().await;
    let row = other.query_one("SELECT application_name FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap();
    let seen: String = row.get(0);
    assert!(decode_application_name(&seen).is_none(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_rollback_and_savepoints() {
    init_tracing();
    let mut client = Client::new(connect().await, &config());
    let table = format!("tx_{}", rand_hex());
    client.batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)")).await.unwrap();
    let span = tracing::info_span!("tx");
    let tp = traceparent_of(&span);
    async {
        // commit
        let tx = client.transaction().await.unwrap();
        tx.execute(&format!("INSERT INTO {table} VALUES (1)"), &[]).await.unwrap();
        tx.commit().await.unwrap();
        // rollback reverts the session setting on the server: the wrapper must set it again
        let tx = client.transaction().await.unwrap();
        tx.execute(&format!("INSERT INTO {table} VALUES (2)"), &[]).await.unwrap();
        tx.rollback().await.unwrap();
        let row = client.query_one("SELECT current_setting('application_name')", &[]).await.unwrap();
        assert_eq!(decode_application_name(row.get(0)).map(|(_, t)| t.to_string()), Some(tp.clone()));
        // savepoint rolled back, outer committed
        let mut tx = client.transaction().await.unwrap();
        {
            let sp = tx.transaction().await.unwrap();
            sp.execute(&format!("INSERT INTO {table} VALUES (3)"), &[]).await.unwrap();
        }
        tx.execute(&format!("INSERT INTO {table} VALUES (4)"), &[]).await.unwrap();
        tx.commit().await.unwrap();
    }
    .instrument(span)
    .await;
    // a transaction dropped while its carrier was set, then work without a span
    {
        let other = tracing::info_span!("dropped");
        async {
            let tx = client.transaction().await.unwrap();
            tx.execute(&format!("INSERT INTO {table} VALUES (5)"), &[]).await.unwrap();
        }
        .instrument(other)
        .await;
    }
    let row = client.query_one("SELECT current_setting('application_name')", &[]).await.unwrap();
    assert!(decode_application_name(row.get(0)).is_none());
    let ids: Vec<i32> = client
        .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [1, 4]);
    let lines = log_lines().await;
    for id in [1, 2, 4] {
        let l = executions(&lines, &format!("INSERT INTO {table} VALUES ({id})"));
        assert_eq!(l.len(), 1);
        assert_eq!(carried(l[0]).as_deref(), Some(tp.as_str()), "{:?}", l[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_the_same_as_without_the_wrapper() {
    init_tracing();
    let plain = connect().await;
    let mut wrapped = Client::new(connect().await, &config());
    let span = tracing::info_span!("errors");
    async {
        for sql in ["SELECT 1/0", "SELECT * FROM no_such_table", "SELEC 1", "SELECT $1::int"] {
            let a = plain.query(sql, &[]).await.unwrap_err();
            let b = wrapped.query(sql, &[]).await.unwrap_err();
            assert_eq!(a.code(), b.code(), "{sql}");
            assert_eq!(a.as_db_error().map(|e| e.message()), b.as_db_error().map(|e| e.message()));
            assert_eq!(a.to_string(), b.to_string());
            let a = plain.query_one("SELECT 1 WHERE false", &[]).await.unwrap_err();
            let b = wrapped.query_one("SELECT 1 WHERE false", &[]).await.unwrap_err();
            assert_eq!(a.to_string(), b.to_string());
        }
        // inside an aborted transaction: 25P02, and the carrier never masks it
        let tx = wrapped.transaction().await.unwrap();
        assert!(tx.query("SELECT 1/0", &[]).await.is_err());
        let e = tx.query("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION));
        tx.rollback().await.unwrap();
        // the connection works afterwards and carries the context again
        let row = wrapped.query_one("SELECT current_setting('application_name')", &[]).await.unwrap();
        assert!(decode_application_name(row.get(0)).is_some());
    }
    .instrument(span)
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_and_copy() {
    init_tracing();
    let client = Client::new(connect().await, &config());
    let table = format!("copy_{}", rand_hex());
    client.batch_execute(&format!("CREATE TABLE {table} (id int, name text)")).await.unwrap();
    let span = tracing::info_span!("copy");
    let tp = traceparent_of(&span);
    async {
        let sink = client.copy_in(&format!("COPY {table} FROM STDIN")).await.unwrap();
        let mut sink = std::pin::pin!(sink);
        for i in 0..100 {
            sink.send(bytes::Bytes::from(format!("{i}\tname{i}\n"))).await.unwrap();
        }
        assert_eq!(sink.finish().await.unwrap(), 100);
        let out = client.copy_out(&format!("COPY {table} TO STDOUT")).await.unwrap();
        let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
        let text: String = chunks.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        assert_eq!(text.lines().count(), 100);
        let stream = client.query_raw(&format!("SELECT id FROM {table} WHERE id >= $1"), [10i32]).await.unwrap();
        let rows: Vec<tokio_postgres::Row> = stream.try_collect().await.unwrap();
        assert_eq!(rows.len(), 90);
    }
    .instrument(span)
    .await;
    let lines = log_lines().await;
    for needle in [format!("COPY {table} FROM STDIN"), format!("COPY {table} TO STDOUT"), format!("FROM {table} WHERE")]
    {
        let l = executions(&lines, &needle);
        assert!(!l.is_empty(), "{needle}");
        for line in l {
            assert_eq!(carried(line).as_deref(), Some(tp.as_str()), "{line:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_dropped_mid_query() {
    init_tracing();
    let client = Client::new(connect().await, &config());
    let first = tracing::info_span!("slow");
    let first_tp = traceparent_of(&first);
    let tag = rand_hex();
    let slow = format!("SELECT pg_sleep(0.3), 'slow_{tag}'");
    let r = tokio::time::timeout(Duration::from_millis(50), client.query(&slow, &[]).instrument(first)).await;
    assert!(r.is_err(), "timed out");
    let second = tracing::info_span!("next");
    let second_tp = traceparent_of(&second);
    let row = client.query_one(&format!("SELECT 7, 'after_{tag}'"), &[]).instrument(second).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    let lines = log_lines().await;
    let l = executions(&lines, &format!("slow_{tag}"));
    assert_eq!(l.len(), 1);
    assert_eq!(carried(l[0]).as_deref(), Some(first_tp.as_str()));
    let l = executions(&lines, &format!("after_{tag}"));
    assert_eq!(l.len(), 1);
    assert_eq!(carried(l[0]).as_deref(), Some(second_tp.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_query_comment_mode_and_guc_carrier() {
    init_tracing();
    let cfg = Config::builder()
        .mode(Mode::PerQueryComment)
        .target(Target::guc("sqlcommenter.traceparent").unwrap())
        .build()
        .unwrap();
    let client = Client::new(connect().await, &cfg);
    let tag = rand_hex();
    let span = tracing::info_span!("pqc");
    let tp = traceparent_of(&span);
    async {
        for i in 0..3i64 {
            let row = client.query_one(&format!("SELECT $1::bigint AS pqc_{tag}"), &[&i]).await.unwrap();
            assert_eq!(row.get::<_, i64>(0), i);
        }
        // a prepared statement gets the session carrier (the custom setting)
        let stmt = client.prepare("SELECT current_setting('sqlcommenter.traceparent', true)").await.unwrap();
        let row = client.query_one(&stmt, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), tp);
    }
    .instrument(span)
    .await;
    assert_eq!(client.param_type_cache_len(), 1);
    let lines = log_lines().await;
    let l = executions(&lines, &format!("pqc_{tag}"));
    // the first call prepares the uncommented text once (named, to learn the types); every execution
    // is an unnamed statement with the comment
    let commented: Vec<_> = l.iter().filter(|l| l.message.contains("execute <unnamed>")).collect();
    assert_eq!(commented.len(), 3, "{l:#?}");
    for line in commented {
        assert!(line.message.contains(&format!("traceparent='{tp}'")), "{}", line.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_and_explicit_opentelemetry_contexts() {
    use opentelemetry::context::FutureExt as _;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    let client = Client::new(connect().await, &config());
    let mk = |flags| {
        let sc = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            flags,
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(sc)
    };
    let q = "SELECT current_setting('application_name')";
    let row = client.query_one(q, &[]).with_context(mk(TraceFlags::SAMPLED)).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let row = client.query_one(q, &[]).with_context(mk(TraceFlags::default())).await.unwrap();
    assert!(decode_application_name(row.get(0)).is_none(), "unsampled context must not be carried");
    // sample ratio 0: nothing carried even when sampled
    let none = Client::new(connect().await, &Config::builder().sample_ratio(0.0).build().unwrap());
    let row = none.query_one(q, &[]).with_context(mk(TraceFlags::SAMPLED)).await.unwrap();
    assert!(decode_application_name(row.get(0)).is_none());
}

/// 10,000 queries, a new trace per request: the pool's statement cache is the same with and without the
/// wrapper, and the server's prepared statements per connection too, plus the one carrier statement
/// (`SELECT pg_catalog.set_config($1, $2, $3)`, prepared once per connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_queries_leave_the_same_statements() {
    init_tracing();
    let tag = rand_hex();
    let queries: Vec<String> = (0..5).map(|i| format!("SELECT $1::int + {i} AS churn_{tag}")).collect();

    async fn count(c: &tokio_postgres::Client) -> i64 {
        // unnamed statement: the counting query itself is not counted
        c.query_typed_one("SELECT count(*) FROM pg_prepared_statements", &[]).await.unwrap().get(0)
    }

    // plain deadpool-postgres with prepare_cached
    let plain = pool(1);
    {
        let c = plain.get().await.unwrap();
        for r in 0..2000 {
            for q in &queries {
                let s = c.prepare_cached(q).await.unwrap();
                c.query_one(&s, &[&r]).await.unwrap();
            }
        }
    }
    let c = plain.get().await.unwrap();
    let (plain_count, plain_cache) = (count(&c).await, c.statement_cache.size());

    for mode in [Mode::SessionCarrier, Mode::PerQueryComment] {
        let wrapped = Pool::new(pool(1), Config::builder().mode(mode).build().unwrap());
        for r in 0..2000 {
            let span = tracing::info_span!("request", r);
            async {
                let c = wrapped.get().await.unwrap();
                for q in &queries {
                    let s = c.prepare_cached(q).await.unwrap();
                    c.query_one(&s, &[&r]).await.unwrap();
                }
            }
            .instrument(span)
            .await;
        }
        let c = wrapped.get().await.unwrap();
        assert_eq!(count(c.get_ref()).await, plain_count + 1, "{mode:?}");
        let carrier: i64 = c
            .get_ref()
            .query_typed_one(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1",
                &[(&sqlcommenter::carrier::SET_CONFIG_SQL, tokio_postgres::types::Type::TEXT)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(carrier, 1, "{mode:?}");
        assert_eq!(c.get_ref().statement_cache.size(), plain_cache, "{mode:?}");
    }
    assert_eq!(plain_count, 5);

    // text queries in per-query mode: no statements left at all, as with plain query_typed
    let pqc = Client::new(connect().await, &Config::builder().mode(Mode::PerQueryComment).build().unwrap());
    for r in 0..200 {
        let span = tracing::info_span!("request", r);
        async {
            for q in &queries {
                pqc.query_one(q.as_str(), &[&r]).await.unwrap();
            }
        }
        .instrument(span)
        .await;
    }
    assert_eq!(count(pqc.get_ref()).await, 0);
    assert_eq!(pqc.param_type_cache_len(), 5);
}

/// deadpool's `RecyclingMethod::Clean` runs `RESET ALL` between checkouts, resetting the carrier behind
/// the wrapper's back: the next request, even under the same context, must set it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recycling_with_reset_all() {
    init_tracing();
    let mut cfg = deadpool_postgres::Config::new();
    cfg.url = Some(cluster().url("postgres"));
    cfg.pool = Some(deadpool_postgres::PoolConfig::new(1));
    cfg.manager =
        Some(deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Clean });
    let raw = cfg.create_pool(Some(deadpool_postgres::Runtime::Tokio1), tokio_postgres::NoTls).unwrap();
    let pool = Pool::new(raw, config());
    let span = tracing::info_span!("same-request");
    let tp = traceparent_of(&span);
    async {
        for _ in 0..3 {
            let c = pool.get().await.unwrap();
            let stmt = c.prepare_cached("SELECT current_setting('application_name')").await.unwrap();
            let row = c.query_one(&stmt, &[]).await.unwrap();
            assert_eq!(decode_application_name(row.get(0)).map(|(_, t)| t.to_string()), Some(tp.clone()));
        }
    }
    .instrument(span)
    .await;
}

/// Every target is written and cleared; the name of the named form is escaped by the parameter, and a
/// clear restores the connection's own `application_name` (from its startup packet), not the configured one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_targets() {
    init_tracing();
    let targets = [
        Target::default(),
        Target::ApplicationName(AppNameFormat::Named),
        Target::guc("sqlcommenter.traceparent").unwrap(),
        Target::PgTracing,
    ];
    for target in targets {
        let cfg = Config::builder().application_name(r"o'b\x").target(target.clone()).build().unwrap();
        let conninfo = format!("{} application_name=tp-conn", cluster().keyword_conn_str("postgres"));
        let (pg, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let client = Client::new(pg, &cfg);
        let q = "SELECT current_setting('application_name'), current_setting('sqlcommenter.traceparent', true), \
                 current_setting('pg_tracing.trace_context', true)";
        let span = tracing::info_span!("form");
        let tp = traceparent_of(&span);
        let row = client.query_one(q, &[]).instrument(span).await.unwrap();
        let (app, guc, pgt): (String, Option<String>, Option<String>) = (row.get(0), row.get(1), row.get(2));
        match &target {
            Target::ApplicationName(AppNameFormat::Bare) => assert_eq!(app, tp),
            Target::ApplicationName(AppNameFormat::Named) => assert_eq!(app, format!(r"o'b\x@{tp}")),
            Target::Guc(_) => assert_eq!(guc.as_deref(), Some(tp.as_str())),
            Target::PgTracing => assert_eq!(pgt, Some(format!("traceparent='{tp}'"))),
        }
        assert_eq!(
            target.read(&target.value("", &sqlcommenter::TraceParent::parse(&tp).unwrap())).unwrap().to_string(),
            tp
        );
        // no span: cleared
        let row = client.query_one(q, &[]).await.unwrap();
        let (app, guc, pgt): (String, Option<String>, Option<String>) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(app, "tp-conn", "{target:?}");
        assert!(guc.unwrap_or_default().is_empty(), "{target:?}");
        assert!(pgt.unwrap_or_default().is_empty(), "{target:?}");
    }
}

/// The application's own `RESET ALL` (or `DISCARD ALL`, `SET application_name`) in the middle of a traced
/// request: the next statement still reaches the server under the request's trace (read with the core lexer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_resets_mid_request_keep_the_context() {
    init_tracing();
    let client = Client::new(connect().await, &config());
    let tag = rand_hex();
    let span = tracing::info_span!("resets");
    let tp = traceparent_of(&span);
    async {
        let stmt = client.prepare(&format!("SELECT $1::int AS reset_{tag}")).await.unwrap();
        for (i, sql) in ["RESET ALL", "SET application_name = 'web'", "SELECT 'RESET ALL'"].iter().enumerate() {
            client.query_one(&stmt, &[&(i as i32)]).await.unwrap();
            client.batch_execute(sql).await.unwrap();
            client.query_one(&stmt, &[&(100 + i as i32)]).await.unwrap();
        }
        // DISCARD ALL also deallocates prepared statements (the carrier's too): text queries still carry
        client.batch_execute("DISCARD ALL").await.unwrap();
        for i in 0..2 {
            client.query_one(&format!("SELECT {i} AS reset_{tag}"), &[]).await.unwrap();
        }
    }
    .instrument(span)
    .await;
    let lines = log_lines().await;
    let l = executions(&lines, &format!("reset_{tag}"));
    assert_eq!(l.len(), 8, "{l:#?}");
    for line in l {
        assert_eq!(line.application_name, tp, "{line:?}");
    }
}

/// Inside a transaction the carrier is transaction-scoped: the statements carry it, and once the
/// transaction ended nothing is left on the connection (another session sees its own name again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_scoped_carrier_leaves_nothing_behind() {
    init_tracing();
    let mut client = Client::new(connect().await, &config());
    let pid: i32 = client.get_ref().query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let tag = rand_hex();
    let span = tracing::info_span!("in-tx");
    let tp = traceparent_of(&span);
    async {
        let tx = client.transaction().await.unwrap();
        tx.query_one(&format!("SELECT 1 AS local_{tag}"), &[]).await.unwrap();
        tx.commit().await.unwrap();
    }
    .instrument(span)
    .await;
    let other = connect().await;
    let seen: String =
        other.query_one("SELECT application_name FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap().get(0);
    assert_eq!(seen, "", "carrier left on the connection");
    let lines = log_lines().await;
    let l = executions(&lines, &format!("local_{tag}"));
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].application_name, tp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_builder_settings() {
    init_tracing();
    let mut client = Client::new(connect().await, &config());
    let span = tracing::info_span!("iso");
    let tp = traceparent_of(&span);
    async {
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::Serializable)
            .read_only(true)
            .start()
            .await
            .unwrap();
        let row = tx
            .query_one(
                "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only'), \
                 current_setting('application_name')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "serializable");
        assert_eq!(row.get::<_, String>(1), "on");
        assert_eq!(decode_application_name(row.get(2)).map(|(_, t)| t.to_string()), Some(tp.clone()));
        tx.commit().await.unwrap();
    }
    .instrument(span)
    .await;
}
