//! Wrapper configuration, validated once when the wrapper is built.

use std::sync::Arc;

use sqlcommenter::carrier::{Target, TargetError};
use sqlcommenter::{Commenter, ContextSource, TraceContext, TraceParent};

/// The `db_driver` tag filled in automatically.
pub const DB_DRIVER: &str = "tokio-postgres:0.7";

/// How the per-request trace context reaches PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Default. Statement text carries only the fixed tags (so statement caches keep working); the
    /// traceparent travels in a session carrier that is set, pipelined with the query, only when the
    /// connection's context changes.
    #[default]
    SessionCarrier,
    /// Text queries (`query("...")`, `execute("...")`, ...) carry the traceparent in a comment and run
    /// through `query_typed` in one round trip, with parameter types cached under the uncommented text.
    /// Prepared statements (`prepare` then `query(&stmt)`) still get the session carrier.
    PerQueryComment,
}

/// How the carrier is scoped for statements **outside** an explicit transaction. Inside a
/// [`crate::Transaction`] (or a transaction the application opened with `BEGIN`) it is always
/// transaction-scoped (`set_config(…, true)`): it ends with the transaction, nothing to clear, nothing for a
/// pooler to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CarrierScope {
    /// Default, for direct connections and session poolers. tokio-postgres puts a Sync after every
    /// statement outside a transaction, so the carrier there is session-scoped (`set_config(…, false)`),
    /// written only when the connection's context changes, and overwritten or cleared by the first
    /// statement of the next pool checkout.
    #[default]
    Session,
    /// For transaction poolers (PgBouncer `pool_mode = transaction`, pgdog), where consecutive statements
    /// outside a transaction may run on different server connections and a session-level
    /// `application_name` change is replayed by the pooler onto every server it links the client to.
    /// A statement outside a transaction that needs a carrier is wrapped: `BEGIN`, the transaction-scoped
    /// carrier, the statement, `COMMIT`, all pipelined (one round trip; the statement's `COMMIT` error,
    /// e.g. a deferred constraint, is returned as without the wrapper). Statements that need no carrier,
    /// and those that cannot run in a transaction block (text recognised by the core lexer: `VACUUM`,
    /// `CREATE INDEX CONCURRENTLY`, transaction control…), streaming calls (`query_raw`,
    /// `query_typed_raw`) and `COPY` run unwrapped and carry no context outside a transaction.
    Transaction,
}

/// A bad wrapper configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A static tag is invalid (empty, reserved or duplicate key).
    #[error("invalid static tag: {0}")]
    Tag(#[from] sqlcommenter::ConfigError),
    /// The sampling ratio is not within `0.0..=1.0`.
    #[error("sample ratio {0} is outside 0..=1")]
    SampleRatio(f64),
    /// The custom setting name is not one PostgreSQL accepts as a placeholder (`prefix.name`).
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The application name is not printable ASCII.
    #[error("application name {0:?} is not printable ASCII")]
    ApplicationName(String),
}

/// A function that yields the current trace context (for custom context sources).
pub type ContextFn = Arc<dyn Fn() -> Option<TraceContext> + Send + Sync>;

/// Builds a [`Config`]. Every check runs in [`ConfigBuilder::build`], so a bad configuration fails when
/// the wrapper is built, never at query time.
///
/// ```
/// use sqlcommenter_tokio_postgres::{Config, ConfigError, Mode};
///
/// let cfg = Config::builder().application_name("shop").tag("route", "/cart").sample_ratio(0.25).build()?;
/// assert_eq!(cfg.mode(), Mode::SessionCarrier);
/// assert!(matches!(Config::builder().sample_ratio(2.0).build(), Err(ConfigError::SampleRatio(_))));
/// assert!(matches!(Config::builder().tag("", "x").build(), Err(ConfigError::Tag(_))));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ConfigBuilder {
    mode: Mode,
    target: Target,
    scope: CarrierScope,
    application_name: String,
    tags: Vec<(String, String)>,
    sampled_only: bool,
    sample_ratio: f64,
    source: ContextSource,
    context_fn: Option<ContextFn>,
}

