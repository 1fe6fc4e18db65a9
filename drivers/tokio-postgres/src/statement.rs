//! [`ToStatement`]: the wrapper's counterpart of `tokio_postgres::ToStatement` (which is sealed), so that
//! `client.query("SELECT ...", ..)` and `client.query(&stmt, ..)` keep compiling unchanged.

use tokio_postgres::Statement;

/// A query given as text or as a prepared [`Statement`].
#[derive(Debug, Clone, Copy)]
pub enum StatementRef<'a> {
    /// SQL text.
    Text(&'a str),
    /// A statement prepared on this connection.
    Prepared(&'a Statement),
}

mod sealed {
    pub trait Sealed {}
}

/// Implemented for `str`, `String` and [`Statement`], like `tokio_postgres::ToStatement`.
pub trait ToStatement: sealed::Sealed {
    /// The text or statement.
    fn statement_ref(&self) -> StatementRef<'_>;
}

impl sealed::Sealed for str {}
impl ToStatement for str {
    fn statement_ref(&self) -> StatementRef<'_> {
        StatementRef::Text(self)
    }
}

impl sealed::Sealed for String {}
impl ToStatement for String {
    fn statement_ref(&self) -> StatementRef<'_> {
        StatementRef::Text(self)
    }
}

impl sealed::Sealed for Statement {}
impl ToStatement for Statement {
    fn statement_ref(&self) -> StatementRef<'_> {
        StatementRef::Prepared(self)
    }
}
