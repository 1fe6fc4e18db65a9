//! # sqlcommenter-sea-query
//!
//! Tags and the current trace context on statements built with [sea-query](sea_query), for execution
//! with sqlx (through sea-query-sqlx). The comment is made by the core [`sqlcommenter::Commenter`], so
//! it is byte-for-byte what the other sqlcommenter drivers produce.
//!
//! ```
//! use sea_query::{Expr, ExprTrait, PostgresQueryBuilder, Query};
//! use sqlcommenter::{TraceContext, TraceParent};
//! use sqlcommenter_sea_query::{CommentedBuild, SeaCommenter};
//!
//! let commenter = SeaCommenter::builder().application("shop").tag("route", "/orders").build()?;
//! let select = Query::select().column("id").from("orders").and_where(Expr::col("id").eq(7)).to_owned();
//! let tp = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")?;
//! let stmt = select.build_sqlx_commented_with(PostgresQueryBuilder, &commenter, Some(&TraceContext::new(tp)), &[]);
//! assert_eq!(
//!     stmt.sql(),
//!     r#"SELECT "id" FROM "orders" WHERE "id" = $1 /*application='shop',db_driver='sea-query%3A1.0',route='%2Forders',traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/"#
//! );
//! assert!(!stmt.is_persistent()); // a per-request text never enters sqlx's statement cache
//! // let row = stmt.query().fetch_one(&pool).await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Caching
//! A statement whose text carries a traceparent is unique per request: [`CommentedStatement::query`]
//! marks it `persistent(false)`, so it runs as an unnamed statement (one Parse round trip more than a
//! cached statement, nothing left prepared on the server, no churn in sqlx's LRU). A statement with
//! static tags only (no context, or an unsampled one) keeps its text fixed and is cached as usual.
//!
//! When you execute through `sqlcommenter-sqlx`'s wrapper (`TracedPool`), use sea-query-sqlx's plain
//! `build_sqlx` instead: the wrapper adds the static tags itself and carries the traceparent in its
//! carrier (`application_name` holding the bare traceparent, by default), which keeps the statement
//! cache working:
//!
//! ```no_run
//! # async fn demo(db: &sqlcommenter_sqlx::TracedPool) -> Result<(), sqlx::Error> {
//! use sea_query::{Expr, ExprTrait, PostgresQueryBuilder, Query};
//! use sea_query_sqlx::SqlxBinder;
//!
//! let (sql, values) =
//!     Query::select().column("id").from("orders").and_where(Expr::col("id").eq(7)).build_sqlx(PostgresQueryBuilder);
//! let mut conn = db.acquire().await?; // inside the traced request
//! let row = sqlx::query_with(sqlx::AssertSqlSafe(sql), values).fetch_one(&mut conn).await?;
//! # let _ = row; Ok(()) }
//! ```

#![warn(missing_docs)]

use sea_query::QueryBuilder;
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use sqlcommenter::{Commenter, ContextSource, Injected, Placement, TraceContext};
use sqlx::postgres::Postgres;
use sqlx::query::{Query, QueryAs};
use sqlx::AssertSqlSafe;

/// The `db_driver` tag value filled in by default.
pub const DB_DRIVER: &str = "sea-query:1.0";

/// A bad configuration, reported by [`SeaCommenterBuilder::build`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A static tag is invalid (empty, reserved or duplicate key).
    #[error("invalid static tag: {0}")]
    Tag(#[from] sqlcommenter::ConfigError),
    /// The sample ratio is outside `0.0..=1.0`.
    #[error("sample ratio {0} is outside 0.0..=1.0")]
    SampleRatio(f64),
}

/// Configures a [`SeaCommenter`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct SeaCommenterBuilder {
    tags: Vec<(String, String)>,
    db_driver: Option<String>,
    sampled_only: bool,
    ratio: f64,
    source: ContextSource,
    placement: Placement,
}

impl SeaCommenterBuilder {
    /// Adds a static tag (`application`, `route`, `action`, ...).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Shorthand for `.tag("application", name)`.
    pub fn application(self, name: impl Into<String>) -> Self {
        self.tag("application", name)
    }

    /// The `db_driver` tag (default [`DB_DRIVER`]); `None` leaves it out.
    pub fn db_driver(mut self, value: Option<String>) -> Self {
        self.db_driver = value;
        self
    }

    /// Only carry sampled contexts (default true).
    pub fn sampled_only(mut self, yes: bool) -> Self {
        self.sampled_only = yes;
        self
    }

    /// Carry only this fraction of eligible contexts, decided from the trace id (default 1.0).
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Where the current context comes from (default: the current `tracing` span with feature
    /// `tracing`, falling back to the current `opentelemetry::Context`).
    pub fn context_source(mut self, source: ContextSource) -> Self {
        self.source = source;
        self
    }

    /// Append (default) or prepend.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<SeaCommenter, ConfigError> {
        let sampling = sqlcommenter::Sampling::new(self.sampled_only, self.ratio)
            .map_err(|sqlcommenter::RatioError(r)| ConfigError::SampleRatio(r))?;
        let mut b = Commenter::builder().placement(self.placement).sampled_only(false);
        if let Some(d) = self.db_driver.filter(|_| !self.tags.iter().any(|(k, _)| k == "db_driver")) {
            b = b.tag("db_driver", d);
        }
        for (k, v) in self.tags {
            b = b.tag(k, v);
        }
        Ok(SeaCommenter { commenter: b.build()?, sampling, source: self.source })
    }
}

