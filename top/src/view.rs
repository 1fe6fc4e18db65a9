//! The interactive view's state (sort, filter, scrolling), its keys, and how a snapshot is drawn. Pure:
//! no terminal I/O here, so it can be drawn into ratatui's test backend.

use std::cmp::Ordering;
use std::time::SystemTime;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use crate::monitor::Link;
use crate::sample::Snapshot;
use crate::session::{Session, State};
use crate::text::{age, printable};
use crate::tree::{forest, shown_blocker};

/// What the rows are ordered by (blocked rows stay under their blocker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Oldest transaction first.
    XactAge,
    /// Longest-running (or longest-idle) statement first.
    QueryAge,
    /// By pid.
    Pid,
    /// By application name.
    Application,
}

impl SortKey {
    fn next(self) -> SortKey {
        match self {
            SortKey::XactAge => SortKey::QueryAge,
            SortKey::QueryAge => SortKey::Pid,
            SortKey::Pid => SortKey::Application,
            SortKey::Application => SortKey::XactAge,
        }
    }

    fn label(self) -> &'static str {
        match self {
            SortKey::XactAge => "xact age",
            SortKey::QueryAge => "query age",
            SortKey::Pid => "pid",
            SortKey::Application => "application",
        }
    }

    fn compare(self, a: &Session, b: &Session) -> Ordering {
        match self {
            SortKey::XactAge => b.xact_age.cmp(&a.xact_age),
            SortKey::QueryAge => b.query_age.cmp(&a.query_age),
            SortKey::Pid => a.pid.cmp(&b.pid),
            SortKey::Application => a.application.cmp(&b.application),
        }
    }
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Redraw with the changed view state.
    Redraw,
    /// Leave (restoring the terminal).
    Quit,
    /// Nothing to do.
    None,
}

/// The view's state between refreshes.
#[derive(Debug, Clone)]
pub struct View {
    /// Row order.
    pub sort: SortKey,
    /// Reverse the order.
    pub reverse: bool,
    /// Case-insensitive substring over pid, application, trace id, state, wait event and query.
    pub filter: String,
    /// Typing into the filter.
    pub editing: bool,
    /// Hide sessions that are plain `idle` (unless they are part of a blocking chain).
    pub hide_idle: bool,
    /// First row shown.
    pub scroll: usize,
}

impl Default for View {
    fn default() -> Self {
        View {
            sort: SortKey::XactAge,
            reverse: false,
            filter: String::new(),
            editing: false,
            hide_idle: false,
            scroll: 0,
        }
    }
}

/// Terminal width below which trace ids are shortened (the full table needs about 190 columns).
const COMPACT_BELOW: u16 = 190;

/// The keys, as shown at the bottom of the screen.
pub const KEYS: &str = "q quit  s sort  r reverse  / filter  i hide idle  ↑↓ PgUp PgDn scroll";

impl View {
    /// Applies a key.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char('c' | 'd')) {
            return Action::Quit;
        }
        if self.editing {
            match key.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => return Action::None,
            }
            self.scroll = 0;
            return Action::Redraw;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if !self.filter.is_empty() => self.filter.clear(),
            KeyCode::Esc => return Action::Quit,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('/') => self.editing = true,
            KeyCode::Char('i') => self.hide_idle = !self.hide_idle,
            KeyCode::Down | KeyCode::Char('j') => self.scroll += 1,
            KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageDown => self.scroll += 20,
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(20),
            KeyCode::Home => self.scroll = 0,
            _ => return Action::None,
        }
        Action::Redraw
    }

    fn keep(&self, s: &Session) -> bool {
        if self.hide_idle && s.state == Some(State::Idle) {
            return false;
        }
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        let fields = [
            Some(s.pid.to_string()),
            s.application_name.clone(),
            s.trace.as_ref().map(|t| t.trace_id()),
            s.state.as_ref().map(|st| st.as_str().to_owned()),
            s.wait_event.clone(),
            s.query.clone(),
        ];
        fields.iter().flatten().any(|f| f.to_lowercase().contains(&needle))
    }
}

/// What the header says about the connection and the sample.
#[derive(Debug, Clone)]
pub struct Status<'a> {
    /// `host:port/db as user`.
    pub target: &'a str,
    /// Connected or lost.
    pub link: &'a Link,
    /// Refresh interval in seconds.
    pub interval: f64,
    /// The role top connected as (for the privilege hint).
    pub user: &'a str,
    /// How long the current sample is overdue, when it is (the server is slow or not answering).
    pub waiting: Option<std::time::Duration>,
}

fn clock(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{:02}:{:02}:{:02} UTC", (secs / 3600) % 24, (secs / 60) % 60, secs % 60)
}

