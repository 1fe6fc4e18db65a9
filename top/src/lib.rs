//! # sqlcommenter-top
//!
//! `sqlcommenter top`: what PostgreSQL is doing right now, by trace, and who blocks whom.
//!
//! Each refresh is one round trip ([`sample::ACTIVITY_SQL`]): `pg_stat_activity` for the client
//! backends, `pg_blocking_pids` for those waiting on a lock. Each backend's trace comes from the
//! sqlcommenter comment in its query (core [`sqlcommenter::parse_context`]) or else from the
//! `application_name` carrier ([`sqlcommenter::carrier::decode_application_name`]). Outputs: an
//! interactive terminal view, one JSON document (`--once --format json`, the contract in the README),
//! OpenTelemetry log records (`--otlp`) and Prometheus gauges (`--prometheus`).

#![warn(missing_docs)]

pub mod conninfo;
mod error;
pub mod json;
pub mod monitor;
pub mod pgpass;
pub mod sample;
pub mod session;
pub mod text;
pub mod tree;
mod ui;
pub mod view;

use std::io::Write;
use std::time::Duration;

pub use error::TopError;
pub use sample::{Sampler, Snapshot, Totals};
pub use session::{Session, State, Trace, TraceSource};

/// Output of `--once`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The blocking tree as text.
    Text,
    /// One JSON object, `{"sessions": [...]}`.
    Json,
}

/// Flags of `sqlcommenter top`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// A libpq-style URL (`postgres://user@host:5432/db`) or key/value string (`host=… user=…`); unset
    /// fields come from PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, ~/.pgpass (or PGPASSFILE) as psql
    /// would use them.
    #[arg(value_name = "CONNINFO")]
    pub conninfo: Option<String>,
    /// Seconds between refreshes.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_interval)]
    pub interval: f64,
    /// Take one sample, print it and exit.
    #[arg(long)]
    pub once: bool,
    /// Output of --once.
    #[arg(long, value_enum, default_value_t = Format::Text, requires = "once")]
    pub format: Format,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected seconds between 0.1 and 3600")),
    }
}

/// Runs `sqlcommenter top`. Warnings (e.g. an ignored ~/.pgpass) go to stderr.
///
/// # Errors
/// Any [`TopError`]; the operator binary prints it as one line and exits with code 2.
pub fn run(args: TopArgs) -> Result<(), TopError> {
    let target = conninfo::resolve(args.conninfo.as_deref(), &conninfo::ProcessEnv)?;
    for w in &target.warnings {
        eprintln!("sqlcommenter top: warning: {w}");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(TopError::Runtime)?;
    if args.once {
        let snapshot = rt.block_on(async {
            let sampler = Sampler::connect(&target).await?;
            sampler.sample().await
        })?;
        let out = match args.format {
            Format::Json => json::render(&snapshot) + "\n",
            Format::Text => text::render(&snapshot, |_| true),
        };
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes()).map_err(TopError::Output)?;
        stdout.flush().map_err(TopError::Output)?;
        let hidden = snapshot.totals().hidden;
        if hidden > 0 {
            eprintln!("{}", hidden_note(hidden, target.config.get_user().unwrap_or_default()));
        }
        return Ok(());
    }
    let mut monitor = monitor::Monitor::connect(&rt, target)?;
    ui::run(&rt, &mut monitor, Duration::from_secs_f64(args.interval), |_| {})
}

/// What the viewer misses without `pg_read_all_stats`.
pub fn hidden_note(hidden: usize, user: &str) -> String {
    format!(
        "sqlcommenter top: {hidden} session(s) of other roles show as <insufficient privilege> (no state, query or \
         trace): grant pg_monitor to {user} to see them"
    )
}
