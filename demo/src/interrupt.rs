//! Ctrl-C: the first one sets a flag that every step checks, so `run` unwinds and the cluster's `Drop`
//! stops the server; a second one exits at once (the harness's watchdog then stops the server).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::Duration;

use crate::DemoError;

static FLAG: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Installs the process-wide SIGINT/SIGTERM handler (once).
pub(crate) fn install() {
    INSTALL.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            if FLAG.swap(true, Ordering::SeqCst) {
                eprintln!("sqlcommenter demo: second interrupt, exiting now");
                std::process::exit(130);
            }
            eprintln!("sqlcommenter demo: interrupted, cleaning up (press Ctrl-C again to exit at once)");
        });
        if let Err(e) = installed {
            // Another handler owns SIGINT (e.g. an embedding program); the demo still cleans up on error.
            eprintln!("sqlcommenter demo: Ctrl-C handler not installed: {e}");
        }
    });
}

/// Clears the flag at the start of a run.
pub(crate) fn reset() {
    FLAG.store(false, Ordering::SeqCst);
}

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub(crate) fn check() -> Result<(), DemoError> {
    if FLAG.load(Ordering::SeqCst) {
        Err(DemoError::Interrupted)
    } else {
        Ok(())
    }
}

/// Completes when Ctrl-C is pressed (polls the flag).
pub(crate) async fn interrupted() {
    while !FLAG.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
