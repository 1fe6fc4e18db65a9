//! MySQL / MariaDB through `TracedMySqlPool`, checked on the server: the general log (`mysql.general_log`)
//! shows each statement's own record with its own task's trace id, and the server's prepared-statement
//! counters are as with plain sqlx.
//!
//! Needs a MariaDB/MySQL server at `SQLCOMMENTER_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`, a user
//! that may create databases and set global variables). Each test creates its own database and drops it
//! after. Without a reachable server the tests print a loud SKIPPED line and pass — unless `CI=true`,
//! where they fail. The tests of this binary run one at a time: they switch the (global) general log on
//! and read the (global) `Prepared_stmt_count`.
#![cfg(feature = "mysql")]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use sqlcommenter::{parse_context, parse_tags, Dialect, TraceParent};
use sqlcommenter_sqlx::mysql::{MySqlConfig, TracedMySqlConnection, TracedMySqlPool};
use sqlcommenter_sqlx::TagScope;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPoolOptions, MySqlRow};
use sqlx::{Connection, Executor, MySqlPool, Row};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

fn server_url() -> String {
    std::env::var("SQLCOMMENTER_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// One test at a time (the general log and `Prepared_stmt_count` are global).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A database of the test's own on the server, dropped after the test body ran (also after a panic).
struct Db {
    admin: MySqlPool,
    name: String,
}

impl Db {
    fn url(&self) -> String {
        format!("{}/{}", server_url(), self.name)
    }

    async fn pool(&self, max: u32) -> MySqlPool {
        MySqlPoolOptions::new().max_connections(max).connect(&self.url()).await.expect("connect to the test database")
    }

    async fn connection(&self) -> MySqlConnection {
        MySqlConnection::connect(&self.url()).await.expect("connect to the test database")
    }

    /// A connection over the server's Unix socket when it is on this machine, else over TCP. sqlx 0.9.0
    /// does not set TCP_NODELAY (sqlx#4335): over TCP every command after an unanswered
    /// COM_STMT_CLOSE waits for the server's delayed ACK (~40 ms), so 10,000 traced requests take minutes.
    async fn local_connection(&self) -> (MySqlConnection, &'static str) {
        let rows = admin_rows(&self.admin, "SELECT @@socket").await;
        let socket: Option<String> = rows.first().and_then(|r| r.try_get(0).ok());
        if let Some(path) = socket.filter(|p| std::path::Path::new(p).exists()) {
            let options: MySqlConnectOptions = self.url().parse().unwrap();
            if let Ok(conn) = MySqlConnection::connect_with(&options.socket(path)).await {
                return (conn, "unix socket");
            }
        }
        (self.connection().await, "TCP")
    }
}

/// Runs `body` with a fresh database, or skips loudly when no server is reachable (fails under `CI=true`).
async fn with_db<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Arc<Db>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _serial = SERIAL.lock().await;
    let probe = MySqlPoolOptions::new().max_connections(2).acquire_timeout(std::time::Duration::from_secs(5));
    let admin = match probe.connect(&server_url()).await {
        Ok(p) => p,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: no MySQL/MariaDB server at {}: {e} (CI=true: not skipping)", server_url())
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no MySQL/MariaDB server at {}: {e}", server_url());
            return;
        }
    };
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    let name = format!("sqlcommenter_{}_{}_{nanos}", test.chars().take(20).collect::<String>(), std::process::id());
    admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`"))).await.expect("create database");
    let db = Arc::new(Db { admin: admin.clone(), name: name.clone() });
    let saved = LogSettings::read(&admin).await;
    let outcome = tokio::spawn(body(db)).await;
    saved.restore(&admin).await;
    admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE `{name}`"))).await.expect("drop database");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The server's `general_log` and `log_output`, as they were before a test (restored after it, also after
/// a panic).
struct LogSettings {
    on: bool,
    output: String,
}

impl LogSettings {
    async fn read(admin: &MySqlPool) -> LogSettings {
        let rows = admin_rows(admin, "SELECT @@global.general_log, @@global.log_output").await;
        LogSettings { on: rows[0].get::<i64, _>(0) != 0, output: rows[0].get(1) }
    }

    async fn restore(&self, admin: &MySqlPool) {
        admin_rows(admin, if self.on { "SET GLOBAL general_log = ON" } else { "SET GLOBAL general_log = OFF" }).await;
        set_log_output(admin, &self.output).await;
    }
}

/// The general log, switched on into `mysql.general_log` (and wherever it went before); [`with_db`]
/// restores the previous settings.
struct GeneralLog {
    admin: MySqlPool,
    since: String,
}

/// One general-log record.
#[derive(Debug, Clone)]
struct Record {
    thread: u64,
    command: String,
    argument: String,
}

impl Record {
    fn traceparent(&self) -> Option<TraceParent> {
        parse_context(&self.argument, Dialect::MySql).map(|c| c.traceparent)
    }
}

impl GeneralLog {
    async fn start(admin: &MySqlPool) -> GeneralLog {
        let rows = admin_rows(admin, "SELECT @@global.log_output, CAST(NOW(6) AS CHAR)").await;
        let output: String = rows[0].get(0);
        let since: String = rows[0].get(1);
        if !output.to_ascii_uppercase().contains("TABLE") {
            let with_table =
                if output.eq_ignore_ascii_case("NONE") { "TABLE".to_owned() } else { format!("{output},TABLE") };
            set_log_output(admin, &with_table).await;
        }
        admin.execute("SET GLOBAL general_log = ON").await.unwrap();
        GeneralLog { admin: admin.clone(), since }
    }

    /// The records of the connections that connected to `db` since the log was switched on.
    async fn records(&self, db: &str) -> Vec<Record> {
        let rows = admin_rows(
            &self.admin,
            &format!(
                // No ORDER BY: records of one thread may share a timestamp, and the CSV table is read in the
                // order the server logged (each thread's own order).
                "SELECT thread_id, command_type, argument FROM mysql.general_log WHERE event_time >= '{}'",
                self.since
            ),
        )
        .await;
        let all: Vec<Record> = rows
            .iter()
            .map(|r| Record {
                thread: r.get::<u64, _>(0),
                command: r.get::<String, _>(1),
                argument: String::from_utf8_lossy(&r.get::<Vec<u8>, _>(2)).into_owned(),
            })
            .collect();
        let connect = format!(" on {db} ");
        let ours: HashSet<u64> =
            all.iter().filter(|r| r.command == "Connect" && r.argument.contains(&connect)).map(|r| r.thread).collect();
        all.into_iter().filter(|r| ours.contains(&r.thread)).collect()
    }
}

// The tests' own statements run as text (`raw_sql`, COM_QUERY): they prepare nothing, so the prepared
// statement counters count only the statements under test.

/// Rows of a test-controlled text statement.
async fn admin_rows(admin: &MySqlPool, sql: &str) -> Vec<MySqlRow> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).fetch_all(admin).await.unwrap()
}

async fn set_log_output(admin: &MySqlPool, value: &str) {
    assert!(value.bytes().all(|b| b.is_ascii_alphabetic() || b == b','), "{value}");
    admin_rows(admin, &format!("SET GLOBAL log_output = '{value}'")).await;
}

/// The server's global status counter `name`.
async fn status(admin: &MySqlPool, name: &str) -> i64 {
    let rows = admin_rows(admin, &format!("SHOW GLOBAL STATUS LIKE '{name}'")).await;
    rows[0].get::<String, _>(1).parse().unwrap()
}

/// `Prepared_stmt_count` once a closed connection's statements are gone (the server drops them when it
/// has processed the client's COM_QUIT, after `close()` returned).
async fn prepared_after_close(admin: &MySqlPool, expected: i64) -> i64 {
    let mut now = status(admin, "Prepared_stmt_count").await;
    for _ in 0..100 {
        if now == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        now = status(admin, "Prepared_stmt_count").await;
    }
    now
}

/// A session status counter of `conn`.
async fn session_status(conn: &mut MySqlConnection, name: &str) -> i64 {
    let sql = format!("SHOW SESSION STATUS LIKE '{name}'");
    let row = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_one(conn).await.unwrap();
    row.get::<String, _>(1).parse().unwrap()
}

/// A distinct sampled traceparent for request `n` of test `test`.
fn tp(test: u8, n: u32) -> TraceParent {
    let mut trace = [0u8; 16];
    trace[0] = 0xb0 | (test & 0x0f);
    trace[1] = 0x17;
    trace[12..].copy_from_slice(&n.to_be_bytes());
    let mut span = [0u8; 8];
    span[0] = test;
    span[1] = 0x22;
    span[4..].copy_from_slice(&n.to_be_bytes());
    TraceParent::new(trace, span, 1).unwrap()
}

/// An OpenTelemetry context whose (remote) span is `tp`.
fn otel(tp: &TraceParent) -> opentelemetry::Context {
    let sc = SpanContext::new(
        TraceId::from_bytes(tp.trace_id()),
        SpanId::from_bytes(tp.parent_id()),
        TraceFlags::new(tp.flags()),
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(sc)
}

fn install_tracing() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

fn current_trace_id() -> [u8; 16] {
    tracing::Span::current().context().span().span_context().trace_id().to_bytes()
}

const TASKS: u32 = 32;

/// 32 concurrent tasks, each in its own span, on a pool of 8: every statement's own general-log record
/// (Execute for statements with arguments, Query for the text protocol and the `BEGIN`) carries its task's
/// trace id; work spawned outside the span carries none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_spans_each_statement_carries_its_own_trace() {
    install_tracing();
    with_db("spans", |db| async move {
        let log = GeneralLog::start(&db.admin).await;
        let setup = db.pool(1).await;
        setup.execute("CREATE TABLE orders (id INT PRIMARY KEY, task INT NOT NULL, note TEXT)").await.unwrap();
        setup.close().await;

        let config = MySqlConfig::builder().application("mysql-test").build().unwrap();
        let pool = TracedMySqlPool::new(db.pool(8).await, &config);
        let seen: Arc<Mutex<HashMap<u32, [u8; 16]>>> = Arc::default();
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let (pool, seen) = (pool.clone(), seen.clone());
            let span = tracing::info_span!("request", i);
            tasks.push(tokio::spawn(
                async move {
                    seen.lock().unwrap().insert(i, current_trace_id());
                    // binary protocol through &pool, several times
                    for k in 0..3u32 {
                        let v: i64 = sqlx::query_scalar("SELECT ? + 0 AS span_probe /* task probe */")
                            .bind(i64::from(i * 10 + k))
                            .fetch_one(&pool)
                            .await
                            .unwrap();
                        assert_eq!(v, i64::from(i * 10 + k));
                        tokio::task::yield_now().await;
                    }
                    {
                        // one connection for several statements; the text protocol (no arguments)
                        let mut conn = pool.acquire().await.unwrap();
                        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SELECT {i} AS text_probe")))
                            .execute(&mut conn)
                            .await
                            .unwrap();
                        sqlx::query("INSERT INTO orders (id, task, note) VALUES (?, ?, 'it''s # not a comment')")
                            .bind(i * 2)
                            .bind(i)
                            .execute(&mut conn)
                            .await
                            .unwrap();
                        // a transaction (on the request's connection, or of its own from the pool): the BEGIN
                        // and the statements inside carry the trace
                        let mut tx = if i % 2 == 0 {
                            conn.begin().await.unwrap()
                        } else {
                            drop(conn);
                            pool.begin().await.unwrap()
                        };
                        sqlx::query("INSERT INTO orders (id, task) VALUES (?, ?)")
                            .bind(i * 2 + 1)
                            .bind(i)
                            .execute(&mut tx)
                            .await
                            .unwrap();
                        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE task = ?")
                            .bind(i)
                            .fetch_one(&mut tx)
                            .await
                            .unwrap();
                        assert_eq!(n, 2);
                        tx.commit().await.unwrap();
                        // the connection goes back before the un-instrumented task below needs one
                    }
                    // spawned from inside the span, not instrumented: no trace
                    let pool2 = pool.clone();
                    tokio::spawn(async move {
                        sqlx::query("SELECT ? + 0 AS unspanned_probe")
                            .bind(i64::from(i))
                            .execute(&pool2)
                            .await
                            .unwrap();
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
        // outside any span, on the caller's task
        sqlx::query("SELECT ? + 0 AS outside_probe").bind(1_i64).execute(&pool).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.values().collect::<HashSet<_>>().len(), TASKS as usize, "distinct traces");
        let by_trace: HashMap<[u8; 16], u32> = seen.iter().map(|(i, t)| (*t, *i)).collect();

        let records = log.records(&db.name).await;
        let task_of = |r: &Record| -> u32 {
            let tp = r.traceparent().unwrap_or_else(|| panic!("no traceparent in {r:?}"));
            by_trace[&tp.trace_id()]
        };
        let executed = |needle: &str, command: &str| -> Vec<Record> {
            records.iter().filter(|r| r.command == command && r.argument.contains(needle)).cloned().collect()
        };
        // `SELECT ? + 0`: the Execute record shows the bound value, so the task is known from the server alone.
        let probes = executed("span_probe", "Execute");
        assert_eq!(probes.len(), 3 * TASKS as usize);
        for r in &probes {
            let value: u32 = r.argument.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert_eq!(task_of(r), value / 10, "{r:?}");
            // the application's own comment is kept, ours added after it, and the static tags are there
            assert!(r.argument.contains("/* task probe */"), "{r:?}");
            assert_eq!(
                parse_tags(&r.argument, Dialect::MySql).get("application").map(String::as_str),
                Some("mysql-test"),
                "{r:?}"
            );
        }
        let texts = executed("text_probe", "Query");
        assert_eq!(texts.len(), TASKS as usize);
        for r in &texts {
            let value: u32 = r.argument.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert_eq!(task_of(r), value, "{r:?}");
        }
        // The INSERTs' values name the task too.
        let inserts = executed("INSERT INTO orders", "Execute");
        assert_eq!(inserts.len(), 2 * TASKS as usize);
        for r in &inserts {
            let args = r.argument.split("VALUES (").nth(1).unwrap();
            let values = args.split(')').next().unwrap();
            let task: u32 = values.split(',').nth(1).unwrap().trim().parse().unwrap();
            assert_eq!(task_of(r), task, "{r:?}");
        }
        let counts = executed("count(*) FROM orders WHERE task =", "Execute");
        assert_eq!(counts.len(), TASKS as usize);
        for r in &counts {
            let task: u32 =
                r.argument.split("task = ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
            assert_eq!(task_of(r), task, "{r:?}");
        }
        // Each BEGIN carries a trace; per connection, the statements after it until COMMIT carry the same one.
        let begins: Vec<&Record> = records.iter().filter(|r| r.argument.starts_with("BEGIN")).collect();
        assert_eq!(begins.len(), TASKS as usize);
        let begun: HashSet<u32> = begins.iter().map(|r| task_of(r)).collect();
        assert_eq!(begun.len(), TASKS as usize, "every task's BEGIN carries its own trace");
        for b in &begins {
            let thread: Vec<&Record> = records.iter().filter(|r| r.thread == b.thread).collect();
            let at = thread.iter().position(|r| std::ptr::eq(*r, *b)).unwrap();
            let inside: Vec<&&Record> = thread[at + 1..]
                .iter()
                .take_while(|r| r.argument != "COMMIT")
                .filter(|r| r.command == "Execute" || r.command == "Query")
                .collect();
            assert_eq!(inside.len(), 2, "{inside:?}");
            assert!(inside.iter().all(|r| task_of(r) == task_of(b)), "{inside:?}");
        }
        // No trace outside a span.
        let unspanned = executed("unspanned_probe", "Execute");
        assert_eq!(unspanned.len(), TASKS as usize);
        let outside = executed("outside_probe", "Execute");
        assert_eq!(outside.len(), 1);
        for r in unspanned.iter().chain(&outside) {
            assert!(r.traceparent().is_none(), "{r:?}");
            assert_eq!(
                parse_tags(&r.argument, Dialect::MySql).get("db_driver").map(String::as_str),
                Some("sqlx:0.9"),
                "{r:?}"
            );
        }
        // No record of ours carries a trace id that is not one of the tasks'.
        for r in &records {
            if let Some(tp) = r.traceparent() {
                assert!(by_trace.contains_key(&tp.trace_id()), "{r:?}");
            }
        }
    })
    .await;
}

const REQUESTS: u32 = 10_000;
const QUERIES: [&str; 2] = ["SELECT ? + 1 AS cache_q1", "SELECT ? + 2 AS cache_q2"];

/// What one connection leaves prepared: the server's `Prepared_stmt_count` delta, sqlx's cache size,
/// and the session's `Com_stmt_prepare`.
#[derive(Debug, PartialEq, Eq)]
struct Prepared {
    server: i64,
    cached: usize,
    prepares: i64,
}

/// 10,000 requests, each under a new trace id, and an untraced request every 100: the server's prepared
/// statements and sqlx's cache are exactly as with plain sqlx, and stay flat during the run. The server's
/// `Prepared_stmt_count` is global: nothing else may prepare statements on the server meanwhile (the
/// tests of this binary run one at a time; do not run the MySQL benchmark beside them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_traced_requests_leave_prepared_statements_as_plain_sqlx() {
    with_db("prepared", |db| async move {
        let admin = db.admin.clone();
        let base = status(&admin, "Prepared_stmt_count").await;

        let (mut plain, _) = db.local_connection().await;
        let before = session_status(&mut plain, "Com_stmt_prepare").await;
        for r in 0..REQUESTS {
            for q in QUERIES {
                sqlx::query(q).bind(i64::from(r)).fetch_one(&mut plain).await.unwrap();
            }
        }
        let plain_prepared = Prepared {
            server: status(&admin, "Prepared_stmt_count").await - base,
            cached: plain.cached_statements_size(),
            prepares: session_status(&mut plain, "Com_stmt_prepare").await - before,
        };
        plain.close().await.unwrap();
        assert_eq!(plain_prepared, Prepared { server: 2, cached: 2, prepares: 2 });
        assert_eq!(prepared_after_close(&admin, base).await, base);

        let config = MySqlConfig::builder().application("prepared-test").build().unwrap();
        let (raw, transport) = db.local_connection().await;
        eprintln!("10,000 traced requests over {transport}");
        let mut conn = TracedMySqlConnection::new(raw, &config);
        let before = session_status(conn.inner_mut(), "Com_stmt_prepare").await;
        let mut during = Vec::new();
        let mut traced = 0;
        for r in 0..REQUESTS {
            let request = async {
                for q in QUERIES {
                    let v: i64 = sqlx::query_scalar(q).bind(i64::from(r)).fetch_one(&mut conn).await.unwrap();
                    assert!(v > i64::from(r));
                }
            };
            if r % 100 == 0 {
                request.await;
            } else {
                traced += 1;
                request.with_context(otel(&tp(2, r))).await;
            }
            if r % 1000 == 999 {
                during.push(status(&admin, "Prepared_stmt_count").await - base);
            }
        }
        let wrapped = Prepared {
            server: status(&admin, "Prepared_stmt_count").await - base,
            cached: conn.inner_mut().cached_statements_size(),
            prepares: session_status(conn.inner_mut(), "Com_stmt_prepare").await - before,
        };
        // The two static-tag texts are the connection's only prepared statements, from the first untraced
        // request on; each traced statement was prepared, executed and closed.
        assert_eq!(during, vec![2; (REQUESTS / 1000) as usize], "Prepared_stmt_count during the run");
        assert_eq!((wrapped.server, wrapped.cached), (plain_prepared.server, plain_prepared.cached));
        assert_eq!(wrapped.prepares, 2 + 2 * traced, "one uncached prepare per traced statement");
        let closes = session_status(conn.inner_mut(), "Com_stmt_close").await;
        assert_eq!(closes, 2 * traced, "each traced statement closed");
        conn.into_inner().close().await.unwrap();
        assert_eq!(prepared_after_close(&admin, base).await, base);
    })
    .await;
}

/// Untraced statements (no span, an unsampled context, sampled out by the ratio) carry only the static
/// and scope tags: one Prepare per text on the connection, then Executes of that statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tag_statements_are_prepared_once_and_reused() {
    with_db("static", |db| async move {
        let log = GeneralLog::start(&db.admin).await;
        // The ratio keeps trace ids whose low 64 bits are below 1e-12 × 2^64 (about 1.8e7): these are above.
        let sampled_out = |n: u32| {
            let mut trace = tp(3, n).trace_id();
            trace[8] = 0xff;
            TraceParent::new(trace, [9; 8], 1).unwrap()
        };
        let config = MySqlConfig::builder().application("static-test").sample_ratio(1e-12).build().unwrap();
        let mut conn = TracedMySqlConnection::new(db.connection().await, &config);
        for n in 0..50u32 {
            let q = sqlx::query("SELECT ? + 0 AS static_probe").bind(i64::from(n));
            match n % 3 {
                0 => q.fetch_one(&mut conn).await.map(drop).unwrap(),
                1 => q.fetch_one(&mut conn).with_context(otel(&sampled_out(n))).await.map(drop).unwrap(),
                _ => {
                    let unsampled = TraceParent::new(tp(3, n).trace_id(), [7; 8], 0).unwrap();
                    q.fetch_one(&mut conn).with_context(otel(&unsampled)).await.map(drop).unwrap()
                }
            }
        }
        let scope = TagScope::new([("route", "/orders/{id}")]).unwrap();
        scope
            .run(async {
                for n in 0..10i64 {
                    sqlx::query("SELECT ? + 0 AS static_probe").bind(n).fetch_one(&mut conn).await.unwrap();
                }
            })
            .await;
        let cached = conn.inner_mut().cached_statements_size();
        let records = log.records(&db.name).await;
        assert_eq!(cached, 2);
        let prepares: Vec<&Record> =
            records.iter().filter(|r| r.command == "Prepare" && r.argument.contains("static_probe")).collect();
        assert_eq!(prepares.len(), 2, "{prepares:#?}");
        assert_eq!(
            prepares[0].argument,
            "SELECT ? + 0 AS static_probe /*application='static-test',db_driver='sqlx%3A0.9'*/"
        );
        assert_eq!(
            prepares[1].argument,
            "SELECT ? + 0 AS static_probe /*application='static-test',db_driver='sqlx%3A0.9',route='%2Forders%2F%7Bid%7D'*/"
        );
        let executes: Vec<&Record> =
            records.iter().filter(|r| r.command == "Execute" && r.argument.contains("static_probe")).collect();
        assert_eq!(executes.len(), 60);
        assert!(executes.iter().all(|r| r.traceparent().is_none()), "{executes:#?}");
        assert_eq!(executes.iter().filter(|r| r.argument.contains("route=")).count(), 10);
    })
    .await;
}

/// MySQL syntax around the comment: `#` and `-- ` comments, backslash escapes, hints and executable
/// comments keep working, multi-statement text, and errors are the server's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_syntax_survives_the_comment() {
    with_db("syntax", |db| async move {
        let log = GeneralLog::start(&db.admin).await;
        let config = MySqlConfig::builder().application("syntax-test").build().unwrap();
        let mut conn = TracedMySqlConnection::new(db.connection().await, &config);
        let t = tp(4, 1);
        async {
            let v: String =
                sqlx::query_scalar("SELECT 'it\\'s -- x' AS esc # trailing").fetch_one(&mut conn).await.unwrap();
            assert_eq!(v, "it's -- x");
            let v: i64 = sqlx::query_scalar("SELECT /*+ MAX_EXECUTION_TIME(1000) */ ? + 1 AS hinted -- done")
                .bind(1_i64)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(v, 2);
            let v: i64 = sqlx::query_scalar("SELECT 1 /*! + 41 */ AS executable").fetch_one(&mut conn).await.unwrap();
            assert_eq!(v, 42);
            sqlx::raw_sql("CREATE TABLE t (a INT); INSERT INTO t VALUES (1), (2);").execute(&mut conn).await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(&mut conn).await.unwrap();
            assert_eq!(n, 2);
        }
        .with_context(otel(&t))
        .await;
        // Errors: the same code and class as plain sqlx.
        let mut plain = db.connection().await;
        for sql in ["SELECT * FROM missing_table WHERE a = ?", "SELEC ? + 1"] {
            let traced = async { sqlx::query(sql).bind(1_i64).execute(&mut conn).await.unwrap_err() }
                .with_context(otel(&t))
                .await;
            let direct = sqlx::query(sql).bind(1_i64).execute(&mut plain).await.unwrap_err();
            let (traced, direct) = (traced.as_database_error().unwrap(), direct.as_database_error().unwrap());
            assert_eq!(traced.code(), direct.code(), "{sql}");
            assert_eq!(traced.kind(), direct.kind(), "{sql}");
        }
        // The connection is fine after errors.
        let v: i64 = sqlx::query_scalar("SELECT ? + 0").bind(5_i64).fetch_one(&mut conn).await.unwrap();
        assert_eq!(v, 5);
        let records = log.records(&db.name).await;
        for needle in ["AS esc", "AS hinted", "AS executable", "INSERT INTO t VALUES", "FROM t"] {
            let r = records
                .iter()
                .find(|r| (r.command == "Query" || r.command == "Execute") && r.argument.contains(needle))
                .unwrap_or_else(|| panic!("{needle} not logged"));
            assert_eq!(r.traceparent(), Some(t), "{r:?}");
        }
        let hinted = records.iter().find(|r| r.command == "Execute" && r.argument.contains("AS hinted")).unwrap();
        assert!(hinted.argument.starts_with("SELECT /*+ MAX_EXECUTION_TIME(1000) */ 1 + 1 AS hinted /*"), "{hinted:?}");
        assert!(hinted.argument.ends_with("*/ -- done"), "{hinted:?}");
    })
    .await;
}
