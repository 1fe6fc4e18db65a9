//! The static-tag comment as a diesel query wrapper: the text stays fixed per query, so diesel's
//! prepared-statement cache (keyed by query type, or by text for dynamic queries) works as without it.

use std::sync::Arc;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::QueryResult;
use sqlcommenter::Placement;

use crate::config::Shared;
use crate::state::Effects;

/// Where the comment goes in one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Nowhere (no tags, or the text has no safe place: unterminated, already carries a traceparent).
    None,
    /// After the statement.
    Append,
    /// Before it (configured, or the text ends in `;` or a comment, where an appended one would not be
    /// the statement's own).
    Prepend,
}

/// A query with the configuration's static comment. Its [`QueryId`] is the inner query's, wrapped, so a
/// statically known query stays one cache entry.
#[derive(Debug)]
pub struct Commented<T> {
    inner: T,
    shared: Arc<Shared>,
    place: Place,
}

impl<T: QueryFragment<Pg> + QueryId> Commented<T> {
    /// Wraps `inner`; also returns what its text does to settings and transactions (only dynamic queries —
    /// raw `sql_query` texts, boxed queries — can do anything; diesel's DSL builds none of those).
    pub(crate) fn new(inner: T, shared: &Arc<Shared>) -> (Self, Effects) {
        let static_place = match shared.placement {
            Placement::Append => Place::Append,
            Placement::Prepend => Place::Prepend,
        };
        let (place, effects) = if T::HAS_STATIC_QUERY_ID {
            (if shared.comment.is_empty() { Place::None } else { static_place }, Effects::default())
        } else {
            let mut qb = diesel::pg::PgQueryBuilder::default();
            match inner.to_sql(&mut qb, &Pg) {
                Ok(()) => {
                    let sql = diesel::query_builder::QueryBuilder::finish(qb);
                    (place_in(shared, &sql), Effects::of(&sql))
                }
                // The inner query fails to build: diesel reports it when it builds it again.
                Err(_) => (Place::None, Effects::default()),
            }
        };
        (Commented { inner, shared: shared.clone(), place }, effects)
    }
}

/// Where the comment goes in the dynamic text `sql`.
fn place_in(shared: &Shared, sql: &str) -> Place {
    if shared.comment.is_empty() {
        return Place::None;
    }
    match shared.commenter.position(sql) {
        Err(_) => Place::None,
        Ok((_, true)) => Place::Prepend,
        Ok((at, false)) if sql[at..].trim().is_empty() => Place::Append,
        // `…;` or a trailing comment: our comment goes first, unless an optimizer hint must stay first.
        Ok(_) if sql.trim_start().starts_with("/*+") => Place::None,
        Ok(_) => Place::Prepend,
    }
}

impl<T: QueryFragment<Pg>> QueryFragment<Pg> for Commented<T> {
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match self.place {
            Place::None => self.inner.walk_ast(pass),
            Place::Append => {
                self.inner.walk_ast(pass.reborrow())?;
                pass.push_sql(" ");
                pass.push_sql(&self.shared.comment);
                Ok(())
            }
            Place::Prepend => {
                pass.push_sql(&self.shared.comment);
                pass.push_sql(" ");
                self.inner.walk_ast(pass)
            }
        }
    }
}

/// The query id of a [`Commented`] query.
#[derive(Debug)]
pub struct CommentedId<T>(std::marker::PhantomData<T>);

impl<T: QueryId> QueryId for Commented<T> {
    type QueryId = CommentedId<T::QueryId>;
    const HAS_STATIC_QUERY_ID: bool = T::HAS_STATIC_QUERY_ID;
}

impl<T: Query> Query for Commented<T> {
    type SqlType = T::SqlType;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use diesel::sql_types::Integer;
    use diesel::IntoSql;

    fn text<T: QueryFragment<Pg> + QueryId>(cfg: &Config, q: T) -> String {
        let (c, _) = Commented::new(q, &cfg.shared);
        diesel::debug_query::<Pg, _>(&c).to_string().split(" -- binds").next().unwrap().to_owned()
    }

    #[test]
    fn static_tags_placed_safely() {
        let cfg = Config::builder().application("shop").build().unwrap();
        let c = cfg.comment().to_owned();
        assert_eq!(text(&cfg, diesel::select(1.into_sql::<Integer>())), format!("SELECT $1 {c}"));
        assert_eq!(text(&cfg, diesel::sql_query("SELECT 1")), format!("SELECT 1 {c}"));
        assert_eq!(text(&cfg, diesel::sql_query("SELECT 1; ")), format!("{c} SELECT 1; "));
        assert_eq!(text(&cfg, diesel::sql_query("SELECT 1 -- x")), format!("{c} SELECT 1 -- x"));
        assert_eq!(text(&cfg, diesel::sql_query("/*+ SeqScan(t) */ SELECT 1;")), "/*+ SeqScan(t) */ SELECT 1;");
        assert_eq!(text(&cfg, diesel::sql_query("SELECT 'x")), "SELECT 'x");
        let none = Config::builder().db_driver_tag(false).build().unwrap();
        assert_eq!(text(&none, diesel::sql_query("SELECT 1")), "SELECT 1");
        let pre = Config::builder().placement(Placement::Prepend).build().unwrap();
        assert_eq!(text(&pre, diesel::select(1.into_sql::<Integer>())), format!("{} SELECT $1", pre.comment()));
    }
}
