//! `sqlcommenter logs`: arguments and the run loop.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::input::Input;
use crate::output::{text_line, JsonlWriter};
use crate::parser::InputFormat;
pub use crate::pipeline::RunStats;
use crate::pipeline::{Pipeline, ReadOptions};
use crate::prefix::Prefix;
use crate::report::{Aggregate, SortBy};
use crate::statement::Statement;
use crate::time::Zones;
use crate::LogsError;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Terminal report (or the per-trace view with `--trace`).
    Text,
    /// One JSON object per statement.
    Jsonl,
}

/// `--source`: where the logs come from (`auto` detects it per input from its first lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceArg {
    /// Detect.
    Auto,
    /// stderr with `--prefix`.
    Stderr,
    /// csvlog.
    #[value(alias = "csv")]
    Csvlog,
    /// jsonlog.
    #[value(alias = "json")]
    Jsonlog,
    /// syslog files (rsyslog, syslog-ng, journald).
    Syslog,
    /// CloudNativePG.
    Cnpg,
    /// Google Cloud SQL (Cloud Logging JSON).
    Cloudsql,
    /// Azure Database for PostgreSQL (diagnostic-log JSON, Event Hub batches).
    Azure,
    /// Heroku logplex.
    Logplex,
    /// Amazon RDS / Aurora: stderr with their fixed prefix `%t:%r:%u@%d:[%p]:`.
    Rds,
}

impl SourceArg {
    /// The format and the prefix the source implies.
    pub fn resolve(self) -> (Option<InputFormat>, Option<&'static str>) {
        match self {
            SourceArg::Auto => (None, None),
            SourceArg::Stderr => (Some(InputFormat::Stderr), None),
            SourceArg::Csvlog => (Some(InputFormat::Csv), None),
            SourceArg::Jsonlog => (Some(InputFormat::Json), None),
            SourceArg::Syslog => (Some(InputFormat::Syslog), None),
            SourceArg::Cnpg => (Some(InputFormat::Cnpg), None),
            SourceArg::Cloudsql => (Some(InputFormat::CloudSql), None),
            SourceArg::Azure => (Some(InputFormat::Azure), None),
            SourceArg::Logplex => (Some(InputFormat::Logplex), None),
            SourceArg::Rds => (Some(InputFormat::Stderr), Some(crate::parser::RDS_PREFIX)),
        }
    }
}

/// Correlate PostgreSQL logs with traces: slow statements by query with exemplar traces, per-trace views,
/// propagation gaps, an HTML report and OTLP export.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// Log files (plain or gzip); none or `-` reads standard input.
    pub files: Vec<PathBuf>,
    /// Where the logs come from (their format); `auto` detects it per file from its first lines.
    #[arg(long, visible_alias = "log-format", value_enum, default_value = "auto")]
    pub source: SourceArg,
    /// The server's `log_line_prefix` (stderr, syslog, logplex, Cloud SQL and Azure lines); default: the
    /// source's fixed one, else PostgreSQL's `%m [%p] `.
    #[arg(long)]
    pub prefix: Option<String>,
    /// The server's `log_timezone` (IANA name, e.g. `Europe/Dublin`): resolves ambiguous zone abbreviations
    /// (`IST`, `CST`) and places syslog headers written without a zone.
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    /// Show only the statements of this trace (32 hex digits), in time order.
    #[arg(long, value_name = "TRACE_ID")]
    pub trace: Option<String>,
    /// Add the propagation-gap report (share of statements with trace context by application, user,
    /// database and statement kind).
    #[arg(long)]
    pub gaps: bool,
    /// Also write a self-contained HTML report to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Link template for trace ids in the HTML report, e.g. `http://localhost:16686/trace/{trace_id}`.
    #[arg(long, value_name = "TEMPLATE")]
    pub trace_url_template: Option<String>,
    /// Export each correlated, sampled statement as a span (OTLP/HTTP; configure with OTEL_* variables).
    #[arg(long)]
    pub otlp: bool,
    /// Keep reading the files as they grow (across rotation); prints statements as they come.
    #[arg(long)]
    pub follow: bool,
    /// With `--follow`: start at the beginning of the files instead of their end.
    #[arg(long)]
    pub from_start: bool,
    /// Order of the slowest-statements table.
    #[arg(long, value_enum, default_value = "max")]
    pub sort: SortBy,
    /// Rows per table.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Also group the slowest-statements table by this sqlcommenter tag (e.g. `route`, `application`,
    /// `db_driver`).
    #[arg(long, value_name = "KEY")]
    pub group_tag: Option<String>,
    /// Leave statements faster than this (ms) out of the groups.
    #[arg(long, default_value_t = 0.0)]
    pub min_duration: f64,
    /// Include the drivers'/proxy's own carrier statements in `--format jsonl` and `--trace` output.
    #[arg(long)]
    pub include_carriers: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

