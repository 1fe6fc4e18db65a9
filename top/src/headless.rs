//! `--headless`: the sampling loop without a view, for the exporters (a sidecar or a service). Connection
//! losses and recoveries are one line each on stderr; SIGINT / SIGTERM / SIGHUP end it cleanly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::error::TopError;
use crate::monitor::{Link, Monitor};
use crate::sample::Snapshot;

/// Longest sleep between two checks of the signal flag.
const SLICE: Duration = Duration::from_millis(100);

/// Flips to true on SIGINT, SIGTERM or SIGHUP.
pub(crate) fn quit_flag() -> Result<Arc<AtomicBool>, TopError> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, flag.clone()).map_err(TopError::Terminal)?;
    }
    Ok(flag)
}

/// Samples every `interval` until a signal arrives.
///
/// # Errors
/// [`TopError::Privilege`] when the server refuses the query.
pub fn run(
    rt: &Runtime,
    monitor: &mut Monitor,
    interval: Duration,
    mut on_sample: impl FnMut(Option<&Snapshot>),
) -> Result<(), TopError> {
    let quit = quit_flag()?;
    let mut was_up = true;
    while !quit.load(Ordering::Relaxed) {
        let started = Instant::now();
        let snapshot = monitor.sample(rt)?;
        on_sample(snapshot.as_ref());
        match (monitor.link(), was_up) {
            (Link::Lost { reason, .. }, true) => {
                eprintln!("sqlcommenter top: connection lost: {reason}; retrying every {}s", interval.as_secs_f64());
                was_up = false;
            }
            (Link::Up, false) => {
                eprintln!("sqlcommenter top: reconnected to {}", monitor.target().display);
                was_up = true;
            }
            _ => {}
        }
        while !quit.load(Ordering::Relaxed) {
            let left = interval.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(SLICE));
        }
    }
    Ok(())
}
