//! Logs written by a real PostgreSQL 15 (through the test harness) for a workload with sqlcommenter
//! comments, named prepared statements with `application_name` carriers, errors, multi-line statements and
//! auto_explain — in stderr (several prefixes), csvlog and jsonlog. Every workload statement must come out
//! with the trace id the workload used and a plausible duration.

use std::time::Duration;

use sqlcommenter::carrier;
use sqlcommenter_logs::{parse_file, InputFormat, Kind, Prefix, Source, Statement};
use sqlcommenter_testpg::{Cluster, LogFormat, LogKind};

mod common;
use common::{run_workload, tp, trace_hex, APP, STEPS};

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
            let q = st.query.to_ascii_lowercase();
            assert!(q.starts_with("set application_name") || q.contains("set_config($1, $2"), "{label}: {st:?}");
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
            // The application's name back (`SET` or `RESET`) is not a carrier statement; `log_statement`
            // logs it before it runs, still under the carrier.
            None if st.query == format!("SET application_name = '{APP}'") || st.query == "RESET application_name" => {}
            None => assert!(st.context.is_none(), "{label}: unexpected context on {st:#?}"),
        }
        if st.error.is_none() && !(st.plan_format.is_some() && st.kind == Kind::Statement && st.duration_ms.is_none()) {
            let d = st.duration_ms.unwrap_or_else(|| panic!("{label}: no duration on {st:#?}"));
            assert!((0.0..10_000.0).contains(&d), "{label}: implausible duration {d} on {st:#?}");
            if st.query.contains("pg_sleep(0.06)") && st.plan.is_empty() {
                assert!(d >= 60.0, "{label}: pg_sleep(0.06) took {d} ms");
            }
        }
        if st.query.contains("1 / (id - id)") {
            let e = st.error.as_ref().unwrap_or_else(|| panic!("{label}: no error on {st:#?}"));
            assert!(e.sql_state.as_deref().is_none_or(|c| c == "22012"), "{label}: {st:#?}");
            assert!(e.message.contains("division by zero"), "{label}: {st:#?}");
        }
    }
    // `SET application_name = '<carrier>'` is a carrier statement; the reset to the plain name is not.
    assert!(carriers >= carried.len(), "{label}: carrier statements");
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
    // The same log gzipped reads the same.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let gz = std::env::temp_dir().join(format!("sqlc-logs-{}-{n}.gz", std::process::id()));
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &std::fs::read(&path).unwrap()).unwrap();
    enc.finish().unwrap();
    let (from_gz, _) = parse_file(&gz, None, &Prefix::new(prefix).unwrap()).unwrap();
    std::fs::remove_file(&gz).unwrap();
    assert_eq!(stmts, from_gz, "gzip input for {kind:?}");
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
    assert!(exec.session_id.as_ref().unwrap().contains('.'), "%c parsed");
    assert_eq!(exec.database.as_deref(), Some("work"));
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
    assert!(err.error.as_ref().unwrap().message.contains("division by zero"));

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
