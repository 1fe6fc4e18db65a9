//! The sampling loop's connection: one [`Sampler`], reconnected after a loss. The first connection's
//! failure is fatal (a wrong password will not fix itself); later losses are reported and retried at every
//! refresh. Refused privileges are always fatal. [`spawn`] runs the loop on a thread of its own, so a
//! server that stops answering never freezes the view or delays a signal.

use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime};

use tokio::runtime::Runtime;

use crate::conninfo::Target;
use crate::error::TopError;
use crate::sample::{Sampler, Snapshot};

/// The connection's state, for the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The last sample succeeded.
    Up,
    /// The connection is gone; retried at each refresh.
    Lost {
        /// Why (the last error).
        reason: String,
        /// When it was first noticed.
        since: SystemTime,
        /// Reconnection attempts so far.
        attempts: u32,
    },
}

/// A sampler that survives lost connections.
#[derive(Debug)]
pub struct Monitor {
    target: Target,
    sampler: Option<Sampler>,
    link: Link,
}

impl Monitor {
    /// Connects for the first time.
    ///
    /// # Errors
    /// Whatever [`Sampler::connect`] returns: at start-up nothing is retried.
    pub fn connect(rt: &Runtime, target: Target) -> Result<Monitor, TopError> {
        let sampler = rt.block_on(Sampler::connect(&target))?;
        Ok(Monitor { target, sampler: Some(sampler), link: Link::Up })
    }

    /// `host:port/database as user`.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The connection's state after the last [`Monitor::sample`].
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// One sample, reconnecting first when the connection was lost. `Ok(None)` when the server could not
    /// be reached this time ([`Monitor::link`] says why).
    ///
    /// # Errors
    /// [`TopError::Privilege`]: refused privileges end the run.
    pub fn sample(&mut self, rt: &Runtime) -> Result<Option<Snapshot>, TopError> {
        if self.sampler.as_ref().is_none_or(Sampler::is_closed) {
            self.sampler = None;
            match rt.block_on(Sampler::connect(&self.target)) {
                Ok(s) => self.sampler = Some(s),
                Err(e @ TopError::Privilege { .. }) => return Err(e),
                Err(e) => {
                    self.lost(e.to_string(), true);
                    return Ok(None);
                }
            }
        }
        let Some(sampler) = &self.sampler else { return Ok(None) };
        match rt.block_on(sampler.sample()) {
            Ok(snapshot) => {
                self.link = Link::Up;
                Ok(Some(snapshot))
            }
            Err(e @ TopError::Privilege { .. }) => Err(e),
            Err(e) => {
                self.sampler = None;
                self.lost(e.to_string(), false);
                Ok(None)
            }
        }
    }

    fn lost(&mut self, reason: String, attempted: bool) {
        let attempts = u32::from(attempted);
        self.link = match &self.link {
            Link::Up => Link::Lost { reason, since: SystemTime::now(), attempts },
            Link::Lost { since, attempts: n, .. } => Link::Lost { reason, since: *since, attempts: n + attempts },
        };
    }
}

/// One refresh, as the sampling thread reports it.
#[derive(Debug, Clone)]
pub struct Tick {
    /// The sample, or `None` when the server could not be reached this time.
    pub snapshot: Option<Snapshot>,
    /// The connection's state after it.
    pub link: Link,
}

/// Samples every `interval` on a new thread (which owns `rt`, the runtime driving the connection) until
/// the receiver is dropped or a fatal error was sent.
///
/// # Errors
/// [`TopError::Runtime`] when the thread cannot be started.
pub fn spawn(
    rt: Runtime,
    mut monitor: Monitor,
    interval: Duration,
) -> Result<Receiver<Result<Tick, TopError>>, TopError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("top-sampler".into())
        .spawn(move || loop {
            let started = Instant::now();
            let tick = monitor.sample(&rt).map(|snapshot| Tick { snapshot, link: monitor.link().clone() });
            let fatal = tick.is_err();
            if tx.send(tick).is_err() || fatal {
                return;
            }
            std::thread::sleep(interval.saturating_sub(started.elapsed()));
        })
        .map_err(TopError::Runtime)?;
    Ok(rx)
}
