//! Real clients through the proxy against a real PostgreSQL: psql, pgbench, psycopg 3, asyncpg,
//! node-postgres, JDBC. Each checks its results and, from the server log, that statements carried trace
//! context (a comment for simple/unnamed statements, the `application_name` carrier for named ones).
//! A missing tool skips its test with a loud message, unless `CI` is set: then it fails.
//! The `context_*` tests measure, per client library, the share of executions whose own server log line
//! carries the context the client supplied (≥ 99 % over ≥ 200 executions each; printed as `context: …`).

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
    let files = self_signed(&std::env::temp_dir().join(format!("sqlc-tls-{}", std::process::id())));
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

/// psql on the proxy's own Unix socket (`listen_socket`), as local clients reach PostgreSQL: the socket file
/// is named for the listen port, open to every user, replaces a stale file and is gone after shutdown;
/// `require_tls` holds for TCP clients only (a socket client is local, as PostgreSQL's `local` lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_on_the_proxys_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("sqlc-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A stale socket file where the proxy's will be: a proxy that died left it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = dir.join(format!(".s.PGSQL.{port}"));
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let cert_dir = std::env::temp_dir().join(format!("sqlc-sock-tls-{}", std::process::id()));
    let tls = available("openssl", Command::new("openssl").arg("version")).then(|| self_signed(&cert_dir));
    let proxy = proxy_with(|c| {
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.listen_socket = Some(dir.clone());
        c.require_tls = tls.is_some();
        c.tls = tls.clone();
    })
    .await;
    assert_eq!(proxy.socket_path(), Some(path.as_path()));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o777);
    let out = run(pg()
        .client_command("psql")
        .env("PGHOST", &dir)
        .env("PGPORT", port.to_string())
        .env("PGAPPNAME", "unixps")
        .args(["-X", "-c", "\\conninfo", "-c", "SELECT 40 + 2 /*marker_unix_listen*/"]));
    assert!(out.contains("via socket in"), "{out}");
    assert!(out.contains("42"), "{out}");
    assert_commented("unixps", "marker_unix_listen");
    if tls.is_some() {
        let plain = pg()
            .client_command("psql")
            .env("PGPORT", port.to_string())
            .env("PGSSLMODE", "disable")
            .args(["-X", "-c", "SELECT 1"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&plain.stderr).contains("TLS is required"), "{plain:?}");
    }
    proxy.shutdown().await;
    assert!(!path.exists(), "the socket file outlived the proxy");
}

/// A self-signed certificate and key for localhost in `dir`.
fn self_signed(dir: &Path) -> sqlcommenter_proxy::TlsFiles {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    sqlcommenter_proxy::TlsFiles { cert, key }
}

// ---------------------------------------------------------------------------------------------------------
// Context per execution: each client supplies its own context the way an app would (a session context set
// with `set_config('sqlcommenter.traceparent', '<traceparent>', false)` before each request, or one in the
// startup options), through a proxy with the shipping defaults (no invented root contexts). From the
// server's own log, per backend in log order, every execution marked `ctx_<lib>_q` must carry the trace id
// the client last set on that session: in its comment (simple, unnamed) or in `%a` (the carrier, named).

/// The proxy as shipped: it injects only the context a client supplied.
async fn shipping_proxy() -> sqlcommenter_proxy::ProxyHandle {
    proxy_with(|c| {
        c.inject.root_contexts = false;
        c.inject.application_tag = false;
    })
    .await
}

/// A fresh sampled W3C traceparent, as an app's tracer starts one.
fn new_traceparent() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let random = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        h.finish()
    };
    format!("00-{:016x}{:016x}-{:016x}-01", random(), random(), random() | 1)
}

/// The statement that gives the session its context, marked for `lib`.
fn set_context_sql(lib: &str, traceparent: &str) -> String {
    format!("SELECT set_config('sqlcommenter.traceparent', '{traceparent}', false) /*ctx_{lib}_set*/")
}

/// The trace id in a `set_config('sqlcommenter.traceparent', '00-<id>-…'` literal of a log line.
fn set_trace_id(line: &str) -> Option<&str> {
    const LITERAL: &str = "set_config('sqlcommenter.traceparent', '00-";
    let at = line.find(LITERAL)? + LITERAL.len();
    line.get(at..at + 32)
}

/// The backend pid of a log line (`%m [%p] …`).
fn pid_of(line: &str) -> &str {
    let start = line.find('[').map_or(0, |i| i + 1);
    let end = line[start..].find(']').map_or(start, |i| start + i);
    &line[start..end]
}

