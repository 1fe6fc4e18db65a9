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
pub mod exporters;
mod headless;
pub mod json;
pub mod monitor;
pub mod otlp;
pub mod pgpass;
pub mod prometheus;
pub mod sample;
pub mod session;
pub mod text;
pub mod tls;
pub mod tree;
mod ui;
pub mod view;

use std::io::{IsTerminal, Write};
use std::time::Duration;

pub use conninfo::Target;
pub use error::TopError;
pub use exporters::Exporters;
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
    /// fields come from PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, ~/.pgpass (or PGPASSFILE),
    /// PGSSLMODE, PGSSLROOTCERT as psql would use them.
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
    /// Sample without a view until SIGINT/SIGTERM (for --otlp / --prometheus as a service).
    #[arg(long, conflicts_with = "once")]
    pub headless: bool,
    /// Export each sample as OpenTelemetry log records (`db.server.query_sample`) over OTLP/HTTP,
    /// configured by the standard OTEL_* variables; plus a `sqlcommenter.lock_wait` event naming both
    /// traces for lock waits longer than --lock-threshold.
    #[arg(long)]
    pub otlp: bool,
    /// Seconds a backend must be seen waiting for a lock before --otlp reports the wait.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = parse_threshold)]
    pub lock_threshold: f64,
    /// Serve Prometheus metrics (sessions by state and wait event, samples with and without trace
    /// context) on http://ADDR/metrics.
    #[arg(long, value_name = "ADDR", conflicts_with = "once")]
    pub prometheus: Option<std::net::SocketAddr>,
}

fn parse_threshold(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected seconds between 0 and 86400")),
    }
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected seconds between 0.1 and 3600")),
    }
}

/// What a run does, from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The terminal view (needs a terminal on stdout).
    Interactive,
    /// One sample printed in this format.
    Once(Format),
    /// Sampling for the exporters only, until a signal.
    Headless,
}

impl TopArgs {
    /// The mode the flags ask for.
    ///
    /// # Errors
    /// [`TopError::Usage`] for `--headless` without an exporter, or the view without a terminal.
    pub fn mode(&self) -> Result<Mode, TopError> {
        if self.once {
            return Ok(Mode::Once(self.format));
        }
        if self.headless {
            if !self.otlp && self.prometheus.is_none() {
                return Err(TopError::Usage("--headless only makes sense with --otlp or --prometheus".into()));
            }
            return Ok(Mode::Headless);
        }
        if !std::io::stdout().is_terminal() {
            return Err(TopError::Usage(
                "standard output is not a terminal: use --once (one sample), or --headless with --otlp/--prometheus"
                    .into(),
            ));
        }
        Ok(Mode::Interactive)
    }
}

/// Runs `sqlcommenter top`. Warnings (e.g. an ignored ~/.pgpass) go to stderr.
///
/// # Errors
/// Any [`TopError`]; the operator binary prints it as one line and exits with code 2.
pub fn run(args: TopArgs) -> Result<(), TopError> {
    let mode = args.mode()?;
    let target = conninfo::resolve(args.conninfo.as_deref(), &conninfo::ProcessEnv)?;
    for w in &target.warnings {
        eprintln!("sqlcommenter top: warning: {w}");
    }
    // Exporters are set up outside the runtime: the OTLP exporter's blocking HTTP client must not be
    // created (or dropped) inside async code.
    let mut exporters =
        Exporters::start(&target, args.otlp, Duration::from_secs_f64(args.lock_threshold), args.prometheus)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(TopError::Runtime)?;
    let interval = Duration::from_secs_f64(args.interval);
    let result = match mode {
        Mode::Once(format) => {
            let r = once(&rt, &target, format, &mut exporters);
            drop(rt);
            r
        }
        Mode::Headless | Mode::Interactive => {
            let display = target.display.clone();
            let user = target.config.get_user().unwrap_or_default().to_owned();
            monitor::Monitor::connect(&rt, target).and_then(|m| {
                let ticks = monitor::spawn(rt, m, interval)?;
                let on_sample = |s: Option<&Snapshot>| exporters.record(s);
                if mode == Mode::Headless {
                    headless::run(&ticks, &display, interval, on_sample)
                } else {
                    ui::run(&ticks, &display, &user, interval, on_sample)
                }
            })
        }
    };
    let finished = exporters.finish();
    result?;
    finished
}

fn once(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    format: Format,
    exporters: &mut Exporters,
) -> Result<(), TopError> {
    let snapshot = rt.block_on(async {
        let sampler = Sampler::connect(target).await?;
        sampler.sample().await
    })?;
    exporters.record(Some(&snapshot));
    let out = match format {
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
    Ok(())
}

/// What the viewer misses without `pg_read_all_stats`.
pub fn hidden_note(hidden: usize, user: &str) -> String {
    format!(
        "sqlcommenter top: {hidden} session(s) of other roles show as <insufficient privilege> (no state, query or \
         trace): grant pg_monitor to {user} to see them"
    )
}
