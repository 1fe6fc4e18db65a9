//! The CLI's outputs on a real server's log: the HTML report checked in headless Chromium, OTLP spans
//! received by an OTLP/HTTP endpoint and decoded, and the JSON lines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use sqlcommenter_logs::{parse_file, LogsArgs, Prefix};
use sqlcommenter_testpg::{Cluster, LogFormat, LogKind};

mod common;
use common::{run_workload, tp, trace_hex};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LogsArgs,
}

fn args(argv: &[&str]) -> LogsArgs {
    Cli::parse_from(std::iter::once("logs").chain(argv.iter().copied())).args
}

fn server_log() -> (Cluster, PathBuf) {
    let pg = Cluster::builder()
        .setting("log_min_duration_statement", "0")
        .setting("auto_explain.log_min_duration", "0")
        .setting("auto_explain.log_analyze", "on")
        .preload(&["auto_explain"])
        .log_format(LogFormat::Json)
        .start()
        .unwrap();
    run_workload(&pg);
    pg.wait_for_log_for(LogKind::Json, "workload-end", Duration::from_secs(15)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let path = pg.log_file_for(LogKind::Json);
    (pg, path)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sqlc-logs-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn find_chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|b| {
        let out = Command::new("sh").arg("-c").arg(format!("command -v {b}")).output().ok()?;
        out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

fn chromium(bin: &Path, extra: &[&str], file: &Path) -> std::process::Output {
    Command::new(bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(extra)
        .arg(format!("file://{}", file.display()))
        .output()
        .unwrap()
}

#[test]
fn html_report_in_headless_chromium() {
    let Some(bin) = find_chromium() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium is required under CI=true (apt-get install chromium)");
        }
        eprintln!("SKIPPED: chromium not installed");
        return;
    };
    let (_pg, log) = server_log();
    let html = tmp("report.html");
    let a = args(&[
        log.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--gaps",
        "--trace-url-template",
        "http://localhost:16686/trace/{trace_id}",
        "--no-progress",
    ]);
    sqlcommenter_logs::run(a).unwrap();

    let out = chromium(&bin, &["--dump-dom"], &html);
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    let dom = String::from_utf8_lossy(&out.stdout);
    // Charts parsed as SVG with data in them.
    assert!(dom.contains("<svg id=\"chart-time\""), "time chart");
    assert!(dom.contains("class=\"dot series-max\""), "time series points");
    assert!(dom.contains("<svg id=\"chart-top\"") && dom.contains("class=\"bar\""), "top-queries chart");
    // The slow statement's group links its trace through the template.
    let slow = trace_hex(9).max(trace_hex(3));
    assert!(
        dom.contains(&format!("href=\"http://localhost:16686/trace/{}\"", trace_hex(3)))
            || dom.contains(&format!("href=\"http://localhost:16686/trace/{slow}\"")),
        "exemplar trace link"
    );
    assert!(dom.contains("pg_sleep(?)"), "normalized slow query in the table");
    // Gap tables: the workload's application, plus the psql session that created the database.
    assert!(dom.contains("data-dimension=\"application_name\""));
    assert!(dom.contains(">workload<"), "workload in the gap table");
    assert!(!dom.contains(">workloa<"), "carrier-cut name counted under the full name");
    assert!(dom.contains("class=\"point\""), "time chart points");
    assert!(dom.contains("class=\"rate\"") && dom.contains("class=\"series-p95\""), "statements/s bars, p95 line");
    // The slowest traces as waterfalls: the pg_sleep traces first, each statement with its plan nodes.
    let wf =
        dom.find(&format!("class=\"waterfall\" data-trace-id=\"{}\"", trace_hex(3))).expect("waterfall of trace 3");
    let wf = &dom[wf..];
    let wf = &wf[..wf.find("</svg>").unwrap()];
    assert!(wf.contains("class=\"step\"") && wf.contains("pg_sleep"), "its statement row");
    assert!(wf.contains("class=\"plan-node\"") && wf.contains("↳ Result"), "its plan node row");
    assert!(dom.contains(">psql<"), "psql (no context) in the gap table");
    let count: u64 = {
        let i = dom.find("id=\"statement-count\">").unwrap() + "id=\"statement-count\">".len();
        dom[i..dom[i..].find('<').unwrap() + i].parse().unwrap()
    };
    assert!(count > 20, "statement count {count}");

    let png = tmp("report.png");
    let out = chromium(&bin, &[&format!("--screenshot={}", png.display()), "--window-size=1280,2400"], &html);
    assert!(out.status.success(), "chromium screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "screenshot is a real PNG ({} bytes)", bytes.len());
    if let Ok(dir) = std::env::var("SQLC_LOGS_KEEP_REPORT") {
        std::fs::copy(&html, Path::new(&dir).join("report.html")).unwrap();
        std::fs::copy(&png, Path::new(&dir).join("report.png")).unwrap();
    }
}

/// A minimal OTLP/HTTP receiver: decodes every POST body as an ExportTraceServiceRequest.
fn otlp_receiver() -> (String, Arc<Mutex<Vec<ExportTraceServiceRequest>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        reader.read_line(&mut line).unwrap();
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    sink.lock().unwrap().push(ExportTraceServiceRequest::decode(&body[..]).unwrap());
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    )
                    .unwrap();
                }
            });
        }
    });
    (format!("http://{addr}/v1/traces"), got)
}

