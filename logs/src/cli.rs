//! `sqlcommenter logs`: arguments and the run loop.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::input::{Input, Read1};
use crate::output::{text_line, JsonlWriter};
use crate::parser::{self, InputFormat, ParseStats, RecordParser};
use crate::prefix::{Prefix, DEFAULT_PREFIX};
use crate::report::{Aggregate, SortBy};
use crate::statement::{AssembleStats, Assembler, Statement};
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

/// Input format (`auto` detects it per input from the first line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Detect.
    Auto,
    /// stderr with `--prefix`.
    Stderr,
    /// csvlog.
    Csv,
    /// jsonlog.
    Json,
}

/// Correlate PostgreSQL logs with traces: slow statements by query with exemplar traces, per-trace views,
/// propagation gaps, an HTML report and OTLP export.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// Log files (plain or gzip); none or `-` reads standard input.
    pub files: Vec<PathBuf>,
    /// Input format.
    #[arg(long, value_enum, default_value = "auto")]
    pub log_format: LogFormatArg,
    /// The server's `log_line_prefix` (stderr logs).
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
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

/// Totals of a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunStats {
    /// Parser counters, summed over inputs.
    pub parse: ParseStats,
    /// Assembler counters.
    pub assemble: AssembleStats,
    /// Spans exported.
    pub exported: u64,
}

fn add(a: &mut ParseStats, b: ParseStats) {
    a.lines += b.lines;
    a.records += b.records;
    a.unknown += b.unknown;
}

/// The warning when most lines were not understood, with advice that fits the formats read.
pub fn unreadable_warning(formats: &[InputFormat], parse: &ParseStats, prefix: &Prefix) -> Option<String> {
    if parse.lines == 0 || parse.unknown * 2 <= parse.lines {
        return None;
    }
    let head = format!("warning: {} of {} lines were not understood", parse.unknown, parse.lines);
    let advice = if formats.iter().all(|f| *f == InputFormat::Stderr) {
        format!("pass the server's log_line_prefix with --prefix (now {:?})", prefix.source())
    } else if formats.contains(&InputFormat::Json) {
        "they are not PostgreSQL jsonlog entries (one JSON object per line with timestamp and error_severity); \
         check the file, or name its source with --source"
            .to_owned()
    } else {
        "check the file, or name its source with --source".to_owned()
    };
    Some(format!("{head}: {advice}"))
}

