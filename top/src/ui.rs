//! The interactive terminal view: ratatui on crossterm, refreshed every interval, keys between
//! refreshes. The terminal is restored on every way out: `q`, Esc, Ctrl-C (a key in raw mode), SIGINT /
//! SIGTERM / SIGHUP, an error (the guard drops before the caller prints it) and a panic (ratatui's hook).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyEventKind};
use ratatui::DefaultTerminal;
use tokio::runtime::Runtime;

use crate::error::TopError;
use crate::monitor::Monitor;
use crate::sample::Snapshot;
use crate::view::{draw, Action, Status, View};

/// Longest time between two checks of the signal flag.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Restores the terminal when dropped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the view until the user quits; `on_sample` sees every snapshot (exporters).
///
/// # Errors
/// [`TopError::Terminal`] on terminal I/O failures,
/// [`TopError::Privilege`] when the server refuses the query.
pub fn run(
    rt: &Runtime,
    monitor: &mut Monitor,
    interval: Duration,
    mut on_sample: impl FnMut(Option<&Snapshot>),
) -> Result<(), TopError> {
    let quit = crate::headless::quit_flag()?;
    let mut terminal = ratatui::try_init().map_err(TopError::Terminal)?;
    let _restore = Restore;
    let mut view = View::default();
    let mut snapshot: Option<Snapshot> = None;
    let user = monitor.target().config.get_user().unwrap_or_default().to_owned();
    loop {
        let started = Instant::now();
        let sample = monitor.sample(rt)?;
        on_sample(sample.as_ref());
        if sample.is_some() {
            snapshot = sample;
        }
        let target = monitor.target().display.clone();
        let link = monitor.link().clone();
        let status = Status { target: &target, link: &link, interval: interval.as_secs_f64(), user: &user };
        let redraw = |terminal: &mut DefaultTerminal, view: &mut View| {
            terminal.draw(|f| draw(f, view, snapshot.as_ref(), &status)).map(drop).map_err(TopError::Terminal)
        };
        redraw(&mut terminal, &mut view)?;
        let deadline = started + interval;
        loop {
            if quit.load(Ordering::Relaxed) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if !event::poll((deadline - now).min(POLL_SLICE)).map_err(TopError::Terminal)? {
                continue;
            }
            match event::read().map_err(TopError::Terminal)? {
                Event::Key(key) if key.kind != KeyEventKind::Release => match view.key(key) {
                    Action::Quit => return Ok(()),
                    Action::Redraw => redraw(&mut terminal, &mut view)?,
                    Action::None => {}
                },
                Event::Resize(..) => redraw(&mut terminal, &mut view)?,
                _ => {}
            }
        }
    }
}