#[test]
fn otlp_spans_under_each_traceparent() {
    let (_pg, log) = server_log();
    let (endpoint, got) = otlp_receiver();
    // Only this test in this binary reads OTEL_* variables.
    std::env::set_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint);
    std::env::set_var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf");
    sqlcommenter_logs::run(args(&[log.to_str().unwrap(), "--otlp", "--no-progress", "--limit", "3"])).unwrap();

    let (stmts, _) = parse_file(&log, None, &Prefix::new("%m [%p] ").unwrap()).unwrap();
    let expected: Vec<_> = stmts.iter().filter(|s| s.context.is_some() && !s.carrier).collect();
    let reqs = got.lock().unwrap();
    let all: Vec<_> =
        reqs.iter().flat_map(|r| &r.resource_spans).flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).collect();
    let attr = |s: &opentelemetry_proto::tonic::trace::v1::Span, k: &str| {
        s.attributes.iter().find(|a| a.key == k).and_then(|a| a.value.as_ref()?.value.clone())
    };
    // Statement spans, and plan-node spans below them.
    type Span = opentelemetry_proto::tonic::trace::v1::Span;
    let (spans, plan_spans): (Vec<&Span>, Vec<&Span>) =
        all.iter().copied().partition(|s| attr(s, "db.system.name").is_some());
    assert_eq!(spans.len(), expected.len(), "one span per correlated statement");
    for step in [1u32, 2, 3] {
        let t = tp(step);
        let mine: Vec<_> = spans.iter().filter(|s| s.trace_id == t.trace_id()).collect();
        assert!(!mine.is_empty(), "spans for step {step}");
        for s in &mine {
            assert_eq!(s.parent_span_id, t.parent_id().to_vec(), "parent = the traceparent's span");
            assert_eq!(attr(s, "db.system.name"), Some(Value::StringValue("postgresql".into())));
            assert_eq!(attr(s, "db.namespace"), Some(Value::StringValue("work".into())));
            assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
        }
    }
    let slow = spans
        .iter()
        .find(|s| {
            s.trace_id == tp(3).trace_id() && matches!(attr(s, "db.postgresql.plan"), Some(Value::StringValue(_)))
        })
        .expect("auto_explain plan on the slow statement's span");
    let dur_ms = (slow.end_time_unix_nano - slow.start_time_unix_nano) as f64 / 1e6;
    assert!(dur_ms >= 60.0, "span covers the statement's duration ({dur_ms} ms)");
    assert_eq!(attr(slow, "db.operation.name"), Some(Value::StringValue("SELECT".into())));
    // Its plan as child spans: the Result node that slept, with rows and loops from log_analyze.
    let nodes: Vec<_> = plan_spans.iter().filter(|p| p.parent_span_id == slow.span_id).collect();
    let result = nodes
        .iter()
        .find(|p| attr(p, "db.postgresql.plan.node_type") == Some(Value::StringValue("Result".into())))
        .unwrap_or_else(|| panic!("plan node spans under the slow statement: {nodes:#?}"));
    assert_eq!(result.trace_id, tp(3).trace_id().to_vec());
    assert_eq!(attr(result, "db.postgresql.plan.rows"), Some(Value::DoubleValue(1.0)));
    assert_eq!(attr(result, "db.postgresql.plan.loops"), Some(Value::DoubleValue(1.0)));
    let node_ms = (result.end_time_unix_nano - result.start_time_unix_nano) as f64 / 1e6;
    assert!((55.0..=dur_ms).contains(&node_ms), "the node's own time ({node_ms} ms of {dur_ms} ms)");
    assert!(
        result.start_time_unix_nano >= slow.start_time_unix_nano
            && result.end_time_unix_nano <= slow.end_time_unix_nano
    );
    // Every plan span hangs under a statement span or another plan span of the same trace.
    for p in &plan_spans {
        assert!(all.iter().any(|s| s.span_id == p.parent_span_id && s.trace_id == p.trace_id), "{p:#?}");
    }
    // Span names by the database semantic conventions: `{db.query.summary}`.
    let named = spans
        .iter()
        .find(|s| matches!(attr(s, "db.query.text"), Some(Value::StringValue(q)) if q.starts_with("select name from items")))
        .expect("the named prepared statement's span");
    assert_eq!(named.name, "SELECT items");
    assert_eq!(attr(named, "db.query.summary"), Some(Value::StringValue("SELECT items".into())));
    let failed = spans
        .iter()
        .find(|s| matches!(attr(s, "db.query.text"), Some(Value::StringValue(q)) if q.contains("/ (id - id)")))
        .expect("the failed statement's span");
    assert_eq!(attr(failed, "db.response.status_code"), Some(Value::StringValue("22012".into())));
    let service =
        reqs[0].resource_spans[0].resource.as_ref().unwrap().attributes.iter().find(|a| a.key == "service.name");
    assert!(service.is_some());
}

