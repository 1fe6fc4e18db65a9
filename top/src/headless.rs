//! `--headless`: samples without a view, for the exporters (a sidecar or a service). Connection losses and
//! recoveries are one line each on stderr; SIGINT / SIGTERM / SIGHUP end it cleanly, even while a sample
//! hangs (sampling runs on its own thread, [`crate::monitor::spawn`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use crate::error::TopError;
use crate::monitor::{Link, Tick};
use crate::sample::Snapshot;

/// Longest wait between two checks of the signal flag.
const SLICE: Duration = Duration::from_millis(100);

/// Flips to true on SIGINT, SIGTERM or SIGHUP.
pub(crate) fn quit_flag() -> Result<Arc<AtomicBool>, TopError> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, flag.clone()).map_err(TopError::Terminal)?;
    }
    Ok(flag)
}

/// Feeds every refresh from the sampling thread to `on_sample` until a signal arrives.
///
/// # Errors
/// [`TopError::Privilege`] when the server refuses the query.
pub fn run(
    ticks: &Receiver<Result<Tick, TopError>>,
    target: &str,
    interval: Duration,
    mut on_sample: impl FnMut(Option<&Snapshot>),
) -> Result<(), TopError> {
    let quit = quit_flag()?;
    let mut was_up = true;
    while !quit.load(Ordering::Relaxed) {
        let tick = match ticks.recv_timeout(SLICE) {
            Ok(tick) => tick?,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Err(TopError::Sample("the sampling thread stopped".into())),
        };
        on_sample(tick.snapshot.as_ref());
        match (&tick.link, was_up) {
            (Link::Lost { reason, .. }, true) => {
                eprintln!("sqlcommenter top: connection lost: {reason}; retrying every {}s", interval.as_secs_f64());
                was_up = false;
            }
            (Link::Up, false) => {
                eprintln!("sqlcommenter top: reconnected to {target}");
                was_up = true;
            }
            _ => {}
        }
    }
    Ok(())
}
