//! Wrapper configuration, validated once when the wrapper is built.

use std::sync::Arc;

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

/// Which session setting carries the traceparent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Carrier {
    /// `application_name` (default): reaches `%a` in `log_line_prefix`, csvlog/jsonlog and
    /// `pg_stat_activity`. Value: [`sqlcommenter::carrier::encode_application_name`].
    #[default]
    ApplicationName,
    /// A custom setting such as [`sqlcommenter::carrier::DEFAULT_GUC`] holding the bare traceparent;
    /// leaves `application_name` alone but never reaches the server log.
    Guc(String),
}

/// How the carrier statement is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CarrierStatement {
    /// Default: `SET application_name TO E'...'` (or the custom setting) as a simple-protocol query: a
    /// utility statement, so the server neither plans nor keeps anything; the value is a quoted literal
    /// (traceparent hex and the validated printable-ASCII name, escaped). Leaves the connection's
    /// prepared statements exactly as without the wrapper.
    #[default]
    Simple,
    /// `SELECT set_config($1, $2, false)` as an unnamed extended-protocol statement (parsed and planned
    /// each time the context changes). Also leaves the prepared statements unchanged.
    Unnamed,
    /// A named statement prepared once per connection (one round trip at the first carrier), then only
    /// Bind/Execute. Cheaper per request, but leaves one extra entry in `pg_prepared_statements`.
    Prepared,
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
    /// The custom setting name is not a dotted PostgreSQL identifier (`prefix.name`).
    #[error("carrier setting {0:?} is not a dotted identifier such as \"sqlcommenter.traceparent\"")]
    GucName(String),
    /// The base application name is too long to leave room for a traceparent.
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
    carrier: Carrier,
    carrier_statement: CarrierStatement,
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
            .field("carrier", &self.carrier)
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
            carrier: Carrier::default(),
            carrier_statement: CarrierStatement::default(),
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

    /// Which session setting carries the traceparent (default `application_name`).
    pub fn carrier(mut self, carrier: Carrier) -> Self {
        self.carrier = carrier;
        self
    }

    /// How the carrier is sent (default [`CarrierStatement::Simple`]).
    pub fn carrier_statement(mut self, how: CarrierStatement) -> Self {
        self.carrier_statement = how;
        self
    }

    /// The client's own name, kept in front of the traceparent in `application_name`
    /// (`name@00-...`), and also the static `application` tag unless one is given.
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
        if let Carrier::Guc(name) = &self.carrier {
            if !sqlcommenter::carrier::is_valid_guc_name(name) {
                return Err(ConfigError::GucName(name.clone()));
            }
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
                carrier: self.carrier,
                carrier_statement: self.carrier_statement,
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
            .field("carrier", &self.inner.carrier)
            .field("static_tags", &self.inner.commenter.static_pairs())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A builder with the defaults: session carrier in `application_name`, sampled contexts only,
    /// context from the current `tracing` span.
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
    pub(crate) carrier: Carrier,
    pub(crate) carrier_statement: CarrierStatement,
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
            Config::builder().carrier(Carrier::Guc("nodot".into())).build(),
            Err(ConfigError::GucName(_))
        ));
        assert!(matches!(
            Config::builder().carrier(Carrier::Guc("a.b; drop".into())).build(),
            Err(ConfigError::GucName(_))
        ));
        assert!(Config::builder().carrier(Carrier::Guc("sqlcommenter.traceparent".into())).build().is_ok());
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
