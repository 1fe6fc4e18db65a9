//! What one server connection's session carrier holds, as far as the wrapper knows, and what a call needs.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use sqlcommenter::TraceParent;
use tokio_postgres::types::Type;
use tokio_postgres::Statement;

/// The carrier's value on the server, as tracked by the wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// No traceparent (the connection's own name / empty setting).
    Base,
    /// This traceparent.
    Tp(TraceParent),
    /// Unknown (after a failed carrier, a reset by the pool, a statement that may have changed it).
    Unknown,
}

/// What the next request on the connection needs from the carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Exactly this traceparent.
    Tp(TraceParent),
    /// No traceparent at all (work without a carried context must never show another one).
    Clean,
    /// No traceparent, or this one (the statement text carries it already).
    CleanOr(TraceParent),
    /// Whatever is there (the carrier is known to be unusable, e.g. in an aborted transaction).
    Any,
}

/// The carrier request to send before the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Set(TraceParent),
    Reset,
}

/// Per-connection state, shared by every handle of that connection.
#[derive(Debug)]
pub(crate) struct ConnState {
    held: Mutex<Held>,
    types: Mutex<HashMap<String, Vec<Type>>>,
    /// The prepared carrier statement ([`crate::CarrierStatement::Prepared`]).
    pub(crate) carrier_stmt: OnceLock<Statement>,
}

/// Upper bound of the per-connection parameter-type cache (per-query-comment mode).
const TYPE_CACHE_MAX: usize = 1024;

impl Default for ConnState {
    fn default() -> Self {
        ConnState { held: Mutex::new(Held::Base), types: Mutex::new(HashMap::new()), carrier_stmt: OnceLock::new() }
    }
}

impl ConnState {
    /// Locks the carrier state. Held only synchronously, while requests are put on the connection.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets what the carrier holds: the next request sets or resets it.
    pub(crate) fn mark_unknown(&self) {
        *self.lock() = Held::Unknown;
    }

    /// The tracked value.
    pub(crate) fn held(&self) -> Held {
        *self.lock()
    }

    /// Restores a tracked value (a rolled-back transaction reverts the session setting).
    pub(crate) fn restore(&self, held: Held) {
        *self.lock() = held;
    }

    /// A connection checked out of a pool: a traceparent left by the previous request is treated as
    /// stale (the pool's recycle step may also have reset it), so the next statement overwrites it.
    #[cfg(feature = "deadpool")]
    pub(crate) fn checkout(&self) {
        let mut held = self.lock();
        if matches!(*held, Held::Tp(_)) {
            *held = Held::Unknown;
        }
    }

    pub(crate) fn types(&self, sql: &str) -> Option<Vec<Type>> {
        self.types.lock().unwrap_or_else(|p| p.into_inner()).get(sql).cloned()
    }

    pub(crate) fn cache_types(&self, sql: &str, types: Vec<Type>) {
        let mut map = self.types.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= TYPE_CACHE_MAX {
            map.clear();
        }
        map.insert(sql.to_owned(), types);
    }

    /// Number of cached parameter-type entries.
    pub(crate) fn type_cache_len(&self) -> usize {
        self.types.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Decides the carrier request for `want` given `held`, and updates `held` to what the server will hold
/// once that request has run.
pub(crate) fn plan(held: &mut Held, want: Want) -> Option<Action> {
    match (want, *held) {
        (Want::Any, _) => None,
        (Want::Tp(tp), Held::Tp(cur)) if tp == cur => None,
        (Want::Tp(tp), _) => {
            *held = Held::Tp(tp);
            Some(Action::Set(tp))
        }
        (Want::Clean, Held::Base) => None,
        (Want::CleanOr(_), Held::Base) => None,
        (Want::CleanOr(tp), Held::Tp(cur)) if tp == cur => None,
        (Want::Clean | Want::CleanOr(_), _) => {
            *held = Held::Base;
            Some(Action::Reset)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let a = TraceParent::new([1; 16], [1; 8], 1).unwrap();
        let b = TraceParent::new([2; 16], [2; 8], 1).unwrap();
        let mut h = Held::Base;
        assert_eq!(plan(&mut h, Want::Clean), None);
        assert_eq!(plan(&mut h, Want::Tp(a)), Some(Action::Set(a)));
        assert_eq!(plan(&mut h, Want::Tp(a)), None);
        assert_eq!(plan(&mut h, Want::CleanOr(a)), None);
        assert_eq!(plan(&mut h, Want::CleanOr(b)), Some(Action::Reset));
        assert_eq!(h, Held::Base);
        assert_eq!(plan(&mut h, Want::Tp(b)), Some(Action::Set(b)));
        assert_eq!(plan(&mut h, Want::Any), None);
        assert_eq!(plan(&mut h, Want::Clean), Some(Action::Reset));
        h = Held::Unknown;
        assert_eq!(plan(&mut h, Want::Tp(a)), Some(Action::Set(a)));
        h = Held::Unknown;
        assert_eq!(plan(&mut h, Want::Clean), Some(Action::Reset));
    }
}
