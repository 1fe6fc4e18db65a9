//! [`Commented`]: any sqlx `Execute`, taken apart when the caller issues it, with the comment added.

use sqlcommenter::{Injected, TraceContext};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgStatement};
use sqlx::{AssertSqlSafe, Execute, Postgres, SqlSafeStr, SqlStr};

use crate::carrier::Effects;
use crate::config::Shared;

/// A query as the wrapper sends it: the caller's text with the static tags (and, in per-query-comment
/// mode, the traceparent) added, its arguments, and what the caller's text does to settings. A text
/// carrying a per-request traceparent is never cached (`persistent() == false`), so it never enters
/// sqlx's text-keyed statement cache.
pub(crate) struct Commented {
    sql: SqlStr,
    statement: Option<PgStatement>,
    arguments: Option<Result<Option<PgArguments>, BoxDynError>>,
    persistent: bool,
    pub(crate) effects: Effects,
}

impl Commented {
    /// Takes `query` apart now (in the caller's span and task-local scope); `ctx` goes into the text.
    pub(crate) fn new<'q, E: Execute<'q, Postgres>>(mut query: E, shared: &Shared, ctx: Option<TraceContext>) -> Self {
        let statement = query.statement().cloned();
        let arguments = Some(query.take_arguments());
        let persistent = query.persistent() && ctx.is_none();
        let sql = query.sql();
        let effects = Effects::of(sql.as_str());
        // A statement prepared earlier runs under the text it was prepared with (re-texting it would
        // prepare it again); the carrier still carries this execution's context.
        if ctx.is_none() && statement.is_some() {
            return Commented { sql, statement, arguments, persistent, effects };
        }
        let injected = match crate::scope::current() {
            None => shared.commenter.inject(sql.as_str(), ctx.as_ref()),
            Some(extra) => {
                let pairs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                shared.commenter.inject_with(sql.as_str(), ctx.as_ref(), &pairs)
            }
        };
        let sql = match injected {
            Injected::Commented(s) => AssertSqlSafe(s).into_sql_str(),
            Injected::Unchanged(..) => sql,
        };
        Commented { sql, statement, arguments, persistent, effects }
    }
}

impl<'q> Execute<'q, Postgres> for Commented {
    fn sql(self) -> SqlStr {
        self.sql
    }

    fn statement(&self) -> Option<&PgStatement> {
        self.statement.as_ref()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, BoxDynError> {
        self.arguments.take().unwrap_or(Ok(None))
    }

    fn persistent(&self) -> bool {
        self.persistent
    }
}
