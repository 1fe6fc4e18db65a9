//! Per-request tags (`route`, `action`, `framework`, ...) from a task-local scope.

use std::future::Future;
use std::sync::Arc;

use crate::config::ConfigError;

tokio::task_local! {
    static TAGS: Arc<[(String, String)]>;
}

/// Tags added to every statement issued inside [`TagScope::run`] (on top of the static ones), e.g. the
/// route a web framework matched. They go into the statement text, so give them few distinct values
/// (route templates, not concrete paths): each distinct text is one cached statement.
///
/// ```
/// use sqlcommenter_sqlx::TagScope;
///
/// let scope = TagScope::new([("route", "/orders/{id}"), ("action", "show")])?;
/// # let _ = scope;
/// // scope.run(async { sqlx::query("...").fetch_one(&db).await }).await
/// assert!(TagScope::new([("traceparent", "x")]).is_err());
/// # Ok::<(), sqlcommenter_sqlx::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TagScope {
    tags: Arc<[(String, String)]>,
}

impl TagScope {
    /// Validates the tags (non-empty keys, not `traceparent`/`tracestate`, no key twice).
    pub fn new<K: Into<String>, V: Into<String>>(tags: impl IntoIterator<Item = (K, V)>) -> Result<Self, ConfigError> {
        let tags: Vec<(String, String)> = tags.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let mut check = sqlcommenter::Commenter::builder();
        for (k, v) in &tags {
            check = check.tag(k.clone(), v.clone());
        }
        check.build()?;
        Ok(TagScope { tags: tags.into() })
    }

    /// Runs `fut` with these tags on its statements.
    pub async fn run<F: Future>(&self, fut: F) -> F::Output {
        TAGS.scope(self.tags.clone(), fut).await
    }
}

/// The tags of the current scope, if any.
pub(crate) fn current() -> Option<Arc<[(String, String)]>> {
    TAGS.try_with(|t| t.clone()).ok().filter(|t| !t.is_empty())
}
