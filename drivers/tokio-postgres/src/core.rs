//! The engine shared by [`crate::Client`] and [`crate::Transaction`]: puts the carrier request and the
//! caller's request on the connection back to back, in one critical section, so that no other task's
//! request can run between them.
//!
//! tokio-postgres sends a request to its connection task at the first poll of the query future (the
//! encode and the channel send happen before the first `.await` that waits for the server), and the
//! connection task writes requests to the socket, and the server answers them, in that order. Polling
//! "carrier, then query" once each while holding a per-connection lock therefore fixes their order on the
//! wire relative to every other request made through the wrapper, without waiting for any response: the
//! carrier costs no round trip, and concurrent tasks keep pipelining on one client.

use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{join5, maybe_done};
use futures_util::TryStreamExt;
use sqlcommenter::carrier::{statements, Action, Effect, Held, Scope, Want, SET_CONFIG_SQL};
use sqlcommenter::TraceContext;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{BorrowToSql, ToSql, Type};
use tokio_postgres::{Client as PgClient, Error, Row, RowStream, Statement};

use crate::config::{CarrierScope, Mode, Settings};
use crate::state::ConnState;
use crate::statement::{StatementRef, ToStatement};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// The parameter types of [`SET_CONFIG_SQL`]: name, value (NULL resets to the session default), is_local.
const SET_CONFIG_TYPES: [Type; 3] = [Type::TEXT, Type::TEXT, Type::BOOL];

/// A side request (carrier, its preparation, `BEGIN`/`COMMIT` of a wrap) put on the connection by one
/// poll: either already answered, or still to be awaited.
enum Sent<'a, T> {
    Done(Result<T, Error>),
    Pending(BoxFuture<'a, T>),
}

impl<'a, T> Sent<'a, T> {
    /// Polls `fut` once: tokio-postgres encodes and enqueues its request at the first poll.
    fn enqueue(cx: &mut Context<'_>, mut fut: BoxFuture<'a, T>) -> Self {
        match fut.as_mut().poll(cx) {
            Poll::Ready(r) => Sent::Done(r),
            Poll::Pending => Sent::Pending(fut),
        }
    }

    async fn finish(this: Option<Self>) -> Option<Result<T, Error>> {
        match this? {
            Sent::Done(r) => Some(r),
            Sent::Pending(f) => Some(f.await),
        }
    }
}

/// Whether a request may be wrapped in `BEGIN … COMMIT` to share a transaction-scoped carrier
/// ([`CarrierScope::Transaction`], outside a transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrap {
    Allowed,
    /// Streaming results, `COPY`, preparation, or statements that cannot run in a transaction block.
    Never,
}

impl Wrap {
    /// For a text statement: never around transaction control or what refuses a transaction block
    /// (`ResetAll` covers `DISCARD ALL`, which refuses one; `RESET ALL` is left unwrapped with it).
    pub(crate) fn for_text(sql: &str) -> Wrap {
        let refuses = statements(sql).iter().any(|e| {
            matches!(
                e,
                Effect::Begin
                    | Effect::Commit
                    | Effect::Rollback
                    | Effect::RollbackToSavepoint
                    | Effect::NoTransactionBlock
                    | Effect::ResetAll
            )
        });
        if refuses {
            Wrap::Never
        } else {
            Wrap::Allowed
        }
    }
}

/// The context of one wrapper call, resolved once when the call starts.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) ctx: Option<TraceContext>,
    /// The carrier cannot be used (aborted transaction): send nothing extra.
    any: bool,
}

impl Call {
    pub(crate) fn want(&self) -> Want {
        match (&self.ctx, self.any) {
            (_, true) => Want::Any,
            (Some(c), false) => Want::Carry(c.traceparent),
            (None, false) => Want::Clean,
        }
    }

    /// For statements whose text carries the context itself.
    fn comment_want(&self) -> Want {
        match (&self.ctx, self.any) {
            (_, true) => Want::Any,
            (Some(c), false) => Want::CleanOr(c.traceparent),
            (None, false) => Want::Clean,
        }
    }
}

/// Settings plus the connection's carrier state.
#[derive(Clone)]
pub(crate) struct Core {
    pub(crate) cfg: Arc<Settings>,
    pub(crate) conn: Arc<ConnState>,
}

