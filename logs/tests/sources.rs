//! Every `--source` on a fixture in its documented format. No syslog daemon or managed service runs
//! here, so these lines are constructed (by `fixtures/sources/README.md`'s rules): syslog exactly as RFC
//! 3164/5424 and PostgreSQL's `write_syslog` (sequence numbers, pieces cut at newlines and at 900 bytes on
//! a space, rsyslog's `#011` escapes), logplex as `heroku logs` prints it, CloudNativePG, Cloud Logging and
//! Azure diagnostic records with their documented fields. The same six entries are in each: a statement
//! with a sqlcommenter comment, an `execute` whose `application_name` is a bare traceparent, a multi-line
//! statement under `name@traceparent`, a statement longer than a syslog piece, an error with its
//! STATEMENT, and a checkpoint; plus lines of other programs where the format has them.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use sqlcommenter_logs::{
    detect, parse_file_with, InputFormat, Kind, LogsArgs, Prefix, ReadOptions, Source, Statement, Zones,
};

const TP1: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TP2: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TP3: &str = "00-5bf92f3577b34da6a3ce929d0e0e4737-10f067aa0ba902b8-01";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sources").join(name)
}

fn long_query() -> String {
    let cols: Vec<String> = (0..60).map(|i| format!("{i} as column_number_{i}")).collect();
    format!("select {}", cols.join(", "))
}

struct Case {
    file: &'static str,
    format: InputFormat,
    prefix: Option<&'static str>,
    /// The log carries application_name (the services with a fixed prefix without `%a` do not).
    app_name: bool,
    foreign: u64,
}

const CASES: [Case; 8] = [
    Case {
        file: "syslog-rfc3164.log",
        format: InputFormat::Syslog,
        prefix: Some("%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h "),
        app_name: true,
        foreign: 4,
    },
    Case {
        file: "syslog-rfc5424.log",
        format: InputFormat::Syslog,
        prefix: Some("user=%u,db=%d,app=%a "),
        app_name: true,
        foreign: 0,
    },
    Case { file: "logplex.log", format: InputFormat::Logplex, prefix: None, app_name: false, foreign: 2 },
    Case { file: "cnpg.jsonl", format: InputFormat::Cnpg, prefix: None, app_name: true, foreign: 2 },
    Case { file: "cloudsql.json", format: InputFormat::CloudSql, prefix: None, app_name: false, foreign: 1 },
    Case {
        file: "azure-flexible.json",
        format: InputFormat::Azure,
        prefix: Some("%m [%p] [user=%u,db=%d,app=%a] "),
        app_name: true,
        foreign: 1,
    },
    Case { file: "azure-single.jsonl", format: InputFormat::Azure, prefix: None, app_name: false, foreign: 0 },
    // `--source rds` in the follow test; read here with the prefix it stands for
    Case {
        file: "rds.log",
        format: InputFormat::Stderr,
        prefix: Some(sqlcommenter_logs::parser::RDS_PREFIX),
        app_name: false,
        foreign: 0,
    },
];

fn opts(case: &Case, source: Option<InputFormat>) -> ReadOptions {
    ReadOptions { source, prefix: case.prefix.map(|p| Prefix::new(p).unwrap()), zones: Zones::new() }
}

fn find<'a>(stmts: &'a [Statement], needle: &str, label: &str) -> &'a Statement {
    stmts.iter().find(|s| s.query.contains(needle)).unwrap_or_else(|| panic!("{label}: no {needle:?} in {stmts:#?}"))
}