/// Comments sea-query statements. Build once, share (cheap to clone).
#[derive(Debug, Clone)]
pub struct SeaCommenter {
    commenter: Commenter,
    sampling: sqlcommenter::Sampling,
    source: ContextSource,
}

impl SeaCommenter {
    /// A builder: `db_driver` tag on, sampled contexts only, context from the current span.
    pub fn builder() -> SeaCommenterBuilder {
        SeaCommenterBuilder {
            tags: Vec::new(),
            db_driver: Some(DB_DRIVER.to_owned()),
            sampled_only: true,
            ratio: 1.0,
            #[cfg(feature = "tracing")]
            source: ContextSource::Tracing,
            #[cfg(not(feature = "tracing"))]
            source: ContextSource::OpenTelemetry,
            placement: Placement::default(),
        }
    }

    /// The core commenter (static tags included).
    pub fn commenter(&self) -> &Commenter {
        &self.commenter
    }

    /// The current context, if it is to be carried (sampling applied).
    pub fn current_context(&self) -> Option<TraceContext> {
        self.source.current().filter(|c| self.eligible(c))
    }

    fn eligible(&self, ctx: &TraceContext) -> bool {
        self.sampling.carries(&ctx.traceparent)
    }

    /// Comments an already built SQL text with `ctx` (sampling applied) and `extra` per-call tags.
    pub fn comment_sql(
        &self,
        sql: String,
        values: SqlxValues,
        ctx: Option<&TraceContext>,
        extra: &[(&str, &str)],
    ) -> CommentedStatement {
        let ctx = ctx.filter(|c| self.eligible(c));
        let injected = self.commenter.inject_with(&sql, ctx, extra);
        let carries = ctx.is_some() && injected.skipped().is_none();
        let sql = match injected {
            Injected::Commented(s) => s,
            Injected::Unchanged(..) => sql,
        };
        CommentedStatement { sql, values, persistent: !carries }
    }
}

/// A built statement with its comment and values, ready for sqlx.
#[derive(Debug, Clone)]
pub struct CommentedStatement {
    sql: String,
    values: SqlxValues,
    persistent: bool,
}

impl CommentedStatement {
    /// The SQL text (with the comment).
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Whether sqlx may cache this text: false when it carries a per-request traceparent.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// The text and the values, as `build_sqlx` returns them.
    pub fn into_parts(self) -> (String, SqlxValues) {
        (self.sql, self.values)
    }

    /// A `sqlx::query_with` for this statement, `persistent(false)` when the text is per-request.
    pub fn query(self) -> Query<'static, Postgres, SqlxValues> {
        sqlx::query_with(AssertSqlSafe(self.sql), self.values).persistent(self.persistent)
    }

    /// A `sqlx::query_as_with` for this statement, `persistent(false)` when the text is per-request.
    pub fn query_as<O>(self) -> QueryAs<'static, Postgres, O, SqlxValues>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        sqlx::query_as_with(AssertSqlSafe(self.sql), self.values).persistent(self.persistent)
    }
}

/// Adds commented builds to every sea-query statement sea-query-sqlx can bind (select, insert, update,
/// delete, with).
pub trait CommentedBuild: SqlxBinder {
    /// `build_sqlx` plus the static tags and the current context (from the commenter's source).
    fn build_sqlx_commented<T: QueryBuilder>(&self, builder: T, commenter: &SeaCommenter) -> CommentedStatement {
        let ctx = commenter.source.current();
        self.build_sqlx_commented_with(builder, commenter, ctx.as_ref(), &[])
    }

    /// `build_sqlx` plus the static tags, an explicit context and per-call tags (e.g. `("action", "list")`).
    fn build_sqlx_commented_with<T: QueryBuilder>(
        &self,
        builder: T,
        commenter: &SeaCommenter,
        ctx: Option<&TraceContext>,
        extra: &[(&str, &str)],
    ) -> CommentedStatement {
        let (sql, values) = self.build_sqlx(builder);
        commenter.comment_sql(sql, values, ctx, extra)
    }
}

impl<S: SqlxBinder> CommentedBuild for S {}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_query::{Expr, ExprTrait, PostgresQueryBuilder, Query as Q};
    use sqlcommenter::TraceParent;

    #[test]
    fn bad_configuration_fails_at_build() {
        assert_eq!(SeaCommenter::builder().sample_ratio(2.0).build().unwrap_err(), ConfigError::SampleRatio(2.0));
        assert!(matches!(SeaCommenter::builder().tag("tracestate", "x").build(), Err(ConfigError::Tag(_))));
        assert!(matches!(SeaCommenter::builder().tag("a", "1").tag("a", "2").build(), Err(ConfigError::Tag(_))));
    }

    #[test]
    fn same_comment_as_the_core_and_sampling() {
        let c = SeaCommenter::builder().application("x").build().unwrap();
        let q = Q::select().column("a").from("t").and_where(Expr::col("a").eq(1)).to_owned();
        let tp = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let ctx = TraceContext::new(tp);
        let s = q.build_sqlx_commented_with(PostgresQueryBuilder, &c, Some(&ctx), &[("action", "list")]);
        let (plain, _) = q.build_sqlx(PostgresQueryBuilder);
        assert_eq!(s.sql(), c.commenter().inject_with(&plain, Some(&ctx), &[("action", "list")]).as_str());
        assert!(!s.is_persistent());
        let unsampled = TraceContext::new(tp.with_sampled(false));
        let s = q.build_sqlx_commented_with(PostgresQueryBuilder, &c, Some(&unsampled), &[]);
        assert_eq!(s.sql(), c.commenter().inject(&plain, None).as_str());
        assert!(s.is_persistent(), "static tags only: cacheable");
    }
}
