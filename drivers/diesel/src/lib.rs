//! # sqlcommenter-diesel
//!
//! Trace context for Diesel on PostgreSQL through diesel-async: [`TracedPgConnection`] wraps an
//! `AsyncPgConnection`; every statement issued under a traced span carries that span's W3C `traceparent`
//! to the server, while diesel's prepared-statement cache keeps working.
//!
//! ```no_run
//! use diesel_async::pooled_connection::deadpool::Pool;
//! use diesel_async::RunQueryDsl;
//! use sqlcommenter_diesel::{manager, Config};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::builder().application("checkout").build()?;
//! let pool = Pool::builder(manager("postgres://localhost/app", &config)).build()?;
//!
//! // Inside a request (a tracing span with an OpenTelemetry context):
//! // Check out inside the request: every statement on `conn` carries the span's traceparent.
//! let mut conn = pool.get().await?;
//! diesel::sql_query("UPDATE stock SET n = n - 1 WHERE sku = 42").execute(&mut conn).await?;
//! # Ok(()) }
//! ```
//!
//! ## How the context travels
//! diesel caches prepared statements by query type (or by text for dynamic queries). A per-request comment
//! would make every text unique. So:
//! - static tags (`db_driver='diesel-async:0.9'`, your `application`...) go into the text as a comment
//!   ([`Commented`]): fixed per query, so the cache keeps one entry per query, as without the wrapper;
//! - the traceparent goes into a carrier variable ([`Target`], from the core `sqlcommenter::carrier`; by
//!   default `application_name` holding the bare traceparent, what `%a`, csvlog/jsonlog and
//!   `pg_stat_activity` show). It is written with the core statement `SELECT pg_catalog.set_config(…)` as
//!   one simple Query with literals (never prepared, one `pg_stat_statements` entry for all values), only
//!   before a statement whose context differs from what the connection carries, and pipelined with that
//!   statement: no extra round trip. Inside a transaction it is transaction-scoped (ends with it);
//!   outside, session-scoped, and the next statement that needs something else (another request's context,
//!   or none) rewrites or clears it before it runs — or, behind a transaction pooler
//!   ([`OutsideTransaction::WrapInTransaction`]), in a transaction of the statement's own.
//!
//! ## No stale context
//! The connection knows what it carries (the core `Tracker`, fed with what `BEGIN`/`COMMIT`/`ROLLBACK
//! [TO]`, `SET`, `RESET ALL` in the application's own texts did). Work without a span (or with an unsampled
//! one, by default) carries no traceparent, never a wrong one, including on a pooled connection a traced
//! request used before.
//!
//! ## Synchronous diesel
//! With feature `r2d2` (default), [`CheckoutCarrier`] is an r2d2 manager for `PgConnection` whose checkout
//! writes the checking-out thread's context in place of r2d2's ping: per-checkout granularity, no comment
//! (diesel's synchronous `Connection` trait is sealed), see its docs.
//!
//! ## Context source
//! The current `tracing` span (through tracing-opentelemetry), falling back to the current
//! `opentelemetry::Context`, taken when the statement is issued ([`ConfigBuilder::context_source`]):
//! `query.load(&mut conn)` builds the statement at once, so issue it inside the span's future
//! (`async { … }.instrument(span)`), not outside and then wrap the returned future.

#![warn(missing_docs)]

mod comment;
mod config;
mod connection;
#[cfg(any(feature = "deadpool", feature = "bb8"))]
mod pool;
mod state;
#[cfg(feature = "r2d2")]
mod sync;

pub use comment::{Commented, CommentedId};
pub use config::{Config, ConfigBuilder, ConfigError, OutsideTransaction, DB_DRIVER};
pub use connection::TracedPgConnection;
#[cfg(any(feature = "deadpool", feature = "bb8"))]
pub use pool::manager;
pub use sqlcommenter::carrier::{AppNameFormat, Target, TargetError};
pub use sqlcommenter::{ContextSource, Placement, TraceContext};
#[cfg(feature = "r2d2")]
pub use sync::CheckoutCarrier;
