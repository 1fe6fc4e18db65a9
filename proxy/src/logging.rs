//! Structured logs through `tracing-subscriber`: human-readable or JSON lines on stderr, level from
//! `RUST_LOG` (default `info`). The proxy never logs passwords, startup `options` or statement text.

use crate::error::ProxyError;

/// Installs the global subscriber for `format` (`human` or `json`); a no-op if one is already set.
pub fn init(format: Option<&str>) -> Result<(), ProxyError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format.unwrap_or("human") {
        "human" => builder.try_init(),
        "json" => builder.json().try_init(),
        other => return Err(ProxyError::Config(format!("log format {other:?}: use human or json"))),
    };
    // Already initialised (embedding program, tests): keep theirs.
    let _ = result;
    Ok(())
}
