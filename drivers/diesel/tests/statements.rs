//! `pg_stat_statements` does not grow with traces: 1,000 traces → one entry for the carrier statement.

mod common;

use common::*;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use opentelemetry::trace::FutureExt as _;
use sqlcommenter_diesel::{Config, TracedPgConnection};

#[tokio::test]
async fn thousand_traces_one_carrier_entry() {
    let pg = pg();
    let mut conn = TracedPgConnection::establish_with(&url(), &Config::default()).await.unwrap();
    pg.execute_sql("SELECT pg_stat_statements_reset()").unwrap();
    for n in 0..1000u32 {
        // The context is taken when the statement is issued: inside the future that runs under it.
        async { items::table.filter(items::task.eq(n as i32)).select(items::id).load::<i32>(&mut conn).await }
            .with_context(otel(&tp(3, n)))
            .await
            .unwrap();
    }
    // outside any trace: one clear
    let _: Vec<i32> = items::table.filter(items::task.eq(-1)).select(items::id).load(&mut conn).await.unwrap();
    let entries = carrier_entries();
    assert_eq!(entries, vec![("SELECT pg_catalog.set_config($1, $2, $3)".to_owned(), 1001)], "{entries:#?}");
    let app = pg
        .query("SELECT calls FROM pg_stat_statements WHERE query LIKE 'SELECT \"items\".\"id\" FROM \"items\"%'")
        .unwrap();
    assert_eq!(app.trim(), "1001", "one entry for the application's statement");
}
