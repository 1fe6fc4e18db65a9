//! Configuration of the wrappers: static tags, how the per-request context travels, sampling.

use std::sync::Arc;

use sqlcommenter::{Commenter, ContextSource, Placement, TraceContext, TraceParent};

/// The `db_driver` tag value this crate fills in.
pub const DB_DRIVER: &str = "sqlx:0.9";

/// How the per-request trace context reaches PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Default. Static tags go into the statement text (they repeat, so sqlx's statement cache keeps
    /// working); the `traceparent` goes into a session carrier ([`Carrier`]) that is set once per request
    /// and connection, only when the context changes. Statement counts stay as without the wrapper.
    #[default]
    SessionCarrier,
    /// The `traceparent` goes into every statement's text (what pg_tracing and comment-reading tools
    /// see). Such statements bypass sqlx's statement cache (`persistent(false)` semantics): each costs a
    /// Parse round trip more than a cached statement, but leaves nothing prepared on the server.
    PerQueryComment,
}

/// The session variable that carries the traceparent in [`Mode::SessionCarrier`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Carrier {
    /// Default. `application_name` = `<base name>@<traceparent>` (see
    /// [`sqlcommenter::carrier::encode_application_name`]): reaches `%a` in `log_line_prefix`,
    /// csvlog/jsonlog and `pg_stat_activity`.
    #[default]
    ApplicationName,
    /// A custom GUC holding the bare traceparent (default name [`sqlcommenter::carrier::DEFAULT_GUC`]):
    /// leaves `application_name` alone, but never reaches the server log.
    Guc(String),
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
    /// The custom GUC name is not `prefix.name` made of lowercase letters, digits and `_`.
    #[error("invalid carrier GUC name {0:?}: expected `prefix.name` with [a-z0-9_] parts")]
    GucName(String),
}

/// Builds a [`Config`]. Obtained from [`Config::builder`].
///
/// ```
/// use sqlcommenter_sqlx::{Carrier, Config, ConfigError, Mode};
///
/// let config = Config::builder()
///     .application("checkout")
///     .tag("route", "/orders/{id}")
///     .carrier(Carrier::ApplicationName)
///     .mode(Mode::SessionCarrier)
///     .sample_ratio(0.25)
///     .build()?;
/// # let _ = config;
/// // Mistakes fail here, not at query time:
/// let err = Config::builder().sample_ratio(1.5).build().unwrap_err();
/// assert_eq!(err.to_string(), "sample ratio 1.5 is outside 0.0..=1.0");
/// assert!(matches!(Config::builder().tag("traceparent", "x").build(), Err(ConfigError::Tag(_))));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct ConfigBuilder {
    tags: Vec<(String, String)>,
    db_driver: bool,
    mode: Mode,
    carrier: Carrier,
    sampled_only: bool,
    ratio: f64,
    source: ContextSource,
    placement: Placement,
    base_name: Option<String>,
    sticky: Option<std::time::Duration>,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder {
            tags: Vec::new(),
            db_driver: true,
            mode: Mode::default(),
            carrier: Carrier::default(),
            sampled_only: true,
            ratio: 1.0,
            #[cfg(feature = "tracing")]
            source: ContextSource::Tracing,
            #[cfg(not(feature = "tracing"))]
            source: ContextSource::OpenTelemetry,
            placement: Placement::default(),
            base_name: None,
            sticky: None,
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

    /// The session carrier (default [`Carrier::ApplicationName`]).
    pub fn carrier(mut self, carrier: Carrier) -> Self {
        self.carrier = carrier;
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

    /// The client name kept in front of the traceparent in `application_name`. Default: the pool's
    /// configured `application_name` ([`crate::TracedPool::new`]), else none.
    pub fn base_application_name(mut self, name: impl Into<String>) -> Self {
        self.base_name = Some(name.into());
        self
    }

    /// Opt-in: a [`crate::TracedPool`] connection released while carrying a context is kept aside (for at
    /// most `idle`) and handed to the next wrapper `acquire()` with its carrier state known, instead of
    /// being `RESET` and returned to the pool. Saves the `RESET` (and the pool's acquire ping) per sampled
    /// request; costs: such connections skip the pool's `test_before_acquire` check and are unavailable to
    /// raw pool users for up to `idle`, after which they are reset and returned.
    pub fn sticky_pool_connections(mut self, idle: std::time::Duration) -> Self {
        self.sticky = Some(idle);
        self
    }

    /// Validates everything.
    pub fn build(self) -> Result<Config, ConfigError> {
        let sampling = sqlcommenter::Sampling::new(self.sampled_only, self.ratio)
            .map_err(|sqlcommenter::RatioError(r)| ConfigError::SampleRatio(r))?;
        if let Carrier::Guc(name) = &self.carrier {
            if !sqlcommenter::carrier::is_valid_guc_name(name) {
                return Err(ConfigError::GucName(name.clone()));
            }
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
                carrier: self.carrier,
                sampling,
                source: self.source,
                base_name: self.base_name,
                sticky: self.sticky,
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
    /// A builder with the defaults: session carrier in `application_name`, sampled contexts only,
    /// `db_driver` tag on, context from the current span.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// This configuration with `name` as the base `application_name`, unless one was configured.
    pub(crate) fn with_default_base_name(&self, name: Option<&str>) -> Config {
        match (&self.shared.base_name, name) {
            (None, Some(n)) => {
                let mut s = (*self.shared).clone();
                s.base_name = Some(n.to_owned());
                Config { shared: Arc::new(s) }
            }
            _ => self.clone(),
        }
    }
}

/// The resolved configuration every wrapper shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) commenter: Commenter,
    pub(crate) mode: Mode,
    pub(crate) carrier: Carrier,
    sampling: sqlcommenter::Sampling,
    source: ContextSource,
    base_name: Option<String>,
    pub(crate) sticky: Option<std::time::Duration>,
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

    /// The carrier value for `tp`.
    pub(crate) fn carrier_value(&self, tp: &TraceParent) -> String {
        match &self.carrier {
            Carrier::ApplicationName => {
                sqlcommenter::carrier::encode_application_name(self.base_name.as_deref().unwrap_or(""), tp)
            }
            Carrier::Guc(_) => tp.to_string(),
        }
    }

    /// The variable the carrier writes.
    pub(crate) fn carrier_variable(&self) -> &str {
        match &self.carrier {
            Carrier::ApplicationName => "application_name",
            Carrier::Guc(name) => name,
        }
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
        let e = Config::builder().carrier(Carrier::Guc("nodot".into())).build().unwrap_err();
        assert_eq!(e.to_string(), "invalid carrier GUC name \"nodot\": expected `prefix.name` with [a-z0-9_] parts");
        assert!(Config::builder().carrier(Carrier::Guc("a.b; DROP".into())).build().is_err());
        assert!(Config::builder().carrier(Carrier::Guc(sqlcommenter::carrier::DEFAULT_GUC.into())).build().is_ok());
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
