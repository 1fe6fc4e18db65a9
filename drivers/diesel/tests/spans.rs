//! 32 concurrent tasks, each in its own traced `tracing` span, through diesel-async's deadpool and bb8 pools
//! of `TracedPgConnection`s: every statement's own server log line carries its task's traceparent; the same
//! connection after the span carries none.

mod common;

use common::spans::*;
use common::*;
use diesel_async::pooled_connection::{bb8, deadpool};
use sqlcommenter_diesel::{manager, Config};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deadpool_32_tasks_each_statement_carries_its_trace() {
    init_tracing();
    let pool = deadpool::Pool::builder(manager(url(), &Config::default())).max_size(6).build().unwrap();
    let seen = tasks(1000, move || {
        let pool = pool.clone();
        async move { pool.get().await.unwrap() }
    })
    .await;
    check(&seen, "marker-deadpool-done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bb8_32_tasks_each_statement_carries_its_trace() {
    init_tracing();
    let pool = bb8::Pool::builder().max_size(6).build(manager(url(), &Config::default())).await.unwrap();
    let seen = tasks(2000, move || {
        let pool = pool.clone();
        async move { pool.get_owned().await.unwrap() }
    })
    .await;
    check(&seen, "marker-bb8-done");
}
