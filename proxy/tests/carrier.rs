//! The carrier through the proxy, seen from the server. 10,000 named executions, each under a new trace,
//! leave one pg_stat_statements entry for the carrier. And the proxy in front of PgBouncer 1.24 (session and transaction pooling, prepared statements on, a pool
//! of 2): 8 psycopg clients, 96 requests, each request with its own context and a named, an unnamed and
//! an in-transaction named statement. From the server's side: every execution's own log line carries its
//! request's trace, PgBouncer replays no `SET application_name` because of the carrier, at most one
//! carrier statement per transaction that runs a named statement, and pg_stat_statements keeps at most a
//! handful of carrier entries however many traces pass.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::{app_of, carrier_trace_id, comment_trace_id};
use sqlcommenter::carrier::Scope;
use sqlcommenter_proxy::{CarrierScope, ProxyConfig, Upstream};
use sqlcommenter_testpg::{pgbouncer_or_skip, Cluster, LogFormat, PgBouncer, PoolMode};

const CLIENTS: usize = 8;
const REQUESTS: usize = 12;

fn python_ok() -> bool {
    let ok = Command::new("python3").args(["-c", "import psycopg"]).output().is_ok_and(|o| o.status.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!("python3 + psycopg 3 missing and CI is set");
    }
    ok
}

fn cluster(log_all: bool) -> Cluster {
    let pg = Cluster::builder()
        .setting("log_min_duration_statement", if log_all { "0" } else { "-1" })
        .setting("pg_stat_statements.track_utility", "on")
        .log_format(LogFormat::Stderr { prefix: common::PREFIX.into() })
        .preload(&["pg_stat_statements"])
        .start()
        .unwrap();
    pg.execute_sql("CREATE EXTENSION pg_stat_statements").unwrap();
    pg
}

/// A proxy configuration in front of `port` (PostgreSQL or PgBouncer), with no admin listener.
fn config_to(port: u16) -> ProxyConfig {
    let mut config =
        ProxyConfig::new("127.0.0.1:0".parse().unwrap(), Upstream::parse(&format!("127.0.0.1:{port}")).unwrap());
    config.admin = None;
    config
}