#[test]
fn jsonl_fields() {
    let (_pg, log) = server_log();
    let (stmts, _) = parse_file(&log, None, &Prefix::new("%m [%p] ").unwrap()).unwrap();
    let mut buf = Vec::new();
    let mut times = sqlcommenter_logs::output::TimeFormatter::default();
    for st in &stmts {
        sqlcommenter_logs::output::write_json(st, &mut buf, &mut times);
        buf.push(b'\n');
    }
    let rows: Vec<serde_json::Value> =
        buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    assert_eq!(rows.len(), stmts.len());
    let slow =
        rows.iter().find(|r| r["query"].as_str().unwrap().contains("pg_sleep") && r["kind"] == "simple").unwrap();
    assert_eq!(slow["trace_id"], trace_hex(3));
    assert_eq!(slow["parent_span_id"], tp(3).parent_id_hex());
    assert_eq!(slow["sampled"], true);
    assert_eq!(slow["context_source"], "comment");
    assert_eq!(slow["tags"]["route"], "/orders");
    assert_eq!(slow["database"], "work");
    assert!(slow["duration_ms"].as_f64().unwrap() >= 60.0);
    assert!(slow["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(slow["pid"].as_u64().is_some());
    let carried = rows.iter().find(|r| r["context_source"] == "application_name").unwrap();
    assert_eq!(carried["trace_id"], trace_hex(2));
    for key in [
        "timestamp",
        "duration_ms",
        "query",
        "trace_id",
        "parent_span_id",
        "sampled",
        "tags",
        "application_name",
        "user",
        "database",
        "pid",
        "kind",
        "context_source",
    ] {
        assert!(rows.iter().all(|r| r.get(key).is_some()), "{key} in every row");
    }
}

#[test]
fn follow_reads_a_growing_server_log() {
    let prefix = "%m [%p] %q%u@%d %a ";
    let pg = Cluster::builder()
        .setting("log_min_duration_statement", "0")
        .log_format(LogFormat::Stderr { prefix: prefix.into() })
        .start()
        .unwrap();
    let path = pg.log_file_for(LogKind::Stderr);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = args(&[path.to_str().unwrap(), "--follow", "--prefix", prefix, "--format", "jsonl"]);
    let flag = stop.clone();
    let follower = std::thread::spawn(move || sqlcommenter_logs::run_until(a, &flag).unwrap());
    std::thread::sleep(Duration::from_millis(500));
    run_workload(&pg);
    pg.wait_for_log_for(LogKind::Stderr, "workload-end", Duration::from_secs(15)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let stats = follower.join().unwrap();
    // Started at the end of the file: it saw the workload (and not the startup lines before it).
    let (all, _) = parse_file(&path, None, &Prefix::new(prefix).unwrap()).unwrap();
    let workload = all.iter().filter(|s| s.query.contains("'step-") || s.query.contains("workload-end")).count();
    assert!(stats.assemble.statements as usize >= workload, "{} < {workload}", stats.assemble.statements);
    assert!((stats.assemble.statements as usize) <= all.len());
    assert_eq!(stats.parse.unknown, 0);
}
