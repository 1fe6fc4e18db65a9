//! `--once --format json` against a real cluster: the blocking scenario, privileges, bad input.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const FIELDS: [&str; 14] = [
    "pid",
    "application_name",
    "application",
    "trace_id",
    "span_id",
    "context_source",
    "state",
    "wait_event_type",
    "wait_event",
    "xact_age_ms",
    "query_age_ms",
    "query",
    "blocked_by",
    "blocked_by_trace_ids",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_chain_by_trace() {
    let pg = cluster();
    let sc = start(&pg).await;
    let conninfo = pg.keyword_conn_str("postgres");
    let (doc, stderr) = once_json(&conninfo, &[]).await;
    assert!(stderr.is_empty(), "{stderr}");

    // Exactly the contract's fields, for every session.
    for s in doc["sessions"].as_array().unwrap() {
        let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
    }
    // top's own connection is not listed.
    assert!(doc["sessions"].as_array().unwrap().iter().all(|s| s["application_name"] != "sqlcommenter-top"));

    let a = session(&doc, sc.a_pid);
    assert_eq!(a["application_name"], "checkout");
    assert_eq!(a["application"], "checkout");
    assert_eq!(a["trace_id"], trace_id(TP_A));
    assert_eq!(a["span_id"], span_id(TP_A));
    assert_eq!(a["context_source"], "comment");
    assert_eq!(a["state"], "idle in transaction");
    assert_eq!(a["wait_event_type"], "Client");
    assert_eq!(a["wait_event"], "ClientRead");
    assert_eq!(a["query"], "UPDATE accounts SET balance = balance - ? WHERE id = ?");
    assert_eq!(a["blocked_by"], json!([]));
    assert!(a["xact_age_ms"].as_u64().unwrap() >= a["query_age_ms"].as_u64().unwrap());

    let b = session(&doc, sc.b_pid);
    assert_eq!(b["application_name"], TP_B);
    assert_eq!(b["application"], Value::Null, "a bare traceparent carries no client name");
    assert_eq!(b["trace_id"], trace_id(TP_B));
    assert_eq!(b["span_id"], span_id(TP_B));
    assert_eq!(b["context_source"], "application_name");
    assert_eq!(b["state"], "active");
    assert_eq!(b["wait_event_type"], "Lock");
    assert_eq!(b["wait_event"], "transactionid");
    assert_eq!(b["blocked_by"], json!([sc.a_pid]));
    assert_eq!(b["blocked_by_trace_ids"], json!([trace_id(TP_A)]));
    assert_eq!(b["query"], "UPDATE accounts SET balance = balance + ? WHERE id = ?");

    let c = session(&doc, sc.c_pid);
    // The proxy carries C in a comment on the simple query (and, depending on its carrier settings, in
    // application_name for the named `SELECT pg_backend_pid()`): the comment wins either way.
    let app = c["application_name"].as_str().unwrap();
    assert!(app == "reports" || app == format!("reports@{TP_C}"), "{app}");
    assert_eq!(c["application"], "reports");
    assert_eq!(c["trace_id"], trace_id(TP_C));
    assert_eq!(c["context_source"], "comment", "the proxy's comment");
    assert_eq!(c["state"], "active");
    assert_eq!(c["wait_event_type"], "Timeout");
    assert_eq!(c["wait_event"], "PgSleep");
    assert_eq!(c["query"], "SELECT pg_sleep(?)");
    assert!(c["xact_age_ms"].is_u64());

    // The text form prints the chain by trace, B under A.
    let out = top(&["--once", &conninfo], &[]).await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let a_line =
        text.lines().position(|l| l.starts_with(&format!("pid {} checkout trace {}", sc.a_pid, trace_id(TP_A))));
    let b_line = text.lines().position(|l| l.starts_with(&format!("└─ pid {} - trace {}", sc.b_pid, trace_id(TP_B))));
    assert!(a_line.is_some() && b_line == a_line.map(|i| i + 1), "{text}");
    assert!(text.contains(&format!("blocked by pid {} (trace {} (comment))", sc.a_pid, trace_id(TP_A))), "{text}");

    // Ending A's transaction releases B: the next sample says so.
    sc.a.batch_execute("ROLLBACK").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (doc, _) = once_json(&conninfo, &[]).await;
    assert_eq!(session(&doc, sc.b_pid)["blocked_by"], json!([]));
    assert_eq!(session(&doc, sc.a_pid)["state"], "idle");
    sc.proxy.shutdown().await;
}

