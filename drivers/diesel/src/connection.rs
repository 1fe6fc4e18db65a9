//! [`TracedPgConnection`]: an `AsyncPgConnection` whose statements carry the caller's trace context.

use std::future::Future;
use std::sync::Arc;

use diesel::connection::{CacheSize, Instrumentation};
use diesel::pg::Pg;
use diesel::query_builder::{AsQuery, QueryFragment, QueryId};
use diesel::{ConnectionResult, QueryResult};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncConnectionCore, AsyncPgConnection, SimpleAsyncConnection,
};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use sqlcommenter::carrier::{Action, Scope, Target, Want};
use sqlcommenter::TraceParent;

use crate::comment::Commented;
use crate::config::{Config, OutsideTransaction, Shared};
use crate::state::{CarrierState, Effects};

/// An [`AsyncPgConnection`] that carries the trace context of whoever issues each statement, and adds the
/// configuration's static comment to every statement's text.
///
/// Use it wherever diesel-async takes a connection (`RunQueryDsl`, `AsyncConnection::transaction`), alone or
/// in diesel-async's deadpool/bb8 pools through [`crate::manager`]. Before a statement whose context differs
/// from what the connection carries, the core carrier statement is sent pipelined with it (no extra round
/// trip): transaction-scoped inside a transaction, session-scoped outside one (and then rewritten or
/// cleared by the next statement that needs something else, before it runs: a pooled connection's next user
/// never runs under a previous context).
pub struct TracedPgConnection {
    inner: AsyncPgConnection,
    state: CarrierState,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TracedPgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracedPgConnection").field("carrier", &self.state).finish_non_exhaustive()
    }
}

impl TracedPgConnection {
    /// Wraps an open connection that carries nothing. Its own `application_name` is the configured one
    /// ([`crate::ConfigBuilder::base_application_name`]), else read once before the first write.
    pub fn new(inner: AsyncPgConnection, config: &Config) -> Self {
        let mut state = CarrierState::default();
        state.base = config.shared.base_name.clone();
        TracedPgConnection { inner, state, shared: config.shared.clone() }
    }

    /// Connects to `url` (a URL or a key-value string, as [`AsyncPgConnection::establish`]). The
    /// `application_name` it names is the connection's own, unless the configuration names one.
    pub async fn establish_with(url: &str, config: &Config) -> ConnectionResult<Self> {
        let inner = AsyncPgConnection::establish(url).await?;
        let mut conn = TracedPgConnection::new(inner, config);
        if conn.state.base.is_none() {
            if let Ok(parsed) = url.parse::<tokio_postgres::Config>() {
                conn.state.base = Some(parsed.get_application_name().unwrap_or_default().to_owned());
            }
        }
        Ok(conn)
    }

    /// The wrapped connection, for what this wrapper does not offer. Statements run on it directly carry
    /// no context, and may leave the carrier in any state: the wrapper rewrites it before its next statement.
    pub fn inner_mut(&mut self) -> &mut AsyncPgConnection {
        self.state.forget();
        &mut self.inner
    }

    /// The wrapped connection. The carrier may hold a context: clear it first (run any statement outside a
    /// span) if the connection goes on to serve others.
    pub fn into_inner(self) -> AsyncPgConnection {
        self.inner
    }

    /// What a statement issued now needs: the current span's traceparent, or nothing.
    fn want(&self) -> Want {
        match self.shared.current() {
            Some(tp) => Want::Carry(tp),
            None => Want::Clean,
        }
    }

    fn parts(&mut self) -> (&AsyncPgConnection, &mut CarrierState, &Shared) {
        (&self.inner, &mut self.state, &self.shared)
    }
}