fn carrier_entries(pg: &Cluster) -> usize {
    pg.query("SELECT count(*) FROM pg_stat_statements WHERE query ILIKE '%set_config%'").unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_traces_leave_one_carrier_entry_in_pg_stat_statements() {
    let pg = cluster(false);
    pg.execute_sql("SELECT pg_stat_statements_reset()").unwrap();
    let mut config = config_to(pg.port());
    // Each autocommit execution under a new root trace.
    config.inject.root_contexts = true;
    let proxy = sqlcommenter_proxy::start(config).await.unwrap();
    let c = common::connect(proxy.local_addr().port(), "pss").await;
    let stmt = c.prepare("SELECT $1::int /*marker_pss*/").await.unwrap();
    // Pipelined autocommit executions: each its own transaction, so each under a new root trace.
    for chunk in 0..20 {
        let runs = (0..500).map(|i| {
            let (c, stmt) = (&c, &stmt);
            async move { c.query_one(stmt, &[&(chunk * 500 + i)]).await }
        });
        for r in futures_util::future::join_all(runs).await {
            r.unwrap();
        }
    }
    proxy.shutdown().await;
    let calls: i64 = pg
        .query("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query ILIKE '%set_config%'")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(carrier_entries(&pg), 1, "{}", pg.query("SELECT query FROM pg_stat_statements").unwrap());
    assert_eq!(calls, 10_000, "one carrier per execution, each its own trace");
}

async fn run_through(mode: PoolMode, scope: CarrierScope, bin: &Path) {
    let pg = cluster(true);
    let bouncer = PgBouncer::builder(mode).binary(bin).pool_size(2).max_prepared_statements(200).start(&pg).unwrap();
    pg.execute_sql("SELECT pg_stat_statements_reset()").unwrap();
    let mut config = config_to(bouncer.port());
    config.inject.carrier_scope = scope;
    let proxy = sqlcommenter_proxy::start(config).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/pooled_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([&proxy.local_addr().port().to_string(), &CLIENTS.to_string(), &REQUESTS.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(v, t)| (v.to_owned(), t.to_owned())))
        .collect();
    assert_eq!(want.len(), CLIENTS * REQUESTS * 3);
    proxy.shutdown().await;

    // Every execution's own log line, with its parameter on the DETAIL line after it.
    let log = wait_for_log(&pg, "marker_pool_txn", CLIENTS * REQUESTS);
    let lines: Vec<&str> = log.lines().collect();
    let mut seen = HashMap::new();
    let mut carriers = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.contains("execute") && line.contains("set_config($1, $2, $3)") {
            carriers += 1;
        }
        if !(line.contains("execute") && line.contains("marker_pool_")) {
            continue;
        }
        let value = lines[i + 1..]
            .iter()
            .take(4)
            .find_map(|l| l.split_once("parameters: $1 = '").map(|(_, v)| v.trim_end_matches('\'').to_owned()))
            .unwrap_or_else(|| panic!("no parameters after {line}"));
        let trace = comment_trace_id(line).map(str::to_owned).or_else(|| carrier_trace_id(app_of(line)));
        seen.insert(value, (trace, line.to_string()));
    }
    let mut wrong = Vec::new();
    for (value, trace) in &want {
        match seen.get(value) {
            Some((Some(t), _)) if t == trace => {}
            other => wrong.push(format!("{value}: want {trace}, got {other:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{mode:?}/{scope:?}: {} of {} executions under the wrong trace: {wrong:#?}",
        wrong.len(),
        want.len()
    );
    let replays: Vec<_> = lines.iter().filter(|l| l.contains("statement: SET application_name")).collect();
    if scope == CarrierScope::Fixed(Scope::Session) {
        // Written once per context change (one per request); PgBouncer keeps each client's application_name
        // and restores it when it links the client to a server — the correctness check above is what counts.
        assert!(carriers <= CLIENTS * REQUESTS, "{mode:?}/{scope:?}: {carriers} carrier executions");
        eprintln!(
            "{mode:?}/{scope:?}: {} executions under their own trace, {carriers} carriers, {} application_name \
             re-syncs by PgBouncer",
            want.len(),
            replays.len()
        );
        return;
    }
    // One carrier at most per transaction that runs a named statement (2 per request).
    assert!(carriers <= CLIENTS * REQUESTS * 2, "{mode:?}: {carriers} carrier executions");
    assert!(carriers >= CLIENTS * REQUESTS * 2, "{mode:?}: named executions without a carrier: {carriers}");
    // PgBouncer re-syncs a client's application_name with its own SET when it links a client to a server
    // whose value differs. All clients here share one name, so beyond the first link of each of the 2
    // server connections (transaction pooling) or of each client (session pooling, 8 clients queued on 2
    // servers) a SET would be the carrier's doing; and none may write a traceparent.
    let carried = replays.iter().filter(|l| l.contains("00-")).count();
    let links = if mode == PoolMode::Session { CLIENTS } else { 2 };
    assert!(replays.len() <= links && carried == 0, "{mode:?}: PgBouncer replayed application_name: {replays:#?}");
    let entries = carrier_entries(&pg);
    assert!(
        entries <= 5,
        "{mode:?}: {entries} carrier entries: {}",
        pg.query("SELECT query FROM pg_stat_statements").unwrap()
    );
    eprintln!(
        "{mode:?}: {} executions under their own trace, {carriers} carriers, {} application_name replays, \
         {entries} pg_stat_statements carrier entries",
        want.len(),
        replays.len()
    );
}

fn wait_for_log(pg: &Cluster, needle: &str, min: usize) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = pg.read_log();
        if log.matches(needle).count() >= min || std::time::Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_every_execution_carries_its_own_trace_and_nothing_is_replayed() {
    let Some(bin) = pgbouncer_or_skip("proxy behind PgBouncer") else { return };
    if !python_ok() {
        eprintln!("SKIPPED: python3 + psycopg 3 missing");
        return;
    }
    // The default scope: PgBouncer's keys are its own, so the proxy writes per transaction.
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        run_through(mode, CarrierScope::Auto, &bin).await;
    }
    // The session-scoped carrier behind transaction pooling: still correct (PgBouncer keeps application_name
    // per client and re-syncs it with its own SET per link — which is why it is not the default).
    run_through(PoolMode::Transaction, CarrierScope::Fixed(Scope::Session), &bin).await;
}

/// Behind transaction pooling the server session may change hands at every idle ReadyForQuery: a carrier
/// statement the proxy left as the unnamed statement in one transaction may, by the next, have been replaced
/// by another client's on that server connection (or live on another one). One server connection shared by
/// a client through the proxy (a named execution per transaction, each under its own root trace) and a client
/// straight to PgBouncer (an unnamed one-parameter statement in between): every named execution must run,
/// each under its own trace, and the other client's statement must never be bound with the carrier's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_transaction_pooling_the_carrier_never_binds_another_clients_unnamed_statement() {
    let Some(bin) = pgbouncer_or_skip("proxy behind PgBouncer") else { return };
    let pg = cluster(true);
    let bouncer = PgBouncer::builder(PoolMode::Transaction)
        .binary(&bin)
        .pool_size(1)
        .max_prepared_statements(200)
        .start(&pg)
        .unwrap();
    let mut config = config_to(bouncer.port());
    config.inject.root_contexts = true;
    let proxy = sqlcommenter_proxy::start(config).await.unwrap();
    let through = common::connect(proxy.local_addr().port(), "through").await;
    let other = common::connect(bouncer.port(), "other").await;
    let stmt = through.prepare("SELECT $1::int /*marker_swap*/").await.unwrap();
    const RUNS: i32 = 20;
    for i in 0..RUNS {
        let got: i32 = through.query_one(&stmt, &[&i]).await.unwrap_or_else(|e| panic!("execution {i}: {e:?}")).get(0);
        assert_eq!(got, i);
        let row = other
            .query_typed_one("SELECT $1::int4 + 1000 /*marker_other*/", &[(&i, tokio_postgres::types::Type::INT4)])
            .await
            .unwrap_or_else(|e| panic!("other client {i}: {e:?}"));
        assert_eq!(row.get::<_, i32>(0), i + 1000);
    }
    proxy.shutdown().await;
    let log = wait_for_log(&pg, "marker_swap", RUNS as usize);
    let traces: Vec<Option<String>> = log
        .lines()
        .filter(|l| l.contains("execute") && l.contains("marker_swap"))
        .map(|l| carrier_trace_id(app_of(l)))
        .collect();
    assert_eq!(traces.len(), RUNS as usize, "{log}");
    let distinct: std::collections::HashSet<_> = traces.iter().flatten().collect();
    assert_eq!(distinct.len(), RUNS as usize, "each execution under its own trace: {traces:?}");
    assert!(!log.contains("bind message supplies"), "a carrier bound a statement that was not its own:\n{log}");
}

/// The default scope with PostgreSQL itself behind the proxy: the carrier's `pg_backend_pid()` is the process
/// the client's BackendKeyData names, so a client's own session context is written once, session-scoped,
/// instead of before every transaction. 50 named executions, each its own transaction, cost two carrier
/// executions (the first, transaction-scoped, finds it out); every execution's log line carries the context,
/// and pg_stat_activity shows it on the session between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_itself_a_clients_session_context_is_written_once() {
    const TP: &str = "00-5bf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let pg = cluster(true);
    pg.execute_sql("SELECT pg_stat_statements_reset()").unwrap();
    let config = config_to(pg.port());
    let proxy = sqlcommenter_proxy::start(config).await.unwrap();
    let c = common::connect_str(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres application_name=own \
         options='-c sqlcommenter.traceparent={TP}'",
        proxy.local_addr().port()
    ))
    .await;
    let stmt = c.prepare("SELECT $1::int /*marker_own*/").await.unwrap();
    for i in 0..50 {
        let got: i32 = c.query_one(&stmt, &[&i]).await.unwrap().get(0);
        assert_eq!(got, i);
    }
    let held = pg
        .query(
            "SELECT application_name FROM pg_stat_activity WHERE query LIKE '%marker_own%' AND pid <> pg_backend_pid()",
        )
        .unwrap();
    assert_eq!(held.trim(), TP, "the session holds the context");
    let calls: i64 = pg
        .query("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query ILIKE '%set_config%'")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(calls, 2, "{}", pg.query("SELECT query, calls FROM pg_stat_statements").unwrap());
    drop(c);
    proxy.shutdown().await;
    let log = wait_for_log(&pg, "marker_own", 50);
    let apps: Vec<&str> =
        log.lines().filter(|l| l.contains("execute") && l.contains("marker_own")).map(app_of).collect();
    assert_eq!(apps.len(), 50, "{log}");
    assert!(apps.iter().all(|a| *a == TP), "every execution under the client's context: {apps:?}");
}