macro_rules! by_statement {
    ($self:ident, $pg:ident, $call:ident, $stmt:expr, $n:expr, $wrap:expr,
     |$s:ident| $prepared:expr, |$text:ident, $types:ident| $typed:expr) => {{
        match $stmt.statement_ref() {
            StatementRef::Prepared($s) => $self.run($pg, $call.want(), $wrap, $prepared).await,
            StatementRef::Text(sql) => {
                let types = if $self.cfg.mode == Mode::PerQueryComment && !$call.any {
                    Some($self.param_types($pg, $call, sql).await?)
                } else {
                    None
                };
                let wrap = if $wrap == Wrap::Allowed { $self.wrap_text(sql) } else { Wrap::Never };
                let out = match types {
                    Some($types) if $types.len() == $n => {
                        let $text = $self.cfg.commenter.inject(sql, $call.ctx.as_ref()).into_cow();
                        $self.run($pg, $call.comment_want(), wrap, $typed).await
                    }
                    _ => {
                        let stmt = $self.prepare($pg, $call, sql, &[]).await?;
                        let $s = &stmt;
                        $self.run($pg, $call.want(), wrap, $prepared).await
                    }
                };
                $self.after_text(sql, out.is_ok());
                out
            }
        }
    }};
}

impl Core {
    pub(crate) fn new(cfg: Arc<Settings>, conn: Arc<ConnState>) -> Self {
        Core { cfg, conn }
    }

    /// Resolves the current context. `aborted`: the transaction is known to have failed.
    pub(crate) fn call(&self, aborted: bool) -> Call {
        Call { ctx: self.cfg.current(), any: aborted }
    }

