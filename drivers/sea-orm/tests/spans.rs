//! 32 concurrent tasks, each in its own traced span (tracing + tracing-opentelemetry), run SeaORM
//! statements (insert, find, a transaction, a range query) on one `DatabaseConnection`: every
//! statement's own server log line carries its task's trace id; work outside a span carries none; with
//! `Tagged` the texts carry the fixed tags too.

#[path = "../../sqlx/tests/common/mod.rs"]
mod common;
mod kv;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use sea_orm::{DatabaseConnection, EntityTrait};
use sqlcommenter::TraceParent;
use sqlcommenter_sea_orm::{CarrierReset, Config, PoolHooks, Tagged, Tags};
use sqlx::postgres::PgPoolOptions;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

fn current_tp() -> TraceParent {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    TraceParent::new(sc.trace_id().to_bytes(), sc.span_id().to_bytes(), sc.trace_flags().to_u8()).unwrap()
}

async fn open(reset: CarrierReset) -> DatabaseConnection {
    let connect = url().parse().unwrap();
    let hooks = PoolHooks::new(&Config::default(), &connect).reset(reset);
    sqlcommenter_sea_orm::connect_with(PgPoolOptions::new().max_connections(4), connect, &hooks).await.unwrap()
}

async fn thirty_two_spans(reset: CarrierReset, round: u32) {
    // Once per process: the tests run concurrently, and concurrent `CREATE TABLE IF NOT EXISTS` of one name
    // can fail on PostgreSQL's catalog index.
    static CREATED: std::sync::Once = std::sync::Once::new();
    CREATED.call_once(|| pg().execute_sql(kv::CREATE).unwrap());
    let db = open(reset).await;
    let tagged = Tagged::new(db.clone(), Tags::new([("application", "sea-test")]).unwrap());
    let seen: Arc<Mutex<HashMap<u32, TraceParent>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let (db, tagged, seen) = (db.clone(), tagged.clone(), seen.clone());
        let span = tracing::info_span!("request", i);
        tasks.push(tokio::spawn(
            async move {
                seen.lock().unwrap().insert(i, current_tp());
                if i % 2 == 0 {
                    kv::request(&db, i, round).await.unwrap();
                } else {
                    kv::request(&tagged, i, round).await.unwrap();
                }
                // spawned from inside the span, not instrumented: no context
                tokio::spawn(async move {
                    let none = kv::Entity::find_by_id(kv::key(i, round) + 50).one(&db).await.unwrap();
                    assert!(none.is_none());
                })
                .await
                .unwrap();
            }
            .instrument(span),
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let traces: std::collections::HashSet<_> = seen.values().map(|t| t.trace_id()).collect();
    assert_eq!(traces.len(), 32);
    let lines = logged(&format!("marker-sea-orm-{round}"));
    let mut per_task: HashMap<u32, usize> = HashMap::new();
    let mut unspanned = 0;
    for l in executions(&lines, "\"sea_kv\"") {
        let Some((r, i, offset)) = kv::task_of(&l.detail) else { continue };
        if r != round {
            continue; // the other test's statement
        }
        if offset == 50 {
            assert!(l.carried().is_none() && l.application_name == BASE_NAME, "unspanned: {l:?}");
            unspanned += 1;
            continue;
        }
        let carried = l.carried().unwrap_or_else(|| panic!("task {i} without context: {l:?}"));
        assert_eq!(carried.trace_id(), seen[&i].trace_id(), "task {i}: {}", l.message);
        assert_eq!(
            l.message.contains("/*application='sea-test',db_driver='sea-orm%3A2'*/"),
            i % 2 == 1,
            "tags only through Tagged: {}",
            l.message
        );
        *per_task.entry(i).or_default() += 1;
    }
    assert_eq!(unspanned, 32);
    // insert, find, update + insert in the transaction, range find
    assert_eq!(per_task.len(), 32, "{per_task:?}");
    assert!(per_task.values().all(|&n| n == 5), "{per_task:?}");
    db.close().await.unwrap();
}

fn init_tracing() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        // As applications run it: SeaORM's own `trace`-level spans off (enabled, each would be a root span
        // of its own for work outside a request, and its statement would carry that span's trace).
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_spans_cleared_on_release() {
    init_tracing();
    thirty_two_spans(CarrierReset::OnRelease, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_spans_overwritten_on_acquire() {
    init_tracing();
    thirty_two_spans(CarrierReset::OnAcquire, 1).await;
}
