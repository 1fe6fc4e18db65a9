//! Configuration of the wrappers: static tags, how the per-request context travels, sampling.

use std::sync::Arc;

use sqlcommenter::carrier::{Action, Scope, Target, TargetError};
use sqlcommenter::{Commenter, ContextSource, Placement, TraceContext, TraceParent};

#[cfg(doc)]
use sqlcommenter::carrier::AppNameFormat;

/// The `db_driver` tag value this crate fills in.
pub const DB_DRIVER: &str = "sqlx:0.9";

/// How the per-request trace context reaches PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Default. Static tags go into the statement text (they repeat, so sqlx's statement cache keeps
    /// working); the `traceparent` goes into a carrier variable ([`Target`], `application_name` by
    /// default) written only when the context changes: once per request and connection outside
    /// transactions, folded into the `BEGIN` of a transaction. Prepared statements stay as without the
    /// wrapper.
    #[default]
    SessionCarrier,
    /// The `traceparent` goes into every statement's text (what pg_tracing and comment-reading tools
    /// see). Such statements bypass sqlx's statement cache (`persistent(false)` semantics): each costs a
    /// Parse round trip more than a cached statement, but leaves nothing prepared on the server.
    PerQueryComment,
}

/// Where a traceparent written outside a transaction lives ([`Mode::SessionCarrier`]). Inside a
/// transaction (a [`crate::TracedTransaction`], or one the application opened with `BEGIN`) the carrier is
/// always transaction-scoped (`set_config(…, true)`) and ends with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutsideTransaction {
    /// Default. Session-scoped (`set_config(…, false)`): written once per request and connection, only when
    /// the context changes (one round trip), and cleared before the connection serves someone else. Right
    /// for direct connections and session poolers. sqlx puts a Sync after every statement, so a
    /// transaction-scoped value would end before the statement that needs it.
    #[default]
    Session,
    /// For transaction poolers (PgBouncer/pgdog `pool_mode = transaction`), where consecutive statements may
    /// run on different server connections and a session value is replayed by the pooler: a traced
    /// statement outside a transaction runs in one the wrapper opens (`BEGIN` + transaction-scoped carrier in
    /// one simple Query, the statement, `COMMIT`: two round trips more than the statement alone). Statements
    /// PostgreSQL refuses in a transaction block (`VACUUM`, `CREATE INDEX CONCURRENTLY`, …) run unwrapped,
    /// without the carrier. Nothing is ever left in the session.
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
/// use sqlcommenter_sqlx::{AppNameFormat, Config, ConfigError, Mode, Target};
///
/// let config = Config::builder()
///     .application("checkout")
///     .tag("route", "/orders/{id}")
///     .carrier(Target::ApplicationName(AppNameFormat::Bare))
///     .mode(Mode::SessionCarrier)
///     .sample_ratio(0.25)
///     .build()?;
/// # let _ = config;
/// // Mistakes fail here, not at query time:
/// let err = Config::builder().sample_ratio(1.5).build().unwrap_err();
/// assert_eq!(err.to_string(), "sample ratio 1.5 is outside 0.0..=1.0");
/// assert!(matches!(Config::builder().tag("traceparent", "x").build(), Err(ConfigError::Tag(_))));
/// assert!(matches!(Config::builder().carrier(Target::Guc("nodot".into())).build(), Err(ConfigError::Target(_))));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct ConfigBuilder {
    tags: Vec<(String, String)>,
    db_driver: bool,
    mode: Mode,
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
            mode: Mode::default(),
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
    /// Adds a static tag (e.g. `application`, `framework`, `route`, `action`). Static tags live in the
    /// statement text, so use values with few distinct values (never per-request ids).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Shorthand for `.tag("application", name)`.
    pub fn application(self, name: impl Into<String>) -> Self {
        self.tag("application", name)
    }

    /// Whether to add `db_driver='sqlx:0.9'` (default on).
    pub fn db_driver_tag(mut self, yes: bool) -> Self {
        self.db_driver = yes;
        self
    }

    /// Where the per-request context goes (default [`Mode::SessionCarrier`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The variable that carries the traceparent (default: `application_name` holding the bare W3C
    /// traceparent, the form OpenTelemetry's tools read; [`AppNameFormat::Named`] keeps 7 bytes of the
    /// client name in front; [`Target::Guc`] a custom setting; [`Target::PgTracing`] pg_tracing's).
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

    /// Only carry contexts whose sampled flag is set (default true, as OpenTelemetry recommends).
    pub fn sampled_only(mut self, yes: bool) -> Self {
        self.sampled_only = yes;
        self
    }

    /// Carries only this fraction of (otherwise eligible) contexts, decided deterministically from the
    /// trace id so all queries of one trace agree. Must be within `0.0..=1.0` (default 1.0).
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

    /// Append (default) or prepend the comment.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// The connection's own `application_name`: what a cleared carrier writes back, and the name kept in
    /// front of the traceparent with [`AppNameFormat::Named`]. Default: the pool's configured
    /// `application_name` ([`crate::TracedPool::new`]); for a [`crate::TracedConnection::new`] the value the
    /// connection started with (a clear restores it, like `RESET`; the named form then has no name).
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
        Ok(Config {
            shared: Arc::new(Shared {
                commenter,
                mode: self.mode,
                target: self.carrier,
                outside: self.outside,
                sampling,
                source: self.source,
                base_name: self.base_name,
            }),
        })
    }
}

