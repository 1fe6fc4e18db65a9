//! Logs written by a real PostgreSQL 15 (through the test harness) for a workload with sqlcommenter
//! comments, named prepared statements with `application_name` carriers, errors, multi-line statements and
//! auto_explain — in stderr (several prefixes), csvlog and jsonlog. Every workload statement must come out
//! with the trace id the workload used and a plausible duration.

use std::time::Duration;

use sqlcommenter::{carrier, Commenter, TraceContext, TraceParent};
use sqlcommenter_logs::{parse_file, InputFormat, Kind, Prefix, Source, Statement};
use sqlcommenter_testpg::{Cluster, LogFormat, LogKind};

const APP: &str = "workload";
const STEPS: u32 = 12;

fn tp(step: u32) -> TraceParent {
    let mut trace = [0u8; 16];
    trace[0] = 0xab;
    trace[12..].copy_from_slice(&step.to_be_bytes());
    let mut parent = [0u8; 8];
    parent[0] = 0x11;
    parent[4..].copy_from_slice(&step.to_be_bytes());
    TraceParent::new(trace, parent, 1).unwrap()
}

fn trace_hex(step: u32) -> String {
    tp(step).trace_id_hex()
}

/// Runs the workload; returns the steps that went through the application_name carrier.
async fn workload(url: &str) -> Vec<u32> {
    let mut cfg: tokio_postgres::Config = url.parse().unwrap();
    cfg.application_name(APP);
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let commenter = Commenter::builder().tag("application", "checkout").tag("route", "/orders").build().unwrap();
    let ctx = |s: u32| TraceContext::new(tp(s));
    client.simple_query("create table if not exists items (id int primary key, name text)").await.unwrap();
    client
        .simple_query("insert into items select g, 'item ' || g from generate_series(1, 1000) g on conflict do nothing")
        .await
        .unwrap();
    // A named prepared statement, prepared once without context (its parse line carries none).
    let named = client.prepare("select name from items where id = $1").await.unwrap();
    let mut carried = Vec::new();
    for step in 1..=STEPS {
        match step % 6 {
            // simple protocol, appended comment
            0 => {
                let sql = format!("select 'step-{step}' as step, count(*) from items where id < {step}");
                client.simple_query(commenter.inject(&sql, Some(&ctx(step))).as_str()).await.unwrap();
            }
            // extended protocol, unnamed statement with a comment
            1 => {
                let sql = format!("select 'step-{step}' as step, name from items where id = $1");
                let q = commenter.inject(&sql, Some(&ctx(step)));
                client.query(q.as_str(), &[&(step as i32)]).await.unwrap();
            }
            // named prepared statement, context through application_name
            2 => {
                let carrier = carrier::encode_application_name(APP, &tp(step));
                client.simple_query(&format!("SET application_name = '{carrier}'")).await.unwrap();
                client.query(&named, &[&(step as i32)]).await.unwrap();
                client.simple_query(&format!("SET application_name = '{APP}'")).await.unwrap();
                carried.push(step);
            }
            // a slow one
            3 => {
                let sql = format!("select 'step-{step}' as step, pg_sleep(0.06)");
                client.simple_query(commenter.inject(&sql, Some(&ctx(step))).as_str()).await.unwrap();
            }
            // an error
            4 => {
                let sql = format!("select 'step-{step}' as step, 1 / (id - id) from items where id = 1");
                let err = client.simple_query(commenter.inject(&sql, Some(&ctx(step))).as_str()).await;
                assert!(err.is_err());
            }
            // multi-line
            _ => {
                let sql = format!("select 'step-{step}' as step,\n  count(*)\nfrom items\nwhere name like 'item 1%'");
                client.simple_query(commenter.inject(&sql, Some(&ctx(step))).as_str()).await.unwrap();
            }
        }
    }
    client.simple_query("select 'workload-end'").await.unwrap();
    carried
}

fn run_workload(pg: &Cluster) -> Vec<u32> {
    pg.create_database("work").unwrap();
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(workload(&pg.url("work")))
}

fn expected_step(st: &Statement) -> Option<u32> {
    if let Some(i) = st.query.find("'step-") {
        let rest = &st.query[i + 6..];
        let end = rest.find('\'').unwrap();
        return Some(rest[..end].parse().unwrap());
    }
    if let Some(p) = st.parameters.strip_prefix("$1 = '") {
        return Some(p.trim_end_matches('\'').parse().unwrap());
    }
    None
}

