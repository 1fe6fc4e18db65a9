//! Behind PgBouncer 1.24 (pool of 2 server connections, `max_prepared_statements = 200`): 8 concurrent
//! tasks, each request under its own trace, running cached (named) statements and a transaction. Every
//! execution's own server log line carries its request's trace, PgBouncer replays no `SET
//! application_name` for the carrier, and pg_stat_statements holds at most 5 carrier entries.
//! Session pooling uses the default configuration; transaction pooling `WrapInTransaction` (a session
//! value there would be replayed by PgBouncer, or stay on a server connection another client gets next).

mod common;

use std::collections::HashMap;

use common::*;
use opentelemetry::context::FutureExt as _;
use sqlcommenter::TraceParent;
use sqlcommenter_sqlx::{Config, OutsideTransaction, TracedPool};
use sqlcommenter_testpg::{pgbouncer_or_skip, Cluster, LogFormat, PgBouncer, PoolMode};

const TASKS: u32 = 8;
const REQUESTS: u32 = 25;

async fn request(db: &TracedPool, n: u32) -> Result<(), sqlx::Error> {
    let mut conn = db.acquire().await?;
    let v: i32 = sqlx::query_scalar("SELECT $1::int4 AS pgb_probe_a").bind(n as i32).fetch_one(&mut conn).await?;
    assert_eq!(v, n as i32);
    sqlx::query("SELECT $1::int4 AS pgb_probe_b").bind(n as i32).execute(&mut conn).await?;
    drop(conn);
    let mut tx = db.begin().await?;
    sqlx::query("SELECT $1::int4 AS pgb_probe_tx").bind(n as i32).execute(&mut tx).await?;
    tx.commit().await?;
    sqlx::query("SELECT $1::int4 AS pgb_probe_pool").bind(n as i32).execute(db).await?;
    Ok(())
}

fn trace_of(n: u32, mode: PoolMode) -> TraceParent {
    tp(if mode == PoolMode::Session { 21 } else { 22 }, n, true)
}

async fn through_pgbouncer(mode: PoolMode, cfg: Config, client_pool: u32) {
    let Some(bin) = pgbouncer_or_skip(&format!("sqlx through PgBouncer, {} pooling", mode.as_str())) else { return };
    let pg = Cluster::builder()
        .setting("log_min_duration_statement", "0")
        .setting("max_connections", "20")
        .preload(&["pg_stat_statements"])
        .create_extension("pg_stat_statements")
        .log_format(LogFormat::Json)
        .start()
        .unwrap();
    let bouncer = PgBouncer::builder(mode).binary(bin).pool_size(2).max_prepared_statements(200).start(&pg).unwrap();
    let url = format!("{}?application_name={BASE_NAME}", bouncer.url("postgres"));
    let options = sqlx::postgres::PgPoolOptions::new().max_connections(client_pool);
    let db = TracedPool::connect_with(options, url.parse().unwrap(), &cfg).await.unwrap();
    pg.execute_sql("SELECT pg_stat_statements_reset()").unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..REQUESTS {
                let n = t * REQUESTS + i;
                request(&db, n).with_context(otel(&trace_of(n, mode))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    db.inner().close().await;

    let lines = logged_in(&pg, &format!("marker-pgbouncer-{}", mode.as_str()));
    let mut per_probe: HashMap<&str, u32> = HashMap::new();
    for probe in ["pgb_probe_a", "pgb_probe_b", "pgb_probe_tx", "pgb_probe_pool"] {
        for l in executions(&lines, probe).into_iter().filter(|l| l.message.contains(&format!("{probe} "))) {
            let n: u32 = l.detail.trim_start_matches("parameters: $1 = '").trim_end_matches('\'').parse().unwrap();
            assert_eq!(
                l.carried(),
                Some(trace_of(n, mode)),
                "{probe} of request {n} logged under {:?}: {}",
                l.application_name,
                l.message
            );
            *per_probe.entry(probe).or_default() += 1;
        }
    }
    assert_eq!(per_probe.len(), 4, "{per_probe:?}");
    assert!(per_probe.values().all(|&c| c == TASKS * REQUESTS), "{per_probe:?}");
    // PgBouncer syncs a client's application_name onto a server with its own simple-protocol SET (e.g.
    // `SET TimeZone='UTC';SET application_name='svc';` when it links one); none may be for a carried context.
    let sets: Vec<_> =
        lines.iter().filter(|l| l.message.to_ascii_lowercase().contains("set application_name")).collect();
    let carrying = sets.iter().filter(|l| l.message.contains("00-")).count();
    eprintln!(
        "{} pooling: {} probe executions under their own trace, {} SET application_name from PgBouncer ({carrying} carrying a trace)",
        mode.as_str(),
        per_probe.values().sum::<u32>(),
        sets.len()
    );
    assert_eq!(
        carrying,
        0,
        "PgBouncer replayed the carrier: {:#?}",
        sets.iter().map(|l| &l.message).collect::<Vec<_>>()
    );
    let entries = carrier_entries(&pg);
    for (query, calls) in &entries {
        eprintln!("{calls:>7}  {query}");
    }
    assert!(entries.len() <= 5, "{entries:#?}");
    drop(bouncer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pooling() {
    // Session pooling links each client to one server connection for its life: no more clients than servers.
    through_pgbouncer(PoolMode::Session, Config::default(), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling() {
    let cfg = Config::builder().outside_transaction(OutsideTransaction::WrapInTransaction).build().unwrap();
    through_pgbouncer(PoolMode::Transaction, cfg, 8).await;
}
