//! `sqlcommenter`: the operator binary. It only wires subcommands to the library crates.

mod comment;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// SQLCommenter for PostgreSQL: W3C trace context and tags in SQL comments.
#[derive(Debug, Parser)]
#[command(name = "sqlcommenter", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at startup: the size difference between the variants' arguments costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Add a sqlcommenter comment to the SQL read from stdin and write it to stdout.
    Comment(comment::CommentArgs),
    /// Print the tags of the sqlcommenter comment in the SQL read from stdin, as one JSON object.
    Parse(comment::ParseArgs),
    /// Run the PostgreSQL wire proxy that adds trace context for unmodified clients.
    Proxy(sqlcommenter_proxy::ProxyArgs),
    /// Correlate PostgreSQL logs with traces: slow statements, per-trace views, propagation gaps.
    Logs(sqlcommenter_logs::LogsArgs),
    /// What PostgreSQL is doing right now, by trace, and who blocks whom (interactive, --once, --otlp).
    Top(sqlcommenter_top::TopArgs),
    /// Run the whole loop on a throwaway PostgreSQL: traced apps, the proxy, log correlation, and trace
    /// completeness per path (exits 1 when a path falls short of 100 %).
    Demo(sqlcommenter_demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Comment(args) => comment::comment(args),
        Command::Parse(args) => comment::parse(args),
        // `run_blocking` puts the config file under flags and variables (the log format included).
        Command::Proxy(args) => sqlcommenter_proxy::run_blocking(args).map(|()| ExitCode::SUCCESS).map_err(Into::into),
        Command::Logs(args) => sqlcommenter_logs::run(args).map(|()| ExitCode::SUCCESS).map_err(Into::into),
        Command::Top(args) => sqlcommenter_top::run(args).map(|()| ExitCode::SUCCESS).map_err(Into::into),
        Command::Demo(args) => match sqlcommenter_demo::run(args) {
            Ok(outcome) if outcome.passed() => Ok(ExitCode::SUCCESS),
            Ok(_) => Ok(ExitCode::from(1)),
            Err(sqlcommenter_demo::DemoError::Interrupted) => Ok(ExitCode::from(130)),
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sqlcommenter: {err:#}");
            ExitCode::from(2)
        }
    }
}