/// A monitoring role with a password (scram over TCP) for the privilege tests.
fn monitoring_role(pg: &sqlcommenter_testpg::Cluster) {
    pg.execute_sql("CREATE ROLE mon LOGIN PASSWORD 'right'").unwrap();
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all mon 127.0.0.1/32 scram-sha-256\n{old}")).unwrap();
    pg.execute_sql("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_role_with_and_without_pg_monitor() {
    let pg = cluster();
    monitoring_role(&pg);
    let sc = start(&pg).await;
    let conninfo = format!("postgres://mon@127.0.0.1:{}/postgres", pg.port());

    // Without pg_monitor: other roles' sessions are listed, their details hidden, and stderr says why.
    // The password comes from PGPASSWORD.
    let (doc, stderr) = once_json(&conninfo, &[("PGPASSWORD", "right")]).await;
    let a = session(&doc, sc.a_pid);
    assert_eq!(a["query"], "<insufficient privilege>");
    assert_eq!(a["state"], Value::Null);
    assert_eq!(a["trace_id"], Value::Null, "the comment is hidden with the query");
    let b = session(&doc, sc.b_pid);
    assert_eq!(b["trace_id"], trace_id(TP_B), "application_name is visible to every role");
    assert_eq!(b["blocked_by"], json!([]), "the wait is hidden too");
    assert!(stderr.contains("<insufficient privilege>") && stderr.contains("grant pg_monitor to mon"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // With pg_monitor: the same picture as the superuser's. The password comes from ~/.pgpass.
    pg.execute_sql("GRANT pg_monitor TO mon").unwrap();
    let home = std::env::temp_dir().join(format!("sqlc-top-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let pgpass = home.join(".pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:{}:postgres:mon:right\n", pg.port())).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (doc, stderr) = once_json(&conninfo, &[("HOME", home.to_str().unwrap())]).await;
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(session(&doc, sc.a_pid)["trace_id"], trace_id(TP_A));
    assert_eq!(session(&doc, sc.b_pid)["blocked_by"], json!([sc.a_pid]));
    assert_eq!(session(&doc, sc.b_pid)["blocked_by_trace_ids"], json!([trace_id(TP_A)]));

    // A server where pg_blocking_pids is not executable by the role: one line, exit 2.
    pg.execute_sql("REVOKE EXECUTE ON FUNCTION pg_blocking_pids(integer) FROM PUBLIC").unwrap();
    let out = top(&["--once", "--format", "json", &conninfo], &[("PGPASSWORD", "right")]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("permission denied") && stderr.contains("pg_blocking_pids"), "{stderr}");
    std::fs::remove_dir_all(&home).unwrap();
    sc.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_and_exit_2() {
    let pg = cluster();
    monitoring_role(&pg);
    let port = pg.port();
    let cases = [
        (format!("postgres://mon:wrong@127.0.0.1:{port}/postgres"), "password authentication failed"),
        ("host=127.0.0.1 port=1 user=x dbname=x".to_owned(), "could not connect to 127.0.0.1:1/x as x"),
        (format!("postgres://mon:right@127.0.0.1:{port}/nosuchdb"), "database \"nosuchdb\" does not exist"),
        ("host=127.0.0.1 port=notaport".to_owned(), "invalid connection string"),
    ];
    for (conninfo, needle) in cases {
        let out = top(&["--once", "--format", "json", &conninfo], &[]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{conninfo}: {stderr}");
        assert!(out.stdout.is_empty(), "{conninfo}");
        assert_eq!(stderr.lines().count(), 1, "{conninfo}: {stderr}");
        assert!(stderr.contains(needle), "{conninfo}: {stderr}");
    }

    // Flags that cannot work: one line, exit 2, before anything connects.
    let ok = pg.keyword_conn_str("postgres");
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        (&["--headless", &ok], &[], "--headless only makes sense with --otlp or --prometheus"),
        (&[&ok], &[], "standard output is not a terminal"),
        (&["--once", "--otlp", &ok], &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")], "only http/protobuf"),
    ];
    for (args, env, needle) in cases {
        let out = top(args, env).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
