//! [`Commented`]: any sqlx `Execute` for MySQL, taken apart when the caller issues it, with the comment
//! added.

use sqlcommenter::Injected;
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySqlArguments, MySqlStatement};
use sqlx::{Arguments, AssertSqlSafe, Execute, MySql, SqlSafeStr, SqlStr};

use super::config::Shared;

/// A query as the wrapper sends it: the caller's text with the static tags and, under a carried context,
/// the traceparent. A text holding a traceparent is never cached (`persistent() == false`): it is
/// prepared, executed and closed, and never enters sqlx's text-keyed statement cache.
pub(super) struct Commented {
    sql: SqlStr,
    statement: Option<MySqlStatement>,
    arguments: Option<Result<Option<MySqlArguments>, BoxDynError>>,
    persistent: bool,
}

impl Commented {
    /// Takes `query` apart now, in the caller's span and task-local tag scope.
    pub(super) fn new<'q, E: Execute<'q, MySql>>(mut query: E, shared: &Shared) -> Self {
        let statement = query.statement().cloned();
        let arguments = Some(query.take_arguments());
        let persistent = query.persistent();
        let sql = query.sql();
        let (sql, traced) = comment(sql, shared);
        // A traced statement without arguments goes as text (COM_QUERY): one round trip, nothing prepared.
        let arguments = match arguments {
            Some(Ok(Some(a))) if traced && a.len() == 0 => Some(Ok(None)),
            other => other,
        };
        Commented { sql, statement, arguments, persistent: persistent && !traced }
    }
}

/// `sql` with the comment for the current context and tag scope; whether it holds a traceparent.
pub(super) fn comment(sql: SqlStr, shared: &Shared) -> (SqlStr, bool) {
    let ctx = shared.current();
    let injected = match crate::scope::current() {
        None => shared.commenter.inject(sql.as_str(), ctx.as_ref()),
        Some(extra) => {
            let pairs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            shared.commenter.inject_with(sql.as_str(), ctx.as_ref(), &pairs)
        }
    };
    match injected {
        Injected::Commented(s) => (AssertSqlSafe(s).into_sql_str(), ctx.is_some()),
        Injected::Unchanged(..) => (sql, false),
    }
}

impl<'q> Execute<'q, MySql> for Commented {
    fn sql(self) -> SqlStr {
        self.sql
    }

    fn statement(&self) -> Option<&MySqlStatement> {
        self.statement.as_ref()
    }

    fn take_arguments(&mut self) -> Result<Option<MySqlArguments>, BoxDynError> {
        self.arguments.take().unwrap_or(Ok(None))
    }

    fn persistent(&self) -> bool {
        self.persistent
    }
}
