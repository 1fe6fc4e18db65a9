//! # sqlcommenter-sea-orm
//!
//! SeaORM 2 on PostgreSQL: every statement of a request reaches the server under that request's W3C
//! `traceparent`, and SeaORM's prepared statements (sqlx's cache, by text) stay exactly as without it.
//!
//! ```no_run
//! use sea_orm::{ConnectionTrait, TransactionTrait};
//! use sqlcommenter_sea_orm::{connect, Config};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // A plain `sea_orm::DatabaseConnection`, on a sqlx pool whose checkouts carry the context.
//! let db: sea_orm::DatabaseConnection =
//!     connect("postgres://localhost/app?application_name=checkout", &Config::default()).await?;
//! // Inside a request (a tracing span with tracing-opentelemetry), use it as usual:
//! // `orders::Entity::find_by_id(7).one(&db)`, `model.insert(&db)`, ...
//! db.execute_unprepared("UPDATE orders SET state = 'paid' WHERE id = 7").await?;
//! let txn = db.begin().await?;
//! txn.execute_unprepared("DELETE FROM carts WHERE order_id = 7").await?;
//! txn.commit().await?;
//! # Ok(()) }
//! ```
//!
//! ## How
//! SeaORM runs every statement on a connection it takes from its sqlx `PgPool` just then (one checkout
//! per statement; one for a whole transaction). [`connect`] builds that pool with
//! [`sqlcommenter_sqlx::PoolHooks`]: the checkout, inside the calling task, writes the current context into
//! the carrier (`application_name` holding the bare traceparent by default, or another core
//! [`Target`]) with the core's `SELECT pg_catalog.set_config(…)` as one simple Query — in place of the
//! pool's liveness ping, so it adds no round trip on the request's path — and the carrier is cleared
//! when the connection goes back ([`CarrierReset::OnRelease`], default) or overwritten at the next
//! checkout ([`CarrierReset::OnAcquire`]). The statement texts do not change, so sqlx's statement cache
//! and `pg_prepared_statements` are exactly as without the crate, and the carrier (simple Query, literal
//! values that `pg_stat_statements` normalizes) is one `pg_stat_statements` entry however many traces pass.
//!
//! **Granularity: per checkout.** Statements on `&DatabaseConnection` each carry the context current when
//! they are issued; a transaction carries the context current at `begin()` for all its statements (a
//! child span inside it shares the trace id but not its span id). Work outside a span (or in an unsampled
//! one) carries nothing.
//!
//! ## Static tags
//! SeaORM has no hook that rewrites statement text. [`Tagged`] wraps a `DatabaseConnection` (and its
//! transactions) as a [`sea_orm::ConnectionTrait`]/[`sea_orm::TransactionTrait`] and appends fixed tags
//! (`application`, `db_driver='sea-orm:2'`, …) to every statement: texts still repeat, so the caches hold.
//! Per-request values never go into the text (that would make every statement new to the cache); the
//! traceparent travels in the carrier.
//!
//! Not for transaction poolers (PgBouncer `pool_mode = transaction`): the carrier is session-scoped.

#![warn(missing_docs)]

mod tagged;

use sea_orm::{DatabaseConnection, SqlxPostgresConnector};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use sqlcommenter::carrier::{AppNameFormat, Target};
pub use sqlcommenter_sqlx::{CarrierReset, Config, ConfigBuilder, ConfigError, PoolHooks};
pub use tagged::{Tagged, Tags, TagsError, DB_DRIVER};

/// Opens a SeaORM connection to `url` (default pool options) whose statements carry the current context
/// (see the crate docs).
pub async fn connect(url: &str, config: &Config) -> Result<DatabaseConnection, sqlx::Error> {
    let connect: PgConnectOptions = url.parse()?;
    let hooks = PoolHooks::new(config, &connect);
    connect_with(PgPoolOptions::new(), connect, &hooks).await
}

/// Opens a SeaORM connection on a sqlx pool built from `options` and `connect` with `hooks` installed
/// (e.g. `PoolHooks::new(&config, &connect).reset(CarrierReset::OnAcquire)`). `hooks` replace any
/// `after_connect`/`before_acquire`/`after_release` on `options`.
pub async fn connect_with(
    options: PgPoolOptions,
    connect: PgConnectOptions,
    hooks: &PoolHooks,
) -> Result<DatabaseConnection, sqlx::Error> {
    let pool = hooks.connect(options, connect).await?;
    Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
}
