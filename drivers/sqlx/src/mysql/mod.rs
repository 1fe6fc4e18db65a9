//! MySQL and MariaDB: [`TracedMySqlPool`] and [`TracedMySqlConnection`] put each statement's trace context
//! into its own text as a comment, in the core's MySQL dialect (`#` and `-- ` comments, backslash escapes,
//! `/*! … */` executable comments and `/*+ … */` hints left working).
//!
//! ```no_run
//! use sqlcommenter_sqlx::mysql::{MySqlConfig, TracedMySqlPool};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MySqlConfig::builder().application("checkout").build()?;
//! let db = TracedMySqlPool::connect("mysql://root@127.0.0.1/app", &config).await?;
//!
//! // Inside a request (a tracing span with an OpenTelemetry context):
//! let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE customer = ?")
//!     .bind(42_i64)
//!     .fetch_one(&db)
//!     .await?;
//! let mut tx = db.begin().await?; // the BEGIN carries the context too
//! sqlx::query("UPDATE customers SET orders = ? WHERE id = ?").bind(n).bind(42_i64).execute(&mut tx).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! ## Why a comment per statement, and what it costs
//! MySQL has no session variable that its logs show beside each statement (PostgreSQL's
//! `application_name` is the PostgreSQL carrier): the general log, the slow log,
//! `performance_schema.events_statements_*` and Cloud SQL Query Insights show the statement text, so the
//! `traceparent` goes into the text (the google sqlcommenter use case).
//!
//! sqlx caches prepared statements by their exact text (an LRU of 100 per connection, each a server-side
//! prepared statement). A text holding a per-request traceparent would be a new cache entry per request,
//! evicting the application's statements. So:
//! - a statement run under a carried context is executed **uncached** (sqlx's `persistent(false)`: a
//!   `COM_STMT_PREPARE`, the execute, and a `COM_STMT_CLOSE` sent with it; without bind arguments as text,
//!   one `COM_QUERY`): the server's `Prepared_stmt_count` and sqlx's cache stay as without the wrapper, at
//!   the price of one prepare round trip per traced statement with arguments;
//! - a statement without a context (no span, an unsampled one, sampled out by
//!   [`MySqlConfigBuilder::sample_ratio`]) carries only the static tags (`application`,
//!   `db_driver='sqlx:0.9'`, your own, and [`TagScope`](crate::TagScope) tags): a fixed text, cached and
//!   prepared once per connection as usual.
//!
//! **Over TCP, sqlx 0.9.0 stalls after every `COM_STMT_CLOSE`**: it no longer sets `TCP_NODELAY`
//! (sqlx issue #4335, fixed upstream by PR #4336 after 0.9.0), and the server does not answer a close, so
//! the next command waits for the server's delayed ACK, about 40 ms. Each traced statement with
//! arguments ends with a close, so over TCP it costs ~40 ms (measured: 4 requests/s of 5 statements on one
//! connection). Connect over the server's Unix socket (`?socket=/run/mysqld/mysqld.sock`; the Cloud SQL
//! Auth Proxy offers one too), use a sqlx release that sets `TCP_NODELAY`, or keep
//! [`MySqlConfigBuilder::sample_ratio`] low. Plain sqlx has the same stall wherever it closes a statement
//! (`persistent(false)`, evictions from its cache).
//!
//! `BEGIN` carries the context (it is sent with the comment); sqlx's own `COMMIT`/`ROLLBACK`/`SAVEPOINT`
//! texts do not. A statement prepared earlier with `Executor::prepare` runs, under a carried context,
//! as its commented text (uncached): MySQL's sqlx executes by text, and the text is what the log shows.

mod config;
mod connection;
mod execute;
mod pool;

pub use config::{MySqlConfig, MySqlConfigBuilder};
pub use connection::{MySqlConn, TracedMySqlConnection, TracedMySqlTransaction};
pub use pool::TracedMySqlPool;
