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
//! // application_name = '00-<trace id>-<span id>-01' (log_line_prefix %a, pg_stat_activity).
//! let rows = client.query(&stmt, &[&7i64]).await?;
//! # let _ = rows; Ok(()) }
//! ```
//!
//! ## How the context travels
//! The carrier protocol is the core's ([`sqlcommenter::carrier`]); this crate only decides when and where
//! to send its one statement.
//! - **Session carrier** ([`Mode::SessionCarrier`], default). The statement text carries only fixed tags
//!   (`db_driver`, `application`, your static tags): it repeats, so caches are unaffected. The per-request
//!   traceparent goes into a setting ([`Target`]: by default `application_name` holding the bare W3C
//!   traceparent, what the OpenTelemetry Collector reads) with `SELECT pg_catalog.set_config($1, $2, $3)`
//!   ([`sqlcommenter::carrier::SET_CONFIG_SQL`]), prepared once per connection (its preparation is
//!   pipelined with the first write), one fixed text so `pg_stat_statements` keeps one entry. It is sent
//!   only when the connection's context changes, **pipelined** in front of the caller's request: no extra
//!   round trip. A statement prepared earlier and executed later gets the context of the call that executes it.
//! - **Scope.** Inside a [`Transaction`] the carrier is transaction-scoped (`is_local = true`): it ends
//!   with the transaction, nothing to clear, nothing for a pooler to replay. Outside, tokio-postgres puts a
//!   Sync after every statement, so by default ([`CarrierScope::Session`]) it is session-scoped and the first
//!   statement of the next pool checkout overwrites or clears it; behind a transaction pooler use
//!   [`CarrierScope::Transaction`], which wraps a carried statement in a pipelined `BEGIN … COMMIT`.
//! - **The application's own statements** (`RESET ALL`, `DISCARD ALL`, `SET application_name`, `ROLLBACK`,
//!   `ROLLBACK TO SAVEPOINT`, …) sent as text through the wrapper are read with the core lexer
//!   ([`sqlcommenter::carrier::statements`]) and fed to the core [`sqlcommenter::carrier::Tracker`], so the
//!   next statement carries its context again.
//! - **Per-query comment** ([`Mode::PerQueryComment`]). Text queries carry
//!   `/*db_driver='..',traceparent='..'*/` and run through `query_typed` in one round trip with parameter
//!   types cached under the *uncommented* text (the first call of a text prepares it once to learn them).
//!   The server re-parses and re-plans every such query, which costs throughput (see the README's
//!   benchmark). Executions of prepared statements still use the carrier.
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
//! Work without a (sampled) context runs with the carrier cleared (`set_config(name, NULL, …)`: the
//! connection's own value), never under another request's traceparent.
//!
//! ## What is not covered
//! - Type lookups tokio-postgres makes on its own (for non-builtin types, after a prepare) run under
//!   whatever the carrier holds at that moment.
//! - Statements that change `application_name` or end a transaction through a *prepared* statement are
//!   invisible to the wrapper; use text queries, [`Transaction`], or [`Client::reset_carrier_state`].
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
