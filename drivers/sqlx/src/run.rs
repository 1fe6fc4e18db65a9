//! The statement path every wrapper shares: decide, set the carrier if needed, run the commented query.

use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{FutureExt, TryFutureExt};
use sqlx::postgres::{PgQueryResult, PgRow};
use sqlx::{Either, Execute, Executor, PgConnection, Postgres};

use crate::carrier::{self, State};
use crate::config::{Mode, Shared};
use crate::execute::Commented;

/// What one statement needs, decided synchronously when the caller issues it (so the context is the
/// caller's current span, not whatever span polls the future later).
pub(crate) struct Plan<E> {
    query: Commented<E>,
    carrier: Option<State>,
}

pub(crate) fn plan<'q, E: Execute<'q, Postgres>>(shared: &Arc<Shared>, query: E) -> Plan<E> {
    let ctx = shared.current();
    match shared.mode {
        Mode::SessionCarrier => {
            let wanted = State::wanted(ctx.as_ref().map(|c| &c.traceparent));
            Plan { query: Commented::new(query, shared.clone(), None), carrier: Some(wanted) }
        }
        Mode::PerQueryComment => Plan { query: Commented::new(query, shared.clone(), ctx), carrier: None },
    }
}

/// Runs `plan` on `conn`; `state` is the carrier state of the session (`local == false`) or of the
/// current transaction (`local == true`).
pub(crate) fn fetch_many<'e, 'q: 'e, E>(
    conn: &'e mut PgConnection,
    state: &'e mut State,
    local: bool,
    shared: Arc<Shared>,
    plan: Plan<E>,
) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
where
    E: 'q + Execute<'q, Postgres>,
{
    Box::pin(
        async move {
            if let Some(to) = plan.carrier {
                carrier::ensure(conn, state, to, &shared, local).await?;
            }
            Ok(conn.fetch_many(plan.query))
        }
        .try_flatten_stream(),
    )
}

/// As [`fetch_many`], for `fetch_optional`.
pub(crate) fn fetch_optional<'e, 'q: 'e, E>(
    conn: &'e mut PgConnection,
    state: &'e mut State,
    local: bool,
    shared: Arc<Shared>,
    plan: Plan<E>,
) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
where
    E: 'q + Execute<'q, Postgres>,
{
    async move {
        if let Some(to) = plan.carrier {
            carrier::ensure(conn, state, to, &shared, local).await?;
        }
        conn.fetch_optional(plan.query).await
    }
    .boxed()
}

/// Implements `sqlx::Executor` for `&'c mut $ty` by delegating to [`fetch_many`]/[`fetch_optional`] on the
/// parts returned by `$ty::parts(&mut self) -> (&mut PgConnection, &mut State, bool, &Arc<Shared>)`.
macro_rules! delegate_executor {
    ([$($gen:tt)*] $ty:ty) => {
        impl<'c, $($gen)*> sqlx::Executor<'c> for &'c mut $ty {
            type Database = sqlx::Postgres;

            fn fetch_many<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> futures_core::stream::BoxStream<
                'e,
                Result<sqlx::Either<sqlx::postgres::PgQueryResult, sqlx::postgres::PgRow>, sqlx::Error>,
            >
            where
                'c: 'e,
                E: 'q + sqlx::Execute<'q, sqlx::Postgres>,
            {
                let (conn, state, local, shared) = self.parts();
                let shared = shared.clone();
                let plan = $crate::run::plan(&shared, query);
                $crate::run::fetch_many(conn, state, local, shared, plan)
            }

            fn fetch_optional<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> futures_core::future::BoxFuture<'e, Result<Option<sqlx::postgres::PgRow>, sqlx::Error>>
            where
                'c: 'e,
                E: 'q + sqlx::Execute<'q, sqlx::Postgres>,
            {
                let (conn, state, local, shared) = self.parts();
                let shared = shared.clone();
                let plan = $crate::run::plan(&shared, query);
                $crate::run::fetch_optional(conn, state, local, shared, plan)
            }

            fn prepare_with<'e>(
                self,
                sql: sqlx::SqlStr,
                parameters: &'e [sqlx::postgres::PgTypeInfo],
            ) -> futures_core::future::BoxFuture<'e, Result<sqlx::postgres::PgStatement, sqlx::Error>>
            where
                'c: 'e,
            {
                let (conn, _, _, _) = self.parts();
                conn.prepare_with(sql, parameters)
            }

            fn describe<'e>(
                self,
                sql: sqlx::SqlStr,
            ) -> futures_core::future::BoxFuture<'e, Result<sqlx::Describe<sqlx::Postgres>, sqlx::Error>>
            where
                'c: 'e,
            {
                let (conn, _, _, _) = self.parts();
                conn.describe(sql)
            }
        }
    };
}

pub(crate) use delegate_executor;
