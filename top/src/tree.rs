//! The blocking tree: each blocked backend under the one blocking it (the first of its
//! `pg_blocking_pids` that is a sampled client backend), blockers first.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use crate::sample::Snapshot;
use crate::session::Session;

/// A row of the tree in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeRow {
    /// The session's index in [`Snapshot::sessions`].
    pub index: usize,
    /// 0 for a root, 1 for what it blocks, …
    pub depth: usize,
    /// Index of the session it sits under (its blocker).
    pub parent: Option<usize>,
}

/// The blocker a blocked session is shown under: the first of its blockers present in `snapshot`.
pub fn shown_blocker<'a>(snapshot: &'a Snapshot, session: &Session) -> Option<&'a Session> {
    session.blocked_by.iter().filter(|&&p| p != session.pid).find_map(|&p| snapshot.get(p))
}

/// Orders the snapshot as a forest: roots (not blocked by any sampled session) sorted by `order`, each
/// followed by what it blocks, recursively (siblings sorted by `order` too). Only trees with at least one
/// session satisfying `keep` are returned, whole, so a filter never cuts a blocking chain. Cycles (a
/// deadlock just before the server breaks it) are entered at their lowest pid.
pub fn forest(
    snapshot: &Snapshot,
    order: impl Fn(&Session, &Session) -> Ordering,
    keep: impl Fn(&Session) -> bool,
) -> Vec<TreeRow> {
    let sessions = &snapshot.sessions;
    let index: HashMap<i32, usize> = sessions.iter().enumerate().map(|(i, s)| (s.pid, i)).collect();
    let parent: Vec<Option<usize>> =
        sessions.iter().map(|s| shown_blocker(snapshot, s).and_then(|b| index.get(&b.pid).copied())).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); sessions.len()];
    for (i, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            children[*p].push(i);
        }
    }
    let cmp = |a: &usize, b: &usize| order(&sessions[*a], &sessions[*b]).then(sessions[*a].pid.cmp(&sessions[*b].pid));
    for c in &mut children {
        c.sort_by(cmp);
    }
    let mut roots: Vec<usize> = (0..sessions.len()).filter(|&i| parent[i].is_none()).collect();
    roots.sort_by(cmp);

    let mut out = Vec::with_capacity(sessions.len());
    let mut seen = HashSet::with_capacity(sessions.len());
    let walk = |root: usize, seen: &mut HashSet<usize>, out: &mut Vec<TreeRow>| {
        let mut tree = Vec::new();
        let mut stack = vec![(root, 0usize, None)];
        while let Some((i, depth, from)) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            tree.push(TreeRow { index: i, depth, parent: from });
            for &c in children[i].iter().rev() {
                stack.push((c, depth + 1, Some(i)));
            }
        }
        if tree.iter().any(|r| keep(&sessions[r.index])) {
            out.extend(tree);
        }
    };
    for r in roots {
        walk(r, &mut seen, &mut out);
    }
    // Whatever is left sits on a cycle: enter each at its lowest pid.
    while let Some(i) = (0..sessions.len()).filter(|i| !seen.contains(i)).min_by_key(|&i| sessions[i].pid) {
        walk(i, &mut seen, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn s(pid: i32, blocked_by: &[i32], app: &str) -> Session {
        Session::from_columns(
            pid,
            None,
            None,
            Some(app.into()),
            Some("active"),
            None,
            None,
            None,
            None,
            Some("select 1".into()),
            blocked_by.to_vec(),
        )
    }

    fn pids(snap: &Snapshot, rows: &[TreeRow]) -> Vec<(i32, usize)> {
        rows.iter().map(|r| (snap.sessions[r.index].pid, r.depth)).collect()
    }

    #[test]
    fn blocked_under_blocker_and_filters_keep_chains() {
        let snap = Snapshot {
            taken_at: SystemTime::now(),
            sessions: vec![
                s(10, &[], "x"),
                s(20, &[30], "waiter"),
                s(30, &[], "holder"),
                s(40, &[20, 30], "second"),
                s(50, &[999], "blocked-by-unseen"),
            ],
        };
        let all = forest(&snap, |_, _| Ordering::Equal, |_| true);
        assert_eq!(pids(&snap, &all), vec![(10, 0), (30, 0), (20, 1), (40, 2), (50, 0)]);
        assert_eq!(all[2].parent, Some(2), "20 sits under 30 (index 2)");
        let only = forest(&snap, |_, _| Ordering::Equal, |s| s.application.as_deref() == Some("second"));
        assert_eq!(pids(&snap, &only), vec![(30, 0), (20, 1), (40, 2)]);
        let reversed = forest(&snap, |a, b| b.pid.cmp(&a.pid), |_| true);
        assert_eq!(pids(&snap, &reversed)[0], (50, 0));
    }

    #[test]
    fn cycles_are_shown_once() {
        let snap = Snapshot { taken_at: SystemTime::now(), sessions: vec![s(1, &[2], "a"), s(2, &[1], "b")] };
        let rows = forest(&snap, |_, _| Ordering::Equal, |_| true);
        assert_eq!(pids(&snap, &rows), vec![(1, 0), (2, 1)]);
    }
}
