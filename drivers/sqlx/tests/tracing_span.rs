//! Context from `tracing` spans (tracing-opentelemetry): concurrent tasks under different spans each get
//! their own span id on the server; work spawned without the span carries nothing.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use sqlcommenter::TraceParent;
use sqlcommenter_sqlx::{Config, TracedPool};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

fn current_tp() -> TraceParent {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    TraceParent::new(sc.trace_id().to_bytes(), sc.span_id().to_bytes(), sc.trace_flags().to_u8()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spans_across_tasks() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let db = TracedPool::new(pool(3).await, &Config::default());
    let seen: Arc<Mutex<HashMap<i32, TraceParent>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..16i32 {
        let (db, seen) = (db.clone(), seen.clone());
        let span = tracing::info_span!("request", i);
        tasks.push(tokio::spawn(
            async move {
                seen.lock().unwrap().insert(i, current_tp());
                for _ in 0..4 {
                    sqlx::query("SELECT $1::int4 AS span_probe").bind(i).execute(&db).await.unwrap();
                    tokio::task::yield_now().await;
                }
                // spawned from inside the span, but not instrumented: no traceparent
                let db2 = db.clone();
                tokio::spawn(async move {
                    sqlx::query("SELECT $1::int4 AS unspanned_probe").bind(i).execute(&db2).await.unwrap();
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
    let ids: std::collections::HashSet<_> = seen.values().map(|t| t.parent_id()).collect();
    assert_eq!(ids.len(), 16, "distinct spans");
    let lines = logged("marker-spans");
    let probes = executions(&lines, "span_probe");
    assert_eq!(probes.len(), 64);
    for l in probes {
        let i: i32 = l.detail.trim_start_matches("parameters: $1 = '").trim_end_matches('\'').parse().unwrap();
        assert_eq!(l.carried(), Some(seen[&i]), "task {i}");
    }
    let unspanned = executions(&lines, "unspanned_probe");
    assert_eq!(unspanned.len(), 16);
    assert!(unspanned.iter().all(|l| l.carried().is_none() && l.application_name == BASE_NAME));
}