#[test]
fn every_source_reads_its_fixture() {
    for case in &CASES {
        let label = case.file;
        let path = fixture(case.file);
        let (stmts, stats) = parse_file_with(&path, opts(case, None)).unwrap();
        let (forced, _) = parse_file_with(&path, opts(case, Some(case.format))).unwrap();
        assert_eq!(stmts, forced, "{label}: detection reads it as --source {}", case.format.name());
        assert_eq!(stats.parse.unknown, 0, "{label}: unknown lines");
        assert_eq!(stats.parse.foreign, case.foreign, "{label}: foreign lines");

        // Statement count, total and maximum duration.
        assert_eq!(stmts.len(), 5, "{label}: {stmts:#?}");
        let timed: Vec<f64> = stmts.iter().filter_map(|s| s.duration_ms).collect();
        assert_eq!(timed.len(), 4, "{label}");
        assert!((timed.iter().sum::<f64>() - 116.625).abs() < 1e-9, "{label}: total {timed:?}");
        assert_eq!(timed.iter().copied().fold(0.0, f64::max), 100.125, "{label}: max");

        // Trace context from the comment.
        let commented = find(&stmts, "from orders", label);
        assert_eq!(commented.source, Source::Comment, "{label}");
        assert_eq!(commented.context.as_ref().unwrap().traceparent.to_string(), TP1, "{label}");
        assert_eq!(commented.tags.get("route").map(String::as_str), Some("/orders"), "{label}");
        assert_eq!(
            sqlcommenter_logs::time::format_rfc3339(commented.time_us.unwrap()).get(..19),
            Some("2026-11-30T14:39:10"),
            "{label}"
        );

        // Trace context from application_name: bare and `name@traceparent`.
        let exec = find(&stmts, "select name from items", label);
        assert_eq!(
            (exec.kind, exec.name.as_str(), exec.parameters.as_str()),
            (Kind::Execute, "s1", "$1 = '7'"),
            "{label}"
        );
        let multi = find(&stmts, "select count(*)", label);
        assert_eq!(multi.query, "select count(*)\nfrom items\nwhere name like 'a%'", "{label}");
        if case.app_name {
            assert_eq!(exec.source, Source::ApplicationName, "{label}: {exec:#?}");
            assert_eq!(exec.context.as_ref().unwrap().traceparent.to_string(), TP2, "{label}");
            assert_eq!(multi.source, Source::ApplicationName, "{label}");
            assert_eq!(multi.context.as_ref().unwrap().traceparent.to_string(), TP3, "{label}");
            assert_eq!(sqlcommenter::carrier::strip_carrier(&multi.application_name), "checkout", "{label}");
        } else {
            assert!(exec.context.is_none() && multi.context.is_none(), "{label}");
        }

        let long = find(&stmts, "column_number_59", label);
        assert_eq!(long.query, long_query(), "{label}: the pieces of a long line joined back");
        assert!(long.context.is_none(), "{label}");
        let err = find(&stmts, "select 1/0", label);
        let e = err.error.as_ref().unwrap();
        assert_eq!((e.message.as_str(), err.duration_ms), ("division by zero", None), "{label}");
        // SQLSTATE where the source logs it (`%e`, a column or property)
        let code = matches!(case.file, "logplex.log" | "cnpg.jsonl" | "azure-flexible.json").then_some("22012");
        assert_eq!(e.sql_state.as_deref(), code, "{label}");
    }
}

#[test]
fn detection_says_what_it_tried() {
    for case in &CASES {
        let head = std::fs::read(fixture(case.file)).unwrap();
        let prefix = Prefix::new(case.prefix.unwrap_or("%m [%p] ")).unwrap();
        let d = detect(&head, &prefix, &Zones::new());
        assert_eq!((d.format, d.doubt), (case.format, None), "{}", case.file);
    }
    let d = detect(b"hello\nthis is not a log\n", &Prefix::new("%m [%p] ").unwrap(), &Zones::new());
    assert_eq!(d.format, InputFormat::Stderr);
    let doubt = d.doubt.unwrap();
    assert!(doubt.contains("syslog") && doubt.contains("--source") && doubt.contains("--prefix"), "{doubt}");
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LogsArgs,
}

/// `--follow` on every source: the file grows in two halves (the second cut mid-entry for the JSON
/// sources), and every statement comes out.
#[test]
fn follow_reads_every_source_as_it_grows() {
    let dir = std::env::temp_dir().join(format!("sqlc-logs-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for case in &CASES {
        let text = std::fs::read_to_string(fixture(case.file)).unwrap();
        let path = dir.join(case.file);
        let cut = text[..text.len() / 2].rfind('\n').map_or(0, |p| p + 1);
        std::fs::write(&path, &text[..cut]).unwrap();
        let rds = case.file == "rds.log";
        let mut argv = vec![
            "logs".to_owned(),
            path.display().to_string(),
            "--follow".into(),
            "--from-start".into(),
            "--format".into(),
            "jsonl".into(),
            "--source".into(),
            if rds { "rds".into() } else { case.format.name().into() },
        ];
        if let (Some(p), false) = (case.prefix, rds) {
            argv.extend(["--prefix".to_owned(), p.to_owned()]);
        }
        let args = Cli::parse_from(argv).args;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let follower = std::thread::spawn(move || sqlcommenter_logs::run_until(args, &flag).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, &text.as_bytes()[cut..]).unwrap();
        std::thread::sleep(Duration::from_millis(900));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let stats = follower.join().unwrap();
        assert_eq!(stats.assemble.statements, 5, "{}", case.file);
        assert_eq!(stats.parse.unknown, 0, "{}", case.file);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
