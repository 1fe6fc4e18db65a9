//! pg_stat_statements stays clean: 10,000 requests, each under a new trace, through every way the
//! wrapper writes the carrier (checkout hook, first statement of a request, folded into `BEGIN`,
//! transaction-scoped inside a transaction, clear on release, the transaction-pooler mode) leave at most
//! 3 carrier entries (PostgreSQL ≤ 17 would keep one entry per distinct `SET … TO '…'` text).

mod common;

use common::*;
use opentelemetry::context::FutureExt as _;
use sqlcommenter_sqlx::{Config, OutsideTransaction, TracedPool};
use sqlcommenter_testpg::Cluster;

const REQUESTS: u32 = 10_000;
const TASKS: u32 = 4;

async fn request(db: &TracedPool, n: u32) {
    // one connection for the request
    let mut conn = db.acquire().await.unwrap();
    sqlx::query("SELECT $1::int4 AS pss_probe").bind(n as i32).fetch_one(&mut conn).await.unwrap();
    match n % 4 {
        // a transaction on the request's connection, with a second context inside
        0 => {
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("SELECT $1::int4 AS pss_tx").bind(n as i32).execute(&mut tx).await.unwrap();
            async { sqlx::query("SELECT $1::int4 AS pss_tx_inner").bind(n as i32).execute(&mut tx).await.unwrap() }
                .with_context(otel(&tp(20, n + REQUESTS, true)))
                .await;
            tx.commit().await.unwrap();
        }
        // a transaction of its own from the pool, and a statement through `&pool`
        1 => {
            drop(conn);
            let mut tx = db.begin().await.unwrap();
            sqlx::query("SELECT $1::int4 AS pss_pool_tx").bind(n as i32).execute(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
            sqlx::query("SELECT $1::int4 AS pss_pool").bind(n as i32).execute(db).await.unwrap();
        }
        // the application's own RESET ALL in the middle
        2 => {
            sqlx::raw_sql("RESET ALL").execute(&mut conn).await.unwrap();
            sqlx::query("SELECT $1::int4 AS pss_after_reset").bind(n as i32).execute(&mut conn).await.unwrap();
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_traced_requests_leave_few_carrier_entries() {
    let pg = Cluster::builder()
        .setting("max_connections", "40")
        .preload(&["pg_stat_statements"])
        .create_extension("pg_stat_statements")
        .start()
        .unwrap();
    assert_eq!(pg.query("SHOW pg_stat_statements.track_utility").unwrap(), "on");
    let url = format!("{}?application_name={BASE_NAME}", pg.url("postgres"));
    let options = || sqlx::postgres::PgPoolOptions::new().max_connections(2);
    let pools = [
        TracedPool::connect_with(options(), url.parse().unwrap(), &Config::default()).await.unwrap(),
        TracedPool::new(options().connect(&url).await.unwrap(), &Config::default()),
        TracedPool::connect_with(
            options(),
            url.parse().unwrap(),
            &Config::builder().outside_transaction(OutsideTransaction::WrapInTransaction).build().unwrap(),
        )
        .await
        .unwrap(),
    ];
    pg.execute_sql("SELECT pg_stat_statements_reset()").unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let pools = pools.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..REQUESTS / TASKS {
                let n = t * (REQUESTS / TASKS) + i;
                let db = &pools[(n / 4 % 3) as usize];
                request(db, n).with_context(otel(&tp(20, n, true))).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for db in &pools {
        db.inner().close().await;
    }
    let entries = carrier_entries(&pg);
    for (query, calls) in &entries {
        eprintln!("{calls:>7}  {query}");
    }
    let calls: i64 = entries.iter().map(|(_, c)| c).sum();
    assert!(calls >= i64::from(REQUESTS), "the carrier was written for every request: {calls} writes");
    assert!(entries.len() <= 3, "{} carrier entries in pg_stat_statements: {entries:#?}", entries.len());
}
