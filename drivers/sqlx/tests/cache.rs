//! Commented text never enters sqlx's statement cache: after 10,000 queries with a new trace id per
//! request, the server's prepared statements and the client's cache are the same as without the wrapper.

mod common;

use common::*;
use opentelemetry::context::FutureExt as _;
use sqlcommenter_sqlx::{Config, Mode, TracedConnection};
use sqlx::{Connection, PgConnection};

const QUERIES: [&str; 5] = [
    "SELECT $1::int4 AS cache_q1",
    "SELECT $1::int4 + 1 AS cache_q2",
    "SELECT $1::int4 + 2 AS cache_q3",
    "SELECT $1::int4 + 3 AS cache_q4",
    "SELECT $1::int4 + 4 AS cache_q5",
];
const REQUESTS: u32 = 2_000;

async fn server_statements(conn: &mut PgConnection) -> i64 {
    let row = sqlx::raw_sql("SELECT count(*) FROM pg_prepared_statements").fetch_one(conn).await.unwrap();
    sqlx::Row::get::<i64, _>(&row, 0)
}

async fn run_plain() -> (usize, i64) {
    let mut conn = PgConnection::connect(&url()).await.unwrap();
    for r in 0..REQUESTS {
        for q in QUERIES {
            sqlx::query(q).bind(r as i32).fetch_one(&mut conn).await.unwrap();
        }
    }
    (conn.cached_statements_size(), server_statements(&mut conn).await)
}

async fn run_wrapped(mode: Mode) -> (usize, i64, u32) {
    let cfg = Config::builder().mode(mode).application("cache-test").build().unwrap();
    let mut conn = TracedConnection::new(PgConnection::connect(&url()).await.unwrap(), &cfg);
    for r in 0..REQUESTS {
        let tp = tp(11, r, true);
        async {
            for q in QUERIES {
                sqlx::query(q).bind(r as i32).fetch_one(&mut conn).await.unwrap();
            }
        }
        .with_context(otel(&tp))
        .await;
    }
    let size = conn.inner_mut().cached_statements_size();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn.inner_mut()).await.unwrap();
    (size, server_statements(conn.inner_mut()).await - 1, pid as u32)
}

#[tokio::test]
async fn ten_thousand_queries_leave_caches_as_without_the_wrapper() {
    let plain = run_plain().await;
    assert_eq!(plain, (5, 5));
    let (size, server, pid) = run_wrapped(Mode::SessionCarrier).await;
    assert_eq!((size, server), plain, "session-carrier mode");
    // The carrier did change on the server for every request: the log shows a distinct traceparent on
    // the statements of each of the 2,000 requests.
    let lines = logged("marker-cache");
    let mut carried: Vec<_> = lines
        .iter()
        .filter(|l| l.pid == pid as i64 && l.message.contains("cache_q1") && l.message.contains(" execute "))
        .filter_map(|l| l.carried())
        .collect();
    carried.dedup();
    assert_eq!(carried.len(), REQUESTS as usize);
    let (size, server, _) = run_wrapped(Mode::PerQueryComment).await;
    // Commented texts run unnamed and uncached: nothing is left on either side.
    assert_eq!((size, server), (0, 0), "per-query-comment mode");
}
