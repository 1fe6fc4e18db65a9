//! Configuration: static tags, the carrier, sampling, where the context comes from.

use std::sync::Arc;

use sqlcommenter::carrier::{Action, Scope, Target, TargetError};
use sqlcommenter::{Commenter, ContextSource, Placement, TraceParent};

#[cfg(doc)]
use sqlcommenter::carrier::AppNameFormat;

/// The `db_driver` tag value this crate fills in.
pub const DB_DRIVER: &str = "diesel-async:0.9";

/// Where a traceparent written outside a transaction lives. Inside a transaction (`conn.transaction`, or
/// the application's own `BEGIN`) the carrier is always transaction-scoped and ends with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutsideTransaction {
    /// Default. Session-scoped (`set_config(…, false)`), written only when the context changes on the
    /// connection, pipelined with the statement; rewritten or cleared by the next statement that needs
    /// something else. Right for direct connections and session poolers.
    #[default]
    Session,
    /// For transaction poolers (PgBouncer/pgdog `pool_mode = transaction`), where a session value would be
    /// replayed by the pooler to other clients: a traced statement outside a transaction runs in one of its
    /// own — `BEGIN` + the transaction-scoped carrier, the statement, `COMMIT`, all pipelined in one flight
    /// (no extra round trip, two more statements on the server). Statements PostgreSQL refuses in a
    /// transaction block (`VACUUM`, `CREATE INDEX CONCURRENTLY`, …) and statements that change settings or
    /// transactions themselves run unwrapped, without the carrier. Nothing is ever session-scoped.
    WrapInTransaction,
}

/// A bad configuration, reported by [`ConfigBuilder::build`] (never at query time).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A static tag is invalid (empty, reserved or duplicate key).
    #[error("invalid static tag: {0}")]
    Tag(#[from] sqlcommenter::ConfigError),
    /// The sample ratio is outside `0.0..=1.0` (or not a number).
    #[error("sample ratio {0} is outside 0.0..=1.0")]
    SampleRatio(f64),
    /// The carrier target cannot work (e.g. a malformed custom setting name).
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// Builds a [`Config`]. Obtained from [`Config::builder`].
///
/// ```
/// use sqlcommenter_diesel::{AppNameFormat, Config, ConfigError, Target};
///
/// let config = Config::builder()
///     .application("checkout")
///     .tag("framework", "axum")
///     .carrier(Target::ApplicationName(AppNameFormat::Bare))
///     .sample_ratio(0.25)
///     .build()?;
/// # let _ = config;
/// assert!(matches!(Config::builder().sample_ratio(1.5).build(), Err(ConfigError::SampleRatio(_))));
/// assert!(matches!(Config::builder().tag("traceparent", "x").build(), Err(ConfigError::Tag(_))));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct ConfigBuilder {
    tags: Vec<(String, String)>,
    db_driver: bool,
    carrier: Target,
    outside: OutsideTransaction,
    sampled_only: bool,
    ratio: f64,
    source: ContextSource,
    placement: Placement,
    base_name: Option<String>,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder {
            tags: Vec::new(),
            db_driver: true,
            carrier: Target::default(),
            outside: OutsideTransaction::default(),
            sampled_only: true,
            ratio: 1.0,
            #[cfg(feature = "tracing")]
            source: ContextSource::Tracing,
            #[cfg(not(feature = "tracing"))]
            source: ContextSource::OpenTelemetry,
            placement: Placement::default(),
            base_name: None,
        }
    }
}

impl ConfigBuilder {
    /// Adds a static tag (e.g. `application`, `framework`). Static tags live in the statement text, which
    /// diesel's prepared-statement cache keys by query type or text: use fixed values only.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Shorthand for `.tag("application", name)`.
    pub fn application(self, name: impl Into<String>) -> Self {
        self.tag("application", name)
    }

    /// Whether to add `db_driver='diesel-async:0.9'` (default on).
    pub fn db_driver_tag(mut self, yes: bool) -> Self {
        self.db_driver = yes;
        self
    }

    /// The variable that carries the traceparent (default: `application_name` holding the bare W3C
    /// traceparent; [`AppNameFormat::Named`] keeps 7 bytes of the client name in front; [`Target::Guc`] a
    /// custom setting; [`Target::PgTracing`] pg_tracing's).
    pub fn carrier(mut self, target: Target) -> Self {
        self.carrier = target;
        self
    }

    /// Where a traceparent written outside a transaction lives (default [`OutsideTransaction::Session`];
    /// behind a transaction pooler use [`OutsideTransaction::WrapInTransaction`]).
    pub fn outside_transaction(mut self, outside: OutsideTransaction) -> Self {
        self.outside = outside;
        self
    }

