//! A small traced tokio app using sea-query: each "request" is a tracing span (exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set) whose statements carry its traceparent in a comment.
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run -p sqlcommenter-sea-query --example sea_query_app`

use anyhow::{Context as _, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sea_query::{Expr, ExprTrait, PostgresQueryBuilder, Query};
use sqlcommenter_sea_query::{CommentedBuild, SeaCommenter};
use sqlx::Row;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn tracer_provider() -> Result<SdkTracerProvider> {
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("sea-query-example").build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(endpoint).build()?;
        builder = builder.with_batch_exporter(exporter);
    } else {
        eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT not set: spans are created but not exported");
    }
    Ok(builder.build())
}

#[tokio::main]
async fn main() -> Result<()> {
    let provider = tracer_provider()?;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("sea-query-example")))
        .init();
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("set DATABASE_URL to run the example");
        return Ok(());
    };
    let pool = sqlx::PgPool::connect(&url).await.context("connect")?;
    let commenter = SeaCommenter::builder().application("sea-query-example").tag("action", "lookup").build()?;

    for id in 1..=3i64 {
        async {
            let select = Query::select()
                .expr(Expr::cust("relname"))
                .from("pg_class")
                .and_where(Expr::col("oid").gt(id))
                .limit(1)
                .to_owned();
            let stmt = select.build_sqlx_commented(PostgresQueryBuilder, &commenter);
            tracing::info!(sql = stmt.sql(), "running");
            let row = stmt.query().fetch_one(&pool).await?;
            tracing::info!(relname = row.get::<String, _>(0), "done");
            anyhow::Ok(())
        }
        .instrument(tracing::info_span!("request", id))
        .await?;
    }
    provider.shutdown()?;
    Ok(())
}
