//! Behind PgBouncer in transaction pooling, with `OutsideTransaction::WrapInTransaction`: 32 tasks, each in
//! its own traced span; every statement's server log line carries its task's traceparent, nothing is ever
//! written session-scoped (a transaction pooler would hand it to other clients), and the server's
//! connections end up carrying nothing.

mod common;

use common::spans::*;
use common::*;
use diesel_async::pooled_connection::deadpool;
use sqlcommenter_diesel::{manager, Config, OutsideTransaction};
use sqlcommenter_testpg::{pgbouncer_or_skip, PgBouncer, PoolMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_pooling_32_tasks_nothing_session_scoped() {
    let Some(bin) = pgbouncer_or_skip("diesel-async through PgBouncer, transaction pooling") else { return };
    init_tracing();
    let pg = pg();
    let bouncer = PgBouncer::builder(PoolMode::Transaction)
        .binary(bin)
        .pool_size(2)
        .max_prepared_statements(200)
        .start(pg)
        .unwrap();
    let url = format!("{}?application_name={BASE_NAME}", bouncer.url("postgres"));
    let config = Config::builder().outside_transaction(OutsideTransaction::WrapInTransaction).build().unwrap();
    let pool = deadpool::Pool::builder(manager(url, &config)).max_size(6).build().unwrap();
    let seen = tasks(4000, move || {
        let pool = pool.clone();
        async move { pool.get().await.unwrap() }
    })
    .await;
    check(&seen, "marker-pgbouncer-done");

    let lines = logged("marker-pgbouncer-after");
    let writes = carrier_lines(&lines);
    assert!(writes.len() >= 64, "{}", writes.len());
    for w in writes {
        assert!(w.message.ends_with(", true)"), "session-scoped write behind a transaction pooler: {w:?}");
    }
    let names = pg
        .query("SELECT application_name FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        .unwrap();
    for name in names.lines() {
        assert!(sqlcommenter::carrier::decode_application_name(name).is_none(), "a server connection carries {name}");
    }
}
