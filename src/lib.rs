//! # sqlcommenter
//!
//! W3C trace context and tags in SQL comments, for PostgreSQL (and MySQL), so that what the database
//! records (server logs, `pg_stat_activity`, `pg_stat_statements`, pg_tracing, auto_explain) can be joined
//! to the application's traces.
//!
//! ```
//! use sqlcommenter::{Commenter, TraceContext, TraceParent};
//!
//! let commenter = Commenter::builder()
//!     .tag("application", "checkout")
//!     .tag("route", "/orders")
//!     .build()?;
//! let tp = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")?;
//! let sql = commenter.inject("SELECT * FROM orders WHERE id = $1;", Some(&TraceContext::new(tp)));
//! assert_eq!(
//!     sql.as_str(),
//!     "SELECT * FROM orders WHERE id = $1 /*application='checkout',route='%2Forders',\
//!      traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/;"
//! );
//! let tags = sqlcommenter::parse_tags(sql.as_str(), sqlcommenter::Dialect::Postgres);
//! assert_eq!(tags["route"], "/orders");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The exact serialization rules
//! - A comment is `/*` + pairs + `*/`; an empty set of tags adds nothing.
//! - A pair is `key='value'`. Key and value are percent-encoded: every byte outside the RFC 3986
//!   unreserved set `A-Z a-z 0-9 - . _ ~` is written as `%XX` with uppercase hex, including space (`%20`,
//!   never `+`) and `%` (`%25`, never `%%`). No other escaping is needed: `'`, `*` and `/` are always
//!   encoded, so a value can neither end the quoted value nor the comment.
//! - Pairs are sorted bytewise by their serialized text and joined with `,`, no spaces.
//! - `tracestate` is encoded once (`congo%3Dt61rcWkgMzE%2Crojo%3D00f067aa0ba902b7`), never twice.
//!
//! This matches the google/sqlcommenter specification and its Node.js and Ruby implementations for every
//! input they agree on. It deliberately differs from the Python/PHP `%%` doubling (a paramstyle artifact
//! that makes the database see `%%3D`), from the Go/Java `+` for space (form encoding, not URL encoding),
//! from google Java's double-encoded tracestate (`%253D`), and from locale-collated sorting (Prisma):
//! all of these make the same tags serialize differently across services. The reader ([`parse_tags`])
//! accepts all of those forms.
//!
//! ## Placement
//! See [`Placement`]: appended by default, before a trailing `;` and trailing whitespace/comments; never
//! inside a comment or an unterminated construct (then the query comes back unchanged with a [`Skip`]
//! reason). A leading optimizer hint `/*+ ... */` (pg_hint_plan) forces appending. A query that already
//! carries a `traceparent` is left unchanged. The appended form `... /*traceparent='...'*/` or
//! `... /*traceparent='...'*/;` is what pg_tracing reads (pg_tracing does not read a comment followed by
//! whitespace or another comment; use prepending or a session carrier for such queries).
//!
//! ## Features
//! - `opentelemetry`: [`TraceContext::from_otel`], the current `opentelemetry::Context`.
//! - `tracing`: [`TraceContext::from_span`], the current `tracing` span through tracing-opentelemetry.

#![warn(missing_docs)]

pub mod carrier;
pub mod comment;
pub mod context;
pub mod encode;
pub mod lexer;
pub mod normalize;
pub mod parse;
pub mod sampling;
pub mod traceparent;
pub mod tracestate;

pub use comment::{
    serialize, Commenter, CommenterBuilder, ConfigError, ExistingComments, Injected, Placement, Skip, Splice,
};
pub use context::{ContextSource, TraceContext};
pub use lexer::{Construct, Dialect};
pub use normalize::normalize;
pub use parse::{parse_context, parse_tags, Tags};
pub use sampling::{RatioError, Sampling};
pub use traceparent::{TraceParent, TraceParentError};
pub use tracestate::{TraceState, TraceStateError};

/// Any error of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An invalid `traceparent`.
    #[error(transparent)]
    TraceParent(#[from] TraceParentError),
    /// An invalid `tracestate`.
    #[error(transparent)]
    TraceState(#[from] TraceStateError),
    /// An invalid commenter configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
}
