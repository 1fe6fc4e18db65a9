//! `sqlcommenter demo` end to end, as a library call: a real throwaway PostgreSQL, the real proxy, the
//! drivers, the log correlation. Asserts 100 % trace completeness on every path (measured against what the
//! server logged) and that the HTML report exists and links the printed trace.

mod common;

use sqlcommenter_demo::{DemoArgs, StatementPath};

#[test]
fn demo_reaches_full_trace_completeness_on_every_path() {
    let dir = std::env::temp_dir().join(format!("sqlcommenter-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.html");
    let args = DemoArgs { report: report.clone(), requests: 2, slow_ms: 200, ..DemoArgs::default() };
    let mut out = Vec::new();
    let outcome = sqlcommenter_demo::run_to(args, &mut out);
    let printed = String::from_utf8_lossy(&out).into_owned();
    println!("{printed}");
    let outcome = outcome.unwrap();

    // Every path and both transaction states ran and reached 100 % in the log and in the exported spans.
    for path in StatementPath::ALL {
        for in_tx in [false, true] {
            let p = outcome.paths.iter().find(|p| p.path == path && p.in_tx == in_tx);
            let p = p.unwrap_or_else(|| panic!("{path:?} in_tx={in_tx} did not run"));
            assert!(p.ran > 0);
            assert!(p.complete(), "{p:?}");
        }
    }
    assert!(outcome.passed());
    assert!(printed.contains("every path reached 100 %"));

    // The printed trace: its statements, with the slow one and its plan.
    let trace = outcome.trace_id.clone().expect("a showcase trace");
    assert!(printed.contains(&format!("trace {trace}")));
    assert!(printed.contains("pg_sleep"), "the slow statement is in the tree");
    assert!(printed.contains("auto_explain plan"), "its plan was logged by auto_explain and attached");
    assert!(printed.contains("Propagation gaps") && printed.contains("psql"), "gap report shows the untraced setup");

    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains(&trace), "the report links the trace");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_path_without_a_logged_carrier_falls_short() {
    // The proxy's carrier for named statements switched off: those executions reach the server without
    // context, unless the session's startup application_name carries one (the batch job). The demo must see
    // that in the server log and fail; the other paths stay complete.
    let report = std::env::temp_dir().join(format!("sqlcommenter-demo-off-{}.html", std::process::id()));
    let args = DemoArgs {
        report: report.clone(),
        requests: 2,
        slow_ms: 20,
        proxy_carrier: "off".into(),
        ..DemoArgs::default()
    };
    let mut out = Vec::new();
    let outcome = sqlcommenter_demo::run_to(args, &mut out).unwrap();
    let printed = String::from_utf8_lossy(&out).into_owned();
    assert!(!outcome.passed(), "{printed}");
    assert!(printed.contains("FAILED") && printed.contains("below 100 %"), "{printed}");
    for p in &outcome.paths {
        match p.path {
            StatementPath::ProxyPrepared | StatementPath::ProxyCopy => {
                // 2 requests via SET (missed) + 1 batch job via startup application_name (found), per tx state.
                assert_eq!((p.ran, p.in_log), (3, 1), "{p:?}");
                assert!(!p.complete());
            }
            _ => assert!(p.complete(), "{p:?}"),
        }
    }
    let _ = std::fs::remove_file(report);
}

#[test]
fn missing_postgres_binaries_give_one_clear_message() {
    // Re-runs this test binary with PG_BINDIR pointing nowhere (the harness honours it and refuses to guess),
    // so the real lookup fails in a separate process.
    if std::env::var_os("SQLCOMMENTER_DEMO_CHILD").is_some() {
        let report = std::env::temp_dir().join(format!("sqlcommenter-demo-missing-{}.html", std::process::id()));
        let err =
            sqlcommenter_demo::run_to(DemoArgs { report: report.clone(), ..DemoArgs::default() }, &mut Vec::new())
                .unwrap_err();
        assert!(!report.exists());
        println!("DEMO-ERROR: {err}");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["missing_postgres_binaries_give_one_clear_message", "--exact", "--nocapture", "--test-threads=1"])
        .env("SQLCOMMENTER_DEMO_CHILD", "1")
        .env(sqlcommenter_testpg::PG_BINDIR_ENV, "/nonexistent/postgresql/bin")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.split("DEMO-ERROR: ").nth(1).and_then(|s| s.lines().next()).expect("the child printed its error");
    assert!(line.contains("apt-get install postgresql"), "{line}");
    assert!(line.contains("PG_BINDIR=/nonexistent/postgresql/bin"), "{line}");
}

#[test]
fn otlp_export_sends_the_application_spans_and_the_database_statements() {
    // In a child process (the OTLP variables are process-wide), against a local OTLP/HTTP receiver.
    if std::env::var_os("SQLCOMMENTER_DEMO_OTLP_CHILD").is_some() {
        let report = std::env::temp_dir().join(format!("sqlcommenter-demo-otlp-{}.html", std::process::id()));
        let args = DemoArgs { report: report.clone(), requests: 1, slow_ms: 20, ..DemoArgs::default() };
        let outcome = sqlcommenter_demo::run_to(args, &mut Vec::new()).unwrap();
        let _ = std::fs::remove_file(report);
        println!("DEMO-OTLP: {} {}", outcome.trace_id.unwrap(), outcome.otlp_statements.unwrap());
        return;
    }
    let (endpoint, received) = common::otlp_receiver();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["otlp_export_sends_the_application_spans_and_the_database_statements", "--exact", "--nocapture"])
        .env("SQLCOMMENTER_DEMO_OTLP_CHILD", "1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env_remove("OTEL_SERVICE_NAME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.split("DEMO-OTLP: ").nth(1).and_then(|s| s.lines().next()).expect("child result");
    let (trace, n) = line.split_once(' ').unwrap();
    assert!(n.parse::<u64>().unwrap() > 10, "statements exported: {n}");
    assert!(received.requests() >= 2, "one batch of application spans, one of statements");
    // The same trace arrives from both exporters: the application's spans and the statements' spans.
    let trace = common::hex_bytes(trace);
    assert!(received.one_contains_all(&[&trace, b"sqlcommenter-demo", b"slow_report"]), "application spans");
    assert!(received.one_contains_all(&[&trace, b"postgresql", b"pg_sleep"]), "the slow statement as a span");
}

#[test]
fn ctrl_c_stops_the_run_and_removes_the_cluster() {
    // The child runs the demo with a long slow statement; the parent sends SIGINT once the workload runs.
    if let Some(scratch) = std::env::var_os("SQLCOMMENTER_DEMO_SIGINT_CHILD") {
        let report = std::env::temp_dir().join(format!("sqlcommenter-demo-sigint-{}.html", std::process::id()));
        let args = DemoArgs { report: report.clone(), requests: 1, slow_ms: 20_000, ..DemoArgs::default() };
        let err = sqlcommenter_demo::run(args).unwrap_err();
        // Still running, so the harness's exit watchdog has not cleaned anything: what is gone, Drop removed.
        let prefix = format!("pgh-{}-", std::process::id());
        let left: Vec<String> = std::fs::read_dir(&scratch)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        println!("DEMO-SIGINT: {err} | left: {left:?} | report: {}", report.exists());
        return;
    }
    let scratch = std::env::temp_dir().join(format!("sqlc-sigint-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    // The cluster runs as `postgres` when the tests run as root: it must be able to enter the directory.
    std::process::Command::new("chmod").arg("1777").arg(&scratch).status().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["ctrl_c_stops_the_run_and_removes_the_cluster", "--exact", "--nocapture"])
        .env("SQLCOMMENTER_DEMO_SIGINT_CHILD", &scratch)
        .env(sqlcommenter_testpg::SCRATCH_ENV, &scratch)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("Running the traced workload") {
            break;
        }
    }
    assert!(seen.contains("Running the traced workload"), "{seen}");
    // Into the workload (the slow statement takes 20 s), then Ctrl-C.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(child.wait().unwrap().success());
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "stopped promptly, not after the 20 s statement");
    let result = rest.iter().find_map(|l| l.split("DEMO-SIGINT: ").nth(1)).unwrap_or_else(|| panic!("{rest:?}"));
    assert!(result.starts_with("interrupted"), "{result}");
    // Only the per-process initdb template remains (removed by the harness at exit); the cluster is gone.
    let left = result.split("left: ").nth(1).unwrap();
    assert_eq!(left.matches("pgh-").count(), 1, "{result}");
    assert!(result.ends_with("report: false"));
    let _ = std::fs::remove_dir_all(&scratch);
}
