//! # sqlcommenter-demo
//!
//! `sqlcommenter demo`: the whole product in one command, and a measurement of its promise.
//!
//! 1. Starts a throwaway PostgreSQL cluster configured for trace correlation (jsonlog,
//!    `log_min_duration_statement = 0`, `%a` in `log_line_prefix`, `compute_query_id`, pg_stat_statements,
//!    auto_explain) with [`sqlcommenter_testpg`], and the proxy in front of it ([`sqlcommenter_proxy::start`]).
//! 2. Sets up OpenTelemetry tracing (tracing + tracing-opentelemetry) with an in-memory span exporter, plus
//!    OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! 3. Runs a small traced workload through the three ways in: the sqlx wrapper, the tokio-postgres wrapper,
//!    and an *unmodified* tokio-postgres application connected to the proxy (simple queries, unnamed
//!    extended `query_typed`, named prepared statements, COPY; inside and outside transactions). Every
//!    statement it runs is recorded with the span it ran under.
//! 4. Correlates the server log with [`sqlcommenter_logs`]: prints one trace as a tree with the database
//!    statements and their server-side durations, the slow-query summary and the propagation-gap summary,
//!    writes the HTML report, and (with `OTEL_EXPORTER_OTLP_ENDPOINT`) exports the statements as spans.
//! 5. Prints **trace completeness** per path: the share of the workload's statements found in the server
//!    log under the trace id they ran under, and whose span was exported. [`DemoOutcome::passed`] is false
//!    when any path is below 100 %.
//!
//! Ctrl-C stops the run at the next step and still stops the server and removes its files.

#![warn(missing_docs)]

mod blocking;
mod cluster;
mod completeness;
mod error;
mod interrupt;
mod probe;
mod telemetry;
mod tree;
mod workload;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub use cluster::{server_settings, LOG_LINE_PREFIX, PRELOAD_LIBRARIES};
pub use completeness::{PathStats, StatementPath};
pub use error::DemoError;

/// Default HTML report path.
pub const DEFAULT_REPORT: &str = "sqlcommenter-demo-report.html";

/// Flags of `sqlcommenter demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where to write the HTML report.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_REPORT)]
    pub report: PathBuf,
    /// Traced requests per application (each runs several statements).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub requests: u32,
    /// Duration of the one deliberately slow statement (pg_sleep), in milliseconds; auto_explain logs plans
    /// of statements slower than half of it.
    #[arg(long, value_name = "MS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(20..=60_000))]
    pub slow_ms: u64,
    /// Link template for trace ids in the HTML report (`{trace_id}` is replaced).
    #[arg(long, value_name = "TEMPLATE", default_value = "http://localhost:16686/trace/{trace_id}")]
    pub trace_url_template: String,
    /// The proxy's carrier for named prepared statements: application_name, guc, pg_tracing or off. Only
    /// application_name reaches the server log; the others show what completeness looks like without it.
    #[arg(long, value_name = "CARRIER", default_value = "application_name")]
    pub proxy_carrier: String,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            report: PathBuf::from(DEFAULT_REPORT),
            requests: 3,
            slow_ms: 300,
            trace_url_template: "http://localhost:16686/trace/{trace_id}".to_owned(),
            proxy_carrier: "application_name".to_owned(),
        }
    }
}

/// What a demo run found.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// Completeness per path and transaction state, in display order.
    pub paths: Vec<PathStats>,
    /// The trace printed as a tree (it contains the slow statement).
    pub trace_id: Option<String>,
    /// The HTML report written.
    pub report: PathBuf,
    /// Statements (non-carrier) the log correlation found in the server log.
    pub logged_statements: usize,
    /// Spans the in-memory exporter received.
    pub exported_spans: usize,
    /// Statements exported over OTLP by the log correlation (when `OTEL_EXPORTER_OTLP_ENDPOINT` is set).
    pub otlp_statements: Option<u64>,
}

impl DemoOutcome {
    /// True when every path reached 100 % in the log and in the exported spans.
    pub fn passed(&self) -> bool {
        !self.paths.is_empty() && self.paths.iter().all(PathStats::complete)
    }
}

/// Runs the demo, printing to standard output. The operator binary exits non-zero when
/// `!outcome.passed()` or on `Err`.
///
/// # Errors
/// Missing PostgreSQL binaries (the message says how to install them), a cluster, proxy or workload
/// failure, an unreadable log, an unwritable report, OTLP setup, or Ctrl-C ([`DemoError::Interrupted`]).
pub fn run(args: DemoArgs) -> Result<DemoOutcome, DemoError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(args, &mut out)
}

