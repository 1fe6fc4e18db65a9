//! A small tokio app: tracing spans exported over OTLP (opentelemetry-otlp, HTTP/protobuf to
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, default `http://localhost:4318`), and every query carrying its
//! request's span to PostgreSQL through the wrapped deadpool pool.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@localhost/postgres cargo run -p sqlcommenter-tokio-postgres --example otlp_app
//! ```
//! With `log_line_prefix = '%m [%p] %a '` and `log_min_duration_statement = 0` the server log shows each
//! statement with `00-<trace id>-<span id>-01` (the bare W3C traceparent), the same ids the collector receives.

use anyhow::Result;
use opentelemetry::trace::TracerProvider as _;
use sqlcommenter_tokio_postgres::{Config, Pool};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

#[tokio::main]
async fn main() -> Result<()> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name("otlp-demo").build())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("otlp-demo")))
        .with(
            tracing_subscriber::fmt::layer()
                .with_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())),
        );
    tracing::subscriber::set_global_default(subscriber)?;

    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@localhost/postgres".into());
    let mut cfg = deadpool_postgres::Config::new();
    cfg.url = Some(url);
    let pool = cfg.create_pool(Some(deadpool_postgres::Runtime::Tokio1), tokio_postgres::NoTls)?;
    // The one changed line: wrap the pool.
    let pool = Pool::new(pool, Config::builder().application_name("otlp-demo").tag("route", "/orders").build()?);

    let mut handles = Vec::new();
    for order in 1..=3i32 {
        let pool = pool.clone();
        let span = tracing::info_span!("GET /orders/{id}", order);
        handles.push(tokio::spawn(
            async move {
                let client = pool.get().await?;
                let stmt = client.prepare_cached("SELECT $1::int AS id, current_setting('application_name')").await?;
                let row = client.query_one(&stmt, &[&order]).await?;
                tracing::info!(server_saw = row.get::<_, String>(1), "order {}", row.get::<_, i32>(0));
                Ok::<_, anyhow::Error>(())
            }
            .instrument(span),
        ));
    }
    for h in handles {
        h.await??;
    }
    provider.shutdown()?;
    Ok(())
}
