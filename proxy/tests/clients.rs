//! Real clients through the proxy against a real PostgreSQL: psql, pgbench, psycopg 3, asyncpg,
//! node-postgres, JDBC. Each checks its results and, from the server log, that statements carried trace
//! context (a comment for simple/unnamed statements, the `application_name` carrier for named ones).
//! A missing tool skips its test with a loud message, unless `CI` is set: then it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Whether `check` (a command) succeeds; if not: skip loudly, or panic under CI.
fn available(tool: &str, check: &mut Command) -> bool {
    let ok = check.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is missing and CI is set: install it (see proxy/README.md, Tests)");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {tool} is not installed (see proxy/README.md, Tests) !!!!!!!!\n");
    }
    ok
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Log lines of `app` (prefix of `%a`) containing `needle`.
fn lines_of(app: &str, needle: &str, min: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let l: Vec<String> = log_lines(needle, 0).into_iter().filter(|l| app_of(l).starts_with(app)).collect();
        if l.len() >= min || std::time::Instant::now() > deadline {
            return l;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn assert_commented(app: &str, needle: &str) {
    let l = lines_of(app, needle, 1);
    assert!(!l.is_empty(), "no log line for {app}/{needle}");
    for line in &l {
        assert!(comment_trace_id(line).is_some(), "no traceparent comment: {line}");
    }
}

/// At least `min` executions of the statement marked `needle` carried a context in `%a` (the bare
/// traceparent replaces the client's name there, so lines are found by their marker).
fn assert_carried(needle: &str, min: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let l: Vec<_> = log_lines(needle, 0).into_iter().filter(|l| l.contains("execute")).collect();
        let carried = l.iter().filter(|l| carrier_trace_id(app_of(l)).is_some()).count();
        if carried >= min {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{carried} of {} executions carried a context, wanted {min}: {l:#?}",
            l.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_matches_direct_run() {
    let proxy = proxy().await;
    let dir = std::env::temp_dir().join(format!("sqlc-psql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy_in = dir.join("in.tsv");
    std::fs::write(&copy_in, (10..110).map(|i| format!("{i}\tr{i}\n")).collect::<String>()).unwrap();
    let mut outputs = Vec::new();
    for (port, app) in [(pg().port(), "psqld"), (proxy.local_addr().port(), "psqlp")] {
        let out_file = dir.join(format!("{app}.tsv"));
        let script = std::fs::read_to_string(clients_dir().join("psql_script.sql"))
            .unwrap()
            .replace("COPYFILE", copy_in.to_str().unwrap())
            .replace("OUTFILE", out_file.to_str().unwrap());
        let script_path = dir.join(format!("{app}.sql"));
        std::fs::write(&script_path, script).unwrap();
        let out = pg()
            .client_command("psql")
            .env("PGPORT", port.to_string())
            .env("PGAPPNAME", app)
            .args(["-X", "-f", script_path.to_str().unwrap()])
            .output()
            .unwrap();
        outputs.push((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            std::fs::read(&out_file).unwrap(),
            String::from_utf8_lossy(&out.stderr).replace("psqld", "APP").replace("psqlp", "APP"),
        ));
    }
    assert_eq!(outputs[0], outputs[1], "psql through the proxy differs from direct");
    assert!(outputs[1].0.contains("102"), "{}", outputs[1].0);
    assert!(outputs[1].2.contains("division by zero"));
    assert_commented("psqlp", "marker_psql_multi");
    assert_commented("psqlp", "marker_psql_end");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_all_protocol_modes() {
    let proxy = proxy().await;
    let port = proxy.local_addr().port().to_string();
    run(pg().client_command("pgbench").args(["-i", "-s", "1", "-q"]));
    for (mode, app) in [("simple", "pgb_s"), ("extended", "pgb_e"), ("prepared", "pgb_p")] {
        let out = run(pg()
            .client_command("pgbench")
            .env("PGPORT", &port)
            .env("PGAPPNAME", app)
            .args(["-n", "-S", "-M", mode, "-c", "2", "-j", "2", "-t", "25"]));
        assert!(out.contains("number of transactions actually processed: 50/50"), "{mode}: {out}");
    }
    assert_commented("pgb_s", "pgbench_accounts");
    let e: Vec<_> = lines_of("pgb_e", "execute <unnamed>: SELECT abalance", 50);
    assert_eq!(e.len(), 50);
    assert!(e.iter().all(|l| comment_trace_id(l).is_some()));
    assert_carried("SELECT abalance", 50);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_with_pipeline_mode() {
    if !available("python3 + psycopg 3", Command::new("python3").args(["-c", "import psycopg"])) {
        return;
    }
    let proxy = proxy().await;
    let out = run(Command::new("python3")
        .arg(clients_dir().join("psycopg_client.py"))
        .args([&proxy.local_addr().port().to_string(), "pycg"]));
    assert_eq!(
        out,
        "simple 1\nprepared 10\nprepared 11\nprepared 12\npipeline error contained\npipeline [0, 1, 2, 3, 4]\n\
         copy (1000, 499500)\npipeline50 1225\n"
    );
    // Every one of the 50 pipelined executions reached the server with its context: the unprepared ones
    // in a comment, the auto-prepared (named) ones in the carrier.
    let lines = log_lines("marker_psycopg_pipe50", 50);
    let executions: Vec<_> = lines.iter().filter(|l| l.contains("execute")).collect();
    assert_eq!(executions.len(), 50, "{lines:#?}");
    let carried =
        executions.iter().filter(|l| comment_trace_id(l).is_some() || carrier_trace_id(app_of(l)).is_some()).count();
    assert_eq!(carried, 50, "{executions:#?}");
    assert!(executions.iter().any(|l| carrier_trace_id(app_of(l)).is_some()), "auto-prepare reached: {executions:#?}");
    assert_commented("pycg", "marker_psycopg_simple");
    assert_commented("pycg", "marker_psycopg_pipeline");
    // psycopg prepares on the third execution by default; prepare=True forces it: named from the first.
    assert_carried("marker_psycopg_prepared", 3);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_named_statements_and_flush() {
    if !available("python3 + asyncpg", Command::new("python3").args(["-c", "import asyncpg"])) {
        return;
    }
    let proxy = proxy().await;
    let out = run(Command::new("python3")
        .arg(clients_dir().join("asyncpg_client.py"))
        .args([&proxy.local_addr().port().to_string(), "apg"]));
    assert_eq!(out, "fetchval 0\nfetchval 5\nfetchval 10\nlisten 42\n");
    // The first execution's Bind follows Parse/Describe/Flush: injected there once answered; all 3 carry.
    assert_carried("marker_asyncpg", 3);
    proxy.shutdown().await;
}

/// A cancel must reach only the statement it was meant for: libpq's and asyncpg's cancel calls return when
/// the server has ended the cancel connection, and the client sends its next statement at once. If the proxy
/// ends the client's cancel connection before the server processed the cancel, the cancel lands on that
/// next statement. Checked by the clients and, from the far side, by the server log's cancel errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_only_the_statement_it_was_meant_for() {
    if !available("python3 + psycopg 3 + asyncpg", Command::new("python3").args(["-c", "import psycopg, asyncpg"])) {
        return;
    }
    const ROUNDS: usize = 8;
    let proxy = proxy().await;
    let out = run(Command::new("python3").arg(clients_dir().join("cancel_client.py")).args([
        &proxy.local_addr().port().to_string(),
        "cancl",
        &ROUNDS.to_string(),
    ]));
    let expected: String =
        [("idle", 0), ("running", ROUNDS), ("copy_in", ROUNDS), ("copy_out", ROUNDS), ("asyncpg", ROUNDS)]
            .iter()
            .map(|(kind, cancelled)| format!("{kind} cancelled={cancelled} next_ok={ROUNDS}\n"))
            .collect();
    assert_eq!(out, expected);
    // The server cancelled exactly the intended statements: one error per cancelled statement, none
    // for the statements that followed a cancel.
    let cancels = lines_of("cancl", "canceling statement due to user request", 4 * ROUNDS);
    assert_eq!(cancels.len(), 4 * ROUNDS, "{cancels:#?}");
    let log = pg().read_log();
    let mut lines = log.lines().filter(|l| app_of(l).starts_with("cancl"));
    let mut next_cancelled = 0;
    while let Some(line) = lines.next() {
        if line.contains("canceling statement due to user request") {
            // The STATEMENT line that follows names the statement that was cancelled.
            if lines.next().is_some_and(|s| s.contains("marker_cancel_next")) {
                next_cancelled += 1;
            }
        }
    }
    assert_eq!(next_cancelled, 0, "statements after a cancel were cancelled");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_named_statements() {
    let dir = clients_dir().join("node");
    if !available(
        "node + pg (npm i in proxy/tests/clients/node)",
        Command::new("node").current_dir(&dir).args(["-e", "require('pg')"]),
    ) {
        return;
    }
    let proxy = proxy().await;
    let out = run(Command::new("node").current_dir(&dir).args([
        "named.js",
        &proxy.local_addr().port().to_string(),
        "nodepg",
    ]));
    assert_eq!(out, "named 0\nnamed 3\nnamed 6\nunnamed x\n");
    assert_carried("marker_node_named", 2);
    assert_commented("nodepg", "marker_node_unnamed");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_prepare_threshold() {
    let jar = "/usr/share/java/postgresql.jar";
    if !available(
        "java (default-jdk-headless) + libpostgresql-jdbc-java",
        Command::new("sh").args(["-c", &format!("command -v java && test -f {jar}")]),
    ) {
        return;
    }
    let proxy = proxy().await;
    let out = run(Command::new("java").args([
        "-cp",
        jar,
        clients_dir().join("Jdbc.java").to_str().unwrap(),
        &proxy.local_addr().port().to_string(),
        "jdbct",
    ]));
    assert_eq!(out, "jdbc 0\njdbc 7\njdbc 14\njdbc 21\nerror 22012\n");
    assert_carried("marker_jdbc", 3);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_over_tls_and_require_tls() {
    if !available("openssl", Command::new("openssl").arg("version")) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sqlc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let files = sqlcommenter_proxy::TlsFiles { cert, key };
    let proxy = proxy_with(|c| {
        c.tls = Some(files.clone());
        c.require_tls = true;
    })
    .await;
    let port = proxy.local_addr().port().to_string();
    let out = run(pg()
        .client_command("psql")
        .env("PGPORT", &port)
        .env("PGSSLMODE", "require")
        .env("PGAPPNAME", "tlsps")
        .args(["-X", "-c", "\\conninfo", "-c", "SELECT 40 + 2 /*marker_tls*/"]));
    assert!(out.contains("SSL connection"), "{out}");
    assert!(out.contains("42"), "{out}");
    assert_commented("tlsps", "marker_tls");
    // Without TLS the proxy refuses.
    let plain = pg()
        .client_command("psql")
        .env("PGPORT", &port)
        .env("PGSSLMODE", "disable")
        .args(["-X", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("TLS is required"));
    proxy.shutdown().await;
}