/// A validated configuration, cheap to clone and share between wrappers.
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
    /// A builder with the defaults: the bare traceparent in `application_name`, session-scoped outside
    /// transactions, sampled contexts only,
    /// `db_driver` tag on, context from the current span.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// This configuration with `name` (a pool's connect options; `None`: the server default, empty) as
    /// the base `application_name`, unless one was configured.
    pub(crate) fn with_default_base_name(&self, name: Option<&str>) -> Config {
        match &self.shared.base_name {
            None => {
                let mut s = (*self.shared).clone();
                s.base_name = Some(name.unwrap_or_default().to_owned());
                Config { shared: Arc::new(s) }
            }
            Some(_) => self.clone(),
        }
    }
}

/// The resolved configuration every wrapper shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) commenter: Commenter,
    pub(crate) mode: Mode,
    pub(crate) target: Target,
    pub(crate) outside: OutsideTransaction,
    sampling: sqlcommenter::Sampling,
    source: ContextSource,
    base_name: Option<String>,
}

impl Shared {
    /// The context to carry for a statement issued now, after sampling.
    pub(crate) fn current(&self) -> Option<TraceContext> {
        self.source.current().filter(|c| self.eligible(&c.traceparent))
    }

    /// Whether a context passes `sampled_only` and the ratio.
    pub(crate) fn eligible(&self, tp: &TraceParent) -> bool {
        self.sampling.carries(tp)
    }

    /// The carrier statement for `action` in `scope`, as one simple-protocol statement (see
    /// [`crate::carrier`] for why literals rather than the prepared form).
    pub(crate) fn write_sql(&self, action: &Action, scope: Scope) -> String {
        self.write_sql_for(action, scope, None)
    }

    /// [`Shared::write_sql`] on a connection whose own `application_name` was `learned`.
    pub(crate) fn write_sql_for(&self, action: &Action, scope: Scope, learned: Option<&str>) -> String {
        match (self.base_name.as_deref().or(learned), action, &self.target) {
            // The connection's own name is not known: clear to the value it started with, as `RESET`
            // would (one fixed text; reading `pg_settings` costs, so connections learn their name first).
            (None, Action::Clear, Target::ApplicationName(_)) => format!(
                "SELECT pg_catalog.set_config(name, reset_val, {}) FROM pg_catalog.pg_settings \
                 WHERE name = 'application_name'",
                scope.is_local()
            ),
            (base, action, target) => target.write(action, scope, base.unwrap_or("")).literal_sql(),
        }
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
        assert!(matches!(Config::builder().sample_ratio(-0.1).build(), Err(ConfigError::SampleRatio(_))));
        assert!(matches!(Config::builder().sample_ratio(f64::NAN).build(), Err(ConfigError::SampleRatio(_))));
        assert!(matches!(Config::builder().tag("", "x").build(), Err(ConfigError::Tag(_))));
        assert!(matches!(Config::builder().tag("traceparent", "x").build(), Err(ConfigError::Tag(_))));
        let e = Config::builder().carrier(Target::Guc("nodot".into())).build().unwrap_err();
        assert_eq!(e, ConfigError::Target(TargetError::GucName("nodot".into())));
        assert!(e.to_string().contains("\"nodot\""), "{e}");
        assert!(Config::builder().carrier(Target::Guc("a.b; DROP".into())).build().is_err());
        assert!(Config::builder().carrier(Target::Guc(sqlcommenter::carrier::DEFAULT_GUC.into())).build().is_ok());
        assert!(Config::builder().sample_ratio(0.0).build().is_ok());
    }

    #[test]
    fn ratio_is_decided_by_trace_id() {
        let cfg = Config::builder().sample_ratio(0.5).build().unwrap();
        let low = TraceParent::new([1; 16], [1; 8], 1).unwrap();
        let mut id = [0u8; 16];
        id[0] = 1;
        let high = TraceParent::new([0xff; 16], [1; 8], 1).unwrap();
        let zero_low = TraceParent::new(id, [1; 8], 1).unwrap();
        assert!(cfg.shared.eligible(&low));
        assert!(cfg.shared.eligible(&zero_low));
        assert!(!cfg.shared.eligible(&high));
        let unsampled = TraceParent::new([1; 16], [1; 8], 0).unwrap();
        assert!(!cfg.shared.eligible(&unsampled));
        let all = Config::builder().sampled_only(false).build().unwrap();
        assert!(all.shared.eligible(&unsampled));
    }
}
