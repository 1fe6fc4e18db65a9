//! diesel's prepared-statement cache on the server (`pg_prepared_statements`) as without the wrapper, and
//! one `pg_stat_statements` entry for the carrier however many traces pass.

mod common;

use common::*;
use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel_async::{AsyncConnection, RunQueryDsl};
use opentelemetry::trace::FutureExt as _;
use sqlcommenter_diesel::{Config, TracedPgConnection};

/// A request's statements: DSL queries (cached by type), a boxed query (cached by text), a raw
/// `sql_query` (never cached), a transaction.
async fn workload<C>(conn: &mut C, n: i32)
where
    C: AsyncConnection<Backend = diesel::pg::Pg> + 'static,
{
    let _: Vec<i32> = items::table.filter(items::task.eq(n)).select(items::id).load(conn).await.unwrap();
    let _: i64 = items::table.count().get_result(conn).await.unwrap();
    let _: Vec<i32> = items::table
        .into_boxed()
        .filter(items::note.eq("cache"))
        .select(items::task)
        .limit(1)
        .load(conn)
        .await
        .unwrap();
    diesel::sql_query("SELECT $1::int4 AS raw").bind::<Integer, _>(n).execute(conn).await.unwrap();
    conn.transaction(async |c| {
        diesel::insert_into(items::table).values((items::task.eq(n), items::note.eq("cache"))).execute(c).await
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn prepared_statements_as_plain_diesel_over_many_traces() {
    let mut plain = plain().await;
    let mut traced = TracedPgConnection::establish_with(&url(), &Config::default()).await.unwrap();
    for n in 0..300 {
        workload(&mut plain, n).await;
        workload(&mut traced, n).with_context(otel(&tp(1, n as u32))).await;
    }
    let plain_stmts = prepared(&mut plain).await;
    let traced_stmts = prepared(&mut traced).await;
    // four cached statements, and the listing query itself (diesel-async prepares uncached statements
    // named too, and closes them after)
    assert_eq!(plain_stmts.len(), 5, "{plain_stmts:#?}");
    assert_eq!(traced_stmts.len(), plain_stmts.len(), "{traced_stmts:#?}");
    let comment = Config::default().comment().to_owned();
    let mut stripped: Vec<String> =
        traced_stmts.iter().map(|s| s.strip_suffix(&format!(" {comment}")).expect(s).to_owned()).collect();
    stripped.sort();
    assert_eq!(stripped, plain_stmts, "the same statements, with the static comment");
    assert!(traced_stmts.iter().all(|s| !s.contains("set_config")));
}

#[tokio::test]
async fn wrapped_connection_clears_to_its_own_name() {
    // `new` on an open connection: the base name is read once, before the first write.
    let mut traced = TracedPgConnection::new(plain().await, &Config::default());
    let current = async |c: &mut TracedPgConnection| -> String {
        let rows: Vec<Stmt> = diesel::sql_query("SELECT pg_catalog.current_setting('application_name') AS statement")
            .load(c)
            .await
            .unwrap();
        rows.into_iter().next().unwrap().statement
    };
    let t = tp(2, 1);
    assert_eq!(current(&mut traced).with_context(otel(&t)).await, t.to_string());
    assert_eq!(current(&mut traced).await, BASE_NAME);
    // The application's own SET is seen: the next traced statement writes again.
    diesel::sql_query("SET application_name = 'other'").execute(&mut traced).await.unwrap();
    assert_eq!(current(&mut traced).with_context(otel(&t)).await, t.to_string());
    // A clear writes back the connection's name as it was first read.
    assert_eq!(current(&mut traced).await, BASE_NAME);
}

#[derive(diesel::Identifiable, diesel::AsChangeset, Debug)]
#[diesel(table_name = items)]
struct Item<'a> {
    id: i32,
    task: i32,
    note: &'a str,
}

#[derive(diesel::Queryable, Debug, PartialEq)]
struct OwnedItem {
    id: i32,
    task: i32,
    note: String,
}

#[tokio::test]
async fn save_changes_through_the_wrapper() {
    let mut traced = TracedPgConnection::establish_with(&url(), &Config::default()).await.unwrap();
    let id: i32 = diesel::insert_into(items::table)
        .values((items::task.eq(8001), items::note.eq("before")))
        .returning(items::id)
        .get_result(&mut traced)
        .await
        .unwrap();
    let t = tp(8, 1);
    let item = Item { id, task: 8001, note: "saved_changes" };
    let saved: OwnedItem = async { diesel_async::SaveChangesDsl::save_changes(&item, &mut traced).await }
        .with_context(otel(&t))
        .await
        .unwrap();
    assert_eq!(saved, OwnedItem { id, task: 8001, note: "saved_changes".into() });
    let lines = logged("marker-save-changes");
    let updates: Vec<_> =
        lines.iter().filter(|l| l.message.contains("execute") && l.message.contains("UPDATE \"items\"")).collect();
    assert_eq!(updates.len(), 1, "{updates:#?}");
    assert_eq!(updates[0].carried(), Some(t));
}