/// Asserts every workload statement's correlation; returns the workload statements.
fn check(stmts: &[Statement], carried: &[u32], label: &str) -> Vec<Statement> {
    // The carrier keeps as much of the client's name as fits next to the traceparent ("workloa@00-...").
    let ours = |app: &str| {
        let name = carrier::strip_carrier(app);
        !name.is_empty() && APP.starts_with(name)
    };
    let work: Vec<Statement> = stmts.iter().filter(|s| ours(&s.application_name)).cloned().collect();
    assert!(work.len() >= STEPS as usize, "{label}: only {} workload statements", work.len());
    let mut seen_steps = std::collections::BTreeSet::new();
    let mut carriers = 0;
    for st in &work {
        if st.carrier {
            carriers += 1;
            assert!(st.query.to_ascii_lowercase().starts_with("set application_name"), "{label}: {st:?}");
            continue;
        }
        let step = expected_step(st);
        match step {
            Some(step) => {
                seen_steps.insert(step);
                assert_eq!(st.trace_id(), Some(trace_hex(step)), "{label}: wrong trace for {st:#?}");
                let ctx = st.context.as_ref().unwrap();
                assert_eq!(ctx.traceparent, tp(step), "{label}: parent span id");
                if carried.contains(&step) {
                    assert_eq!(st.source, Source::ApplicationName, "{label}: {st:#?}");
                } else {
                    assert_eq!(st.source, Source::Comment, "{label}: {st:#?}");
                    assert_eq!(st.tags.get("route").map(String::as_str), Some("/orders"), "{label}");
                }
            }
            // `log_statement` logs the reset to the plain name before it runs, still under the carrier.
            None if st.query == format!("SET application_name = '{APP}'") => {}
            None => assert!(st.context.is_none(), "{label}: unexpected context on {st:#?}"),
        }
        if st.error.is_empty() && !(st.plan_format.is_some() && st.kind == Kind::Statement && st.duration_ms.is_none())
        {
            let d = st.duration_ms.unwrap_or_else(|| panic!("{label}: no duration on {st:#?}"));
            assert!((0.0..10_000.0).contains(&d), "{label}: implausible duration {d} on {st:#?}");
            if st.query.contains("pg_sleep(0.06)") && st.plan.is_empty() {
                assert!(d >= 60.0, "{label}: pg_sleep(0.06) took {d} ms");
            }
        }
        if st.query.contains("1 / (id - id)") {
            assert_eq!(st.sql_state.is_empty() || st.sql_state == "22012", true, "{label}: {st:#?}");
            assert!(st.error.contains("division by zero"), "{label}: {st:#?}");
        }
    }
    // `SET application_name = '<carrier>'` is a carrier statement; the reset to the plain name is not.
    assert_eq!(carriers, carried.len(), "{label}: carrier statements");
    assert_eq!(seen_steps, (1..=STEPS).collect(), "{label}: steps seen");
    work
}

fn statements(pg: &Cluster, kind: LogKind, format: InputFormat, prefix: &str) -> Vec<Statement> {
    pg.wait_for_log_for(kind, "workload-end", Duration::from_secs(15)).unwrap();
    // the collector writes asynchronously: give it a moment for the last lines
    std::thread::sleep(Duration::from_millis(300));
    let path = pg.log_file_for(kind);
    let (stmts, stats) = parse_file(&path, None, &Prefix::new(prefix).unwrap()).unwrap();
    let (forced, _) = parse_file(&path, Some(format), &Prefix::new(prefix).unwrap()).unwrap();
    assert_eq!(stmts, forced, "format detection for {kind:?}");
    assert_eq!(stats.parse.unknown, 0, "{kind:?}: unknown lines in a real server log");
    stmts
}

