//! [`MySqlConfig`]: static tags, sampling and the context source for the MySQL wrappers.

use std::sync::Arc;

use sqlcommenter::{Commenter, ContextSource, Dialect, Placement, Sampling, TraceContext};

use crate::config::{ConfigError, DB_DRIVER};

/// Builds a [`MySqlConfig`]. Obtained from [`MySqlConfig::builder`].
///
/// ```
/// use sqlcommenter_sqlx::mysql::MySqlConfig;
/// use sqlcommenter_sqlx::ConfigError;
///
/// let config = MySqlConfig::builder().application("checkout").tag("route", "/orders/{id}").sample_ratio(0.25).build()?;
/// # let _ = config;
/// // Mistakes fail here, not at query time:
/// assert!(matches!(MySqlConfig::builder().sample_ratio(1.5).build(), Err(ConfigError::SampleRatio(_))));
/// assert!(matches!(MySqlConfig::builder().tag("traceparent", "x").build(), Err(ConfigError::Tag(_))));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct MySqlConfigBuilder {
    tags: Vec<(String, String)>,
    db_driver: bool,
    sampled_only: bool,
    ratio: f64,
    source: ContextSource,
    placement: Placement,
}

impl Default for MySqlConfigBuilder {
    fn default() -> Self {
        MySqlConfigBuilder {
            tags: Vec::new(),
            db_driver: true,
            sampled_only: true,
            ratio: 1.0,
            #[cfg(feature = "tracing")]
            source: ContextSource::Tracing,
            #[cfg(not(feature = "tracing"))]
            source: ContextSource::OpenTelemetry,
            placement: Placement::default(),
        }
    }
}

impl MySqlConfigBuilder {
    /// Adds a static tag (e.g. `application`, `framework`, `route`). Static tags live in the cached
    /// statement text, so use keys and values with few distinct values (never per-request ids).
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

    /// Only carry contexts whose sampled flag is set (default true, as OpenTelemetry recommends).
    pub fn sampled_only(mut self, yes: bool) -> Self {
        self.sampled_only = yes;
        self
    }

    /// Carries only this fraction of (otherwise eligible) contexts, decided from the trace id so all
    /// statements of a trace agree; the others run cached with the static tags. Within `0.0..=1.0`
    /// (default 1.0).
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

    /// Append (default) or prepend the comment.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Validates everything.
    pub fn build(self) -> Result<MySqlConfig, ConfigError> {
        let sampling = Sampling::new(self.sampled_only, self.ratio)
            .map_err(|sqlcommenter::RatioError(r)| ConfigError::SampleRatio(r))?;
        // Sampling is decided here, per statement; the commenter adds whatever context it is given.
        let mut b = Commenter::builder().dialect(Dialect::MySql).placement(self.placement).sampled_only(false);
        if self.db_driver && !self.tags.iter().any(|(k, _)| k == "db_driver") {
            b = b.tag("db_driver", DB_DRIVER);
        }
        for (k, v) in self.tags {
            b = b.tag(k, v);
        }
        let commenter = b.build()?;
        Ok(MySqlConfig { shared: Arc::new(Shared { commenter, sampling, source: self.source }) })
    }
}

/// A validated configuration for the MySQL wrappers, cheap to clone and share.
#[derive(Debug, Clone)]
pub struct MySqlConfig {
    pub(super) shared: Arc<Shared>,
}

impl Default for MySqlConfig {
    fn default() -> Self {
        MySqlConfigBuilder::default().build().unwrap_or_else(|_| unreachable!("the default configuration is valid"))
    }
}

impl MySqlConfig {
    /// A builder with the defaults: sampled contexts only, `db_driver` tag on, context from the current
    /// span, comment appended.
    pub fn builder() -> MySqlConfigBuilder {
        MySqlConfigBuilder::default()
    }
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) commenter: Commenter,
    sampling: Sampling,
    source: ContextSource,
}

impl Shared {
    /// The context to carry for a statement issued now, after sampling.
    pub(super) fn current(&self) -> Option<TraceContext> {
        self.source.current().filter(|c| self.sampling.carries(&c.traceparent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commenter_lexes_mysql() {
        let cfg = MySqlConfig::builder().application("a").build().unwrap();
        let c = &cfg.shared.commenter;
        // `#` starts a line comment in MySQL: the comment goes before it, not inside it.
        let out = c.inject("SELECT 1 # note", None);
        assert_eq!(out.as_str(), "SELECT 1 /*application='a',db_driver='sqlx%3A0.9'*/ # note");
        // A backslash-escaped quote does not end a MySQL string.
        let out = c.inject("SELECT 'it\\'s' -- x", None);
        assert_eq!(out.as_str(), "SELECT 'it\\'s' /*application='a',db_driver='sqlx%3A0.9'*/ -- x");
        assert!(MySqlConfig::builder().sample_ratio(f64::NAN).build().is_err());
        assert!(MySqlConfig::builder().tag("a", "1").tag("a", "2").build().is_err());
    }
}