impl std::fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigBuilder")
            .field("mode", &self.mode)
            .field("target", &self.target)
            .field("scope", &self.scope)
            .field("tags", &self.tags)
            .field("sampled_only", &self.sampled_only)
            .field("sample_ratio", &self.sample_ratio)
            .finish_non_exhaustive()
    }
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder {
            mode: Mode::default(),
            target: Target::default(),
            scope: CarrierScope::default(),
            application_name: String::new(),
            tags: Vec::new(),
            sampled_only: true,
            sample_ratio: 1.0,
            #[cfg(feature = "tracing")]
            source: ContextSource::Tracing,
            #[cfg(not(feature = "tracing"))]
            source: ContextSource::OpenTelemetry,
            context_fn: None,
        }
    }
}

impl ConfigBuilder {
    /// Session carrier (default) or per-query comment.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Which setting carries the traceparent, in which format (default: `application_name` holding the bare
    /// W3C traceparent, what the OpenTelemetry Collector's postgresql receiver reads). A [`Target::Guc`]
    /// built by hand is validated in [`build`](Self::build).
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// How the carrier is scoped outside transactions (default [`CarrierScope::Session`]; use
    /// [`CarrierScope::Transaction`] behind a transaction pooler).
    pub fn carrier_scope(mut self, scope: CarrierScope) -> Self {
        self.scope = scope;
        self
    }

    /// The static `application` tag (unless one is given), and the name kept in front of the
    /// traceparent with [`sqlcommenter::carrier::AppNameFormat::Named`] (`name@00-…`, cut to 7 bytes).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Adds a static tag (route, framework, ...). `db_driver` is added automatically unless given here.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Carry only sampled contexts (default `true`).
    pub fn sampled_only(mut self, yes: bool) -> Self {
        self.sampled_only = yes;
        self
    }

    /// Carry the context of only this fraction of traces, chosen by trace id (default `1.0`).
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = ratio;
        self
    }

    /// Where the current context comes from (default: the current `tracing` span, falling back to the
    /// current `opentelemetry::Context`).
    pub fn context_source(mut self, source: ContextSource) -> Self {
        self.source = source;
        self.context_fn = None;
        self
    }

    /// A custom context source, called once per database call.
    pub fn context_fn(mut self, f: impl Fn() -> Option<TraceContext> + Send + Sync + 'static) -> Self {
        self.context_fn = Some(Arc::new(f));
        self
    }

    /// Validates everything and encodes the static tags once.
    pub fn build(self) -> Result<Config, ConfigError> {
        let sampling = sqlcommenter::Sampling::new(self.sampled_only, self.sample_ratio)
            .map_err(|sqlcommenter::RatioError(r)| ConfigError::SampleRatio(r))?;
        if let Target::Guc(name) = &self.target {
            Target::guc(name)?;
        }
        if !self.application_name.chars().all(|c| (' '..='~').contains(&c)) {
            return Err(ConfigError::ApplicationName(self.application_name));
        }
        let mut builder = Commenter::builder();
        let mut has_driver = false;
        let mut has_app = false;
        for (k, v) in &self.tags {
            has_driver |= k == "db_driver";
            has_app |= k == "application";
            builder = builder.tag(k.clone(), v.clone());
        }
        if !has_driver {
            builder = builder.tag("db_driver", DB_DRIVER);
        }
        if !has_app && !self.application_name.is_empty() {
            builder = builder.tag("application", self.application_name.clone());
        }
        let commenter = builder.sampled_only(false).build()?;
        Ok(Config {
            inner: Arc::new(Settings {
                mode: self.mode,
                target: self.target,
                scope: self.scope,
                application_name: self.application_name,
                commenter,
                sampling,
                source: self.source,
                context_fn: self.context_fn,
            }),
        })
    }
}

