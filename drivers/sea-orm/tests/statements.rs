//! The server's side of the statement caches: after the same SeaORM work under 1,000 new traces,
//! `pg_prepared_statements` (summed over the pool's connections) equals a plain SeaORM connection's, with
//! and without `Tagged`; pg_stat_statements keeps one carrier entry for all traces.

#[path = "../../sqlx/tests/common/mod.rs"]
mod common;
mod kv;

use common::*;
use opentelemetry::context::FutureExt as _;
use sea_orm::{ConnectionTrait, DatabaseConnection, SqlxPostgresConnector, TransactionTrait};
use sqlcommenter_sea_orm::{CarrierReset, Config, PoolHooks, Tagged, Tags};
use sqlcommenter_testpg::Cluster;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const CONNECTIONS: u32 = 2;

/// `requests` requests under new traces (`test`), on 2 tasks.
async fn run<C>(db: &C, test: u8, requests: u32)
where
    C: ConnectionTrait + TransactionTrait + Clone + Send + 'static,
{
    let mut tasks = Vec::new();
    for t in 0..2 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for n in (t..requests).step_by(2) {
                // 32 tasks' keys per round, rounds of 10,000 keys
                let (round, i) = (n / 32, n % 32);
                kv::request(&db, i, round).with_context(otel(&tp(test, n, true))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// SeaORM's prepared statements on the server (this check's own aside), summed over the pool's connections (each one checked out once), and
/// how many of them carry the fixed tags.
async fn server_prepared(db: &DatabaseConnection) -> (i64, i64) {
    let pool = db.get_postgres_connection_pool();
    let mut held = Vec::new();
    let (mut total, mut tagged) = (0, 0);
    for _ in 0..CONNECTIONS {
        let mut c = pool.acquire().await.unwrap();
        let (n, t): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE statement LIKE '%db_driver=''sea-orm\\%3A2''*/') \
             FROM pg_prepared_statements WHERE statement NOT LIKE '%pg_prepared_statements%'",
        )
        .fetch_one(&mut *c)
        .await
        .unwrap();
        total += n;
        tagged += t;
        held.push(c);
    }
    (total, tagged)
}

fn options() -> PgPoolOptions {
    PgPoolOptions::new().max_connections(CONNECTIONS).min_connections(CONNECTIONS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_traces_one_carrier_entry_and_plain_caches() {
    let pg = Cluster::builder()
        .setting("max_connections", "30")
        .preload(&["pg_stat_statements"])
        .create_extension("pg_stat_statements")
        .start()
        .unwrap();
    pg.execute_sql(kv::CREATE).unwrap();
    let url = format!("{}?application_name={BASE_NAME}", pg.url("postgres"));
    let connect: PgConnectOptions = url.parse().unwrap();

    let plain = SqlxPostgresConnector::from_sqlx_postgres_pool(options().connect_with(connect.clone()).await.unwrap());
    run(&plain, 30, 320).await;
    let (plain_prepared, none) = server_prepared(&plain).await;
    // insert, find by key, update, range find: on each connection
    assert!(plain_prepared == 2 * 4 && none == 0, "SeaORM prepares its statements: {plain_prepared}");
    plain.close().await.unwrap();
    pg.execute_sql("TRUNCATE sea_kv; SELECT pg_stat_statements_reset()").unwrap();

    for (k, (reset, tagged)) in
        [(CarrierReset::OnRelease, false), (CarrierReset::OnAcquire, false), (CarrierReset::OnRelease, true)]
            .into_iter()
            .enumerate()
    {
        let hooks = PoolHooks::new(&Config::default(), &connect).reset(reset);
        let db = sqlcommenter_sea_orm::connect_with(options(), connect.clone(), &hooks).await.unwrap();
        if tagged {
            run(&Tagged::new(db.clone(), Tags::new([("application", "sea-test")]).unwrap()), 31 + k as u8, 1_000).await;
        } else {
            run(&db, 31 + k as u8, 1_000).await;
        }
        let (prepared, with_tags) = server_prepared(&db).await;
        assert_eq!(prepared, plain_prepared, "{reset:?}, tagged {tagged}: as without the crate");
        // the tagged run prepared the tagged texts instead (the checks' own statements aside)
        assert_eq!(with_tags, if tagged { plain_prepared } else { 0 }, "{reset:?}, tagged {tagged}");
        db.close().await.unwrap();
        pg.execute_sql("TRUNCATE sea_kv").unwrap();
    }
    let entries = carrier_entries(&pg);
    for (query, calls) in &entries {
        eprintln!("{calls:>7}  {query}");
    }
    assert_eq!(entries.len(), 1, "one carrier entry for 3,000 traces: {entries:#?}");
    assert!(entries[0].1 >= 3_000 * 4, "every checkout of every trace wrote it: {entries:?}");
}