/// Runs the application's statement `fut` (created, not yet polled) on `conn`, with the carrier write
/// `want` needs sent first, pipelined in the same flight; then records what the statement did.
async fn run<R>(
    conn: &AsyncPgConnection,
    state: &mut CarrierState,
    shared: &Shared,
    want: Want,
    effects: Effects,
    fut: impl Future<Output = QueryResult<R>>,
) -> QueryResult<R> {
    if state.wrap_open {
        // A wrapper-opened transaction whose statement future was dropped: end it first, as autocommit
        // would have.
        let mut c = conn;
        c.batch_execute("COMMIT").await?;
        state.wrap_open = false;
    }
    let mut want = want;
    if shared.outside == OutsideTransaction::WrapInTransaction && !state.in_transaction() {
        match want {
            Want::Carry(tp) if !effects.matter() && !effects.needs_no_transaction_block() => {
                return wrapped(conn, state, shared, tp, fut).await;
            }
            // Nothing session-scoped is written in this mode: statements that cannot share a transaction
            // (or change settings themselves) run unwrapped, without the carrier.
            _ => want = Want::Clean,
        }
    }
    let planned = state.plan(want, &effects);
    let mut flight = Flight { state, effects, pending: planned.map(|(_, scope)| scope), settled: false };
    let result = match planned {
        None => fut.await,
        Some((action, scope)) => {
            if flight.state.base.is_none() && shared.needs_base() {
                match read_base(conn).await {
                    Ok(base) => flight.state.base = Some(base),
                    // Nothing written: the statement runs without the carrier, which stays unknown.
                    Err(_) => {
                        flight.state.failed(scope);
                        flight.pending = None;
                    }
                }
            }
            match (flight.pending, flight.state.base.as_deref()) {
                (Some(_), base) => {
                    let sql = shared.write_sql(&action, scope, base.unwrap_or(""));
                    let mut c = conn;
                    // Polled first, so the carrier's Query is queued before the statement's messages.
                    let (written, result) = futures_util::future::join(c.batch_execute(&sql), fut).await;
                    flight.pending = None;
                    if written.is_err() {
                        // The statement ran without it; its own result is what the caller gets.
                        flight.state.failed(scope);
                    }
                    result
                }
                (None, _) => fut.await,
            }
        }
    };
    flight.settled = true;
    match &result {
        Ok(_) => flight.state.succeeded(&flight.effects, &shared.target),
        Err(_) => flight.state.statement_failed(&flight.effects),
    }
    result
}

/// Runs `fut` in a transaction of its own: `BEGIN` + the transaction-scoped carrier as one simple Query,
/// pipelined with the statement, then `COMMIT` once the statement answered (the server turns it into a
/// rollback when the statement failed). The `COMMIT` cannot be pipelined too: a statement not yet prepared
/// sends its Parse, waits for it, and only then its Bind/Execute — after a `COMMIT` queued meanwhile.
/// Nothing outlives the transaction; one round trip more than the statement alone.
async fn wrapped<R>(
    conn: &AsyncPgConnection,
    state: &mut CarrierState,
    shared: &Shared,
    tp: TraceParent,
    fut: impl Future<Output = QueryResult<R>>,
) -> QueryResult<R> {
    if state.base.is_none() && shared.needs_base() {
        match read_base(conn).await {
            Ok(base) => state.base = Some(base),
            Err(_) => return fut.await,
        }
    }
    let write = shared.write_sql(&Action::Set(tp), Scope::Transaction, state.base.as_deref().unwrap_or(""));
    let begin = format!("BEGIN;\n{write}");
    let mut c = conn;
    // If this future is dropped after the BEGIN was sent, the transaction stays open on the server: the
    // connection's next statement commits it first.
    let guard = Open { state, done: false };
    let (begun, result) = futures_util::future::join(c.batch_execute(&begin), fut).await;
    let outcome = match begun {
        Ok(()) => {
            let committed = c.batch_execute("COMMIT").await;
            match (result, committed) {
                // The statement's changes did not commit: that is its error, as under autocommit.
                (Ok(_), Err(e)) => Err(e),
                (result, _) => result,
            }
        }
        // Without the BEGIN the statement ran on its own.
        Err(_) => result,
    };
    guard.close();
    outcome
}

/// A wrapper-opened transaction whose end has not been seen.
struct Open<'a> {
    state: &'a mut CarrierState,
    done: bool,
}

impl Open<'_> {
    fn close(mut self) {
        self.done = true;
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.state.wrap_open = true;
        }
    }
}

/// The connection's own `application_name`, read once (an unnamed statement: nothing enters the cache).
async fn read_base(conn: &AsyncPgConnection) -> QueryResult<String> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let mut c = conn;
    let row: Name =
        diesel::sql_query("SELECT pg_catalog.current_setting('application_name') AS name").get_result(&mut c).await?;
    Ok(row.name)
}

/// Keeps the carrier state truthful when a statement's future is dropped half-way.
struct Flight<'a> {
    state: &'a mut CarrierState,
    effects: Effects,
    /// A planned write whose outcome is not known yet.
    pending: Option<Scope>,
    settled: bool,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if let Some(scope) = self.pending {
            self.state.failed(scope);
        }
        if !self.settled && self.effects.matter() {
            self.state.forget();
        }
    }
}