/// Draws the header, the blocking tree and the keys.
pub fn draw(frame: &mut Frame<'_>, view: &mut View, snapshot: Option<&Snapshot>, status: &Status<'_>) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let totals = snapshot.map(Snapshot::totals).unwrap_or_default();
    let mut header = vec![Line::from(vec![
        Span::styled("sqlcommenter top", bold),
        Span::raw(format!(
            "  {}  every {}s  {}",
            status.target,
            status.interval,
            snapshot.map(|s| clock(s.taken_at)).unwrap_or_default()
        )),
    ])];
    if let Link::Lost { reason, attempts, .. } = status.link {
        header.push(Line::styled(
            format!("connection lost: {reason} — retrying every {}s (attempt {attempts})", status.interval),
            Style::default().fg(Color::White).bg(Color::Red),
        ));
    }
    if let Some(w) = status.waiting {
        header.push(Line::styled(
            format!("waiting for the server: the sample is {} overdue (showing the last one)", age(w)),
            Style::default().fg(Color::Black).bg(Color::Yellow),
        ));
    }
    let oldest = totals.oldest_xact.map(|(pid, d)| format!("{} (pid {pid})", age(d))).unwrap_or_else(|| "-".into());
    header.push(Line::from(format!(
        "sessions {}  active {}  idle in transaction {}  waiting {}  oldest transaction {}  with trace {}/{}",
        totals.sessions,
        totals.active,
        totals.idle_in_transaction,
        totals.waiting,
        oldest,
        totals.with_trace,
        totals.sessions
    )));
    if totals.hidden > 0 {
        header.push(Line::styled(
            format!(
                "{} session(s) of other roles show as <insufficient privilege>: grant pg_monitor to {} to see their state, query, trace and waits",
                totals.hidden, status.user
            ),
            Style::default().fg(Color::Yellow),
        ));
    }
    let footer = if view.editing {
        Line::from(vec![
            Span::styled("filter: ", bold),
            Span::raw(format!("{}▏  (Enter keep, Esc clear)", view.filter)),
        ])
    } else {
        let mut spans = vec![Span::raw(KEYS), Span::raw(format!("   sort: {}", view.sort.label()))];
        if view.reverse {
            spans.push(Span::raw(" (reversed)"));
        }
        if !view.filter.is_empty() {
            spans.push(Span::raw(format!("   filter: {}", view.filter)));
        }
        if view.hide_idle {
            spans.push(Span::raw("   idle hidden"));
        }
        if frame.area().width < COMPACT_BELOW {
            spans.push(Span::raw("   trace ids shortened: widen the terminal, or --once --format json"));
        }
        Line::from(spans)
    };

    let [head_area, table_area, foot_area] = Layout::vertical([
        Constraint::Length(u16::try_from(header.len()).unwrap_or(4)),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header), head_area);
    frame.render_widget(Paragraph::new(footer).style(Style::default().add_modifier(Modifier::REVERSED)), foot_area);

    let Some(snapshot) = snapshot else { return };
    let (sort, reverse) = (view.sort, view.reverse);
    let order = move |a: &Session, b: &Session| {
        let o = sort.compare(a, b);
        if reverse {
            o.reverse()
        } else {
            o
        }
    };
    let tree = forest(snapshot, order, |s| view.keep(s));
    let visible = usize::from(table_area.height.saturating_sub(1)).max(1);
    view.scroll = view.scroll.min(tree.len().saturating_sub(visible));
    let dim = matches!(status.link, Link::Lost { .. });
    // Below this width trace ids are cut to 12 digits, so the query keeps some room.
    let compact = table_area.width < COMPACT_BELOW;
    let id = |t: String| if compact { format!("{}…", &t[..12.min(t.len())]) } else { t };
    let rows = tree.iter().skip(view.scroll).take(visible).map(|r| {
        let s = &snapshot.sessions[r.index];
        let branch = if r.depth > 0 { format!("{}└─ ", "  ".repeat(r.depth - 1)) } else { String::new() };
        let (trace, source) = match &s.trace {
            Some(t) => (id(t.trace_id()), if t.source.as_str() == "comment" { "comment" } else { "app_name" }),
            None => ("-".to_owned(), ""),
        };
        let wait = match (&s.wait_event_type, &s.wait_event) {
            (Some(t), Some(e)) => format!("{t}:{e}"),
            _ => String::new(),
        };
        let blocker = shown_blocker(snapshot, s).map(|b| {
            let t = b.trace.as_ref().map_or_else(|| "no trace".to_owned(), |t| id(t.trace_id()));
            let more = if s.blocked_by.len() > 1 { format!(" +{}", s.blocked_by.len() - 1) } else { String::new() };
            format!("{} {t}{more}", b.pid)
        });
        let state_style = match &s.state {
            Some(State::Active) if s.is_blocked() => Style::default().fg(Color::Red),
            Some(State::Active) => Style::default().fg(Color::Green),
            Some(st) if st.is_idle_in_transaction() => Style::default().fg(Color::Yellow),
            _ => Style::default(),
        };
        let row = Row::new(vec![
            Cell::from(s.pid.to_string()),
            Cell::from(format!("{branch}{}", printable(s.application.as_deref().unwrap_or("-")))),
            Cell::from(trace),
            Cell::from(source),
            Cell::from(s.state.as_ref().map_or("-", |st| st.as_str()).to_owned()).style(state_style),
            Cell::from(wait),
            Cell::from(s.xact_age.map(age).unwrap_or_default()),
            Cell::from(s.query_age.map(age).unwrap_or_default()),
            Cell::from(blocker.unwrap_or_default()),
            Cell::from(match (&s.query, s.carrier_statement) {
                (Some(q), true) => Line::from(vec![
                    Span::styled("[carrier] ", Style::default().add_modifier(Modifier::DIM)),
                    Span::raw(printable(q).into_owned()),
                ]),
                (q, _) => Line::from(printable(q.as_deref().unwrap_or_default()).into_owned()),
            }),
        ]);
        if dim {
            row.style(Style::default().add_modifier(Modifier::DIM))
        } else {
            row
        }
    });
    let head = Row::new([
        "PID",
        "APPLICATION",
        "TRACE ID",
        "FROM",
        "STATE",
        "WAIT",
        "XACT",
        "QUERY AGE",
        "BLOCKED BY (PID TRACE)",
        "QUERY",
    ])
    .style(bold.add_modifier(Modifier::UNDERLINED));
    let (trace_w, blocker_w) = if compact { (13, 21) } else { (32, 40) };
    let widths = [
        Constraint::Length(7),
        Constraint::Length(18),
        Constraint::Length(trace_w),
        Constraint::Length(8),
        Constraint::Length(19),
        Constraint::Length(22),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(blocker_w),
        Constraint::Min(20),
    ];
    frame.render_widget(Table::new(rows, widths).header(head), table_area);
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;

    const A: &str = "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1-a1a1a1a1a1a1a1a1-01";

    fn snapshot() -> Snapshot {
        let s = |pid, app: &str, state, blocked: Vec<i32>, query: &str| {
            Session::from_columns(
                pid,
                None,
                None,
                Some(app.into()),
                Some(state),
                None,
                None,
                Some(1000.0),
                Some(500.0),
                Some(query.into()),
                blocked,
            )
        };
        Snapshot {
            taken_at: SystemTime::now(),
            sessions: vec![
                s(1, &format!("holder@{A}"), "idle in transaction", vec![], "update t set x = 1"),
                s(2, "waiter", "active", vec![1], "update t set x = 2"),
                s(3, "bystander", "idle", vec![], "select 1"),
            ],
        }
    }

    fn screen(view: &mut View) -> String {
        screen_at(view, 220)
    }

    fn screen_at(view: &mut View, width: u16) -> String {
        let mut term = Terminal::new(TestBackend::new(width, 12)).unwrap();
        let snap = snapshot();
        let status = Status { target: "h:5432/db as u", link: &Link::Up, interval: 1.0, user: "u", waiting: None };
        term.draw(|f| draw(f, view, Some(&snap), &status)).unwrap();
        let buf = term.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect::<String>().trim_end().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn tree_header_keys_and_filter() {
        let mut view = View::default();
        let text = screen(&mut view);
        assert!(text.contains("active 1  idle in transaction 1  waiting 1  oldest transaction 1.0s (pid 1)"), "{text}");
        let holder = text.lines().position(|l| l.starts_with("1 ") && l.contains("holder")).unwrap();
        let waiter = &text.lines().nth(holder + 1).unwrap();
        assert!(waiter.contains("└─ waiter") && waiter.contains("1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"), "{text}");
        assert!(text.contains(KEYS));

        // A filter on the waiter keeps its whole chain, drops the bystander.
        assert_eq!(view.key(KeyEvent::from(KeyCode::Char('/'))), Action::Redraw);
        for c in "WAITER".chars() {
            view.key(KeyEvent::from(KeyCode::Char(c)));
        }
        view.key(KeyEvent::from(KeyCode::Enter));
        assert_eq!((view.filter.as_str(), view.editing), ("WAITER", false));
        let text = screen(&mut view);
        assert!(text.contains("holder") && text.contains("waiter") && !text.contains("bystander"), "{text}");
        assert_eq!(view.key(KeyEvent::from(KeyCode::Esc)), Action::Redraw);
        assert!(view.filter.is_empty());
        assert_eq!(view.key(KeyEvent::from(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(view.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Action::Quit);
    }

    #[test]
    fn narrow_terminals_keep_the_query() {
        let text = screen_at(&mut View::default(), 140);
        let waiter = text.lines().find(|l| l.contains("waiter")).unwrap();
        assert!(waiter.contains("1 aaaaaaaaaaaa…") && waiter.contains("update t set x = ?"), "{text}");
        assert!(text.contains("trace ids shortened"), "{text}");
    }
}
