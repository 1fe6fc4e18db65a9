//! What one connection's carrier holds: the core [`Tracker`], plus whether the current transaction failed
//! (the server refuses everything but `ROLLBACK` until it ends, so nothing is written then).

use sqlcommenter::carrier::{may_have_effect, statements, Action, Effect, Scope, Target, Tracker, Want};

/// A connection's carrier state.
#[derive(Debug, Clone, Default)]
pub(crate) struct CarrierState {
    tracker: Tracker,
    aborted: bool,
    /// The connection's own `application_name`, once known.
    pub(crate) base: Option<String>,
    /// A transaction the wrapper opened around one statement
    /// ([`crate::OutsideTransaction::WrapInTransaction`]) whose future was dropped before its `COMMIT`:
    /// sent before anything else runs on the connection.
    pub(crate) wrap_open: bool,
}

impl CarrierState {
    #[cfg(test)]
    pub(crate) fn held(&self) -> sqlcommenter::carrier::Held {
        self.tracker.held()
    }

    pub(crate) fn in_transaction(&self) -> bool {
        self.tracker.in_transaction()
    }

    /// The scope a write before the next statement gets: the transaction inside one, else the session.
    pub(crate) fn scope(&self) -> Scope {
        if self.in_transaction() {
            Scope::Transaction
        } else {
            Scope::Session
        }
    }

    /// Plans the write `want` needs before a statement with `effects` (recorded as sent; report the
    /// outcome with [`Self::failed`]). Nothing goes before transaction control (it would fail in an aborted
    /// transaction, and a `COMMIT` is logged after the transaction ended) nor in an aborted transaction.
    pub(crate) fn plan(&mut self, want: Want, effects: &Effects) -> Option<(Action, Scope)> {
        if self.aborted || effects.controls_transaction() {
            return None;
        }
        let scope = self.scope();
        self.tracker.plan(want, scope).map(|a| (a, scope))
    }

    /// A planned write failed, or its outcome is unknown.
    pub(crate) fn failed(&mut self, scope: Scope) {
        self.tracker.failed(scope);
    }

    /// The connection's state is unknown (a statement that may change settings was interrupted).
    pub(crate) fn forget(&mut self) {
        self.tracker.forget();
        self.aborted = false;
    }

    /// The application's statement succeeded: what it did to settings and transactions.
    pub(crate) fn succeeded(&mut self, effects: &Effects, target: &Target) {
        for e in &effects.0 {
            self.tracker.observe(e, target);
        }
        if effects.controls_transaction() {
            self.aborted = false;
        }
    }

    /// The application's statement failed.
    pub(crate) fn statement_failed(&mut self, effects: &Effects) {
        if effects.matter() {
            // Part of it may have run (a multi-statement batch), or a COMMIT/ROLLBACK's outcome is unclear.
            self.forget();
        } else if self.in_transaction() {
            self.aborted = true;
        }
    }
}

/// What an application statement does to settings and transactions, read with the core lexer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Effects(Vec<Effect<'static>>);

impl Effects {
    /// The effects of `sql` (only those a carrier cares about).
    pub(crate) fn of(sql: &str) -> Self {
        if !may_have_effect(sql.as_bytes()) {
            return Effects::default();
        }
        Effects(
            statements(sql)
                .into_iter()
                .filter_map(|e| {
                    Some(match e {
                        Effect::Other => return None,
                        Effect::Set { variable, value, scope, computed } => Effect::Set {
                            variable: variable.into_owned().into(),
                            value: value.map(|v| v.into_owned().into()),
                            scope,
                            computed,
                        },
                        Effect::Begin => Effect::Begin,
                        Effect::Commit => Effect::Commit,
                        Effect::Rollback => Effect::Rollback,
                        Effect::RollbackToSavepoint => Effect::RollbackToSavepoint,
                        Effect::ResetAll => Effect::ResetAll,
                        Effect::UnknownSettings => Effect::UnknownSettings,
                        Effect::NoTransactionBlock => Effect::NoTransactionBlock,
                    })
                })
                .collect(),
        )
    }

    /// Whether the statement may change settings or the transaction state.
    pub(crate) fn matter(&self) -> bool {
        self.0.iter().any(|e| !matches!(e, Effect::NoTransactionBlock))
    }

    /// A statement PostgreSQL refuses inside a transaction block.
    pub(crate) fn needs_no_transaction_block(&self) -> bool {
        self.0.iter().any(|e| matches!(e, Effect::NoTransactionBlock))
    }

    /// `BEGIN`, `COMMIT`, `ROLLBACK`, `ROLLBACK TO`.
    pub(crate) fn controls_transaction(&self) -> bool {
        self.0
            .iter()
            .any(|e| matches!(e, Effect::Begin | Effect::Commit | Effect::Rollback | Effect::RollbackToSavepoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlcommenter::carrier::Held;
    use sqlcommenter::TraceParent;

    fn tp(n: u8) -> TraceParent {
        TraceParent::new([n; 16], [n; 8], 1).unwrap()
    }

    #[test]
    fn transaction_scope_inside_transactions_and_nothing_in_a_failed_one() {
        let t = Target::default();
        let mut s = CarrierState::default();
        let none = Effects::default();
        assert_eq!(s.plan(Want::Carry(tp(1)), &none), Some((Action::Set(tp(1)), Scope::Session)));
        assert_eq!(s.plan(Want::Carry(tp(1)), &none), None);
        let begin = Effects::of("BEGIN");
        assert_eq!(s.plan(Want::Carry(tp(2)), &begin), None, "nothing before BEGIN");
        s.succeeded(&begin, &t);
        assert_eq!(s.plan(Want::Carry(tp(2)), &none), Some((Action::Set(tp(2)), Scope::Transaction)));
        s.statement_failed(&none);
        assert_eq!(s.plan(Want::Clean, &none), None, "aborted: nothing written");
        s.succeeded(&Effects::of("ROLLBACK"), &t);
        assert_eq!(s.held(), Held::Carrying(tp(1)), "the session value is back");
        assert_eq!(s.plan(Want::Clean, &none), Some((Action::Clear, Scope::Session)));
        s.succeeded(&Effects::of(&format!("SET application_name = '{}'", tp(3))), &t);
        assert_eq!(s.held(), Held::Carrying(tp(3)));
        s.statement_failed(&Effects::of("RESET ALL; SELECT 1/0"));
        assert_eq!(s.held(), Held::Unknown);
        assert!(!Effects::of("SELECT 'RESET ALL'").matter());
        assert!(Effects::of("ROLLBACK TO SAVEPOINT diesel_savepoint_1").controls_transaction());
    }
}
