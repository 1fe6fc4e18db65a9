//! The session carrier: what the connection currently carries and the statement that changes it.
//!
//! The carrier is written with a simple-protocol `SET` (one round trip, no prepared statement, so it
//! never enters sqlx's statement cache nor `pg_prepared_statements`). Inside a transaction it is a
//! `SET LOCAL`, folded into the `BEGIN` when the transaction starts, so it costs nothing there and ends
//! with the transaction.

use sqlcommenter::TraceParent;
use sqlx::{AssertSqlSafe, Executor, PgConnection};

use crate::config::Shared;

/// What a connection (or a transaction) carries, as far as the wrapper knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// The session default (no traceparent).
    Base,
    /// This traceparent.
    Set(TraceParent),
    /// Unknown (a carrier statement was interrupted): the next statement rewrites it.
    Unknown,
}

impl State {
    /// The state a statement with this context needs.
    pub(crate) fn wanted(tp: Option<&TraceParent>) -> State {
        match tp {
            Some(tp) => State::Set(*tp),
            None => State::Base,
        }
    }
}

/// Quotes a value as an escape-string literal (`E'...'`), correct whatever `standard_conforming_strings` is.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The statement that moves the carrier to `to` (`local`: only for the current transaction).
pub(crate) fn statement(shared: &Shared, to: &State, local: bool) -> String {
    let var = shared.carrier_variable();
    match (to, local) {
        (State::Set(tp), false) => format!("SET {var} TO {}", quote(&shared.carrier_value(tp))),
        (State::Set(tp), true) => format!("SET LOCAL {var} TO {}", quote(&shared.carrier_value(tp))),
        (_, false) => format!("RESET {var}"),
        (_, true) => format!("SET LOCAL {var} TO DEFAULT"),
    }
}

/// Runs the carrier statement for `to` if `state` differs, keeping `state` truthful even when the future
/// is dropped half-way (it is `Unknown` until the server confirmed).
pub(crate) async fn ensure(
    conn: &mut PgConnection,
    state: &mut State,
    to: State,
    shared: &Shared,
    local: bool,
) -> Result<(), sqlx::Error> {
    if *state == to {
        return Ok(());
    }
    let sql = statement(shared, &to, local);
    *state = State::Unknown;
    conn.execute(AssertSqlSafe(sql)).await?;
    *state = to;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Carrier, Config};

    #[test]
    fn statements() {
        let cfg = Config::builder().base_application_name("o'k\\").build().unwrap();
        let tp = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(
            statement(&cfg.shared, &State::Set(tp), false),
            "SET application_name TO E'o''k\\\\@00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'"
        );
        assert_eq!(statement(&cfg.shared, &State::Base, false), "RESET application_name");
        assert_eq!(statement(&cfg.shared, &State::Base, true), "SET LOCAL application_name TO DEFAULT");
        let guc = Config::builder().carrier(Carrier::Guc("sqlcommenter.traceparent".into())).build().unwrap();
        assert_eq!(
            statement(&guc.shared, &State::Set(tp), true),
            "SET LOCAL sqlcommenter.traceparent TO E'00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'"
        );
    }
}