/// A statement's execution line (`log_min_duration_statement = 0` also logs parse and bind steps).
fn is_execution(line: &str) -> bool {
    line.contains("  statement: ") || line.contains("  execute ")
}

/// [`context_share`] and its check: all `expected` executions arrived, at least 200, and ≥ 99 % carried.
fn assert_context_share(lib: &str, startup: Option<&str>, expected: usize) {
    context_share(lib, startup, expected).check();
}

/// How many executions of one client library carried their context.
#[must_use]
struct Share {
    lib: String,
    carried: usize,
    total: usize,
    expected: usize,
    misses: Vec<String>,
}

impl Share {
    fn check(&self) {
        let Share { lib, carried, total, expected, misses } = self;
        assert_eq!(total, expected, "{lib}: executions in the server log");
        assert!(*total >= 200, "{lib}: too few executions to measure ({total})");
        assert!(carried * 100 >= total * 99, "context: {lib} {carried}/{total} is under 99 %: {misses:#?}");
    }
}

/// Counts, in the server log, the executions marked `ctx_<lib>_q` (waiting for `expected` of them) and how
/// many of them carry, on their own log line, the trace id their session had at that moment: the one of the
/// backend's last `ctx_<lib>_set` statement, else `startup` (a context in the startup packet). Prints
/// `context: <lib> <carried>/<total>` (and the first misses).
fn context_share(lib: &str, startup: Option<&str>, expected: usize) -> Share {
    let (q, set) = (format!("ctx_{lib}_q"), format!("ctx_{lib}_set"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = pg().read_log();
        let n = log.lines().filter(|l| l.contains(&q) && is_execution(l)).count();
        if n >= expected || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut session: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let (mut total, mut carried, mut by_carrier, mut misses) = (0, 0, 0, Vec::new());
    for line in log.lines().filter(|l| (l.contains(&q) || l.contains(&set)) && is_execution(l)) {
        let pid = pid_of(line);
        if line.contains(&set) {
            let id = set_trace_id(line).unwrap_or_else(|| panic!("no traceparent literal: {line}"));
            session.insert(pid, id);
            continue;
        }
        total += 1;
        let want = session.get(pid).copied().or(startup);
        let in_comment = want.is_some_and(|w| comment_trace_id(line) == Some(w));
        let in_carrier = want.is_some_and(|w| carrier_trace_id(app_of(line)).as_deref() == Some(w));
        by_carrier += usize::from(in_carrier && !in_comment);
        if in_comment || in_carrier {
            carried += 1;
        } else if misses.len() < 8 {
            misses.push(format!("wanted {want:?}: {line}"));
        }
    }
    eprintln!("context: {lib} {carried}/{total} ({} in a comment, {by_carrier} in the carrier)", carried - by_carrier);
    for m in &misses {
        eprintln!("  no context: {m}");
    }
    if !misses.is_empty() {
        // The start of what the server logged for these statements, parse and bind steps included.
        eprintln!("  first log lines of {lib}:");
        for line in log.lines().filter(|l| l.contains(&q) || l.contains(&set)).take(12) {
            eprintln!("    {line}");
        }
    }
    Share { lib: lib.to_owned(), carried, total, expected, misses }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_psql() {
    const REQUESTS: usize = 220;
    let proxy = shipping_proxy().await;
    let mut script = String::from("\\set ON_ERROR_STOP 1\n");
    for r in 0..REQUESTS {
        script += &set_context_sql("psql", &new_traceparent());
        script += ";\n";
        script += &match r % 4 {
            0 => format!("SELECT {r} /*ctx_psql_q*/;\n"),
            // One Query message with two statements: one execution, one log line.
            1 => format!("SELECT {r} /*ctx_psql_q a*/ \\; SELECT {r} + 1 /*ctx_psql_q b*/;\n"),
            2 => format!("BEGIN;\nSELECT {r} /*ctx_psql_q txn*/;\nCOMMIT;\n"),
            _ => format!("SELECT {r} AS v /*ctx_psql_q gset*/ \\gset\n"),
        };
    }
    let path = std::env::temp_dir().join(format!("sqlc-ctx-psql-{}.sql", std::process::id()));
    std::fs::write(&path, script).unwrap();
    run(pg()
        .client_command("psql")
        .env("PGPORT", proxy.local_addr().port().to_string())
        .env("PGAPPNAME", "ctxpsql")
        .args(["-X", "-q", "-f", path.to_str().unwrap()]));
    assert_context_share("psql", None, REQUESTS);
    proxy.shutdown().await;
}

/// pgbench can set no per-transaction context: the context comes with the startup options
/// (`PGOPTIONS=-c sqlcommenter.traceparent=…`), one per mode; two statements per transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_pgbench_three_modes() {
    const CLIENTS: usize = 2;
    const TRANSACTIONS: usize = 55;
    let proxy = shipping_proxy().await;
    let dir = std::env::temp_dir().join(format!("sqlc-ctx-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut contexts = Vec::new();
    for mode in ["simple", "extended", "prepared"] {
        let script = dir.join(format!("{mode}.sql"));
        std::fs::write(
            &script,
            format!(
                "\\set v random(1, 1000000)\nBEGIN;\nSELECT :v::int /*ctx_pgbench_{mode}_q a*/;\n\
                 SELECT :v::int + 1 /*ctx_pgbench_{mode}_q b*/;\nEND;\n"
            ),
        )
        .unwrap();
        let tp = new_traceparent();
        let out = run(pg()
            .client_command("pgbench")
            .env("PGPORT", proxy.local_addr().port().to_string())
            .env("PGAPPNAME", "ctxpgb")
            .env("PGOPTIONS", format!("-c sqlcommenter.traceparent={tp}"))
            .args(["-n", "-M", mode, "-f", script.to_str().unwrap()])
            .args(["-c", &CLIENTS.to_string(), "-j", &CLIENTS.to_string(), "-t", &TRANSACTIONS.to_string()]));
        let want = CLIENTS * TRANSACTIONS;
        assert!(out.contains(&format!("actually processed: {want}/{want}")), "{mode}: {out}");
        contexts.push((mode, tp));
    }
    for (mode, tp) in &contexts {
        assert_context_share(&format!("pgbench_{mode}"), Some(&tp[3..35]), 2 * CLIENTS * TRANSACTIONS);
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_psycopg_with_pipeline() {
    if !available("python3 + psycopg 3", Command::new("python3").args(["-c", "import psycopg"])) {
        return;
    }
    const REQUESTS: usize = 60;
    let proxy = shipping_proxy().await;
    let out = run(Command::new("python3").arg(clients_dir().join("context_psycopg.py")).args([
        &proxy.local_addr().port().to_string(),
        "ctxpycg",
        &REQUESTS.to_string(),
    ]));
    assert_eq!(out.trim(), (REQUESTS * 7).to_string());
    assert_context_share("psycopg", None, REQUESTS * 7);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_asyncpg_with_executemany() {
    if !available("python3 + asyncpg", Command::new("python3").args(["-c", "import asyncpg"])) {
        return;
    }
    const REQUESTS: usize = 50;
    let proxy = shipping_proxy().await;
    let out = run(Command::new("python3").arg(clients_dir().join("context_asyncpg.py")).args([
        &proxy.local_addr().port().to_string(),
        "ctxapg",
        &REQUESTS.to_string(),
    ]));
    assert_eq!(out.trim(), (REQUESTS * 5).to_string());
    assert_context_share("asyncpg", None, REQUESTS * 5);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_node_postgres_named() {
    let dir = clients_dir().join("node");
    if !available(
        "node + pg (npm i in proxy/tests/clients/node)",
        Command::new("node").current_dir(&dir).args(["-e", "require('pg')"]),
    ) {
        return;
    }
    const REQUESTS: usize = 80;
    let proxy = shipping_proxy().await;
    let out = run(Command::new("node").current_dir(&dir).args([
        "context.js",
        &proxy.local_addr().port().to_string(),
        "ctxnode",
        &REQUESTS.to_string(),
    ]));
    assert_eq!(out.trim(), (REQUESTS * 3).to_string());
    assert_context_share("node", None, REQUESTS * 3);
    proxy.shutdown().await;
}

fn jdbc_context(port: u16, mode: &str, lib: &str, requests: usize) -> Option<Share> {
    let jar = "/usr/share/java/postgresql.jar";
    if !available(
        "java (default-jdk-headless) + libpostgresql-jdbc-java",
        Command::new("sh").args(["-c", &format!("command -v java && test -f {jar}")]),
    ) {
        return None;
    }
    let out = run(Command::new("java").args([
        "-cp",
        jar,
        clients_dir().join("ContextJdbc.java").to_str().unwrap(),
        &port.to_string(),
        "ctxjdbc",
        &requests.to_string(),
        mode,
        lib,
    ]));
    assert_eq!(out.trim(), (requests * 4).to_string());
    Some(context_share(lib, None, requests * 4))
}

/// pgjdbc: queries and `executeBatch` batches server-prepared (named) from the first execution; the app's
/// `set_config` texts (each different) go as unnamed statements (the driver's default threshold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_jdbc_with_execute_batch() {
    let proxy = shipping_proxy().await;
    if let Some(share) = jdbc_context(proxy.local_addr().port(), "unnamed-set", "jdbc", 60) {
        share.check();
    }
    proxy.shutdown().await;
}

/// pgjdbc with `prepareThreshold=1` for the whole connection: the app's `set_config` is a named statement
/// too. The context it sets must reach the executions after it as it does when it is unnamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_jdbc_set_by_named_statement() {
    let proxy = shipping_proxy().await;
    if let Some(share) = jdbc_context(proxy.local_addr().port(), "named-set", "jdbc_named_set", 60) {
        share.check();
    }
    proxy.shutdown().await;
}

/// tokio-postgres pipelines the queries it has in flight: named (a prepared statement) and unnamed
/// (`query_typed`) executions sent together, outside and inside a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_tokio_postgres_pipelined() {
    use tokio_postgres::types::{ToSql, Type};
    const REQUESTS: i32 = 40;
    let proxy = shipping_proxy().await;
    let mut client = connect(proxy.local_addr().port(), "ctxtokio").await;
    let named = client.prepare("SELECT $1::int /*ctx_tokio_q named*/").await.unwrap();
    let unnamed = "SELECT $1::int + 1 /*ctx_tokio_q unnamed*/";
    let mut count = 0;
    for r in 0..REQUESTS {
        client.batch_execute(&set_context_sql("tokio", &new_traceparent())).await.unwrap();
        let (r1, r2, r3) = (r + 1, r + 2, r + 3);
        let p: [[&(dyn ToSql + Sync); 1]; 3] = [[&r], [&r1], [&r2]];
        let t: [[(&(dyn ToSql + Sync), Type); 1]; 2] = [[(&r, Type::INT4)], [(&r3, Type::INT4)]];
        let (a, b, c, d, e) = tokio::join!(
            client.query_one(&named, &p[0]),
            client.query_one(&named, &p[1]),
            client.query_typed(unnamed, &t[0]),
            client.query_one(&named, &p[2]),
            client.query_typed(unnamed, &t[1]),
        );
        let got: Vec<i32> = [a.unwrap(), b.unwrap(), d.unwrap()].iter().map(|row| row.get(0)).collect();
        assert_eq!(got, [r, r + 1, r + 2]);
        assert_eq!(c.unwrap()[0].get::<_, i32>(0), r + 1);
        assert_eq!(e.unwrap()[0].get::<_, i32>(0), r + 4);
        let tx = client.transaction().await.unwrap();
        let (f, g) = tokio::join!(tx.query_one(&named, &p[0]), tx.query_typed(unnamed, &t[0]));
        assert_eq!((f.unwrap().get::<_, i32>(0), g.unwrap()[0].get::<_, i32>(0)), (r, r + 1));
        tx.commit().await.unwrap();
        count += 7;
    }
    assert_context_share("tokio", None, count);
    proxy.shutdown().await;
}

/// tokio-postgres's `query` with a text prepares it as a named statement: an app that sets its context
/// with `client.query("SELECT set_config(…)", &[])` sends the `set_config` named. The context it sets must
/// reach the executions after it as it does from `batch_execute`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_tokio_postgres_set_by_named_statement() {
    use tokio_postgres::types::Type;
    const REQUESTS: i32 = 100;
    let proxy = shipping_proxy().await;
    let client = connect(proxy.local_addr().port(), "ctxtoknm").await;
    let named = client.prepare("SELECT $1::int /*ctx_tokio_named_set_q named*/").await.unwrap();
    let mut count = 0;
    for r in 0..REQUESTS {
        let set = client.query(&set_context_sql("tokio_named_set", &new_traceparent()), &[]).await.unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(client.query_one(&named, &[&r]).await.unwrap().get::<_, i32>(0), r);
        let unnamed = "SELECT $1::int /*ctx_tokio_named_set_q unnamed*/";
        assert_eq!(client.query_typed(unnamed, &[(&r, Type::INT4)]).await.unwrap()[0].get::<_, i32>(0), r);
        count += 2;
    }
    context_share("tokio_named_set", None, count).check();
    proxy.shutdown().await;
}
