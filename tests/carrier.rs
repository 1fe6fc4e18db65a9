//! The carrier protocol against a real PostgreSQL 15 with pg_stat_statements: what the server keeps,
//! logs and shows for the core's carrier statement, in both scopes, and what OpenTelemetry's tools read.

use sqlcommenter::carrier::{self, Action, Scope, Target, SET_CONFIG_SQL};
use sqlcommenter::TraceParent;
use sqlcommenter_testpg::{Cluster, LogFormat};

fn start() -> Cluster {
    let pg = Cluster::builder()
        .setting("log_min_duration_statement", "0")
        .setting("pg_stat_statements.track_utility", "on")
        .log_format(LogFormat::Stderr { prefix: "%m [%p] app=<%a> ".into() })
        .preload(&["pg_stat_statements"])
        .start()
        .expect("start PostgreSQL");
    pg.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").expect("pg_stat_statements");
    pg
}

async fn connect(pg: &Cluster, app: &str) -> tokio_postgres::Client {
    let conn = format!("{} application_name={app}", pg.keyword_conn_str("postgres"));
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn tp(i: u64) -> TraceParent {
    let mut trace = [0x5au8; 16];
    trace[8..].copy_from_slice(&(i + 1).to_be_bytes());
    TraceParent::new(trace, [0x33; 8], 1).unwrap()
}

fn pss_count(pg: &Cluster, like: &str) -> usize {
    pg.query(&format!("SELECT count(*) FROM pg_stat_statements WHERE query ILIKE '{like}'")).unwrap().parse().unwrap()
}

/// 10,000 carrier writes with a new trace each, through the parameterized statement and the literal form,
/// in both scopes, leave two pg_stat_statements entries (one per form); the same number of `SET` texts
/// leave one entry per trace (why the carrier never uses `SET`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_stat_statements_keeps_one_entry_per_form_for_any_number_of_traces() {
    let pg = start();
    let client = connect(&pg, "pss").await;
    client.simple_query("SELECT pg_stat_statements_reset()").await.unwrap();
    let target = Target::default();
    let stmt = client.prepare(SET_CONFIG_SQL).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..9_000 {
        let scope = if i % 2 == 0 { Scope::Session } else { Scope::Transaction };
        let w = target.write(&Action::Set(tp(i)), scope, "pss");
        let [var, value, _] = w.params();
        let (var, value) = (var.to_owned(), value.to_owned());
        // Pipelined: tokio-postgres sends requests in order without waiting.
        let c = &client;
        let s = &stmt;
        pending.push(async move { c.execute(s, &[&var, &value, &scope.is_local()]).await });
        if pending.len() == 500 {
            for r in futures_join(std::mem::take(&mut pending)).await {
                r.unwrap();
            }
        }
    }
    for r in futures_join(pending).await {
        r.unwrap();
    }
    for i in 9_000..10_000 {
        let w = target.write(&Action::Set(tp(i)), Scope::Transaction, "pss");
        client.simple_query(&w.literal_sql()).await.unwrap();
    }
    for i in 0..50 {
        client.simple_query(&format!("SET application_name TO '{}'", tp(20_000 + i))).await.unwrap();
    }
    assert_eq!(pss_count(&pg, "%set_config%"), 2, "{}", pg.query("SELECT query FROM pg_stat_statements").unwrap());
    assert_eq!(pss_count(&pg, "SET application_name%"), 50);
}

/// Joins futures in order (no extra dependency for a test).
async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await);
    }
    out
}

/// A transaction-scoped carrier: the statement's own log line carries it, `pg_stat_activity` shows it
/// while the statement runs — as the bare W3C traceparent the OpenTelemetry Collector's postgresql
/// receiver parses — and it is gone once the transaction ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_scoped_carrier_is_seen_while_the_statement_runs_and_then_gone() {
    let pg = start();
    let client = connect(&pg, "web").await;
    let observer = connect(&pg, "observer").await;
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let target = Target::default();
    let ctx = tp(77);
    let w = target.write(&Action::Set(ctx), Scope::Transaction, "web");
    let stmt = client.prepare(SET_CONFIG_SQL).await.unwrap();
    let tx = client.simple_query("BEGIN").await.unwrap();
    drop(tx);
    let [var, value, _] = w.params();
    client.execute(&stmt, &[&var, &value, &true]).await.unwrap();
    let running = client.query("SELECT pg_sleep(0.6) /*marker_carrier_running*/", &[]);
    let sample = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let row = observer
            .query_one("SELECT application_name, state FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, String>(1))
    };
    let (r, (app, state)) = tokio::join!(running, sample);
    r.unwrap();
    assert_eq!(state, "active");
    // What the OpenTelemetry Collector does with application_name: parse it as a W3C traceparent.
    let read = TraceParent::parse(&app).expect("application_name is a bare W3C traceparent");
    assert_eq!(read.trace_id_hex(), ctx.trace_id_hex());
    client.simple_query("COMMIT").await.unwrap();
    let after: String = observer
        .query_one("SELECT application_name FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, "web");
    // The server's log collector writes asynchronously: wait for the COMMIT's line.
    let mut log = pg.read_log();
    for _ in 0..100 {
        if log.contains("statement: COMMIT") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = pg.read_log();
    }
    let line = log.lines().find(|l| l.contains("marker_carrier_running") && l.contains("duration")).unwrap();
    let app = &line[line.find("app=<").unwrap() + 5..line.find("> ").unwrap()];
    assert_eq!(carrier::decode_application_name(app).map(|(_, t)| t), Some(ctx), "{line}");
    let commit = log.lines().rfind(|l| l.contains("statement: COMMIT")).unwrap();
    assert!(commit.contains("app=<web>"), "{commit}");
}
