//! What PostgreSQL saw for sea-query statements built with a comment: the traceparent and tags in the
//! executed text, nothing left prepared for per-request texts, static-only texts cached as usual; and
//! for plain `build_sqlx` statements run through `sqlcommenter-sqlx`'s `TracedPool`: the traceparent in
//! the carrier, the statement cached once.

use std::time::Duration;

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use sea_query::{Expr, ExprTrait, PostgresQueryBuilder, Query};
use sea_query_sqlx::SqlxBinder;
use sqlcommenter::{Dialect, TraceParent};
use sqlcommenter_sea_query::{CommentedBuild, SeaCommenter};
use sqlcommenter_sqlx::{Config, TracedPool};
use sqlcommenter_testpg::{Cluster, LogFormat};
use sqlx::{Connection, Row};

fn otel(tp: &TraceParent) -> opentelemetry::Context {
    let sc = SpanContext::new(
        TraceId::from_bytes(tp.trace_id()),
        SpanId::from_bytes(tp.parent_id()),
        TraceFlags::new(tp.flags()),
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(sc)
}

#[tokio::test]
async fn commented_sea_query_statements_reach_the_server() {
    let pg = Cluster::builder().setting("log_min_duration_statement", "0").log_format(LogFormat::Json).start().unwrap();
    pg.execute_sql("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'a'), (2, 'b')")
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&pg.url("postgres")).await.unwrap();
    let commenter = SeaCommenter::builder().application("shop").tag("route", "/items/{id}").build().unwrap();
    let select = Query::select().column("name").from("items").and_where(Expr::col("id").eq(2)).to_owned();

    let tps: Vec<TraceParent> =
        (1..=20u8).map(|i| TraceParent::new([i; 16], [i.wrapping_add(100); 8], 1).unwrap()).collect();
    for tp in &tps {
        let name: String = async {
            let stmt = select.build_sqlx_commented(PostgresQueryBuilder, &commenter);
            assert!(!stmt.is_persistent());
            stmt.query().fetch_one(&mut conn).await.unwrap().get(0)
        }
        .with_context(otel(tp))
        .await;
        assert_eq!(name, "b");
    }
    // Without a context (or unsampled): static tags only, a fixed text that sqlx caches once.
    for _ in 0..3 {
        let stmt = select.build_sqlx_commented(PostgresQueryBuilder, &commenter);
        assert!(stmt.is_persistent());
        stmt.query().fetch_one(&mut conn).await.unwrap();
    }
    assert_eq!(conn.cached_statements_size(), 1);
    let row = sqlx::raw_sql("SELECT count(*) FROM pg_prepared_statements").fetch_one(&mut conn).await.unwrap();
    assert_eq!(row.get::<i64, _>(0), 1, "20 per-request texts left nothing prepared");

    pg.execute_sql("SELECT 'marker-sea'").unwrap();
    let log = pg.wait_for_log("marker-sea", Duration::from_secs(20)).unwrap();
    let executed: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_owned))
        .filter(|m| m.contains(" execute ") && m.contains("FROM \"items\""))
        .collect();
    assert_eq!(executed.len(), 23);
    for (m, tp) in executed.iter().zip(&tps) {
        let tags = sqlcommenter::parse_tags(m, Dialect::Postgres);
        assert_eq!(tags["traceparent"], tp.to_string());
        assert_eq!(tags["application"], "shop");
        assert_eq!(tags["route"], "/items/{id}");
        assert_eq!(tags["db_driver"], "sea-query:1.0");
    }
    for m in &executed[20..] {
        assert!(sqlcommenter::parse_context(m, Dialect::Postgres).is_none());
        assert_eq!(sqlcommenter::parse_tags(m, Dialect::Postgres)["application"], "shop");
    }
}

#[tokio::test]
async fn plain_builds_through_the_sqlx_wrapper_carry_the_context() {
    let pg = Cluster::builder().setting("log_min_duration_statement", "0").log_format(LogFormat::Json).start().unwrap();
    pg.execute_sql("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'a'), (2, 'b')")
        .unwrap();
    let url = format!("{}?application_name=shop", pg.url("postgres"));
    let config = Config::builder().application("shop").tag("route", "/items/{id}").build().unwrap();
    let options = sqlx::postgres::PgPoolOptions::new().max_connections(1);
    let db = TracedPool::connect_with(options, url.parse().unwrap(), &config).await.unwrap();
    let select = Query::select().column("name").from("items").and_where(Expr::col("id").eq(2)).to_owned();
    let tps: Vec<TraceParent> =
        (1..=10u8).map(|i| TraceParent::new([i; 16], [i.wrapping_add(50); 8], 1).unwrap()).collect();
    for tp in &tps {
        let name: String = async {
            let (sql, values) = select.build_sqlx(PostgresQueryBuilder);
            let mut conn = db.acquire().await.unwrap();
            sqlx::query_with(sqlx::AssertSqlSafe(sql), values).fetch_one(&mut conn).await.unwrap().get(0)
        }
        .with_context(otel(tp))
        .await;
        assert_eq!(name, "b");
    }
    let mut conn = db.inner().acquire().await.unwrap();
    let row = sqlx::raw_sql("SELECT count(*) FROM pg_prepared_statements").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(row.get::<i64, _>(0), 1, "one cached statement for ten traced executions");
    drop(conn);

    pg.execute_sql("SELECT 'marker-sea-wrapper'").unwrap();
    let log = pg.wait_for_log("marker-sea-wrapper", Duration::from_secs(20)).unwrap();
    let executed: Vec<(String, String)> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["message"].as_str()?.to_owned(), v["application_name"].as_str()?.to_owned())))
        .filter(|(m, _)| m.contains(" execute ") && m.contains("FROM \"items\""))
        .collect();
    assert_eq!(executed.len(), tps.len());
    for ((m, app), tp) in executed.iter().zip(&tps) {
        let (_, carried) = sqlcommenter::carrier::decode_application_name(app).unwrap();
        assert_eq!(&carried, tp);
        let tags = sqlcommenter::parse_tags(m, Dialect::Postgres);
        assert_eq!(tags["route"], "/items/{id}");
        assert_eq!(tags["db_driver"], "sqlx:0.9");
        assert!(!tags.contains_key("traceparent"), "the text stays fixed: {m}");
    }
}
