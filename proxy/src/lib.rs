//! # sqlcommenter-proxy
//!
//! A PostgreSQL wire-protocol proxy that adds W3C trace context to the statements of unmodified clients
//! (psql, pgbench, psycopg, asyncpg, node-postgres, JDBC, sqlx, tokio-postgres):
//!
//! - Simple Query and Parse of the unnamed statement get a sqlcommenter comment (through
//!   [`sqlcommenter::Commenter`]; a statement with its own `traceparent` is left alone).
//! - Named (prepared) statements keep their text; each execution's context is set in a session variable
//!   (`application_name` by default, see [`CarrierTarget`], the core's carrier protocol) by the core's
//!   `set_config` statement, inserted right before the client's Bind inside the same batch (no Sync of its
//!   own). Behind a pooler it is transaction-scoped (`is_local = true`): it ends with the batch's or the
//!   client's transaction, so no pooler sees a setting to replay; where the server session is the client's
//!   own, a client's session context is written once ([`CarrierScope`]). Its replies are swallowed.
//! - Everything else is relayed byte for byte, full duplex, with bounded memory.
//!
//! Layers: [`frame`] (framing), [`state`] (the sans-I/O protocol state machine), [`session`] (sans-I/O
//! decisions per session), [`relay`] (moving a session's bytes: epoll loop threads where neither leg is
//! TLS, async pumps for TLS), [`upstream`] (the server connection: TCP or its Unix socket, TLS), [`server`]
//! (listener, startup, cancel, shutdown).
//!
//! ```no_run
//! # async fn demo() -> Result<(), sqlcommenter_proxy::ProxyError> {
//! use sqlcommenter_proxy::{ProxyConfig, Upstream};
//! let config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), Upstream::parse("postgres://127.0.0.1:5432")?);
//! let proxy = sqlcommenter_proxy::start(config).await?;
//! println!("connect to {}", proxy.local_addr());
//! proxy.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

#[cfg(not(unix))]
compile_error!("sqlcommenter-proxy runs on Unix (Linux, macOS): it relays TCP and Unix-domain sockets on epoll/kqueue");

pub mod admin;
pub mod cancel;
pub mod config;
pub mod context;
pub mod error;
pub mod frame;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod relay;
pub mod server;
pub mod session;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upstream;

pub use config::{parse_carrier, CarrierScope, InjectConfig, ProxyArgs, ProxyConfig, TlsFiles, Upstream};
pub use error::ProxyError;
pub use server::{run, run_blocking, shutdown_signal, start, ProxyHandle};
pub use sqlcommenter::carrier::Target as CarrierTarget;
pub use tls::UpstreamTlsMode;
