//! [`Commented`]: any sqlx `Execute` with the comment added to its text.

use std::sync::Arc;

use sqlcommenter::{Injected, TraceContext};
use sqlx::postgres::{PgArguments, PgStatement};
use sqlx::{AssertSqlSafe, Execute, Postgres, SqlSafeStr, SqlStr};

use crate::config::Shared;

/// A query as the wrapper sends it: the caller's query, its text with the static tags (and, in
/// per-query-comment mode, the traceparent) added. A text carrying a per-request traceparent is never
/// cached (`persistent() == false`), so it never enters sqlx's text-keyed statement cache.
pub(crate) struct Commented<E> {
    inner: E,
    shared: Arc<Shared>,
    /// The context to write into the text (per-query-comment mode only).
    ctx: Option<TraceContext>,
    /// Tags of the caller's [`crate::TagScope`].
    extra: Option<Arc<[(String, String)]>>,
}

impl<E> Commented<E> {
    pub(crate) fn new(inner: E, shared: Arc<Shared>, ctx: Option<TraceContext>) -> Self {
        Commented { inner, shared, ctx, extra: crate::scope::current() }
    }
}

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Commented<E> {
    fn sql(self) -> SqlStr {
        // A statement prepared earlier runs under the text it was prepared with (re-texting it would
        // prepare it again); the session carrier still carries this execution's context.
        let verbatim = self.ctx.is_none() && self.inner.statement().is_some();
        let sql = self.inner.sql();
        if verbatim {
            return sql;
        }
        let injected = match &self.extra {
            None => self.shared.commenter.inject(sql.as_str(), self.ctx.as_ref()),
            Some(extra) => {
                let pairs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.shared.commenter.inject_with(sql.as_str(), self.ctx.as_ref(), &pairs)
            }
        };
        match injected {
            Injected::Commented(s) => AssertSqlSafe(s).into_sql_str(),
            Injected::Unchanged(..) => sql,
        }
    }

    fn statement(&self) -> Option<&PgStatement> {
        self.inner.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, sqlx::error::BoxDynError> {
        self.inner.take_arguments()
    }

    fn persistent(&self) -> bool {
        self.inner.persistent() && self.ctx.is_none()
    }
}
