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
use std::task::Poll;

use futures_util::future::{join, maybe_done};
use futures_util::TryStreamExt;
use sqlcommenter::TraceContext;
use tokio_postgres::types::{BorrowToSql, ToSql, Type};
use tokio_postgres::{Client as PgClient, Error, Row, RowStream, Statement};

use crate::config::{Carrier, CarrierStatement, Mode, Settings};
use crate::state::{plan, Action, ConnState, Held, Want};
use crate::statement::{StatementRef, ToStatement};

type CarrierFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, Error>> + Send + 'a>>;

const SET_SQL: &str = "SELECT set_config($1, $2, false)";
const RESET_APP_SQL: &str = "RESET application_name";

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
            (Some(c), false) => Want::Tp(c.traceparent),
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

/// Whether a statement may change the carrier behind the wrapper's back (ROLLBACK reverts a session
/// setting; RESET/DISCARD/SET change it). Then the tracked value is forgotten after the statement.
pub(crate) fn touches_session(sql: &str) -> bool {
    const WORDS: [&[u8]; 6] = [b"rollback", b"abort", b"reset", b"discard", b"application_name", b"set_config"];
    let bytes = sql.as_bytes();
    WORDS.iter().any(|w| bytes.windows(w.len()).any(|win| win.eq_ignore_ascii_case(w)))
}

