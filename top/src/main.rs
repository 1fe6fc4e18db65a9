//! `sqlcommenter-top`: the same as `sqlcommenter top`, as a binary of its own.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "sqlcommenter-top", version, about = "What PostgreSQL is doing right now, by trace")]
struct Cli {
    #[command(flatten)]
    args: sqlcommenter_top::TopArgs,
}

fn main() -> ExitCode {
    match sqlcommenter_top::run(Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sqlcommenter top: {err}");
            ExitCode::from(2)
        }
    }
}
