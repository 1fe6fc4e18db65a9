//! The 32-task span workload shared by the pool tests: each task in its own traced `tracing` span.

use std::collections::HashMap;
use std::ops::DerefMut;
use std::sync::Once;

use super::*;
use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel_async::{AsyncConnection, RunQueryDsl};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use sqlcommenter::TraceParent;
use sqlcommenter_diesel::TracedPgConnection;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

pub fn current_tp() -> TraceParent {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    TraceParent::new(sc.trace_id().to_bytes(), sc.span_id().to_bytes(), sc.trace_flags().to_u8()).unwrap()
}

/// One request: a transaction whose insert runs in a child span (a transaction-scoped write, gone with the
/// COMMIT), then a cached DSL query and a raw `sql_query` in the request's span. Returns the child's
/// traceparent.
pub async fn request(conn: &mut TracedPgConnection, task: i32) -> QueryResult<TraceParent> {
    let child = conn
        .transaction(async |c| {
            let span = tracing::info_span!("insert", task);
            async {
                diesel::insert_into(items::table)
                    .values((items::task.eq(task), items::note.eq("spans")))
                    .execute(c)
                    .await?;
                Ok::<_, diesel::result::Error>(current_tp())
            }
            .instrument(span)
            .await
        })
        .await?;
    let ids: Vec<i32> = items::table.filter(items::task.eq(task)).select(items::id).load(conn).await?;
    assert_eq!(ids.len(), 1);
    diesel::sql_query("SELECT $1::int4 AS raw_probe").bind::<Integer, _>(task).execute(conn).await?;
    Ok(child)
}

/// Runs 32 tasks from `first`, each checking a connection out with `get` inside its span; returns each
/// task's traceparent and its child span's.
pub async fn tasks<G, F, C>(first: i32, get: G) -> HashMap<i32, (TraceParent, TraceParent)>
where
    G: Fn() -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = C> + Send,
    C: DerefMut<Target = TracedPgConnection> + Send + 'static,
{
    let mut handles = Vec::new();
    for task in first..first + 32 {
        let get = get.clone();
        handles.push(tokio::spawn(async move {
            let span = tracing::info_span!("request", task);
            let (tp, mut conn) = async {
                let mut conn = get().await;
                let child = request(&mut conn, task).await.unwrap();
                ((current_tp(), child), conn)
            }
            .instrument(span)
            .await;
            // The same connection, outside the span: nothing carried.
            diesel::sql_query("SELECT $1::int4 AS unspanned_probe")
                .bind::<Integer, _>(task)
                .execute(&mut *conn)
                .await
                .unwrap();
            (task, tp)
        }));
    }
    let mut seen = HashMap::new();
    for h in handles {
        let (task, tp) = h.await.unwrap();
        seen.insert(task, tp);
    }
    seen
}

/// Every statement of every task carried exactly its task's traceparent on the server.
pub fn check(seen: &HashMap<i32, (TraceParent, TraceParent)>, marker: &str) {
    let distinct: std::collections::HashSet<_> = seen.values().map(|t| t.0.trace_id()).collect();
    assert_eq!(distinct.len(), 32, "distinct traces");
    let lines = logged(marker);
    let ours = |l: &&Line| l.first_param().and_then(|p| p.parse::<i32>().ok()).is_some_and(|t| seen.contains_key(&t));
    for needle in ["INSERT INTO \"items\"", "FROM \"items\" WHERE", "raw_probe"] {
        let runs: Vec<_> = executions(&lines, needle).into_iter().filter(ours).collect();
        assert_eq!(runs.len(), 32, "{needle}");
        for l in runs {
            let task: i32 = l.first_param().unwrap().parse().unwrap();
            let (request, child) = seen[&task];
            let want = if needle.starts_with("INSERT") { child } else { request };
            assert_eq!(l.carried(), Some(want), "{needle} of task {task}: {l:?}");
            assert!(l.message.contains("db_driver='diesel-async%3A0.9'"), "static tag: {}", l.message);
        }
    }
    let unspanned: Vec<_> = executions(&lines, "unspanned_probe").into_iter().filter(ours).collect();
    assert_eq!(unspanned.len(), 32);
    for l in unspanned {
        assert_eq!(l.carried(), None, "{l:?}");
        assert_eq!(l.application_name, BASE_NAME);
    }
    // The child span's carrier was transaction-scoped, written once; after the COMMIT the request's
    // traceparent was back without a write (checked above on the SELECT).
    let writes = carrier_lines(&lines);
    for (_, child) in seen.values() {
        let child_writes: Vec<_> = writes.iter().filter(|l| l.message.contains(&child.to_string())).collect();
        assert_eq!(child_writes.len(), 1, "{child}");
        assert!(child_writes[0].message.ends_with(", true)"), "{:?}", child_writes[0]);
    }
}
