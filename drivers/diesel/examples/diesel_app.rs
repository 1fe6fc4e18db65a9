//! A small traced tokio app on diesel-async: three "requests", each a `tracing` span with an OpenTelemetry
//! context, each running a find, an insert in a transaction and a count through a deadpool pool of
//! `TracedPgConnection`s. Each prints its trace id and what the server saw as `application_name` while
//! running the request's statement (the carrier), then the same outside any span.
//!
//! `cargo run -p sqlcommenter-diesel --example diesel_app` starts a throwaway PostgreSQL (test harness);
//! set `DATABASE_URL` to use yours.

use anyhow::{Context as _, Result};
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncConnection, RunQueryDsl};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use sqlcommenter_diesel::{manager, Config, TracedPgConnection};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

diesel::table! {
    orders (id) {
        id -> Int4,
        customer -> Text,
    }
}

#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = orders)]
struct Order {
    id: i32,
    customer: String,
}

diesel::define_sql_function! {
    /// `current_setting(name)`.
    fn current_setting(name: Text) -> Text;
}

async fn handle_request(pool: &Pool<TracedPgConnection>, customer: &str) -> Result<()> {
    let mut conn = pool.get().await?;
    let found: Vec<Order> =
        orders::table.filter(orders::customer.eq(customer)).select(Order::as_select()).load(&mut conn).await?;
    let order = conn
        .transaction(async |c| {
            diesel::insert_into(orders::table)
                .values(orders::customer.eq(customer))
                .returning(Order::as_returning())
                .get_result(c)
                .await
        })
        .await?;
    let seen: String = diesel::select(current_setting("application_name")).get_result(&mut conn).await?;
    let trace_id = tracing::Span::current().context().span().span_context().trace_id();
    println!(
        "request {customer}: trace {trace_id}, {} earlier orders, inserted #{} for {}",
        found.len(),
        order.id,
        order.customer
    );
    println!("    server application_name during the request: {seen}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("diesel_app")))
        .init();

    let (_cluster, url) = match std::env::var("DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let pg = sqlcommenter_testpg::Cluster::builder().start().context("start a throwaway PostgreSQL")?;
            let url = format!("{}?application_name=shop", pg.url("postgres"));
            (Some(pg), url)
        }
    };
    let config = Config::builder().application("shop").build()?;
    let pool = Pool::builder(manager(&url, &config)).max_size(2).build()?;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut *pool.get().await?,
        "CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, customer text NOT NULL)",
    )
    .await?;

    for customer in ["ada", "grace", "ada"] {
        handle_request(&pool, customer).instrument(tracing::info_span!("request", customer)).await?;
    }
    let mut conn = pool.get().await?;
    let seen: String = diesel::select(current_setting("application_name")).get_result(&mut conn).await?;
    println!("outside any span: {seen}");
    println!("static comment on every statement: {}", config.comment());
    Ok(())
}
