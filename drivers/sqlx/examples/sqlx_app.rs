//! A small traced tokio app: three "requests", each a tracing span exported over OTLP (when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set), each running a few sqlx queries through the wrapper. Every
//! statement reaches PostgreSQL with the request's traceparent in `application_name` (see `%a` in the
//! server log or `pg_stat_activity`).
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run -p sqlcommenter-sqlx --example sqlx_app`

use anyhow::{Context as _, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sqlcommenter_sqlx::{Config, TracedPool};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn tracer_provider() -> Result<SdkTracerProvider> {
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("sqlx-example").build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(endpoint).build()?;
            builder = builder.with_batch_exporter(exporter);
        }
        Err(_) => eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT not set: spans are created but not exported"),
    }
    Ok(builder.build())
}

async fn handle_request(db: &TracedPool, order_id: i32) -> Result<()> {
    // One connection for the request: the carrier is written once, by the checkout itself.
    let mut conn = db.acquire().await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE oid > $1")
        .bind(order_id as i64)
        .fetch_one(&mut conn)
        .await?;
    let carried: String = sqlx::query_scalar("SELECT current_setting('application_name')").fetch_one(&mut conn).await?;
    tracing::info!(total, %carried, "queried");
    // A transaction: the context rides on the BEGIN.
    let mut tx = db.begin().await?;
    sqlx::query("SELECT $1::int4").bind(order_id).execute(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let provider = tracer_provider()?;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("sqlx-example")))
        .init();

    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("set DATABASE_URL to run the example");
        return Ok(());
    };
    let config = Config::builder().application("sqlx-example").tag("route", "/orders/{id}").build()?;
    let options = sqlx::postgres::PgPoolOptions::new().max_connections(4);
    let db = TracedPool::connect_with(options, url.parse()?, &config).await.context("connect")?;

    for order_id in 1..=3 {
        let span = tracing::info_span!("request", order_id);
        handle_request(&db, order_id).instrument(span).await?;
    }
    provider.shutdown()?;
    Ok(())
}
