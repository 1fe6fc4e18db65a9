//! Transactions on the server: nothing is written into a failed transaction, and a `ROLLBACK TO SAVEPOINT`
//! (diesel's nested transactions) makes the connection rewrite the carrier before its next statement.

mod common;

use common::*;
use diesel::result::Error;
use diesel::sql_types::Integer;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use opentelemetry::trace::FutureExt as _;
use sqlcommenter_diesel::{Config, OutsideTransaction, TracedPgConnection};

async fn probe(conn: &mut TracedPgConnection, name: &str, n: i32) -> Result<usize, Error> {
    diesel::sql_query(format!("SELECT $1::int4 AS {name}")).bind::<Integer, _>(n).execute(conn).await
}

#[tokio::test]
async fn failed_transaction_gets_no_carrier_write() {
    let mut conn = TracedPgConnection::establish_with(&url(), &Config::default()).await.unwrap();
    let (a, b, c) = (tp(5, 1), tp(5, 2), tp(5, 3));
    let r = async {
        conn.transaction::<(), Error, _>(async |t| {
            probe(t, "tx_ok", 1).await?;
            let divide: Result<usize, Error> = diesel::sql_query("SELECT 1/0 AS tx_div").execute(t).await;
            assert!(divide.is_err());
            // under another context, in the failed transaction: no write goes first (it would fail too)
            async { probe(t, "tx_refused", 1).await }.with_context(otel(&b)).await.map(|_| ())
        })
        .await
    }
    .with_context(otel(&a))
    .await;
    assert!(r.is_err());
    // after the ROLLBACK, a new context is written and carried
    async { probe(&mut conn, "after_rollback", 1).await }.with_context(otel(&c)).await.unwrap();
    let lines = logged("marker-failed-tx");
    let errors: Vec<_> = lines.iter().filter(|l| l.state_code == "25P02").collect();
    assert_eq!(errors.len(), 1, "only the application's statement is refused: {errors:#?}");
    assert!(errors[0].statement.contains("tx_refused"), "{errors:#?}");
    let after = executions(&lines, "after_rollback");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].carried(), Some(c));
}

#[tokio::test]
async fn rollback_to_savepoint_rewrites_the_carrier() {
    let mut conn = TracedPgConnection::establish_with(&url(), &Config::default()).await.unwrap();
    let (a, b) = (tp(6, 1), tp(6, 2));
    async {
        conn.transaction::<(), Error, _>(async |t| {
            probe(t, "sp_outer", 2).await?;
            // a savepoint taken under `a`; under `b`, a statement (writes `b`, transaction-scoped) and the
            // rollback to the savepoint, which reverts the server's value to `a`
            t.batch_execute("SAVEPOINT before_b").await?;
            async {
                probe(t, "sp_inner", 2).await?;
                t.batch_execute("ROLLBACK TO SAVEPOINT before_b").await?;
                // still under `b`: the connection must not assume the server holds `b`
                probe(t, "sp_after", 2).await
            }
            .with_context(otel(&b))
            .await?;
            Ok(())
        })
        .await
    }
    .with_context(otel(&a))
    .await
    .unwrap();
    let lines = logged("marker-savepoint");
    let carried = |name: &str| {
        let runs = executions(&lines, name);
        assert_eq!(runs.len(), 1, "{name}");
        runs[0].carried()
    };
    assert_eq!(carried("sp_outer"), Some(a));
    assert_eq!(carried("sp_inner"), Some(b));
    assert_eq!(carried("sp_after"), Some(b), "rewritten after ROLLBACK TO SAVEPOINT");
}

#[tokio::test]
async fn dropped_wrapped_statement_leaves_no_open_transaction() {
    let config = Config::builder().outside_transaction(OutsideTransaction::WrapInTransaction).build().unwrap();
    let mut conn = TracedPgConnection::establish_with(&url(), &config).await.unwrap();
    let t = tp(7, 1);
    // The statement is sent (BEGIN + carrier pipelined with it), then its future is dropped.
    let slow = async {
        diesel::sql_query("INSERT INTO items (task, note) SELECT 7001, 'dropped' FROM pg_catalog.pg_sleep(0.5)")
            .execute(&mut conn)
            .await
    }
    .with_context(otel(&t));
    assert!(tokio::time::timeout(std::time::Duration::from_millis(100), slow).await.is_err());
    // The connection's next statement ends the wrapper's transaction first, as autocommit would have
    // committed the statement: another session sees the row.
    probe(&mut conn, "after_drop", 7).await.unwrap();
    assert_eq!(pg().query("SELECT count(*) FROM items WHERE task = 7001").unwrap(), "1");
    let lines = logged("marker-dropped");
    let after = executions(&lines, "after_drop");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].carried(), None);
}