macro_rules! by_statement {
    ($self:ident, $pg:ident, $call:ident, $stmt:expr, $n:expr,
     |$s:ident| $prepared:expr, |$text:ident, $types:ident| $typed:expr) => {{
        match $stmt.statement_ref() {
            StatementRef::Prepared($s) => $self.run($pg, $call.want(), $prepared).await,
            StatementRef::Text(sql) => {
                let types = if $self.cfg.mode == Mode::PerQueryComment && !$call.any {
                    Some($self.param_types($pg, $call, sql).await?)
                } else {
                    None
                };
                let out = match types {
                    Some($types) if $types.len() == $n => {
                        let $text = $self.cfg.commenter.inject(sql, $call.ctx.as_ref()).into_cow();
                        $self.run($pg, $call.comment_want(), $typed).await
                    }
                    _ => {
                        let stmt = $self.prepare($pg, $call, sql, &[]).await?;
                        let $s = &stmt;
                        $self.run($pg, $call.want(), $prepared).await
                    }
                };
                if touches_session(sql) {
                    $self.conn.mark_unknown();
                }
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

    fn carrier_future<'a>(&self, pg: &'a PgClient, action: Action) -> CarrierFuture<'a> {
        let name = match &self.cfg.carrier {
            Carrier::ApplicationName => "application_name",
            Carrier::Guc(guc) => guc.as_str(),
        };
        let value = match action {
            Action::Set(tp) => Some(match &self.cfg.carrier {
                Carrier::ApplicationName => {
                    sqlcommenter::carrier::encode_application_name(&self.cfg.application_name, &tp)
                }
                Carrier::Guc(_) => tp.to_string(),
            }),
            Action::Reset => None,
        };
        match self.cfg.carrier_statement {
            CarrierStatement::Simple => {
                // `name` is "application_name" or a validated dotted identifier; the value is escaped.
                let sql = match &value {
                    Some(v) => format!("SET {name} TO {}", quote_literal(v)),
                    None => format!("RESET {name}"),
                };
                Box::pin(async move { pg.batch_execute(&sql).await.map(|()| 0) })
            }
            CarrierStatement::Prepared | CarrierStatement::Unnamed => {
                let name = name.to_owned();
                let reset_to = match &self.cfg.carrier {
                    Carrier::ApplicationName if !self.cfg.application_name.is_empty() => {
                        Some(self.cfg.application_name.clone())
                    }
                    Carrier::ApplicationName => None,
                    Carrier::Guc(_) => Some(String::new()),
                };
                let stmt = self.conn.carrier_stmt.get().cloned();
                match (value.or(reset_to), stmt) {
                    // Prepared form; a reset goes back to the configured name (assumed to be the
                    // connection's own) or to empty for a custom setting.
                    (Some(value), Some(stmt)) => Box::pin(async move { pg.execute(&stmt, &[&name, &value]).await }),
                    (Some(value), None) => Box::pin(async move {
                        pg.execute_typed(
                            SET_SQL,
                            &[(&name as &(dyn ToSql + Sync), Type::TEXT), (&value as &(dyn ToSql + Sync), Type::TEXT)],
                        )
                        .await
                    }),
                    (None, _) => Box::pin(pg.execute_typed(RESET_APP_SQL, &[])),
                }
            }
        }
    }

    /// Runs `fut` (a tokio-postgres call on `pg`) after making the carrier hold what `want` needs.
    /// The carrier request and the first request of `fut` are put on the connection in one critical
    /// section; the carrier's outcome never changes `fut`'s result.
    pub(crate) async fn run<F: Future>(&self, pg: &PgClient, want: Want, fut: F) -> F::Output {
        if self.cfg.carrier_statement == CarrierStatement::Prepared && self.conn.carrier_stmt.get().is_none() {
            // Once per connection; a failure just leaves the unnamed form in use.
            if let Ok(stmt) = pg.prepare_typed(SET_SQL, &[Type::TEXT, Type::TEXT]).await {
                let _ = self.conn.carrier_stmt.set(stmt);
            }
        }
        let mut user = pin!(maybe_done(fut));
        let mut carrier: Option<CarrierFuture<'_>> = None;
        poll_fn(|cx| {
            let mut held = self.conn.lock();
            if let Some(action) = plan(&mut held, want) {
                let mut f = self.carrier_future(pg, action);
                match f.as_mut().poll(cx) {
                    Poll::Pending => carrier = Some(f),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(_)) => *held = Held::Unknown,
                }
            }
            // First poll: tokio-postgres encodes and enqueues the request here.
            let _ = user.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        if let Some(c) = carrier {
            let (res, ()) = join(c, user.as_mut()).await;
            if res.is_err() {
                self.conn.mark_unknown();
            }
        } else {
            user.as_mut().await;
        }
        match user.take_output() {
            Some(out) => out,
            None => unreachable!("the future was driven to completion above"),
        }
    }

    /// Puts only the carrier request on the connection (used before `BEGIN`, which needs `&mut` access to
    /// the client); its response is discarded by the connection task.
    pub(crate) async fn enqueue_carrier(&self, pg: &PgClient, want: Want) {
        poll_fn(|cx| {
            let mut held = self.conn.lock();
            if let Some(action) = plan(&mut held, want) {
                let mut f = self.carrier_future(pg, action);
                if let Poll::Ready(Err(_)) = f.as_mut().poll(cx) {
                    *held = Held::Unknown;
                }
            }
            Poll::Ready(())
        })
        .await
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
        let stmt = self.run(pg, call.comment_want(), pg.prepare(sql)).await?;
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
        self.run(pg, call.want(), pg.prepare_typed(&text, types)).await
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
        self.run(pg, call.want(), cache.prepare_typed(pg, &text, types)).await
    }

    pub(crate) async fn query<T: ?Sized + ToStatement>(
        &self,
        pg: &PgClient,
        call: &Call,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        by_statement!(self, pg, call, statement, params.len(), |s| pg.query(s, params), |text, types| {
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
        by_statement!(self, pg, call, statement, params.len(), |s| pg.query_one(s, params), |text, types| {
            let typed = zip_params(params, &types);
            async move { pg.query_typed_one(&text, &typed).await }
        })
    }

    pub(crate) async fn query_opt<T: ?Sized + ToStatement>(
        &self,
        pg: &PgClient,
        call: &Call,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        by_statement!(self, pg, call, statement, params.len(), |s| pg.query_opt(s, params), |text, types| {
            let typed = zip_params(params, &types);
            async move { pg.query_typed_opt(&text, &typed).await }
        })
    }

    pub(crate) async fn execute<T: ?Sized + ToStatement>(
        &self,
        pg: &PgClient,
        call: &Call,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        by_statement!(self, pg, call, statement, params.len(), |s| pg.execute(s, params), |text, types| {
            let typed = zip_params(params, &types);
            async move { pg.execute_typed(&text, &typed).await }
        })
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
        by_statement!(self, pg, call, statement, n, |s| pg.query_raw(s, params), |text, types| {
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
        by_statement!(self, pg, call, statement, n, |s| pg.execute_raw(s, params), |text, types| {
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
        let out = self.run(pg, want, pg.query_typed_raw(&text, params)).await;
        self.after_text(sql);
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
        let out = self.run(pg, want, pg.query_typed(&text, params)).await;
        self.after_text(sql);
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
        let out = self.run(pg, want, pg.query_typed_one(&text, params)).await;
        self.after_text(sql);
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
        let out = self.run(pg, want, pg.query_typed_opt(&text, params)).await;
        self.after_text(sql);
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
        let out = self.run(pg, want, pg.execute_typed(&text, params)).await;
        self.after_text(sql);
        out
    }

    pub(crate) async fn simple_query(
        &self,
        pg: &PgClient,
        call: &Call,
        sql: &str,
    ) -> Result<Vec<tokio_postgres::SimpleQueryMessage>, Error> {
        let (text, want) = self.text_for(call, sql);
        let out = self.run(pg, want, pg.simple_query(&text)).await;
        self.after_text(sql);
        out
    }

    pub(crate) async fn batch_execute(&self, pg: &PgClient, call: &Call, sql: &str) -> Result<(), Error> {
        let (text, want) = self.text_for(call, sql);
        let out = self.run(pg, want, pg.batch_execute(&text)).await;
        self.after_text(sql);
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
            StatementRef::Prepared(s) => self.run(pg, call.want(), pg.copy_in(s)).await,
            StatementRef::Text(sql) => {
                let stmt = self.prepare(pg, call, sql, &[]).await?;
                self.run(pg, call.want(), pg.copy_in(&stmt)).await
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
            StatementRef::Prepared(s) => self.run(pg, call.want(), pg.copy_out(s)).await,
            StatementRef::Text(sql) => {
                let stmt = self.prepare(pg, call, sql, &[]).await?;
                self.run(pg, call.want(), pg.copy_out(&stmt)).await
            }
        }
    }

    fn after_text(&self, sql: &str) {
        if touches_session(sql) {
            self.conn.mark_unknown();
        }
    }
}

/// An escaped string literal that reads the same whatever `standard_conforming_strings` is.
fn quote_literal(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 3);
    out.push_str("E'");
    for c in v.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn zip_params<'a>(params: &[&'a (dyn ToSql + Sync)], types: &[Type]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().copied().zip(types.iter().cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::touches_session;

    #[test]
    fn literals_are_escaped() {
        assert_eq!(super::quote_literal("a'b\\c"), "E'a\\'b\\\\c'");
        assert_eq!(super::quote_literal("shop@00-ab"), "E'shop@00-ab'");
    }

    #[test]
    fn session_changing_statements() {
        assert!(touches_session("ROLLBACK"));
        assert!(touches_session("reset all"));
        assert!(touches_session("SET application_name = 'x'"));
        assert!(touches_session("DISCARD ALL"));
        assert!(!touches_session("SELECT * FROM t WHERE id = $1"));
        assert!(!touches_session("INSERT INTO t VALUES (1)"));
        assert!(!touches_session("UPDATE t SET x = 1"));
    }
}
