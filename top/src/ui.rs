//! The interactive terminal view: ratatui on crossterm. Samples arrive from the sampling thread
//! ([`crate::monitor::spawn`]); keys are handled as they come, so the view answers even while the server
//! does not. The terminal is restored on every way out: `q`, Esc, Ctrl-C (a key in raw mode), SIGINT /
//! SIGTERM / SIGHUP, an error (the guard drops before the caller prints it) and a panic (ratatui's hook).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::error::TopError;
use crate::monitor::{Link, Tick};
use crate::sample::Snapshot;
use crate::view::{draw, Action, Status, View};

/// Longest time between two checks of the signal flag and the sampling thread.
const POLL_SLICE: Duration = Duration::from_millis(50);

/// Restores the terminal when dropped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the view until the user quits; `on_sample` sees every refresh (exporters), `None` for a failed one.
///
/// # Errors
/// [`TopError::Terminal`] on terminal I/O failures, [`TopError::Privilege`] when the server refuses the
/// query.
pub fn run(
    ticks: &Receiver<Result<Tick, TopError>>,
    target: &str,
    user: &str,
    interval: Duration,
    mut on_sample: impl FnMut(Option<&Snapshot>),
) -> Result<(), TopError> {
    let quit = crate::headless::quit_flag()?;
    let mut terminal = ratatui::try_init().map_err(TopError::Terminal)?;
    let _restore = Restore;
    let mut view = View::default();
    let mut snapshot: Option<Snapshot> = None;
    let mut link = Link::Up;
    let mut last_tick = Instant::now();
    let mut last_draw = Instant::now();
    loop {
        if quit.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut redraw = false;
        loop {
            match ticks.try_recv() {
                Ok(tick) => {
                    let tick = tick?;
                    on_sample(tick.snapshot.as_ref());
                    if tick.snapshot.is_some() {
                        snapshot = tick.snapshot;
                    }
                    link = tick.link;
                    last_tick = Instant::now();
                    redraw = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(TopError::Sample("the sampling thread stopped".into())),
            }
        }
        // A sample overdue by more than an interval: say so (once a second).
        let waiting = last_tick.elapsed().saturating_sub(interval);
        let stale = (waiting >= interval.max(Duration::from_secs(1))).then_some(waiting);
        if stale.is_some() && last_draw.elapsed() >= Duration::from_secs(1) {
            redraw = true;
        }
        if event::poll(POLL_SLICE).map_err(TopError::Terminal)? {
            match event::read().map_err(TopError::Terminal)? {
                Event::Key(key) if key.kind != KeyEventKind::Release => match view.key(key) {
                    Action::Quit => return Ok(()),
                    Action::Redraw => redraw = true,
                    Action::None => {}
                },
                Event::Resize(..) => redraw = true,
                _ => {}
            }
        }
        if redraw {
            last_draw = Instant::now();
            let status = Status { target, link: &link, interval: interval.as_secs_f64(), user, waiting: stale };
            terminal.draw(|f| draw(f, &mut view, snapshot.as_ref(), &status)).map_err(TopError::Terminal)?;
        }
    }
}