    /// Only carry contexts whose sampled flag is set (default true).
    pub fn sampled_only(mut self, yes: bool) -> Self {
        self.sampled_only = yes;
        self
    }

    /// Carries only this fraction of (otherwise eligible) contexts, decided from the trace id so all
    /// statements of one trace agree. Within `0.0..=1.0` (default 1.0).
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Where the current context comes from (default: the current `tracing` span with feature `tracing`,
    /// falling back to the current `opentelemetry::Context`).
    pub fn context_source(mut self, source: ContextSource) -> Self {
        self.source = source;
        self
    }

    /// Append (default) or prepend the static comment.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// The connection's own `application_name`: what a cleared carrier writes back, and the name kept in
    /// front of the traceparent with [`AppNameFormat::Named`]. Default: the `application_name` of the
    /// connection URL; for a wrapped connection ([`crate::TracedPgConnection::new`]) the value the
    /// connection has before its first write (read once).
    pub fn base_application_name(mut self, name: impl Into<String>) -> Self {
        self.base_name = Some(name.into());
        self
    }

    /// Validates everything.
    pub fn build(self) -> Result<Config, ConfigError> {
        let sampling = sqlcommenter::Sampling::new(self.sampled_only, self.ratio)
            .map_err(|sqlcommenter::RatioError(r)| ConfigError::SampleRatio(r))?;
        if let Target::Guc(name) = &self.carrier {
            Target::guc(name)?;
        }
        let mut b = Commenter::builder().placement(self.placement).sampled_only(false);
        if self.db_driver && !self.tags.iter().any(|(k, _)| k == "db_driver") {
            b = b.tag("db_driver", DB_DRIVER);
        }
        for (k, v) in self.tags {
            b = b.tag(k, v);
        }
        let commenter = b.build()?;
        let comment = commenter.comment(None);
        Ok(Config {
            shared: Arc::new(Shared {
                commenter,
                comment,
                placement: self.placement,
                target: self.carrier,
                outside: self.outside,
                sampling,
                source: self.source,
                base_name: self.base_name,
            }),
        })
    }
}

/// A validated configuration, cheap to clone and share between connections.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) shared: Arc<Shared>,
}

impl Default for Config {
    fn default() -> Self {
        ConfigBuilder::default().build().unwrap_or_else(|_| unreachable!("the default configuration is valid"))
    }
}

impl Config {
    /// A builder with the defaults: the bare traceparent in `application_name`, sampled contexts only,
    /// `db_driver` tag on, context from the current span.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The static comment every statement gets (`/*db_driver='diesel-async%3A0.9'*/` by default; empty
    /// without tags).
    pub fn comment(&self) -> &str {
        &self.shared.comment
    }
}

/// The resolved configuration every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) commenter: Commenter,
    /// The static comment (`/*…*/`), or empty.
    pub(crate) comment: String,
    pub(crate) placement: Placement,
    pub(crate) target: Target,
    pub(crate) outside: OutsideTransaction,
    sampling: sqlcommenter::Sampling,
    source: ContextSource,
    pub(crate) base_name: Option<String>,
}

impl Shared {
    /// The traceparent a statement issued now carries, after sampling.
    pub(crate) fn current(&self) -> Option<TraceParent> {
        self.source.current().map(|c| c.traceparent).filter(|tp| self.sampling.carries(tp))
    }

    /// The core carrier statement for `action` in `scope`, as one simple-protocol statement with literals:
    /// it never enters diesel's statement cache nor `pg_prepared_statements`, and `pg_stat_statements`
    /// keeps one entry for every value.
    pub(crate) fn write_sql(&self, action: &Action, scope: Scope, base: &str) -> String {
        self.target.write(action, scope, base).literal_sql()
    }

    /// Whether a connection must learn its own `application_name` before its first write.
    pub(crate) fn needs_base(&self) -> bool {
        self.base_name.is_none() && matches!(self.target, Target::ApplicationName(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configuration_fails_at_build() {
        assert_eq!(Config::builder().sample_ratio(1.5).build().unwrap_err(), ConfigError::SampleRatio(1.5));
        assert!(matches!(Config::builder().sample_ratio(f64::NAN).build(), Err(ConfigError::SampleRatio(_))));
        assert!(matches!(Config::builder().tag("", "x").build(), Err(ConfigError::Tag(_))));
        let e = Config::builder().carrier(Target::Guc("nodot".into())).build().unwrap_err();
        assert_eq!(e, ConfigError::Target(TargetError::GucName("nodot".into())));
    }

    #[test]
    fn static_comment_is_fixed() {
        let cfg = Config::builder().application("shop").build().unwrap();
        assert_eq!(cfg.comment(), "/*application='shop',db_driver='diesel-async%3A0.9'*/");
        assert_eq!(Config::builder().db_driver_tag(false).build().unwrap().comment(), "");
    }
}
