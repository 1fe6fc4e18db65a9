//! Stand-alone `sqlcommenter-logs` binary (the operator CLI in `cli/` exposes the same as
//! `sqlcommenter logs`); used by `bench/bench.sh`.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "sqlcommenter-logs", about = "Correlate PostgreSQL logs with traces")]
struct Cli {
    #[command(flatten)]
    args: sqlcommenter_logs::LogsArgs,
}

fn main() -> ExitCode {
    match sqlcommenter_logs::run(Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sqlcommenter-logs: {e}");
            ExitCode::FAILURE
        }
    }
}