/// Builds the parser for a format.
pub fn make_parser(format: InputFormat, prefix: &Prefix, zones: &Zones) -> Box<dyn RecordParser> {
    match format {
        InputFormat::Stderr => Box::new(parser::stderr::StderrParser::new(prefix.clone(), zones.clone())),
        InputFormat::Csv => Box::new(parser::csv::CsvParser::new(zones.clone())),
        InputFormat::Json => Box::new(parser::json::JsonParser::new(zones.clone())),
    }
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
    let prefix = Prefix::new(&args.prefix)?;
    let zones = Zones::new();
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
    let counter = Arc::new(AtomicU64::new(0));
    let mut inputs = Vec::new();
    let mut total_bytes = 0u64;
    let files: Vec<PathBuf> = if args.files.is_empty() { vec![PathBuf::from("-")] } else { args.files.clone() };
    for f in &files {
        if f.as_os_str() == "-" {
            if args.follow {
                return Err(LogsError::FollowStdin);
            }
            inputs.push(Input::stdin(counter.clone()));
        } else if args.follow {
            inputs.push(
                Input::follow(f, args.from_start, counter.clone())
                    .map_err(|e| LogsError::Io { path: f.display().to_string(), source: e })?,
            );
        } else {
            total_bytes += std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            inputs.push(
                Input::open(f, counter.clone())
                    .map_err(|e| LogsError::Io { path: f.display().to_string(), source: e })?,
            );
        }
    }
    let want_agg =
        !args.follow && (args.format == OutputFormat::Text && trace.is_none() || args.gaps || args.html.is_some());
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
    #[cfg(not(feature = "otlp"))]
    if args.otlp {
        return Err(LogsError::OtlpDisabled);
    }
    let progress = (!args.no_progress && !args.follow && total_bytes > 0 && io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(total_bytes);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    let mut assembler = Assembler::new();
    let mut stats = RunStats::default();
    let mut carries: Vec<Vec<u8>> = (0..inputs.len()).map(|_| Vec::new()).collect();
    let mut parsers: Vec<Option<Box<dyn RecordParser>>> = (0..inputs.len()).map(|_| None).collect();
    let mut formats: Vec<Option<InputFormat>> = vec![None; inputs.len()];
    let forced = match args.log_format {
        LogFormatArg::Auto => None,
        LogFormatArg::Stderr => Some(InputFormat::Stderr),
        LogFormatArg::Csv => Some(InputFormat::Csv),
        LogFormatArg::Json => Some(InputFormat::Json),
    };
    let mut idle_since: Option<Instant> = None;
    let mut flushed_idle = false;
    'outer: loop {
        let mut any_line = false;
        let mut all_eof = true;
        for (i, input) in inputs.iter_mut().enumerate() {
            if parsers[i].is_none() {
                let fmt = match forced {
                    Some(f) => f,
                    None => {
                        let first = input
                            .peek_first_line()
                            .map_err(|e| LogsError::Io { path: input.name().into(), source: e })?;
                        if args.follow && first.is_empty() {
                            all_eof = false;
                            continue; // wait for content to detect the format
                        }
                        parser::detect_format(&first)
                    }
                };
                parsers[i] = Some(make_parser(fmt, &prefix, &zones));
                formats[i] = Some(fmt);
            }
            let Some(p) = parsers[i].as_mut() else { continue };
            // Read a batch of lines from this input.
            loop {
                let (n, state) = input
                    .read_lines(&mut carries[i], 65536, &mut |line| {
                        p.push_line(line, &mut |r| assembler.push(r, &mut |s| sinks.handle(s)))
                    })
                    .map_err(|e| LogsError::Io { path: input.name().into(), source: e })?;
                if n > 0 {
                    any_line = true;
                }
                if let Some(pb) = &progress {
                    pb.set_position(counter.load(Ordering::Relaxed));
                }
                match state {
                    Read1::Line => {
                        if args.follow {
                            all_eof = false;
                            break;
                        }
                    }
                    Read1::Pending => {
                        all_eof = false;
                        break;
                    }
                    Read1::Eof => {
                        if !args.follow {
                            p.finish(&mut |r| assembler.push(r, &mut |s| sinks.handle(s)));
                        }
                        break;
                    }
                }
            }
            if let Some(e) = sinks.error.take() {
                return Err(LogsError::Output(e));
            }
        }
        if !args.follow {
            if all_eof {
                break;
            }
            continue;
        }
        if any_line {
            idle_since = None;
            flushed_idle = false;
        } else {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if !flushed_idle && since.elapsed() >= Duration::from_millis(500) {
                for p in parsers.iter_mut().flatten() {
                    p.idle(&mut |r| assembler.push(r, &mut |s| sinks.handle(s)));
                }
                assembler.flush_plans(&mut |s| sinks.handle(s));
                if let Some(j) = sinks.jsonl.as_mut() {
                    j.flush().map_err(LogsError::Output)?;
                }
                let _ = io::stdout().flush();
                flushed_idle = true;
            }
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    for p in parsers.iter_mut().flatten() {
        if args.follow {
            p.finish(&mut |r| assembler.push(r, &mut |s| sinks.handle(s)));
        }
        add(&mut stats.parse, p.stats());
    }
    assembler.finish(&mut |s| sinks.handle(s));
    stats.assemble = assembler.stats();
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let formats: Vec<InputFormat> = formats.into_iter().flatten().collect();
    if let Some(w) = unreadable_warning(&formats, &stats.parse, &prefix) {
        eprintln!("{w}");
    }
    for (e, n) in zones.refused() {
        eprintln!("warning: {n} timestamps left empty: {e}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_advice_fits_the_format() {
        let stats = ParseStats { lines: 10, records: 1, unknown: 9 };
        let prefix = Prefix::new(DEFAULT_PREFIX).unwrap();
        let json = unreadable_warning(&[InputFormat::Json], &stats, &prefix).unwrap();
        assert!(!json.contains("--prefix") && json.contains("jsonlog"), "{json}");
        let stderr = unreadable_warning(&[InputFormat::Stderr], &stats, &prefix).unwrap();
        assert!(stderr.contains("--prefix"), "{stderr}");
        assert!(unreadable_warning(&[InputFormat::Json], &ParseStats { lines: 10, records: 9, unknown: 1 }, &prefix)
            .is_none());
    }
}
