//! SeaORM with the request's trace context on every statement: an entity, an insert, a find and a
//! transaction, each request in its own tracing span (exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Each statement reaches PostgreSQL with the request's traceparent
//! in `application_name` (`%a` in the server log, `pg_stat_activity`); the example prints what the server
//! saw.
//!
//! `cargo run -p sqlcommenter-sea-orm --example sea_orm_app` starts a throwaway PostgreSQL (the test
//! harness); `DATABASE_URL=postgres://… cargo run …` uses yours (it creates the table `example_orders`).

use anyhow::Result;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, Set, TransactionTrait};
use sqlcommenter_sea_orm::{Config, Tagged, Tags};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

mod order {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "example_orders")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub state: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// What the server holds as this connection's `application_name` right now.
async fn carried<C: ConnectionTrait>(db: &C) -> Result<String, DbErr> {
    let row = db.query_one_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        "SELECT current_setting('application_name') AS carried",
    ));
    Ok(row.await?.map(|r| r.try_get::<String>("", "carried")).transpose()?.unwrap_or_default())
}

async fn handle_request(db: &Tagged<DatabaseConnection>, id: i32) -> Result<()> {
    let trace_id = tracing::Span::current().context().span().span_context().trace_id();
    // insert
    order::ActiveModel { id: Set(id), state: Set("new".into()) }.insert(db).await?;
    // find
    let found = order::Entity::find_by_id(id).one(db).await?;
    // a transaction: one checkout, so every statement in it carries the context current at `begin`
    let server_saw = db
        .transaction::<_, _, DbErr>(|txn| {
            Box::pin(async move {
                order::ActiveModel { id: Set(id), state: Set("paid".into()) }.update(txn).await?;
                carried(txn).await
            })
        })
        .await?;
    println!("request {id}: trace {trace_id}, found {found:?}, server saw application_name = {server_saw}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut provider = opentelemetry_sdk::trace::SdkTracerProvider::builder();
    if let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(endpoint).build()?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("sea-orm-example")))
        .init();

    // DATABASE_URL, or a throwaway cluster
    let (_cluster, url) = match std::env::var("DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let pg = sqlcommenter_testpg::Cluster::builder().start()?;
            let url = pg.url("postgres");
            (Some(pg), url)
        }
    };
    let url = format!("{url}{}application_name=orders", if url.contains('?') { '&' } else { '?' });

    let db = sqlcommenter_sea_orm::connect(&url, &Config::default()).await?;
    // fixed tags in every statement's text (optional; the context needs none)
    let db = Tagged::new(db, Tags::new([("application", "orders")])?);
    db.execute_unprepared("CREATE TABLE IF NOT EXISTS example_orders (id int PRIMARY KEY, state text NOT NULL)")
        .await?;
    db.execute_unprepared("DELETE FROM example_orders WHERE id BETWEEN 1 AND 3").await?;

    for id in 1..=3 {
        handle_request(&db, id).instrument(tracing::info_span!("request", id)).await?;
    }
    println!("outside any span: application_name = {}", carried(&db).await?);
    db.into_inner().close().await?;
    provider.shutdown()?;
    Ok(())
}