struct Sinks {
    args_trace: Option<String>,
    include_carriers: bool,
    format: OutputFormat,
    follow: bool,
    jsonl: Option<JsonlWriter<io::BufWriter<io::Stdout>>>,
    agg: Option<Aggregate>,
    trace_rows: Vec<Statement>,
    #[cfg(feature = "otlp")]
    otlp: Option<crate::otlp::OtlpExporter>,
    error: Option<io::Error>,
}

impl Sinks {
    fn handle(&mut self, st: &Statement) {
        #[cfg(feature = "otlp")]
        if let Some(o) = self.otlp.as_mut() {
            o.export(st);
        }
        if let Some(t) = &self.args_trace {
            if st.context.as_ref().map(|c| c.traceparent.trace_id_hex()).as_deref() != Some(t.as_str()) {
                return;
            }
        }
        if st.carrier && !self.include_carriers {
            if let Some(a) = self.agg.as_mut() {
                a.add(st);
            }
            return;
        }
        if let Some(j) = self.jsonl.as_mut() {
            if let Err(e) = j.write(st) {
                self.error.get_or_insert(e);
            }
        } else if self.follow && self.format == OutputFormat::Text {
            if let Err(e) = writeln!(io::stdout(), "{}", text_line(st)) {
                self.error.get_or_insert(e);
            }
        } else if self.args_trace.is_some() {
            self.trace_rows.push(st.clone());
        }
        if let Some(a) = self.agg.as_mut() {
            a.add(st);
        }
    }
}

/// Runs `sqlcommenter logs` with its arguments.
pub fn run(args: LogsArgs) -> Result<(), LogsError> {
    match run_until(args, &AtomicBool::new(false)) {
        Ok(_) => Ok(()),
        // `... | head`: the reader went away, nothing more to say.
        Err(LogsError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e),
    }
}