    /// The carrier write: [`SET_CONFIG_SQL`] through the statement prepared on this connection, or unnamed
    /// (same text, so the same `pg_stat_statements` entry) until that preparation has completed. A clear
    /// passes NULL, which resets the setting to the connection's own value (its startup
    /// `application_name`), whatever that is.
    fn carrier_future<'a>(&self, pg: &'a PgClient, action: Action, scope: Scope) -> BoxFuture<'a, ()> {
        let target = &self.cfg.target;
        let name = target.variable().to_owned();
        let value = match action {
            Action::Set(_) => Some(target.write(&action, scope, &self.cfg.application_name).value),
            Action::Clear => None,
        };
        let local = scope.is_local();
        match self.conn.carrier_stmt() {
            Some(stmt) => Box::pin(async move { pg.execute(&stmt, &[&name, &value, &local]).await.map(drop) }),
            None => Box::pin(async move {
                let params: [(&(dyn ToSql + Sync), Type); 3] =
                    [(&name, Type::TEXT), (&value, Type::TEXT), (&local, Type::BOOL)];
                pg.execute_typed(SET_CONFIG_SQL, &params).await.map(drop)
            }),
        }
    }

    /// Runs `fut` (a tokio-postgres call on `pg`) after making the carrier hold what `want` needs.
    ///
    /// In one critical section, without waiting for any response, this puts on the connection: the
    /// carrier statement's preparation (once per connection), `BEGIN` when the call is wrapped, the carrier
    /// write, the first request of `fut`, and the wrap's `COMMIT`. The carrier's own outcome never changes
    /// the result; a wrap's `COMMIT` error (deferred constraint, serialization failure) is the error the
    /// statement's own implicit commit would have returned.
    pub(crate) async fn run<T, F>(&self, pg: &PgClient, want: Want, wrap: Wrap, fut: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        let mut user = pin!(maybe_done(fut));
        let mut prepare: Option<Sent<'_, Statement>> = None;
        let mut begin: Option<Sent<'_, ()>> = None;
        let mut carrier: Option<(Sent<'_, ()>, Scope)> = None;
        let mut commit: Option<Sent<'_, ()>> = None;
        poll_fn(|cx| {
            let mut tracker = self.conn.lock();
            let (scope, wrapped) = match (tracker.in_transaction(), self.cfg.scope) {
                (true, _) => (Scope::Transaction, false),
                (false, CarrierScope::Session) => (Scope::Session, false),
                (false, CarrierScope::Transaction) => (Scope::Transaction, true),
            };
            let action = if wrapped && wrap == Wrap::Never { None } else { tracker.plan(want, scope) };
            if let Some(action) = action {
                if self.conn.claim_prepare() {
                    prepare = Some(Sent::enqueue(cx, Box::pin(pg.prepare_typed(SET_CONFIG_SQL, &SET_CONFIG_TYPES))));
                }
                if wrapped {
                    begin = Some(Sent::enqueue(cx, Box::pin(pg.batch_execute("BEGIN"))));
                }
                carrier = Some((Sent::enqueue(cx, self.carrier_future(pg, action, scope)), scope));
            }
            // First poll: tokio-postgres encodes and enqueues the request here.
            let _ = user.as_mut().poll(cx);
            if wrapped && action.is_some() {
                commit = Some(Sent::enqueue(cx, Box::pin(pg.batch_execute("COMMIT"))));
                tracker.transaction_ended(true);
            }
            Poll::Ready(())
        })
        .await;
        let (carrier, scope) = match carrier {
            Some((sent, scope)) => (Some(sent), Some(scope)),
            None => (None, None),
        };
        let claimed = prepare.is_some();
        let (prepared, _, carried, (), committed) = join5(
            Sent::finish(prepare),
            Sent::finish(begin),
            Sent::finish(carrier),
            user.as_mut(),
            Sent::finish(commit),
        )
        .await;
        if claimed {
            self.conn.prepared(prepared.and_then(Result::ok));
        }
        if let Some(Err(e)) = &carried {
            if e.code() == Some(&SqlState::INVALID_SQL_STATEMENT_NAME) {
                self.conn.drop_carrier_stmt();
            }
            if let (Some(scope), None) = (scope, &committed) {
                self.conn.lock().failed(scope);
            }
        }
        let out = match user.take_output() {
            Some(out) => out,
            None => unreachable!("the future was driven to completion above"),
        };
        match (out, committed) {
            (Ok(_), Some(Err(e))) => Err(e),
            (out, _) => out,
        }
    }

    /// Before `BEGIN` (which needs `&mut` access to the client, so it cannot share [`Core::run`]): with
    /// [`CarrierScope::Session`], a carrier that holds another request's traceparent (or an unknown value) is
    /// rewritten, pipelined, so that `BEGIN` itself never runs under a stale context. Inside the
    /// transaction the carrier is transaction-scoped.
    pub(crate) async fn before_begin(&self, pg: &PgClient, want: Want) {
        poll_fn(|cx| {
            let mut tracker = self.conn.lock();
            let stale = match tracker.held() {
                Held::Base => false,
                Held::Carrying(tp) => want != Want::Carry(tp) && want != Want::Any,
                Held::Unknown => want != Want::Any,
            };
            if self.cfg.scope == CarrierScope::Session && !tracker.in_transaction() && stale {
                if let Some(action) = tracker.plan(want, Scope::Session) {
                    // Its response is discarded by the connection task.
                    if let Sent::Done(Err(_)) = Sent::enqueue(cx, self.carrier_future(pg, action, Scope::Session)) {
                        tracker.failed(Scope::Session);
                    }
                }
            }
            Poll::Ready(())
        })
        .await
    }

    /// Whether a text statement may be wrapped; only read (with the lexer) when wraps are configured.
    fn wrap_text(&self, sql: &str) -> Wrap {
        match self.cfg.scope {
            CarrierScope::Transaction => Wrap::for_text(sql),
            CarrierScope::Session => Wrap::Allowed,
        }
    }

    /// `BEGIN` succeeded.
    pub(crate) fn began(&self) {
        self.conn.lock().observe(&Effect::Begin, &self.cfg.target);
    }

    /// A transaction or savepoint ended (`effect`: `Commit`, `Rollback`, `RollbackToSavepoint`).
    pub(crate) fn ended(&self, effect: &Effect<'_>) {
        self.conn.lock().observe(effect, &self.cfg.target);
    }

    /// What the application's own text statement did to the carrier (`RESET ALL`, `SET application_name`,
    /// `ROLLBACK`, …), read with the core lexer; after a failure its effect is unknown.
    fn after_text(&self, sql: &str, ok: bool) {
        let effects = statements(sql);
        if effects.iter().all(|e| matches!(e, Effect::Other)) {
            return;
        }
        if effects.iter().any(|e| matches!(e, Effect::ResetAll)) {
            // DISCARD ALL (and DEALLOCATE ALL, which the core reads as `Other`… see the crate README) also
            // deallocates prepared statements, the carrier's among them.
            self.conn.drop_carrier_stmt();
        }
        let mut tracker = self.conn.lock();
        if ok {
            for effect in &effects {
                tracker.observe(effect, &self.cfg.target);
            }
        } else {
            tracker.forget();
        }
    }

    /// Static tags only: the text stays the same for every request, so caches keep working.
    pub(crate) fn tagged<'q>(&self, sql: &'q str) -> Cow<'q, str> {
        self.cfg.commenter.inject(sql, None).into_cow()
    }

    /// Text for a text-only call (simple query): static tags, plus the traceparent in per-query mode.
    fn text_for<'q>(&self, call: &Call, sql: &'q str) -> (Cow<'q, str>, Want) {
        if self.cfg.mode == Mode::PerQueryComment && !call.any && call.ctx.is_some() {
            (self.cfg.commenter.inject(sql, call.ctx.as_ref()).into_cow(), call.comment_want())
        } else {
            (self.tagged(sql), call.want())
        }
    }

    /// Parameter types of `sql` (uncommented), from the per-connection cache or by preparing it once.
    async fn param_types(&self, pg: &PgClient, call: &Call, sql: &str) -> Result<Vec<Type>, Error> {
        if let Some(types) = self.conn.types(sql) {
            return Ok(types);
        }
        let stmt = self.run(pg, call.comment_want(), Wrap::Never, pg.prepare(sql)).await?;
        let types = stmt.params().to_vec();
        self.conn.cache_types(sql, types.clone());
        Ok(types)
    }

    pub(crate) async fn prepare(
        &self,
        pg: &PgClient,
        call: &Call,
        sql: &str,
        types: &[Type],
    ) -> Result<Statement, Error> {
        let text = self.tagged(sql);
        self.run(pg, call.want(), Wrap::Never, pg.prepare_typed(&text, types)).await
    }

    #[cfg(feature = "deadpool")]
    pub(crate) async fn prepare_cached(
        &self,
        pg: &PgClient,
        cache: &deadpool_postgres::StatementCache,
        call: &Call,
        sql: &str,
        types: &[Type],
    ) -> Result<Statement, Error> {
        let text = self.tagged(sql);
        self.run(pg, call.want(), Wrap::Never, cache.prepare_typed(pg, &text, types)).await
    }

    pub(crate) async fn query<T: ?Sized + ToStatement>(
        &self,
        pg: &PgClient,
        call: &Call,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        by_statement!(self, pg, call, statement, params.len(), Wrap::Allowed, |s| pg.query(s, params), |text, types| {
            let typed = zip_params(params, &types);
            async move { pg.query_typed(&text, &typed).await }
        })
    }

    pub(crate) async fn query_one<T: ?Sized + ToStatement>(
        &self,
        pg: &PgClient,
        call: &Call,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        by_statement!(
            self,
            pg,
            call,
            statement,
            params.len(),
            Wrap::Allowed,
            |s| pg.query_one(s, params),
            |text, types| {
                let typed = zip_params(params, &types);
                async move { pg.query_typed_one(&text, &typed).await }
            }
        )
    }

    pub(crate) async fn query_opt<T: ?Sized + ToStatement>(
        &self,
        pg: &PgClient,
        call: &Call,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        by_statement!(
            self,
            pg,
            call,
            statement,
            params.len(),
            Wrap::Allowed,
            |s| pg.query_opt(s, params),
            |text, types| {
                let typed = zip_params(params, &types);
                async move { pg.query_typed_opt(&text, &typed).await }
            }
        )
    }

    pub(crate) async fn execute<T: ?Sized + ToStatement>(
        &self,
        pg: &PgClient,
        call: &Call,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        by_statement!(
            self,
            pg,
            call,
            statement,
            params.len(),
            Wrap::Allowed,
            |s| pg.execute(s, params),
            |text, types| {
                let typed = zip_params(params, &types);
                async move { pg.execute_typed(&text, &typed).await }
            }
        )
    }

    pub(crate) async fn query_raw<T, P, I>(
        &self,
        pg: &PgClient,
        call: &Call,
        statement: &T,
        params: I,
    ) -> Result<RowStream, Error>
    where
        T: ?Sized + ToStatement,
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        let params = params.into_iter();
        let n = params.len();
        by_statement!(self, pg, call, statement, n, Wrap::Never, |s| pg.query_raw(s, params), |text, types| {
            let typed = params.zip(types);
            async move { pg.query_typed_raw(&text, typed).await }
        })
    }

    pub(crate) async fn execute_raw<T, P, I>(
        &self,
        pg: &PgClient,
        call: &Call,
        statement: &T,
        params: I,
    ) -> Result<u64, Error>
    where
        T: ?Sized + ToStatement,
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        let params = params.into_iter();
        let n = params.len();
        by_statement!(self, pg, call, statement, n, Wrap::Allowed, |s| pg.execute_raw(s, params), |text, types| {
            let typed = params.zip(types);
            async move {
                let stream = pg.query_typed_raw(&text, typed).await?;
                let mut stream = pin!(stream);
                while stream.as_mut().try_next().await?.is_some() {}
                Ok(stream.rows_affected().unwrap_or(0))
            }
        })
    }

    /// `query_typed` and friends: the caller gives the types, so the text is sent as is (plus tags).
    pub(crate) async fn query_typed_raw<P, I>(
        &self,
        pg: &PgClient,
        call: &Call,
        sql: &str,
        params: I,
    ) -> Result<RowStream, Error>
    where
        P: BorrowToSql,
        I: IntoIterator<Item = (P, Type)>,
    {
        let (text, want) = self.text_for(call, sql);
        let out = self.run(pg, want, Wrap::Never, pg.query_typed_raw(&text, params)).await;
        self.after_text(sql, out.is_ok());
        out
    }

    pub(crate) async fn query_typed(
        &self,
        pg: &PgClient,
        call: &Call,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, Error> {
        let (text, want) = self.text_for(call, sql);
        let out = self.run(pg, want, self.wrap_text(sql), pg.query_typed(&text, params)).await;
        self.after_text(sql, out.is_ok());
        out
    }

    pub(crate) async fn query_typed_one(
        &self,
        pg: &PgClient,
        call: &Call,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Row, Error> {
        let (text, want) = self.text_for(call, sql);
        let out = self.run(pg, want, self.wrap_text(sql), pg.query_typed_one(&text, params)).await;
        self.after_text(sql, out.is_ok());
        out
    }

    pub(crate) async fn query_typed_opt(
        &self,
        pg: &PgClient,
        call: &Call,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Option<Row>, Error> {
        let (text, want) = self.text_for(call, sql);
        let out = self.run(pg, want, self.wrap_text(sql), pg.query_typed_opt(&text, params)).await;
        self.after_text(sql, out.is_ok());
        out
    }

    pub(crate) async fn execute_typed(
        &self,
        pg: &PgClient,
        call: &Call,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, Error> {
        let (text, want) = self.text_for(call, sql);
        let out = self.run(pg, want, self.wrap_text(sql), pg.execute_typed(&text, params)).await;
        self.after_text(sql, out.is_ok());
        out
    }

    pub(crate) async fn simple_query(
        &self,
        pg: &PgClient,
        call: &Call,
        sql: &str,
    ) -> Result<Vec<tokio_postgres::SimpleQueryMessage>, Error> {
        let (text, want) = self.text_for(call, sql);
        let out = self.run(pg, want, self.wrap_text(sql), pg.simple_query(&text)).await;
        self.after_text(sql, out.is_ok());
        out
    }

    pub(crate) async fn batch_execute(&self, pg: &PgClient, call: &Call, sql: &str) -> Result<(), Error> {
        let (text, want) = self.text_for(call, sql);
        let out = self.run(pg, want, self.wrap_text(sql), pg.batch_execute(&text)).await;
        self.after_text(sql, out.is_ok());
        out
    }

    pub(crate) async fn copy_in<T, U>(
        &self,
        pg: &PgClient,
        call: &Call,
        statement: &T,
    ) -> Result<tokio_postgres::CopyInSink<U>, Error>
    where
        T: ?Sized + ToStatement,
        U: bytes::Buf + 'static + Send,
    {
        match statement.statement_ref() {
            StatementRef::Prepared(s) => self.run(pg, call.want(), Wrap::Never, pg.copy_in(s)).await,
            StatementRef::Text(sql) => {
                let stmt = self.prepare(pg, call, sql, &[]).await?;
                self.run(pg, call.want(), Wrap::Never, pg.copy_in(&stmt)).await
            }
        }
    }

    pub(crate) async fn copy_out<T>(
        &self,
        pg: &PgClient,
        call: &Call,
        statement: &T,
    ) -> Result<tokio_postgres::CopyOutStream, Error>
    where
        T: ?Sized + ToStatement,
    {
        match statement.statement_ref() {
            StatementRef::Prepared(s) => self.run(pg, call.want(), Wrap::Never, pg.copy_out(s)).await,
            StatementRef::Text(sql) => {
                let stmt = self.prepare(pg, call, sql, &[]).await?;
                self.run(pg, call.want(), Wrap::Never, pg.copy_out(&stmt)).await
            }
        }
    }
}

fn zip_params<'a>(params: &[&'a (dyn ToSql + Sync)], types: &[Type]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().copied().zip(types.iter().cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::Wrap;

    #[test]
    fn wraps_only_what_a_transaction_block_accepts() {
        assert_eq!(Wrap::for_text("SELECT 1"), Wrap::Allowed);
        assert_eq!(Wrap::for_text("SET search_path = app; SELECT 'VACUUM'"), Wrap::Allowed);
        for sql in [
            "BEGIN",
            "COMMIT",
            "rollback",
            "ROLLBACK TO SAVEPOINT a",
            "VACUUM t",
            "CREATE INDEX CONCURRENTLY i ON t (x)",
        ] {
            assert_eq!(Wrap::for_text(sql), Wrap::Never, "{sql}");
        }
    }
}
