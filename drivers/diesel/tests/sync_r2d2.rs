//! Synchronous diesel through r2d2 with `CheckoutCarrier`: 32 threads, each in its own traced span, check
//! out inside the span; every statement's server log line carries the thread's traceparent; a checkout
//! outside a span carries none; statement texts and the server's prepared statements as without it.

mod common;

use std::collections::HashMap;

use common::*;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sql_types::Integer;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use sqlcommenter::TraceParent;
use sqlcommenter_diesel::{CheckoutCarrier, Config};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

fn current_tp() -> TraceParent {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    TraceParent::new(sc.trace_id().to_bytes(), sc.span_id().to_bytes(), sc.trace_flags().to_u8()).unwrap()
}

fn request(conn: &mut PgConnection, task: i32) {
    conn.transaction(|c| {
        diesel::insert_into(items::table).values((items::task.eq(task), items::note.eq("sync"))).execute(c)
    })
    .unwrap();
    let ids: Vec<i32> = items::table.filter(items::task.eq(task)).select(items::id).load(conn).unwrap();
    assert_eq!(ids.len(), 1);
    diesel::sql_query("SELECT $1::int4 AS sync_probe").bind::<Integer, _>(task).execute(conn).unwrap();
}

#[test]
fn r2d2_32_threads_each_statement_carries_its_trace() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let pool = Pool::builder().max_size(6).build(CheckoutCarrier::new(url(), &Config::default())).unwrap();
    let handles: Vec<_> = (3000..3032)
        .map(|task| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let tp = tracing::info_span!("request", task).in_scope(|| {
                    let mut conn = pool.get().unwrap();
                    request(&mut conn, task);
                    current_tp()
                });
                // A checkout outside any span: nothing carried.
                let mut conn = pool.get().unwrap();
                diesel::sql_query("SELECT $1::int4 AS sync_unspanned")
                    .bind::<Integer, _>(task)
                    .execute(&mut conn)
                    .unwrap();
                (task, tp)
            })
        })
        .collect();
    let seen: HashMap<i32, TraceParent> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(seen.values().map(|t| t.trace_id()).collect::<std::collections::HashSet<_>>().len(), 32);

    let lines = logged("marker-sync-done");
    let ours = |l: &&Line| l.first_param().and_then(|p| p.parse::<i32>().ok()).is_some_and(|t| seen.contains_key(&t));
    for needle in ["INSERT INTO \"items\"", "FROM \"items\" WHERE", "sync_probe"] {
        let runs: Vec<_> = executions(&lines, needle).into_iter().filter(ours).collect();
        assert_eq!(runs.len(), 32, "{needle}");
        for l in runs {
            let task: i32 = l.first_param().unwrap().parse().unwrap();
            assert_eq!(l.carried(), Some(seen[&task]), "{needle} of task {task}: {l:?}");
        }
    }
    let unspanned: Vec<_> = executions(&lines, "sync_unspanned").into_iter().filter(ours).collect();
    assert_eq!(unspanned.len(), 32);
    for l in unspanned {
        assert_eq!(l.carried(), None, "{l:?}");
        assert_eq!(l.application_name, BASE_NAME);
    }
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    statement: String,
}

fn prepared_sync(conn: &mut PgConnection) -> Vec<String> {
    diesel::sql_query("SELECT statement FROM pg_catalog.pg_prepared_statements ORDER BY 1")
        .load::<Name>(conn)
        .unwrap()
        .into_iter()
        .map(|n| n.statement)
        .collect()
}

#[test]
fn r2d2_prepared_statements_as_plain_but_the_ping() {
    let plain = Pool::builder().max_size(1).build(ConnectionManager::<PgConnection>::new(url())).unwrap();
    let traced = Pool::builder().max_size(1).build(CheckoutCarrier::new(url(), &Config::default())).unwrap();
    for n in 0..200 {
        for pool_is_traced in [false, true] {
            let ctx = otel(&tp(4, n as u32));
            let _guard = pool_is_traced.then(|| ctx.attach());
            let run = |conn: &mut PgConnection| {
                let _: Vec<i32> = items::table.filter(items::task.eq(n)).select(items::id).load(conn).unwrap();
                let _: i64 = items::table.count().get_result(conn).unwrap();
                conn.batch_execute("SELECT 1").unwrap();
            };
            if pool_is_traced {
                run(&mut traced.get().unwrap());
            } else {
                run(&mut plain.get().unwrap());
            }
        }
    }
    // The same cached statements, less r2d2's ping (`SELECT 1`), which the carrier write replaces.
    let mut plain_stmts = prepared_sync(&mut plain.get().unwrap());
    assert_eq!(plain_stmts.len(), 3, "{plain_stmts:?}");
    plain_stmts.retain(|s| s != "SELECT 1");
    assert_eq!(prepared_sync(&mut traced.get().unwrap()), plain_stmts);
    // However many traces: one pg_stat_statements entry for the carrier.
    let entries = carrier_entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].0, "SELECT pg_catalog.set_config($1, $2, $3)");
    assert!(entries[0].1 >= 200, "{entries:?}");
}
