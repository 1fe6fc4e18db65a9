//! A sans-I/O tracker of what one server connection's carrier holds, what the next statement needs, and
//! what the client's own statements did to it. No I/O, no clock: the caller reports what happened.

use super::effect::Effect;
use super::{Scope, Target};
use crate::traceparent::TraceParent;

/// The carrier's value on the server, as far as the tracker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Held {
    /// No traceparent (the connection's own value).
    Base,
    /// This traceparent.
    Carrying(TraceParent),
    /// Not known (a write whose outcome is unknown, a statement that may have changed it).
    Unknown,
}

/// What the next statement needs from the carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Want {
    /// Exactly this traceparent.
    Carry(TraceParent),
    /// No traceparent: work without a context must never show another request's.
    Clean,
    /// No traceparent, or this one (the statement text carries the context itself).
    CleanOr(TraceParent),
    /// Whatever is there (the carrier cannot be written now, e.g. in an aborted transaction).
    Any,
}

/// The write to send before the next statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Carry this traceparent.
    Set(TraceParent),
    /// Carry nothing.
    Clear,
}

/// What one connection's carrier holds: the session value, and inside a transaction the value in effect
/// now and the session value at its start (for a rollback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    /// What the connection's own value carries (a client that connected with a traceparent as its
    /// `application_name`, or with the GUC in its startup options): `Held::Base` stands for it.
    base: Option<TraceParent>,
    session: Held,
    /// In a transaction: (value in effect now, session value when it began).
    transaction: Option<(Held, Held)>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    /// A fresh connection: its own value.
    pub fn new() -> Tracker {
        Tracker { base: None, session: Held::Base, transaction: None }
    }

    /// A fresh connection whose own value already carries `base` (read with [`Target::read`] from the
    /// startup value): wanting `base` needs no write while the connection holds its own value, and
    /// [`Want::Clean`] cannot remove it (no write can: `base` is what a reset returns to).
    pub fn with_base(base: Option<TraceParent>) -> Tracker {
        Tracker { base, ..Tracker::new() }
    }

    /// What the connection's own value carries.
    pub fn base(&self) -> Option<TraceParent> {
        self.base
    }

    /// The value in effect now.
    pub fn held(&self) -> Held {
        self.transaction.map_or(self.session, |(now, _)| now)
    }

    /// Whether the tracker is inside a transaction (explicit, or an implicit one a transaction-scoped
    /// write opened).
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// Decides the write `want` needs, and records it as sent. A [`Scope::Transaction`] write outside a
    /// known transaction opens an implicit one: report its end with [`Tracker::transaction_ended`].
    pub fn plan(&mut self, want: Want, scope: Scope) -> Option<Action> {
        let action = match (want, self.held()) {
            (Want::Any, _) => return None,
            (Want::Carry(tp), Held::Carrying(cur)) if tp == cur => return None,
            (Want::Carry(tp), Held::Base) if self.base == Some(tp) => return None,
            (Want::Carry(tp), _) => Action::Set(tp),
            (Want::Clean, Held::Base) | (Want::CleanOr(_), Held::Base) => return None,
            (Want::CleanOr(tp), Held::Carrying(cur)) if tp == cur => return None,
            (Want::Clean | Want::CleanOr(_), _) => Action::Clear,
        };
        let to = match action {
            Action::Set(tp) => Held::Carrying(tp),
            Action::Clear => Held::Base,
        };
        self.apply(to, scope);
        Some(action)
    }

    fn apply(&mut self, to: Held, scope: Scope) {
        match (&mut self.transaction, scope) {
            (Some((now, _)), Scope::Transaction) => *now = to,
            (Some((now, _)), Scope::Session) => {
                *now = to;
                self.session = to;
            }
            (None, Scope::Transaction) => self.transaction = Some((to, self.session)),
            (None, Scope::Session) => self.session = to,
        }
    }

    /// A write planned earlier failed or its outcome is unknown: the next statement rewrites it.
    pub fn failed(&mut self, scope: Scope) {
        self.apply(Held::Unknown, scope);
    }

    /// The connection was handed to someone else (a pool checkout) or its state is otherwise unknown.
    pub fn forget(&mut self) {
        self.session = Held::Unknown;
        if let Some((now, _)) = &mut self.transaction {
            *now = Held::Unknown;
        }
    }

    /// The client changed the carrier's setting itself, to a value the caller does not read (a proxy that
    /// sees the client's `SET`/`RESET` but not its result): that value is the connection's own from now on,
    /// carrying nothing the caller wrote. Unlike [`Tracker::forget`], work without a context then needs no
    /// write — a caller that writes only transaction-scoped would otherwise clear it before every transaction.
    pub fn client_changed(&mut self) {
        self.base = None;
        self.session = Held::Base;
        if let Some((now, _)) = &mut self.transaction {
            *now = Held::Base;
        }
    }

    /// The transaction ended: committed (`true`) keeps session-level changes made in it; rolled back
    /// (`false`) restores the session value from its start. The value in effect becomes the session value.
    pub fn transaction_ended(&mut self, committed: bool) {
        if let Some((_, at_begin)) = self.transaction.take() {
            if !committed {
                self.session = at_begin;
            }
        }
    }

    /// What the client's own statement did, for a carrier in `target` (`base`: the client's own value).
    /// Call it once the statement succeeded, for each of [`super::statements`]'s effects in order.
    pub fn observe(&mut self, effect: &Effect<'_>, target: &Target) {
        match effect {
            Effect::Begin => {
                if self.transaction.is_none() {
                    self.transaction = Some((self.session, self.session));
                }
            }
            Effect::Commit => self.transaction_ended(true),
            Effect::Rollback => self.transaction_ended(false),
            Effect::RollbackToSavepoint => {
                // Settings since the savepoint revert to values the tracker did not keep.
                self.session = Held::Unknown;
                if let Some((now, _)) = &mut self.transaction {
                    *now = Held::Unknown;
                }
            }
            Effect::ResetAll | Effect::UnknownSettings => {
                let to = if matches!(effect, Effect::ResetAll) { Held::Base } else { Held::Unknown };
                self.apply(to, Scope::Session);
            }
            Effect::Set { variable, value, scope, computed } if variable == target.variable() => {
                let to = match (value, computed) {
                    (_, true) => Held::Unknown,
                    (None, false) => Held::Base,
                    (Some(v), false) => target.read(v).map_or(Held::Base, Held::Carrying),
                };
                self.apply(to, *scope);
            }
            Effect::Set { .. } | Effect::NoTransactionBlock | Effect::Other => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::statements;
    use super::*;

    fn tp(n: u8) -> TraceParent {
        TraceParent::new([n; 16], [n; 8], 1).unwrap()
    }

    fn run(t: &mut Tracker, sql: &str) {
        for e in statements(sql) {
            t.observe(&e, &Target::default());
        }
    }

    #[test]
    fn plans_only_changes() {
        let mut t = Tracker::new();
        assert_eq!(t.plan(Want::Clean, Scope::Session), None);
        assert_eq!(t.plan(Want::Carry(tp(1)), Scope::Session), Some(Action::Set(tp(1))));
        assert_eq!(t.plan(Want::Carry(tp(1)), Scope::Session), None);
        assert_eq!(t.plan(Want::CleanOr(tp(1)), Scope::Session), None);
        assert_eq!(t.plan(Want::CleanOr(tp(2)), Scope::Session), Some(Action::Clear));
        assert_eq!(t.plan(Want::Any, Scope::Session), None);
        t.failed(Scope::Session);
        assert_eq!(t.plan(Want::Clean, Scope::Session), Some(Action::Clear));
    }

    #[test]
    fn a_base_that_carries_needs_no_write_until_changed() {
        let mut t = Tracker::with_base(Some(tp(1)));
        assert_eq!(t.plan(Want::Carry(tp(1)), Scope::Transaction), None);
        assert_eq!(t.plan(Want::Carry(tp(2)), Scope::Transaction), Some(Action::Set(tp(2))));
        t.transaction_ended(true);
        // The transaction-scoped write ended: the connection's own value is back, and it carries 1.
        assert_eq!(t.plan(Want::Carry(tp(1)), Scope::Transaction), None);
        // The client set the carrier itself: the base no longer stands for what is held.
        run(&mut t, "SET application_name = '00-03030303030303030303030303030303-0303030303030303-01'");
        assert_eq!(t.plan(Want::Carry(tp(1)), Scope::Transaction), Some(Action::Set(tp(1))));
        t.transaction_ended(true);
        run(&mut t, "RESET ALL");
        assert_eq!(t.plan(Want::Carry(tp(1)), Scope::Transaction), None);
    }

    #[test]
    fn a_client_change_is_the_connections_own_value() {
        let mut t = Tracker::with_base(Some(tp(1)));
        t.client_changed();
        assert_eq!(t.plan(Want::Clean, Scope::Transaction), None);
        assert_eq!(t.plan(Want::Carry(tp(1)), Scope::Transaction), Some(Action::Set(tp(1))));
        t.transaction_ended(true);
        assert_eq!(t.plan(Want::Clean, Scope::Transaction), None, "nothing of ours is left");
    }

    #[test]
    fn transaction_scope_ends_with_the_transaction() {
        let mut t = Tracker::new();
        // An implicit transaction (an extended-protocol batch): the write lasts until its end.
        assert_eq!(t.plan(Want::Carry(tp(1)), Scope::Transaction), Some(Action::Set(tp(1))));
        assert!(t.in_transaction());
        assert_eq!(t.plan(Want::Carry(tp(1)), Scope::Transaction), None);
        t.transaction_ended(true);
        assert_eq!(t.held(), Held::Base);
        // Explicit: BEGIN, local write, COMMIT.
        run(&mut t, "BEGIN");
        assert_eq!(t.plan(Want::Carry(tp(2)), Scope::Transaction), Some(Action::Set(tp(2))));
        run(&mut t, "COMMIT");
        assert_eq!(t.held(), Held::Base);
    }

    #[test]
    fn client_statements_move_the_carrier() {
        let mut t = Tracker::new();
        t.plan(Want::Carry(tp(1)), Scope::Session);
        run(&mut t, "RESET ALL");
        assert_eq!(t.held(), Held::Base);
        t.plan(Want::Carry(tp(1)), Scope::Session);
        // A session-level change inside a rolled-back transaction reverts.
        run(&mut t, "BEGIN; SET application_name = 'web'");
        assert_eq!(t.held(), Held::Base);
        run(&mut t, "ROLLBACK");
        assert_eq!(t.held(), Held::Carrying(tp(1)));
        run(&mut t, "BEGIN; SAVEPOINT a; SET LOCAL application_name = 'x'; ROLLBACK TO a");
        assert_eq!(t.held(), Held::Unknown);
        run(&mut t, "COMMIT");
        assert_eq!(t.plan(Want::Carry(tp(1)), Scope::Session), Some(Action::Set(tp(1))));
        run(&mut t, "SELECT set_config(name, v, false) FROM t");
        assert_eq!(t.held(), Held::Unknown);
        run(&mut t, &format!("SET application_name TO '{}'", tp(3)));
        assert_eq!(t.held(), Held::Carrying(tp(3)));
        run(&mut t, "SET search_path = x; SELECT 'RESET ALL'");
        assert_eq!(t.held(), Held::Carrying(tp(3)));
    }
}
