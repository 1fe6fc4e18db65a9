//! The query methods shared by [`crate::Client`] and [`crate::Transaction`], with tokio-postgres's names
//! and signatures. Each type provides `pg()`, `core()`, `call()` and `observe()`.

macro_rules! query_methods {
    () => {
        /// Like `tokio_postgres::Client::prepare`; the text gets the static tags (never the per-request
        /// context, so the statement can be reused). Executions of the statement get the context of the
        /// call that executes them, through the session carrier.
        pub async fn prepare(&self, query: &str) -> Result<Statement, Error> {
            self.prepare_typed(query, &[]).await
        }

        /// Like `tokio_postgres::Client::prepare_typed`.
        pub async fn prepare_typed(&self, query: &str, parameter_types: &[Type]) -> Result<Statement, Error> {
            let call = self.call();
            let r = self.core().prepare(self.pg(), &call, query, parameter_types).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::query`.
        pub async fn query<T>(&self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error>
        where
            T: ?Sized + ToStatement,
        {
            let call = self.call();
            let r = self.core().query(self.pg(), &call, statement, params).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::query_one`.
        pub async fn query_one<T>(&self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error>
        where
            T: ?Sized + ToStatement,
        {
            let call = self.call();
            let r = self.core().query_one(self.pg(), &call, statement, params).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::query_opt`.
        pub async fn query_opt<T>(&self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, Error>
        where
            T: ?Sized + ToStatement,
        {
            let call = self.call();
            let r = self.core().query_opt(self.pg(), &call, statement, params).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::query_raw` (rows are streamed).
        pub async fn query_raw<T, P, I>(&self, statement: &T, params: I) -> Result<RowStream, Error>
        where
            T: ?Sized + ToStatement,
            P: BorrowToSql,
            I: IntoIterator<Item = P>,
            I::IntoIter: ExactSizeIterator,
        {
            let call = self.call();
            let r = self.core().query_raw(self.pg(), &call, statement, params).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::query_typed` (one round trip; text sent as is plus tags).
        pub async fn query_typed(
            &self,
            query: &str,
            params: &[(&(dyn ToSql + Sync), Type)],
        ) -> Result<Vec<Row>, Error> {
            let call = self.call();
            let r = self.core().query_typed(self.pg(), &call, query, params).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::query_typed_one`.
        pub async fn query_typed_one(&self, query: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<Row, Error> {
            let call = self.call();
            let r = self.core().query_typed_one(self.pg(), &call, query, params).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::query_typed_opt`.
        pub async fn query_typed_opt(
            &self,
            query: &str,
            params: &[(&(dyn ToSql + Sync), Type)],
        ) -> Result<Option<Row>, Error> {
            let call = self.call();
            let r = self.core().query_typed_opt(self.pg(), &call, query, params).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::query_typed_raw`.
        pub async fn query_typed_raw<P, I>(&self, query: &str, params: I) -> Result<RowStream, Error>
        where
            P: BorrowToSql,
            I: IntoIterator<Item = (P, Type)>,
        {
            let call = self.call();
            let r = self.core().query_typed_raw(self.pg(), &call, query, params).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::execute`.
        pub async fn execute<T>(&self, statement: &T, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error>
        where
            T: ?Sized + ToStatement,
        {
            let call = self.call();
            let r = self.core().execute(self.pg(), &call, statement, params).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::execute_typed`.
        pub async fn execute_typed(&self, query: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<u64, Error> {
            let call = self.call();
            let r = self.core().execute_typed(self.pg(), &call, query, params).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::execute_raw`.
        pub async fn execute_raw<T, P, I>(&self, statement: &T, params: I) -> Result<u64, Error>
        where
            T: ?Sized + ToStatement,
            P: BorrowToSql,
            I: IntoIterator<Item = P>,
            I::IntoIter: ExactSizeIterator,
        {
            let call = self.call();
            let r = self.core().execute_raw(self.pg(), &call, statement, params).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::copy_in` (`COPY ... FROM STDIN`; the context goes in the carrier).
        pub async fn copy_in<T, U>(&self, statement: &T) -> Result<CopyInSink<U>, Error>
        where
            T: ?Sized + ToStatement,
            U: Buf + 'static + Send,
        {
            let call = self.call();
            let r = self.core().copy_in(self.pg(), &call, statement).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::copy_out` (`COPY ... TO STDOUT`).
        pub async fn copy_out<T>(&self, statement: &T) -> Result<CopyOutStream, Error>
        where
            T: ?Sized + ToStatement,
        {
            let call = self.call();
            let r = self.core().copy_out(self.pg(), &call, statement).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::simple_query`. The comment goes at the end of the string, so with
        /// several statements it is attached to the last one.
        pub async fn simple_query(&self, query: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
            let call = self.call();
            let r = self.core().simple_query(self.pg(), &call, query).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::batch_execute`.
        pub async fn batch_execute(&self, query: &str) -> Result<(), Error> {
            let call = self.call();
            let r = self.core().batch_execute(self.pg(), &call, query).await;
            self.observe(&r);
            r
        }

        /// Like `tokio_postgres::Client::cancel_token`.
        pub fn cancel_token(&self) -> CancelToken {
            self.pg().cancel_token()
        }
    };
}

pub(crate) use query_methods;
