//! # sqlcommenter-sqlx
//!
//! Wrap a sqlx [`PgPool`](sqlx::PgPool) once; every statement issued inside a traced request then carries
//! that request's W3C `traceparent` to PostgreSQL, while sqlx's prepared-statement cache keeps working.
//!
//! ```no_run
//! use sqlcommenter_sqlx::{Config, TracedPool};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::builder().application("checkout").build()?;
//! let db = TracedPool::connect("postgres://localhost/app", &config).await?;
//!
//! // Inside a request (a tracing span with an OpenTelemetry context):
//! let mut conn = db.acquire().await?; // one connection for the request's statements
//! let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE customer = $1")
//!     .bind(42_i64)
//!     .fetch_one(&mut conn)
//!     .await?;
//! let mut tx = db.begin().await?; // the context rides on the BEGIN
//! sqlx::query("UPDATE customers SET orders = $1 WHERE id = $2").bind(n).bind(42_i64).execute(&mut tx).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! ## How the context travels, and why
//! sqlx caches prepared statements by their exact text (an LRU of 100 per connection). A per-request
//! comment makes every text unique: each query would miss the cache, Parse again and evict (measured:
//! 0.32× throughput; 0.43× with `persistent(false)`). So by default ([`Mode::SessionCarrier`]):
//! - static tags (`application`, `db_driver='sqlx:0.9'`, your `route`/`action`...) go into the text as a
//!   comment: they repeat, so the cache keeps one entry per query, exactly as without the wrapper;
//! - the traceparent goes into a carrier variable ([`Target`], from the core `sqlcommenter::carrier`):
//!   by default `application_name` holding the bare W3C traceparent (what OpenTelemetry's tools read;
//!   it reaches `%a` in `log_line_prefix`, csvlog/jsonlog and `pg_stat_activity`). Every write is the
//!   core statement `SELECT pg_catalog.set_config(…)` as one simple Query with literals: one
//!   `pg_stat_statements` entry whatever the trace, nothing in the statement cache. It is written only
//!   before a statement whose context differs from what the connection carries: in a transaction,
//!   transaction-scoped and folded into the `BEGIN` (free, ends with the transaction); outside one,
//!   session-scoped once per request and connection ([`OutsideTransaction::Session`]), written by the
//!   pool checkout in place of its ping with [`TracedPool::connect_with`] — or, behind a transaction pooler, in a
//!   transaction the wrapper opens around the statement ([`OutsideTransaction::WrapInTransaction`]).
//!
//! [`Mode::PerQueryComment`] writes the traceparent into every statement instead (for tools that read
//! comments, e.g. pg_tracing); those texts are never cached (`persistent(false)`), which costs a Parse
//! round trip per statement. See the crate README for the benchmark behind these defaults.
//!
//! ## No stale context
//! A [`TracedConnection`] knows what its connection carries (the core `Tracker`, fed with what the
//! application's own `RESET ALL`, `SET`, `BEGIN`/`COMMIT`/`ROLLBACK [TO]` did) and rewrites or clears the
//! carrier before any statement whose context differs, including statements with no context. A pooled
//! connection that may carry a context is cleared when the wrapper gives it back, so connections never
//! wait in the pool carrying one. Work without a span (or with an unsampled one, by default) carries no
//! traceparent, never a wrong one.
//!
//! ## Per-request tags
//! [`TagScope`] adds tags such as `route`/`action` to the statements of a task (a web framework's matched
//! route template). They live in the text, like the static tags, so keep their values few.
//!
//! ## Context source
//! By default the current `tracing` span (through tracing-opentelemetry), falling back to the current
//! `opentelemetry::Context` (so `opentelemetry::trace::FutureExt::with_context` works for an explicit
//! context). See [`ConfigBuilder::context_source`]. The context is taken when the statement is issued.
//!
//! ## A plain `PgPool` ([`PoolHooks`])
//! To keep the application's own [`sqlx::PgPool`] type — functions typed `&PgPool`, generic code over
//! `sqlx::Acquire`, `sqlx::migrate!().run(&pool)`, SeaORM, any library holding the pool — install the
//! checkout hooks instead of wrapping:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sqlcommenter_sqlx::{Config, PoolHooks};
//! use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
//! let connect: PgConnectOptions = "postgres://localhost/app?application_name=checkout".parse()?;
//! let pool: sqlx::PgPool = PoolHooks::new(&Config::default(), &connect)
//!     .connect(PgPoolOptions::new().max_connections(8), connect)
//!     .await?;
//! sqlx::query("UPDATE orders SET state = 'paid' WHERE id = $1").bind(7_i64).execute(&pool).await?;
//! let mut tx = pool.begin().await?; // sqlx's own transaction; `&mut *tx` as usual
//! sqlx::query("SELECT 1").execute(&mut *tx).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! **Granularity: per checkout, not per statement.** sqlx runs `before_acquire` (idle connection) and
//! `after_connect` (new connection) inside `pool.acquire()`, in the acquiring task; the hook writes the
//! context current *at that moment* (session-scoped core `set_config`, one simple Query, in place of
//! `test_before_acquire`'s ping). Every statement run on that checkout carries it, until the connection
//! goes back: a statement through `&PgPool` is one checkout; `pool.acquire()`/`pool.begin()` are one
//! checkout for all their statements — a context that changes while the connection is held (a child
//! span's id, another request reusing a long-held connection) is not seen; the trace id stays the
//! checkout's. Transactions begun on the checkout run under the session value (the connection is outside
//! a transaction when the hook writes, so the core's rules call for session scope; it outlives the
//! `COMMIT`, which is then logged with it too). Idle connections are cleared after release
//! ([`CarrierReset::OnRelease`], default) or overwritten at every checkout ([`CarrierReset::OnAcquire`],
//! cheaper, idle connections keep showing the last context). Not for transaction poolers (a session
//! value there is replayed onto other clients' connections): use [`TracedPool`] with
//! [`OutsideTransaction::WrapInTransaction`] behind PgBouncer in transaction mode.
//!
//! **No static tags from a hook**: a hook sees the connection, never the statement, so it cannot add
//! `application`/`route`/`db_driver` comments. For tags in the text use the wrapper types (or
//! `sqlcommenter-sea-query`'s builders, or write the fixed comment into your SQL); the trace context needs
//! none.
//!
//! ## sqlx idioms and the wrapper types
//! `&mut conn` and `&mut tx` are `Executor`s. sqlx's `&mut *tx` idiom and `sqlx::Acquire` are not offered
//! by [`TracedConnection`]/[`TracedTransaction`], deliberately: `&mut *tx` exists to pass a
//! `&mut PgConnection` (a `Transaction` derefs to it) to code typed for the bare connection, and
//! `Acquire::Connection` must deref to `PgConnection` while `Acquire::begin` returns sqlx's own
//! `Transaction`. Either way the wrapper would hand out the bare connection, whose statements it never
//! sees: no static tags, no tracking of what they do to the carrier (a `RESET ALL`, a `ROLLBACK TO
//! SAVEPOINT` undoing a write), a context change inside the request not written. A `Deref` to some other
//! executor type would make `&mut *tx` compile but still not fit a `&mut PgConnection` parameter. Code
//! written against `&mut PgConnection`, `impl Acquire` or `&PgPool` gets the context from a
//! [`PoolHooks`] pool instead (per checkout); the wrappers' raw connection stays reachable through
//! `inner_mut()`.
//!
//! The session carrier is PostgreSQL only (MySQL and SQLite have no equivalent their logs show); the `mysql` module
//! puts each traced statement's context in its own comment, run uncached.

#![warn(missing_docs)]

mod carrier;
mod config;
mod connection;
mod execute;
mod hook;
#[cfg(feature = "mysql")]
pub mod mysql;
mod pool;
mod run;
mod scope;
mod transaction;

pub use config::{Config, ConfigBuilder, ConfigError, Mode, OutsideTransaction, DB_DRIVER};
pub use connection::{PgConn, TracedConnection};
pub use hook::{CarrierReset, PoolHooks};
pub use pool::TracedPool;
pub use scope::TagScope;
pub use sqlcommenter::carrier::{AppNameFormat, Target, TargetError};
pub use sqlcommenter::{ContextSource, TraceContext};
pub use transaction::TracedTransaction;