/// A validated wrapper configuration. Cheap to clone; share one across clients and pools.
#[derive(Clone)]
pub struct Config {
    pub(crate) inner: Arc<Settings>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("mode", &self.inner.mode)
            .field("target", &self.inner.target)
            .field("scope", &self.inner.scope)
            .field("static_tags", &self.inner.commenter.static_pairs())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A builder with the defaults: the bare traceparent in `application_name`, session-scoped outside
    /// transactions, sampled contexts only, context from the current `tracing` span.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The static tags' serialized pairs.
    pub fn static_pairs(&self) -> &[String] {
        self.inner.commenter.static_pairs()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::builder().build().unwrap_or_else(|_| unreachable!("the default configuration is valid"))
    }
}

/// The validated settings shared by every wrapper built from one [`Config`].
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) target: Target,
    pub(crate) scope: CarrierScope,
    pub(crate) application_name: String,
    pub(crate) commenter: Commenter,
    sampling: sqlcommenter::Sampling,
    source: ContextSource,
    context_fn: Option<ContextFn>,
}

impl Settings {
    /// The current trace context, if it is to be carried (sampling applied).
    pub(crate) fn current(&self) -> Option<TraceContext> {
        let ctx = match &self.context_fn {
            Some(f) => f(),
            None => self.source.current(),
        }?;
        self.carries(&ctx.traceparent).then_some(ctx)
    }

    pub(crate) fn carries(&self, tp: &TraceParent) -> bool {
        self.sampling.carries(tp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_config_fails_at_build() {
        assert_eq!(Config::builder().sample_ratio(1.5).build().unwrap_err(), ConfigError::SampleRatio(1.5));
        assert!(matches!(Config::builder().sample_ratio(f64::NAN).build(), Err(ConfigError::SampleRatio(_))));
        assert!(matches!(Config::builder().sample_ratio(-0.1).build(), Err(ConfigError::SampleRatio(_))));
        assert!(matches!(Config::builder().tag("", "x").build(), Err(ConfigError::Tag(_))));
        assert!(matches!(Config::builder().tag("traceparent", "x").build(), Err(ConfigError::Tag(_))));
        assert!(matches!(Config::builder().tag("a", "x").tag("a", "y").build(), Err(ConfigError::Tag(_))));
        assert!(matches!(
            Config::builder().target(Target::Guc("nodot".into())).build(),
            Err(ConfigError::Target(TargetError::GucName(_)))
        ));
        assert!(matches!(
            Config::builder().target(Target::Guc("a.b; drop".into())).build(),
            Err(ConfigError::Target(TargetError::GucName(_)))
        ));
        assert!(Config::builder().target(Target::guc("sqlcommenter.traceparent").unwrap()).build().is_ok());
        assert!(matches!(Config::builder().application_name("é").build(), Err(ConfigError::ApplicationName(_))));
    }

    #[test]
    fn driver_tag_is_automatic() {
        let cfg = Config::builder().application_name("shop").build().unwrap();
        assert_eq!(cfg.static_pairs(), ["application='shop'", "db_driver='tokio-postgres%3A0.7'"]);
        let cfg = Config::builder().tag("db_driver", "mine").build().unwrap();
        assert_eq!(cfg.static_pairs(), ["db_driver='mine'"]);
    }

    #[test]
    fn ratio_sampling_is_by_trace_id() {
        let cfg = Config::builder().sample_ratio(0.5).build().unwrap();
        let lo = TraceParent::new([1; 16], [1; 8], 1).unwrap();
        let mut hi_id = [1u8; 16];
        hi_id[8] = 0xff;
        let hi = TraceParent::new(hi_id, [1; 8], 1).unwrap();
        assert!(cfg.inner.carries(&lo));
        assert!(!cfg.inner.carries(&hi));
        let none = Config::builder().sample_ratio(0.0).build().unwrap();
        assert!(!none.inner.carries(&lo));
        let unsampled = TraceParent::new([1; 16], [1; 8], 0).unwrap();
        assert!(!Config::default().inner.carries(&unsampled));
        let all = Config::builder().sampled_only(false).build().unwrap();
        assert!(all.inner.carries(&unsampled));
    }
}