#[test]
fn all_formats_default_prefix_text_plans() {
    let prefix = "%m [%p] %q%u@%d %a ";
    let pg = Cluster::builder()
        .setting("log_min_duration_statement", "0")
        .setting("compute_query_id", "on")
        .setting("auto_explain.log_min_duration", "0")
        .setting("auto_explain.log_format", "text")
        .preload(&["auto_explain"])
        .log_format(LogFormat::Stderr { prefix: prefix.into() })
        .log_format(LogFormat::Csv)
        .log_format(LogFormat::Json)
        .start()
        .unwrap();
    let carried = run_workload(&pg);
    let mut per_format = Vec::new();
    for (kind, format) in
        [(LogKind::Stderr, InputFormat::Stderr), (LogKind::Csv, InputFormat::Csv), (LogKind::Json, InputFormat::Json)]
    {
        let stmts = statements(&pg, kind, format, prefix);
        let work = check(&stmts, &carried, &format!("{kind:?}"));
        let kinds: std::collections::BTreeSet<Kind> = work.iter().map(|s| s.kind).collect();
        for k in [Kind::Simple, Kind::Parse, Kind::Bind, Kind::Execute] {
            assert!(kinds.contains(&k), "{kind:?}: no {k:?} statement");
        }
        let slow = work.iter().find(|s| s.query.contains("pg_sleep(0.06)") && s.kind == Kind::Simple).unwrap();
        assert!(slow.plan.contains("Query Text:"), "{kind:?}: auto_explain plan attached: {slow:#?}");
        assert!(work.iter().any(|s| s.query.contains("\n  count(*)\nfrom items")), "{kind:?}: multi-line kept");
        let named =
            work.iter().find(|s| s.kind == Kind::Execute && s.query == "select name from items where id = $1").unwrap();
        assert_eq!(named.source, Source::ApplicationName);
        if kind != LogKind::Stderr {
            assert!(work.iter().any(|s| s.query_id.is_some()), "{kind:?}: query_id");
        }
        per_format.push(
            work.iter()
                .filter(|s| !s.carrier)
                .map(|s| (s.kind, s.trace_id(), s.query.clone(), s.duration_ms))
                .collect::<Vec<_>>(),
        );
    }
    // The three formats describe the same run: same statements, same traces, same durations.
    assert_eq!(per_format[0], per_format[1], "stderr vs csvlog");
    assert_eq!(per_format[0], per_format[2], "stderr vs jsonlog");
}

#[test]
fn many_escapes_prefix_with_query_id() {
    let prefix = "%t:%r:%u@%d:[%p]:%c:%l:%e:%v:%x:%Q:%i:%b:%a:%s: ";
    let pg = Cluster::builder()
        .setting("log_min_duration_statement", "0")
        .setting("compute_query_id", "on")
        .log_format(LogFormat::Stderr { prefix: prefix.into() })
        .start()
        .unwrap();
    let carried = run_workload(&pg);
    let stmts = statements(&pg, LogKind::Stderr, InputFormat::Stderr, prefix);
    let work = check(&stmts, &carried, "escapes prefix");
    let exec = work.iter().find(|s| s.kind == Kind::Execute).unwrap();
    assert!(exec.query_id.is_some(), "%Q parsed: {exec:#?}");
    assert!(exec.session_id.contains('.'), "%c parsed");
    assert_eq!(exec.database, "work");
}

#[test]
fn log_statement_with_log_duration_app_with_spaces_json_plans() {
    // application_name with spaces in the middle of the prefix; `log_statement` + `log_duration` pairing;
    // auto_explain in JSON.
    let prefix = "%n|%a|%p|%Q| ";
    let pg = Cluster::builder()
        .setting("log_statement", "all")
        .setting("log_duration", "on")
        .setting("compute_query_id", "on")
        .setting("auto_explain.log_min_duration", "0")
        .setting("auto_explain.log_format", "json")
        .preload(&["auto_explain"])
        .log_format(LogFormat::Stderr { prefix: prefix.into() })
        .start()
        .unwrap();
    let carried = run_workload(&pg);
    let stmts = statements(&pg, LogKind::Stderr, InputFormat::Stderr, prefix);
    let work = check(&stmts, &carried, "log_statement");
    assert!(work.iter().all(|s| matches!(s.kind, Kind::Statement | Kind::Execute)), "log_statement kinds");
    let slow = work.iter().find(|s| s.query.contains("pg_sleep(0.06)")).unwrap();
    assert!(slow.duration_ms.unwrap() >= 60.0, "paired duration: {slow:#?}");
    assert_eq!(slow.plan_format, Some(sqlcommenter_logs::PlanFormat::Json), "{slow:#?}");
    let err = work.iter().find(|s| s.query.contains("1 / (id - id)")).unwrap();
    assert!(err.error.contains("division by zero"));

    // An application_name with spaces, and a carrier after a name with spaces.
    let before = pg.read_log().len();
    pg.psql(&["-d", "work", "-c", "SET application_name = 'my shop app'", "-c", "select 'spaced-app'"]).unwrap();
    let log = pg.wait_for_log("spaced-app", Duration::from_secs(10)).unwrap();
    let (stmts, stats) =
        sqlcommenter_logs::parse_str(&log[before..], Some(InputFormat::Stderr), &Prefix::new(prefix).unwrap());
    assert_eq!(stats.parse.unknown, 0, "{}", &log[before..]);
    let st = stmts.iter().find(|s| s.query.contains("spaced-app")).unwrap();
    assert_eq!(st.application_name, "my shop app");
}