/// Like [`run`], returning the totals; a `--follow` run ends when `stop` becomes true.
pub fn run_until(args: LogsArgs, stop: &AtomicBool) -> Result<RunStats, LogsError> {
    let (source, source_prefix) = args.source.resolve();
    let prefix = match args.prefix.as_deref().or(source_prefix) {
        Some(p) => Some(Prefix::new(p)?),
        None => None,
    };
    let zones = match &args.timezone {
        Some(z) => Zones::with_zone(z).map_err(|e| LogsError::TimeZone(z.clone(), e.to_string()))?,
        None => Zones::new(),
    };
    let trace = match &args.trace {
        Some(t) => {
            let t = t.trim().to_ascii_lowercase();
            if t.len() != 32 || !t.bytes().all(|c| c.is_ascii_hexdigit()) || t.bytes().all(|c| c == b'0') {
                return Err(LogsError::InvalidTraceId(t));
            }
            Some(t)
        }
        None => None,
    };
    let mut pipe = Pipeline::new(ReadOptions { source, prefix, zones });
    let counter = pipe.byte_counter();
    let mut total_bytes = 0u64;
    let files: Vec<PathBuf> = if args.files.is_empty() { vec![PathBuf::from("-")] } else { args.files.clone() };
    for f in &files {
        let io_err = |e| LogsError::Io { path: f.display().to_string(), source: e };
        if f.as_os_str() == "-" {
            if args.follow {
                return Err(LogsError::FollowStdin);
            }
            pipe.add(Input::stdin(counter.clone()));
        } else if args.follow {
            pipe.add(Input::follow(f, args.from_start, counter.clone()).map_err(io_err)?);
        } else {
            total_bytes += std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            pipe.add(Input::open(f, counter.clone()).map_err(io_err)?);
        }
    }
    let want_agg =
        !args.follow && (args.format == OutputFormat::Text && trace.is_none() || args.gaps || args.html.is_some());
    #[cfg(not(feature = "otlp"))]
    if args.otlp {
        return Err(LogsError::OtlpDisabled);
    }
    let mut sinks = Sinks {
        args_trace: trace.clone(),
        include_carriers: args.include_carriers,
        format: args.format,
        follow: args.follow,
        jsonl: (args.format == OutputFormat::Jsonl).then(|| JsonlWriter::new(io::BufWriter::new(io::stdout()))),
        agg: want_agg.then(|| Aggregate::new(args.min_duration).with_group_tag(args.group_tag.clone())),
        trace_rows: Vec::new(),
        #[cfg(feature = "otlp")]
        otlp: if args.otlp { Some(crate::otlp::OtlpExporter::from_env().map_err(LogsError::Otlp)?) } else { None },
        error: None,
    };
    let progress = (!args.no_progress && !args.follow && total_bytes > 0 && io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(total_bytes);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    let mut idle_since: Option<Instant> = None;
    let mut flushed_idle = false;
    loop {
        let step = pipe.step(args.follow, &mut |s| sinks.handle(s))?;
        if let Some(e) = sinks.error.take() {
            return Err(LogsError::Output(e));
        }
        if let Some(pb) = &progress {
            pb.set_position(counter.load(Ordering::Relaxed));
        }
        if !args.follow {
            if step.exhausted {
                break;
            }
            continue;
        }
        if step.progressed {
            idle_since = None;
            flushed_idle = false;
        } else if step.exhausted {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if !flushed_idle && since.elapsed() >= Duration::from_millis(500) {
                pipe.idle(&mut |s| sinks.handle(s));
                if let Some(j) = sinks.jsonl.as_mut() {
                    j.flush().map_err(LogsError::Output)?;
                }
                let _ = io::stdout().flush();
                flushed_idle = true;
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    pipe.finish(&mut |s| sinks.handle(s));
    let mut stats = pipe.stats();
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    for w in pipe.warnings() {
        eprintln!("{w}");
    }
    if let Some(j) = sinks.jsonl.as_mut() {
        j.flush().map_err(LogsError::Output)?;
    }
    #[cfg(feature = "otlp")]
    if let Some(o) = sinks.otlp.take() {
        stats.exported = o.exported();
        o.shutdown().map_err(LogsError::Otlp)?;
    }
    let mut out = io::stdout().lock();
    let w = |out: &mut io::StdoutLock<'_>, s: &str| out.write_all(s.as_bytes()).map_err(LogsError::Output);
    if let Some(t) = &trace {
        if args.format == OutputFormat::Text {
            sinks.trace_rows.sort_by_key(|s| s.time_us);
            w(&mut out, &crate::trace_view(t, &sinks.trace_rows))?;
        }
    }
    if let Some(agg) = &sinks.agg {
        if args.format == OutputFormat::Text && trace.is_none() {
            w(&mut out, &crate::text::summary(agg, &stats.parse, &stats.assemble))?;
            w(&mut out, &crate::text::top_table(agg, args.sort, args.limit))?;
        }
        if args.gaps {
            let g = crate::text::gaps_table(agg, args.limit);
            if args.format == OutputFormat::Text {
                w(&mut out, &g)?;
            } else {
                eprint!("{g}");
            }
        }
        if let Some(path) = &args.html {
            let html = crate::html::render(
                agg,
                &stats.parse,
                &stats.assemble,
                args.trace_url_template.as_deref(),
                args.sort,
                args.limit,
            );
            std::fs::write(path, html).map_err(|e| LogsError::Io { path: path.display().to_string(), source: e })?;
        }
    }
    out.flush().map_err(LogsError::Output)?;
    Ok(stats)
}
