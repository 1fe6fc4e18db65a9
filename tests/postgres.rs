//! The comment changes nothing: against a real PostgreSQL, every corpus query runs after injection, has
//! the same query identifier as the original, returns the same result, and the server logs the comment.

mod corpus;

use std::time::Duration;

use sqlcommenter::{Commenter, Placement, TraceContext, TraceParent};
use sqlcommenter_testpg::{Cluster, LogFormat};

fn start() -> Cluster {
    let pg = Cluster::builder()
        .setting("compute_query_id", "on")
        .setting("log_min_duration_statement", "0")
        .log_format(LogFormat::Stderr { prefix: "%m [%p] %a ".into() })
        .preload(&["pg_stat_statements"])
        .start()
        .expect("start PostgreSQL");
    pg.execute_sql(corpus::SCHEMA).expect("schema");
    pg.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").expect("pg_stat_statements");
    pg
}

fn query_id(pg: &Cluster, sql: &str) -> i64 {
    let plan = pg.query(&format!("EXPLAIN (VERBOSE, FORMAT JSON) {sql}")).unwrap_or_else(|e| panic!("{sql:?}: {e}"));
    let key = "\"Query Identifier\": ";
    let at = plan.find(key).unwrap_or_else(|| panic!("no query identifier for {sql:?}: {plan}")) + key.len();
    let digits: String = plan[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
    digits.parse().unwrap()
}

fn commenters() -> Vec<Commenter> {
    [Placement::Append, Placement::Prepend]
        .into_iter()
        .map(|p| {
            Commenter::builder()
                .placement(p)
                .tag("application", "corpus test")
                .tag("route", "/orders/{id}")
                .tag("note", "it's */ -- ; %")
                .build()
                .unwrap()
        })
        .collect()
}

fn context(i: usize) -> TraceContext {
    let mut trace = [0x11u8; 16];
    trace[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    TraceContext::from_headers(&TraceParent::new(trace, [0x22; 8], 1).unwrap().to_string(), Some("vendor=v1,k@sys=2"))
        .unwrap()
}

#[test]
fn comments_change_neither_query_id_nor_result() {
    let pg = start();
    let mut checked = 0;
    for (ci, commenter) in commenters().iter().enumerate() {
        for (i, q) in corpus::STATEMENTS.iter().enumerate() {
            let ctx = context(ci * 1000 + i);
            let injected = commenter.inject(q, Some(&ctx));
            assert!(injected.skipped().is_none(), "{q:?} was not injected: {injected:?}");
            let sql = injected.as_str();
            assert_eq!(query_id(&pg, q), query_id(&pg, sql), "query id differs for {q:?} -> {sql:?}");
            if q.trim_start().to_ascii_uppercase().contains("SELECT") && !q.contains("orders") {
                assert_eq!(pg.query(q).unwrap(), pg.query(sql).unwrap(), "result differs for {q:?}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * corpus::STATEMENTS.len());
}

#[test]
fn scripts_run_and_the_server_logs_the_context() {
    let pg = start();
    let commenter = &commenters()[0];
    for (i, script) in corpus::SCRIPTS.iter().enumerate() {
        let ctx = context(50_000 + i);
        let sql = commenter.inject(script, Some(&ctx)).into_cow().into_owned();
        assert_eq!(pg.query(script).unwrap(), pg.query(&sql).unwrap(), "{script:?}");
        // The far side: the statement the server logged carries the traceparent.
        let tp = ctx.traceparent.to_string();
        let log = pg.wait_for_log(&tp, Duration::from_secs(10)).expect("traceparent in the server log");
        let line = log.lines().find(|l| l.contains(&tp)).unwrap();
        let tags = sqlcommenter::parse_tags(line, sqlcommenter::Dialect::Postgres);
        assert_eq!(tags.get("traceparent"), Some(&tp), "{line}");
        assert_eq!(tags.get("note").map(String::as_str), Some("it's */ -- ; %"));
    }
}

#[test]
fn pg_stat_statements_keeps_one_entry_for_differently_commented_copies() {
    let pg = start();
    pg.execute_sql("SELECT pg_stat_statements_reset()").unwrap();
    let commenter = &commenters()[0];
    let q = "SELECT note FROM orders WHERE id = 12345";
    for i in 0..20 {
        pg.execute_sql(commenter.inject(q, Some(&context(90_000 + i))).as_str()).unwrap();
    }
    let rows = pg
        .query("SELECT calls FROM pg_stat_statements WHERE query LIKE 'SELECT note FROM orders WHERE id = $1%'")
        .unwrap();
    assert_eq!(rows, "20", "one entry with 20 calls expected, got {rows:?}");
}
