//! # sqlcommenter-tokio-postgres
//!
//! A drop-in wrapper for [`tokio_postgres::Client`] (and deadpool-postgres pools) that sends the caller's
//! W3C trace context to PostgreSQL with every statement — without making statement texts unique, so
//! prepared statements and `prepare_cached` keep working exactly as before.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sqlcommenter_tokio_postgres::{Client, Config};
//!
//! let (pg, conn) = tokio_postgres::connect("host=localhost user=postgres", tokio_postgres::NoTls).await?;
//! tokio::spawn(conn);
//! let client = Client::new(pg, &Config::builder().application_name("checkout").build()?);
//!
//! let stmt = client.prepare("SELECT name FROM items WHERE id = $1").await?;
//! // Inside a traced request (tracing + tracing-opentelemetry), the server sees this execution with
//! // application_name = 'checkout@00-<trace id>-<span id>-01' (log_line_prefix %a, pg_stat_activity).
//! let rows = client.query(&stmt, &[&7i64]).await?;
//! # let _ = rows; Ok(()) }
//! ```
//!
//! ## How the context travels (and why this is the default)
//! - **Session carrier** ([`Mode::SessionCarrier`], default). The statement text carries only fixed tags
//!   (`db_driver`, `application`, your static tags): it repeats, so caches are unaffected. The per-request
//!   traceparent goes into a session setting — `application_name` as
//!   [`sqlcommenter::carrier::encode_application_name`] (`name@traceparent`), or a custom setting such as
//!   `sqlcommenter.traceparent` ([`Carrier::Guc`]) — with a simple-protocol `SET ... TO E'...'` (a
//!   utility statement: nothing planned, nothing kept; see [`CarrierStatement`] for the alternatives),
//!   sent only when the connection's context changes (typically once per request and connection) and
//!   pipelined in front of the query: no extra round trip. A statement prepared earlier and executed later gets the
//!   context of the call that executes it.
//! - **Per-query comment** ([`Mode::PerQueryComment`]). Text queries carry
//!   `/*db_driver='..',traceparent='..'*/` and run through `query_typed` in one round trip with parameter
//!   types cached under the *uncommented* text (the first call of a text prepares it once to learn them).
//!   The server re-parses and re-plans every such query, which costs throughput (see the README's
//!   benchmark). Executions of prepared statements still use the session carrier.
//!
//! ## Concurrency: many tasks on one client
//! tokio-postgres pipelines requests from all tasks sharing a client over one connection. The wrapper
//! keeps a per-connection lock, held only *synchronously* while the carrier request and the caller's
//! request are put on the connection (tokio-postgres enqueues a request at the first poll of its future).
//! The server runs requests in that order, so a statement always runs under its own task's carrier value,
//! and no task ever waits for another task's round trip. When tasks with different contexts interleave
//! on one connection, the carrier is switched as often as the context changes (at worst once per query);
//! a pool with one connection per task avoids that.
//!
//! Work without a (sampled) context runs with the carrier reset (`RESET application_name`), never under
//! another request's traceparent. A connection checked out of a [`Pool`] again overwrites or resets a
//! carrier left by the previous request before its first statement.
//!
//! ## What is not covered
//! - Type lookups tokio-postgres makes on its own (for non-builtin types, after a prepare) run under
//!   whatever the carrier holds at that moment.
//! - Statements that change `application_name` or roll back a transaction through a *prepared* statement
//!   are invisible to the wrapper; use text queries, [`Transaction`], or [`Client::reset_carrier_state`].
//! - Queries made directly on the inner client ([`Client::get_ref`]) bypass the ordering.

#![warn(missing_docs)]

mod client;
mod config;
mod core;
mod methods;
#[cfg(feature = "deadpool")]
mod pool;
mod state;
mod statement;
mod transaction;

pub use client::{Client, PgHandle, TransactionBuilder};
pub use config::{CarrierScope, Config, ConfigBuilder, ConfigError, ContextFn, Mode, DB_DRIVER};
#[cfg(feature = "deadpool")]
pub use pool::{Pool, PooledClient};
pub use sqlcommenter::carrier::{AppNameFormat, Target, TargetError};
pub use sqlcommenter::{ContextSource, TraceContext, TraceParent};
pub use statement::{StatementRef, ToStatement};
pub use tokio_postgres;
pub use transaction::Transaction;
