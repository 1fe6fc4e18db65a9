//! `--headless --otlp --prometheus` against the blocking scenario: the log records a real OTLP/HTTP
//! receiver decodes (with opentelemetry-proto) carry the scenario's trace ids, the lock wait names both
//! traces, and the Prometheus endpoint counts states, waits and samples with and without context.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use tokio::io::AsyncBufReadExt;

type Received = Arc<Mutex<Vec<ExportLogsServiceRequest>>>;

/// A minimal OTLP/HTTP receiver: every POST body decoded as an ExportLogsServiceRequest.
fn otlp_receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Received = Arc::default();
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    assert!(line.starts_with("POST /v1/logs "), "{line}");
                    let mut len = 0usize;
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
                    sink.lock().unwrap().push(ExportLogsServiceRequest::decode(&body[..]).unwrap());
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    )
                    .unwrap();
                }
            });
        }
    });
    (format!("http://{addr}"), got)
}

fn records(got: &Received) -> Vec<LogRecord> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| sl.log_records.iter().cloned())
        .collect()
}

fn attr(r: &LogRecord, key: &str) -> Option<Value> {
    r.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()?.value)
}

fn s(v: &str) -> Option<Value> {
    Some(Value::StringValue(v.to_owned()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn scrape(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_records_and_prometheus_metrics() {
    let pg = cluster();
    let sc = start(&pg).await;
    let (endpoint, got) = otlp_receiver();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sqlcommenter-top"))
        .args(["--headless", "--interval", "0.2", "--otlp", "--lock-threshold", "0.5", "--prometheus", "127.0.0.1:0"])
        .arg(pg.keyword_conn_str("postgres"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BLRP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_SERVICE_NAME")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), stderr.next_line()).await.unwrap().unwrap().unwrap();
    let metrics_addr = first
        .strip_prefix("sqlcommenter top: Prometheus metrics on http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();

    // Wait for the lock-wait event (B waits on A for more than 0.5 s of samples).
    let deadline = Instant::now() + Duration::from_secs(15);
    let lock_event = loop {
        if let Some(r) = records(&got).into_iter().find(|r| r.event_name == "sqlcommenter.lock_wait") {
            break r;
        }
        assert!(Instant::now() < deadline, "no lock wait event; got {} records", records(&got).len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(hex(&lock_event.trace_id), trace_id(TP_B), "under the waiting trace");
    assert_eq!(hex(&lock_event.span_id), span_id(TP_B));
    assert_eq!(attr(&lock_event, "postgresql.pid"), Some(Value::IntValue(sc.b_pid.into())));
    let blocking = match attr(&lock_event, "sqlcommenter.blocking.trace_ids") {
        Some(Value::ArrayValue(a)) => a.values.into_iter().filter_map(|v| v.value).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(blocking, vec![Value::StringValue(trace_id(TP_A).to_owned())], "names the blocking trace");
    let body = match lock_event.body.clone().and_then(|b| b.value) {
        Some(Value::StringValue(b)) => b,
        other => panic!("{other:?}"),
    };
    assert!(body.contains(trace_id(TP_A)) && body.contains(trace_id(TP_B)), "{body}");
    assert!(matches!(attr(&lock_event, "postgresql.lock_wait_ms"), Some(Value::IntValue(ms)) if ms >= 500));

    // Query samples: one per non-idle backend per refresh, linked to each trace.
    let samples: Vec<LogRecord> =
        records(&got).into_iter().filter(|r| r.event_name == "db.server.query_sample").collect();
    let of = |tp: &str| {
        samples.iter().find(|r| hex(&r.trace_id) == trace_id(tp)).unwrap_or_else(|| panic!("no sample for {tp}"))
    };
    let (a, b, c) = (of(TP_A), of(TP_B), of(TP_C));
    for (r, tp, pid) in [(a, TP_A, sc.a_pid), (b, TP_B, sc.b_pid), (c, TP_C, sc.c_pid)] {
        assert_eq!(attr(r, "postgresql.pid"), Some(Value::IntValue(pid.into())));
        assert_eq!(attr(r, "db.system.name"), s("postgresql"));
        assert_eq!(attr(r, "db.namespace"), s("postgres"));
        assert_eq!(attr(r, "server.address"), s("127.0.0.1"));
        assert_eq!(attr(r, "server.port"), Some(Value::IntValue(pg.port().into())));
        if tp != TP_C {
            assert_eq!(hex(&r.span_id), span_id(tp), "span id from the context");
        }
        assert!(r.time_unix_nano > 0);
    }
    assert_eq!(attr(a, "postgresql.state"), s("idle in transaction"));
    assert_eq!(attr(a, "sqlcommenter.context_source"), s("comment"));
    assert_eq!(attr(a, "db.query.text"), s("UPDATE accounts SET balance = balance - ? WHERE id = ?"));
    assert_eq!(attr(b, "postgresql.wait_event"), s("transactionid"));
    assert_eq!(attr(b, "sqlcommenter.context_source"), s("application_name"));
    assert_eq!(
        attr(b, "postgresql.blocking_pids").map(|v| format!("{v:?}")),
        Some(format!(
            "{:?}",
            Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: vec![opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(Value::IntValue(sc.a_pid.into()))
                }]
            })
        ))
    );
    assert_eq!(attr(c, "postgresql.wait_event"), s("PgSleep"));
    let resource = got.lock().unwrap()[0].resource_logs[0].resource.clone().unwrap();
    assert!(resource
        .attributes
        .iter()
        .any(|kv| kv.key == "service.name" && kv.value.as_ref().and_then(|v| v.value.clone()) == s("postgresql")));
    // Only one lock-wait event per wait.
    assert_eq!(records(&got).iter().filter(|r| r.event_name == "sqlcommenter.lock_wait").count(), 1);

    // Prometheus: by state and wait event, samples by context source, up.
    let metrics = scrape(&metrics_addr).await;
    assert!(metrics.starts_with("HTTP/1.1 200") || metrics.starts_with("HTTP/1.0 200"), "{metrics}");
    for needle in [
        "sqlcommenter_top_sessions{state=\"active\",wait_event_type=\"Lock\",wait_event=\"transactionid\"} 1",
        "sqlcommenter_top_sessions{state=\"active\",wait_event_type=\"Timeout\",wait_event=\"PgSleep\"} 1",
        "sqlcommenter_top_sessions{state=\"idle in transaction\",wait_event_type=\"Client\",wait_event=\"ClientRead\"} 1",
        "sqlcommenter_top_blocked_sessions 1",
        "sqlcommenter_top_up 1",
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
    let counter = |ctx: &str| -> u64 {
        let key = format!("sqlcommenter_top_samples_total{{context=\"{ctx}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&key)).map_or(0, |v| v.trim().parse().unwrap())
    };
    // Per refresh: A and C by comment, B by carrier (a scrape may land mid-refresh).
    let (by_comment, by_carrier) = (counter("comment") as i64, counter("application_name") as i64);
    assert!(by_carrier >= 1 && (by_comment - 2 * by_carrier).abs() <= 2, "{metrics}");
    assert_eq!(counter("none"), 0, "every non-idle backend of the scenario carries context: {metrics}");

    // A session without context shows up as the gap.
    let plain =
        connect(&format!("host=127.0.0.1 port={} user=postgres dbname=postgres application_name=legacy", pg.port()))
            .await;
    let sleeper = tokio::spawn(async move { plain.batch_execute("SELECT pg_sleep(2)").await });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(&metrics_addr).await;
        let none = m.lines().find_map(|l| l.strip_prefix("sqlcommenter_top_samples_total{context=\"none\"} "));
        if none.is_some_and(|v| v.trim().parse::<u64>().unwrap() > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no context-less sample counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = sleeper.await;

    // SIGTERM: a clean exit that flushes.
    let pid = child.id().unwrap();
    assert!(std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");

    // `--once --otlp`: one sample, flushed before exit.
    let (endpoint, got) = otlp_receiver();
    let out = top(
        &["--once", "--otlp", &pg.keyword_conn_str("postgres")],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BLRP_SCHEDULE_DELAY", "60000")],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let traces: Vec<String> =
        records(&got).iter().filter(|r| r.event_name == "db.server.query_sample").map(|r| hex(&r.trace_id)).collect();
    for tp in [TP_A, TP_B, TP_C] {
        assert_eq!(traces.iter().filter(|t| *t == trace_id(tp)).count(), 1, "{tp} once in {traces:?}");
    }
    sc.proxy.shutdown().await;
}
