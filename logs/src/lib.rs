//! # sqlcommenter-logs
//!
//! `sqlcommenter logs`: reads PostgreSQL server logs (stderr with any `log_line_prefix`, csvlog, jsonlog;
//! plain, gzip, stdin, or followed across rotation), finds every statement PostgreSQL wrote about
//! (`duration: ... statement:`, extended-protocol `parse`/`bind`/`execute`, `log_statement` lines paired with
//! their later `duration:`, auto_explain plans, errors with their `STATEMENT`) and correlates each with its
//! trace: from its sqlcommenter comment, else from an `application_name` carrier
//! ([`sqlcommenter::carrier`]). Outputs: a terminal report of the slowest statement groups with exemplar
//! traces, a per-trace view, JSON lines, a propagation-gap report, a self-contained HTML report, and OTLP
//! spans that put the database's own time into the application's traces.
//!
//! Library use (what the CLI does, one layer down):
//! ```
//! use sqlcommenter_logs::{parse_str, InputFormat, Prefix};
//! let log = "2024-05-01 10:00:00.123 UTC [42] LOG:  duration: 12.5 ms  statement: select 1 \
//!            /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/\n";
//! let (stmts, _) = parse_str(log, Some(InputFormat::Stderr), &Prefix::new("%m [%p] ")?);
//! assert_eq!(stmts[0].trace_id().as_deref(), Some("0af7651916cd43dd8448eb211c80319c"));
//! assert_eq!(stmts[0].duration_ms, Some(12.5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod cli;
pub mod correlate;
pub mod html;
pub mod input;
pub mod message;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod output;
pub mod parser;
pub mod pipeline;
pub mod plan;
pub mod prefix;
pub mod record;
pub mod report;
pub mod statement;
pub mod text;
pub mod time;

use std::fmt::Write;

pub use cli::{run, run_until, LogsArgs, OutputFormat, SourceArg};
pub use correlate::{correlate, is_carrier_statement, Correlation, Source};
pub use message::{Kind, PlanFormat};
pub use parser::{detect, detect_format, Detection, InputFormat, ParseStats, RecordParser};
pub use pipeline::{Pipeline, ReadOptions, RunStats};
pub use prefix::{Prefix, PrefixError};
pub use record::{LogRecord, Severity};
pub use report::{Aggregate, SortBy};
pub use statement::{AssembleStats, Assembler, SqlError, Statement};
pub use time::Zones;

/// Errors of `sqlcommenter logs`.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// An input or output file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing to standard output failed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
    /// A bad `--prefix`.
    #[error("--prefix: {0}")]
    Prefix(#[from] PrefixError),
    /// A bad `--trace` value.
    #[error("--trace: {0:?} is not a trace id (32 lowercase hex digits, not all zero)")]
    InvalidTraceId(String),
    /// A bad `--timezone`.
    #[error("--timezone {0:?}: {1}")]
    TimeZone(String, String),
    /// `--follow` needs files.
    #[error("--follow needs file paths, not standard input")]
    FollowStdin,
    /// OTLP exporter setup or export.
    #[cfg(feature = "otlp")]
    #[error(transparent)]
    Otlp(#[from] otlp::OtlpError),
    /// `--otlp` without the `otlp` feature.
    #[cfg(not(feature = "otlp"))]
    #[error("--otlp: built without the `otlp` feature")]
    OtlpDisabled,
}

/// Parses a whole log text into statements (carriers included, flagged), with the parser and assembler
/// counters. `format: None` detects it from the first lines; `prefix` is the server's `log_line_prefix`.
pub fn parse_str(text: &str, format: Option<InputFormat>, prefix: &Prefix) -> (Vec<Statement>, RunStats) {
    let opts = ReadOptions { source: format, prefix: Some(prefix.clone()), zones: time::Zones::new() };
    parse_str_with(text, opts)
}

/// [`parse_str`] with all options.
pub fn parse_str_with(text: &str, opts: ReadOptions) -> (Vec<Statement>, RunStats) {
    let reader = Box::new(std::io::Cursor::new(text.as_bytes().to_vec()));
    collect(opts, input::Input::from_reader("-", reader)).unwrap_or_default()
}

/// Reads and parses a log file (plain or gzip) read with `prefix`.
pub fn parse_file(
    path: &std::path::Path,
    format: Option<InputFormat>,
    prefix: &Prefix,
) -> Result<(Vec<Statement>, RunStats), LogsError> {
    parse_file_with(path, ReadOptions { source: format, prefix: Some(prefix.clone()), zones: time::Zones::new() })
}

/// Reads and parses a log file (plain or gzip) with all options.
pub fn parse_file_with(path: &std::path::Path, opts: ReadOptions) -> Result<(Vec<Statement>, RunStats), LogsError> {
    let input = input::Input::open(path, Default::default())
        .map_err(|e| LogsError::Io { path: path.display().to_string(), source: e })?;
    collect(opts, input)
}

fn collect(opts: ReadOptions, input: input::Input) -> Result<(Vec<Statement>, RunStats), LogsError> {
    let mut pipe = Pipeline::new(opts);
    pipe.add(input);
    let mut out = Vec::new();
    pipe.run(&mut |s| out.push(s.clone()))?;
    Ok((out, pipe.stats()))
}

/// The per-trace view: every statement of a trace in time order, with offsets and durations.
pub fn trace_view(trace_id: &str, rows: &[Statement]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "trace {trace_id}: {} statements", rows.len());
    let start_of = |r: &Statement| r.time_us.map(|t| t - (r.duration_ms.unwrap_or(0.0) * 1000.0) as i64);
    let t0 = rows.iter().filter_map(start_of).min();
    let total: f64 = rows.iter().filter_map(|r| r.duration_ms).sum();
    for r in rows {
        let start = match (start_of(r), t0) {
            (Some(t), Some(t0)) => format!("+{:.3} ms", (t - t0) as f64 / 1000.0),
            _ => "-".into(),
        };
        let _ = writeln!(s, "  {start:>14}  {}", output::text_line(r));
        if let Some(ctx) = &r.context {
            let _ = writeln!(
                s,
                "                  parent span {}{}",
                ctx.traceparent.parent_id_hex(),
                if r.tags.is_empty() {
                    String::new()
                } else {
                    format!("  tags: {}", r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "))
                }
            );
        }
    }
    let _ = writeln!(s, "database time in this trace: {total:.3} ms");
    s
}
