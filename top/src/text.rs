//! Plain-text rendering of a snapshot as a blocking tree (`--once`, and the demo's blocking chain).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::time::Duration;

use crate::sample::Snapshot;
use crate::session::Session;
use crate::tree::{forest, shown_blocker};

/// `s` with control characters (escape sequences a client can put in a quoted identifier or a comment
/// PostgreSQL keeps) replaced by `�`, so a terminal only ever shows them.
pub fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(s.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// A short human duration: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn age(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", d.as_secs_f64()),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// `trace <id> (<source>)`, or `no trace`.
pub fn trace_label(s: &Session) -> String {
    match &s.trace {
        Some(t) => format!("trace {} ({})", t.trace_id(), t.source.as_str()),
        None => "no trace".to_owned(),
    }
}

/// One line per session, blocked sessions indented under their blocker with the blocker's trace.
/// `keep` selects the trees to print (whole).
pub fn render(snapshot: &Snapshot, keep: impl Fn(&Session) -> bool) -> String {
    let mut out = String::new();
    let rows = forest(snapshot, |a, b| b.xact_age.cmp(&a.xact_age).then(Ordering::Equal), keep);
    for row in rows {
        let s = &snapshot.sessions[row.index];
        let indent = "   ".repeat(row.depth.saturating_sub(1));
        let branch = if row.depth > 0 { "└─ " } else { "" };
        let wait = match (&s.wait_event_type, &s.wait_event) {
            (Some(t), Some(e)) => format!(" wait {t}/{e}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{indent}{branch}pid {} {} {} {}{}{}{} {}",
            s.pid,
            printable(s.application.as_deref().unwrap_or("-")),
            trace_label(s),
            s.state.as_ref().map_or("-", |st| st.as_str()),
            wait,
            s.xact_age.map(|d| format!(" xact {}", age(d))).unwrap_or_default(),
            s.query_age.map(|d| format!(" query {}", age(d))).unwrap_or_default(),
            match (s.query.as_deref(), s.carrier_statement) {
                (Some(q), true) => format!("[carrier] {}", printable(q)),
                (q, _) => printable(q.unwrap_or("")).into_owned(),
            },
        );
        if let Some(b) = shown_blocker(snapshot, s) {
            let pad = "   ".repeat(row.depth);
            let _ = writeln!(out, "{pad}   blocked by pid {} ({})", b.pid, trace_label(b));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(age(Duration::from_millis(850)), "850ms");
        assert_eq!(age(Duration::from_millis(12_345)), "12.3s");
        assert_eq!(age(Duration::from_secs(245)), "4m05s");
        assert_eq!(age(Duration::from_secs(7380)), "2h03m");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let q = sqlcommenter::normalize("SELECT 1 AS \"\u{1b}[2J\u{7}x\"", sqlcommenter::Dialect::Postgres);
        assert!(q.contains('\u{1b}'), "normalization keeps quoted identifiers: {q:?}");
        assert_eq!(printable(&q), "SELECT ? AS \"\u{fffd}[2J\u{fffd}x\"");
        assert!(matches!(printable("plain"), Cow::Borrowed("plain")));
    }
}