impl SimpleAsyncConnection for TracedPgConnection {
    async fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        let want = self.want();
        let effects = Effects::of(query);
        let (conn, state, shared) = self.parts();
        let mut c = conn;
        let fut = c.batch_execute(query);
        run(conn, state, shared, want, effects, fut).await
    }
}

impl AsyncConnectionCore for TracedPgConnection {
    type ExecuteFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<usize>>;
    type LoadFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<Self::Stream<'conn, 'query>>>;
    type Stream<'conn, 'query> = <AsyncPgConnection as AsyncConnectionCore>::Stream<'conn, 'query>;
    type Row<'conn, 'query> = <AsyncPgConnection as AsyncConnectionCore>::Row<'conn, 'query>;
    type Backend = Pg;

    fn load<'conn, 'query, T>(&'conn mut self, source: T) -> Self::LoadFuture<'conn, 'query>
    where
        T: AsQuery + 'query,
        T::Query: QueryFragment<Pg> + QueryId + 'query,
    {
        let want = self.want();
        let (query, effects) = Commented::new(source.as_query(), &self.shared);
        let (conn, state, shared) = self.parts();
        let mut c = conn;
        let fut = AsyncConnectionCore::load(&mut c, query);
        run(conn, state, shared, want, effects, fut).boxed()
    }

    fn execute_returning_count<'conn, 'query, T>(&'conn mut self, source: T) -> Self::ExecuteFuture<'conn, 'query>
    where
        T: QueryFragment<Pg> + QueryId + 'query,
    {
        let want = self.want();
        let (query, effects) = Commented::new(source, &self.shared);
        let (conn, state, shared) = self.parts();
        let mut c = conn;
        let fut = AsyncConnectionCore::execute_returning_count(&mut c, query);
        run(conn, state, shared, want, effects, fut).boxed()
    }
}

impl AsyncConnection for TracedPgConnection {
    type TransactionManager = AnsiTransactionManager;

    /// Connects with the default [`Config`]; see [`TracedPgConnection::establish_with`].
    async fn establish(database_url: &str) -> ConnectionResult<Self> {
        Self::establish_with(database_url, &Config::default()).await
    }

    fn transaction_state(&mut self) -> &mut AnsiTransactionManager {
        self.inner.transaction_state()
    }

    fn instrumentation(&mut self) -> &mut dyn Instrumentation {
        self.inner.instrumentation()
    }

    fn set_instrumentation(&mut self, instrumentation: impl Instrumentation) {
        self.inner.set_instrumentation(instrumentation);
    }

    fn set_prepared_statement_cache_size(&mut self, size: CacheSize) {
        self.inner.set_prepared_statement_cache_size(size);
    }
}

#[cfg(any(feature = "deadpool", feature = "bb8"))]
impl diesel_async::pooled_connection::PoolableConnection for TracedPgConnection {}

/// The carrier target a connection writes (for tests and tools that read it back).
impl TracedPgConnection {
    /// The variable this connection's carrier writes.
    pub fn carrier(&self) -> &Target {
        &self.shared.target
    }
}

/// `save_changes` through the wrapper: the `UPDATE … RETURNING` runs as any other statement.
impl<'b, Changes, Output, Tab, V> diesel_async::UpdateAndFetchResults<Changes, Output> for TracedPgConnection
where
    Output: Send + 'static,
    Changes: Copy + diesel::AsChangeset<Target = Tab> + Send + diesel::associations::Identifiable<Table = Tab>,
    Tab: diesel::Table + diesel::query_dsl::methods::FindDsl<Changes::Id> + 'b,
    diesel::dsl::Find<Tab, Changes::Id>: diesel::query_builder::IntoUpdateTarget<Table = Tab, WhereClause = V>,
    diesel::query_builder::UpdateStatement<Tab, V, Changes::Changeset>: AsQuery,
    diesel::dsl::Update<Changes, Changes>: diesel_async::methods::LoadQuery<'b, Self, Output>,
    V: Send + 'b,
    Changes::Changeset: Send + 'b,
    Tab::FromClause: Send,
{
    fn update_and_fetch<'conn, 'changes>(
        &'conn mut self,
        changeset: Changes,
    ) -> BoxFuture<'changes, QueryResult<Output>>
    where
        Changes: 'changes,
        Changes::Changeset: 'changes,
        'conn: 'changes,
        Self: 'changes,
    {
        use diesel_async::RunQueryDsl;
        async move { diesel::update(changeset).set(changeset).get_result(self).await }.boxed()
    }
}
