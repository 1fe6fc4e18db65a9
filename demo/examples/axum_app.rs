//! A small web application: axum, every request a `tracing` span exported over OTLP, and every query it
//! makes carrying that span's traceparent to PostgreSQL through the sqlx wrapper (`TracedPool`).
//!
//! ```text
//! DATABASE_URL=postgres://postgres@localhost:5432/postgres \
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 \
//!   cargo run -p sqlcommenter-demo --example axum_app
//! curl localhost:3000/orders/7 ; curl -X POST localhost:3000/orders/7/ship
//! ```
//! `LISTEN` (default `127.0.0.1:3000`) sets the address. With `log_line_prefix` containing `%a` (or jsonlog)
//! the server log shows `shop@00-<trace id>-<span id>-01` for each query, the ids Jaeger shows.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use opentelemetry::trace::TracerProvider as _;
use sqlcommenter_sqlx::{Config, TracedPool};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

#[derive(serde::Serialize)]
struct Order {
    id: i64,
    item: String,
    shipped: bool,
}

type AppError = (StatusCode, String);

fn internal(e: sqlx::Error) -> AppError {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[tracing::instrument(skip(db))]
async fn get_order(State(db): State<TracedPool>, Path(id): Path<i64>) -> Result<Json<Order>, AppError> {
    let row: Option<(i64, String, bool)> = sqlx::query_as("SELECT id, item, shipped FROM shop_orders WHERE id = $1")
        .bind(id)
        .fetch_optional(&db)
        .await
        .map_err(internal)?;
    let (id, item, shipped) = row.ok_or((StatusCode::NOT_FOUND, format!("no order {id}")))?;
    Ok(Json(Order { id, item, shipped }))
}

#[tracing::instrument(skip(db))]
async fn ship_order(State(db): State<TracedPool>, Path(id): Path<i64>) -> Result<StatusCode, AppError> {
    // The context rides on the BEGIN (SET LOCAL): no extra round trip inside a transaction.
    let mut tx = db.begin().await.map_err(internal)?;
    let updated = sqlx::query("UPDATE shop_orders SET shipped = true WHERE id = $1 AND NOT shipped")
        .bind(id)
        .execute(&mut tx)
        .await
        .map_err(internal)?
        .rows_affected();
    sqlx::query("INSERT INTO shop_events (order_id, event) VALUES ($1, 'shipped')")
        .bind(id)
        .execute(&mut tx)
        .await
        .map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    Ok(if updated == 1 { StatusCode::NO_CONTENT } else { StatusCode::CONFLICT })
}

async fn setup(db: &TracedPool) -> Result<()> {
    for sql in [
        "CREATE TABLE IF NOT EXISTS shop_orders (id bigint PRIMARY KEY, item text NOT NULL, shipped bool NOT NULL DEFAULT false)",
        "CREATE TABLE IF NOT EXISTS shop_events (order_id bigint NOT NULL, event text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
        "INSERT INTO shop_orders (id, item) SELECT g, 'item ' || g FROM generate_series(1, 100) g ON CONFLICT DO NOTHING",
    ] {
        sqlx::query(sql).execute(db).await.with_context(|| sql.to_owned())?;
    }
    Ok(())
}

fn main() -> Result<()> {
    // The OTLP exporter (HTTP/protobuf, blocking client on the batch processor's thread) is built outside
    // the async runtime. OTEL_EXPORTER_OTLP_ENDPOINT defaults to http://localhost:4318.
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("axum-shop");
    }
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("axum-shop")))
        // RUST_LOG filters only what is printed: spans must stay enabled to carry their context.
        .with(
            tracing_subscriber::fmt::layer()
                .with_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())),
        )
        .try_init()?;

    let rt = tokio::runtime::Runtime::new()?;
    let served = rt.block_on(serve());
    drop(rt);
    provider.shutdown()?;
    served
}

async fn serve() -> Result<()> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@localhost:5432/postgres".into());
    let listen: SocketAddr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into()).parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&url).await.context("connecting")?;
    // The one changed line: wrap the pool. The name in front of the traceparent in application_name is cut
    // to 7 bytes (PostgreSQL keeps 63), so keep it short.
    let db = TracedPool::new(pool, &Config::builder().application("shop").base_application_name("shop").build()?);
    setup(&db).await?;

    let app = Router::new()
        .route("/orders/{id}", get(get_order))
        .route("/orders/{id}/ship", post(ship_order))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(db);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "axum-shop listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