/// Like [`run`], writing the human-readable output to `out`.
///
/// # Errors
/// As [`run`].
pub fn run_to(args: DemoArgs, out: &mut dyn Write) -> Result<DemoOutcome, DemoError> {
    interrupt::install();
    interrupt::reset();
    let w = |out: &mut dyn Write, s: &str| out.write_all(s.as_bytes()).map_err(DemoError::Output);

    w(out, "sqlcommenter demo: starting a throwaway PostgreSQL cluster configured for trace correlation ...\n")?;
    let slow = Duration::from_millis(args.slow_ms);
    let pg = cluster::start(slow)?;
    interrupt::check()?;
    w(
        out,
        &format!(
            "  PostgreSQL on {}:{} (jsonlog at {})\n",
            pg.host(),
            pg.port(),
            pg.log_file_for(sqlcommenter_testpg::LogKind::Json).display()
        ),
    )?;
    cluster::prepare_schema(&pg)?;

    // Tracing is set up outside the runtime: the OTLP exporter's blocking HTTP client must not be created
    // (or dropped) inside async code.
    let telemetry = telemetry::Telemetry::init()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(DemoError::Runtime)?;
    let recorder = probe::Recorder::default();
    let workload_result = {
        let _guard = telemetry.set_default();
        rt.block_on(workload::run(&pg, &recorder, &args, out))
    };
    drop(rt);
    let workload_result = workload_result.and_then(|()| interrupt::check());
    let spans = telemetry.finish()?;
    workload_result?;

    w(out, "\nCorrelating the server log with sqlcommenter_logs ...\n")?;
    cluster::flush_log(&pg)?;
    let log_path = pg.log_file_for(sqlcommenter_testpg::LogKind::Json);
    let prefix =
        sqlcommenter_logs::Prefix::new(cluster::LOG_LINE_PREFIX).map_err(sqlcommenter_logs::LogsError::from)?;
    let (statements, stats) =
        sqlcommenter_logs::parse_file(&log_path, Some(sqlcommenter_logs::InputFormat::Json), &prefix)?;
    interrupt::check()?;

    let expected = recorder.take();
    let paths = completeness::measure(&expected, &statements, &spans);
    let trace_id = recorder.showcase_trace();

    // One trace as a tree.
    if let Some(t) = &trace_id {
        w(out, "\n")?;
        w(out, &tree::render(t, &spans, &statements, &args.trace_url_template))?;
    }

    // Slow-query and propagation-gap summaries, and the HTML report.
    let mut agg = sqlcommenter_logs::Aggregate::new(0.0);
    for st in &statements {
        agg.add(st);
    }
    w(out, "\nSlowest statements (sqlcommenter_logs report):\n")?;
    w(out, &sqlcommenter_logs::text::summary(&agg, &stats.parse, &stats.assemble))?;
    w(out, &sqlcommenter_logs::text::top_table(&agg, sqlcommenter_logs::SortBy::Max, 8))?;
    w(
        out,
        "\nStatements without context below: the demo's setup (psql, outside any trace), statements prepared \
         before the first request,\nand COMMITs after a transaction-scoped carrier ended.\n",
    )?;
    w(out, &sqlcommenter_logs::text::gaps_table(&agg, 8))?;
    let html = sqlcommenter_logs::html::render(
        &agg,
        &stats.parse,
        &stats.assemble,
        Some(&args.trace_url_template),
        sqlcommenter_logs::SortBy::Max,
        20,
    );
    std::fs::write(&args.report, html)
        .map_err(|source| DemoError::Io { context: format!("writing {}", args.report.display()), source })?;
    w(out, &format!("\nHTML report: {}\n", args.report.display()))?;

    let otlp_statements = if telemetry::otlp_configured() {
        let n = export_statements(&statements)?;
        w(out, &format!("OTLP: exported {n} database statements as spans and the application's spans\n"))?;
        Some(n)
    } else {
        w(out, "OTLP: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4318) to export everything\n")?;
        None
    };

    w(out, "\n")?;
    w(out, &completeness::render(&paths))?;
    w(out, &completeness::render_commits(&completeness::commits(&statements)))?;
    blocking::show(&pg, out)?;
    let logged_statements = statements.iter().filter(|s| !s.carrier).count();
    let outcome = DemoOutcome {
        paths,
        trace_id,
        report: args.report.clone(),
        logged_statements,
        exported_spans: spans.len(),
        otlp_statements,
    };
    w(
        out,
        if outcome.passed() {
            "\nResult: every path reached 100 % trace completeness.\n"
        } else {
            "\nResult: FAILED: at least one path is below 100 % trace completeness.\n"
        },
    )?;
    // `pg` drops here: the server is stopped and its files are removed.
    drop(pg);
    Ok(outcome)
}

fn export_statements(statements: &[sqlcommenter_logs::Statement]) -> Result<u64, DemoError> {
    let mut exporter = sqlcommenter_logs::otlp::OtlpExporter::from_env().map_err(sqlcommenter_logs::LogsError::from)?;
    for st in statements {
        exporter.export(st);
    }
    let n = exporter.exported();
    exporter.shutdown().map_err(sqlcommenter_logs::LogsError::from)?;
    Ok(n)
}
