//! Runs the proxy standalone (what `sqlcommenter proxy` does), for the bench and client scripts:
//! `cargo run --release -p sqlcommenter-proxy --example proxy -- --listen 127.0.0.1:6432 --upstream 127.0.0.1:5432`.

use clap::Parser;

/// sqlcommenter PostgreSQL proxy.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: sqlcommenter_proxy::ProxyArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = sqlcommenter_proxy::run_blocking(cli.args) {
        eprintln!("sqlcommenter proxy: {e}");
        std::process::exit(1);
    }
}
