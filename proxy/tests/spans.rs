//! Proxy spans over OTLP/HTTP: an in-test receiver decodes what the proxy exports; the server log says which
//! span each statement ran under.

mod common;
mod otlp;

use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use otlp::{attr, attr_int, attr_str};
use prost::Message;
use sqlcommenter::{carrier, TraceParent};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// A minimal OTLP/HTTP receiver on a tokio listener (its own runtime thread, shared by the tests).
fn receiver() -> &'static (String, Received) {
    static R: OnceLock<(String, Received)> = OnceLock::new();
    R.get_or_init(|| {
        let got: Received = Arc::default();
        let sink = got.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (sock, _) = listener.accept().await.unwrap();
                    tokio::spawn(serve(sock, sink.clone()));
                }
            });
        });
        let addr = rx.recv().unwrap();
        (format!("http://{addr}/v1/traces"), got)
    })
}

async fn serve(sock: tokio::net::TcpStream, sink: Received) {
    let mut rd = BufReader::new(sock);
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        assert!(line.starts_with("POST /v1/traces"), "{line}");
        let mut len = 0usize;
        loop {
            line.clear();
            rd.read_line(&mut line).await.unwrap();
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if let Some(v) = l.strip_prefix("content-type:") {
                assert_eq!(v.trim(), "application/x-protobuf");
            }
        }
        let mut body = vec![0u8; len];
        rd.read_exact(&mut body).await.unwrap();
        sink.lock().unwrap().push(ExportTraceServiceRequest::decode(&body[..]).unwrap());
        rd.get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
    }
}

/// A proxy exporting spans to the receiver.
async fn traced_proxy(normalize: bool) -> sqlcommenter_proxy::ProxyHandle {
    let (endpoint, _) = receiver();
    // Every test in this binary sets the same values.
    std::env::set_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint);
    std::env::set_var("OTEL_SERVICE_NAME", "proxy-under-test");
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    proxy_with(|c| {
        c.telemetry =
            Some(sqlcommenter_proxy::telemetry::TelemetryConfig { normalize_query: normalize, protocol: None })
    })
    .await
}

/// Spans whose `db.query.text` contains `marker`, waiting up to 5 s for at least `min`.
fn spans_with(marker: &str, min: usize) -> Vec<Span> {
    otlp::spans_with(&receiver().1, marker, min)
}

/// The traceparent in a log line's comment.
fn comment_tp(line: &str) -> TraceParent {
    let at = line.find("traceparent='").unwrap() + "traceparent='".len();
    TraceParent::parse(&line[at..at + 55]).unwrap()
}

const CLIENT_TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_span_is_the_clients_child_and_the_servers_parent() {
    let proxy = traced_proxy(false).await;
    let tp: TraceParent = CLIENT_TP.parse().unwrap();
    let app = carrier::encode_application_name("spanapp", &tp);
    let c = connect(proxy.local_addr().port(), &app).await;
    let before = std::time::SystemTime::now();
    c.simple_query("SELECT g FROM generate_series(1, 7) g /*marker_span_simple*/").await.unwrap();
    let after = std::time::SystemTime::now();
    drop(c);
    proxy.shutdown().await;

    let spans = spans_with("marker_span_simple", 1);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let s = &spans[0];
    assert_eq!(s.trace_id, tp.trace_id().to_vec());
    assert_eq!(s.parent_span_id, tp.parent_id().to_vec(), "child of the client's span");
    assert_eq!(s.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32);
    assert_eq!(s.name, "SELECT postgres");
    assert_eq!(attr_str(s, "db.system.name"), "postgresql");
    assert_eq!(attr_str(s, "db.namespace"), "postgres");
    assert_eq!(attr_str(s, "db.operation.name"), "SELECT");
    assert_eq!(attr_int(s, "db.response.returned_rows"), 7);
    assert_eq!(attr_str(s, "server.address"), "127.0.0.1");
    assert_eq!(attr_int(s, "server.port"), i64::from(pg().port()));
    assert!(attr(s, "db.response.status_code").is_none());
    let ns = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    assert!(ns(before) <= s.start_time_unix_nano, "span starts after the call began");
    assert!(s.start_time_unix_nano <= s.end_time_unix_nano && s.end_time_unix_nano <= ns(after));

    // The server ran the statement under the proxy span.
    let lines = log_lines("marker_span_simple", 1);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let logged = comment_tp(&lines[0]);
    assert_eq!(logged.trace_id(), tp.trace_id());
    assert_eq!(logged.parent_id().to_vec(), s.span_id, "server log points at the proxy span");
    assert!(logged.is_sampled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_executions_are_root_spans_whose_ids_reach_the_carrier() {
    let proxy = traced_proxy(false).await;
    let c = connect(proxy.local_addr().port(), "spannamed").await;
    let st = c.prepare("SELECT $1::int * 2 /*marker_span_named*/").await.unwrap();
    for i in 0..3i32 {
        let v: i32 = c.query_one(&st, &[&i]).await.unwrap().get(0);
        assert_eq!(v, i * 2);
    }
    drop(c);
    proxy.shutdown().await;

    let spans = spans_with("marker_span_named", 3);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let lines = exec_lines("marker_span_named", 3);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for (line, span) in lines.iter().zip(&spans) {
        assert!(span.parent_span_id.is_empty(), "no client context: a root span");
        assert_eq!(attr_int(span, "db.response.returned_rows"), 1);
        let (name, tp) = carrier::decode_application_name(app_of(line)).expect("carrier on the execute line");
        assert!("spannamed".starts_with(name), "{name}");
        assert_eq!(tp.trace_id().to_vec(), span.trace_id);
        assert_eq!(tp.parent_id().to_vec(), span.span_id, "carrier parent-id = proxy span id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_unsampled_contexts_and_normalized_text() {
    let proxy = traced_proxy(true).await;
    let c = connect(proxy.local_addr().port(), "spanerr").await;
    let err = c.simple_query("SELECT 1/0 AS marker_span_err, 'secret-literal'").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
    let unsampled = carrier::encode_application_name("spanoff", &CLIENT_TP.replace("-01", "-00").parse().unwrap());
    let u = connect(proxy.local_addr().port(), &unsampled).await;
    u.simple_query("SELECT 1 AS marker_span_unsampled").await.unwrap();
    drop((c, u));
    proxy.shutdown().await;

    let spans = spans_with("marker_span_err", 1);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let s = &spans[0];
    assert_eq!(attr_str(s, "db.response.status_code"), "22012");
    assert_eq!(attr_str(s, "error.type"), "22012");
    let status = s.status.clone().unwrap();
    assert_eq!(status.code, opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32);
    assert!(status.message.contains("division by zero"), "{status:?}");
    let text = attr_str(s, "db.query.text");
    assert!(!text.contains("secret-literal"), "normalized: {text}");

    assert!(spans_with("marker_span_unsampled", 1).is_empty(), "no span for an unsampled context");
    let lines = log_lines("marker_span_unsampled", 1);
    assert_eq!(lines.len(), 1);
    let logged = comment_tp(&lines[0]);
    assert!(!logged.is_sampled(), "unsampled downstream: {}", lines[0]);
    assert_eq!(logged.to_string(), CLIENT_TP.replace("-01", "-00"), "passed on unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_extended_statement_under_a_session_variable_context() {
    let proxy = traced_proxy(false).await;
    let c = connect(proxy.local_addr().port(), "spanguc").await;
    c.simple_query(&format!("SET sqlcommenter.traceparent = '{CLIENT_TP}'")).await.unwrap();
    let rows = c.query_typed("SELECT g AS marker_span_unnamed FROM generate_series(1, 3) g", &[]).await.unwrap();
    assert_eq!(rows.len(), 3);
    drop(c);
    proxy.shutdown().await;

    let spans = spans_with("marker_span_unnamed", 1);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let s = &spans[0];
    let tp: TraceParent = CLIENT_TP.parse().unwrap();
    assert_eq!(s.trace_id, tp.trace_id().to_vec());
    assert_eq!(s.parent_span_id, tp.parent_id().to_vec());
    assert_eq!(attr_int(s, "db.response.returned_rows"), 3);
    let lines = exec_lines("marker_span_unnamed", 1);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(comment_tp(&lines[0]).parent_id().to_vec(), s.span_id);
}

/// Random well-framed and random raw bytes through a session that records spans: no panic, bounded state,
/// and every span it returns is well-formed (ends no earlier than it starts, has ids).
#[test]
fn random_frames_with_spans_never_panic() {
    use proptest::prelude::*;
    use sqlcommenter_proxy::session::{Event, Session, StartupInfo};
    let frame = |tag: u8, body: &[u8]| {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    let tags = b"QPBEDCSHFdcfXpZSCEN123tTnIsGHWAKv".to_vec();
    let strategy = (
        proptest::collection::vec((prop::sample::select(tags), proptest::collection::vec(any::<u8>(), 0..48)), 0..60),
        proptest::collection::vec(any::<u8>(), 0..512),
        1usize..97,
    );
    proptest!(ProptestConfig::with_cases(200), |((msgs, raw, chunk) in strategy)| {
        let cfg = sqlcommenter_proxy::config::InjectConfig { root_contexts: true, ..Default::default() };
        let mut s = Session::new(std::sync::Arc::new(cfg), &StartupInfo::default(), 1).with_spans("db");
        let t0 = std::time::Instant::now();
        let mut out = bytes::BytesMut::new();
        s.server_bytes(&frame(b'Z', b"I"), &mut out, t0).unwrap();
        let bytes: Vec<u8> = msgs.iter().flat_map(|(t, b)| frame(*t, b)).chain(raw).collect();
        for (i, piece) in bytes.chunks(chunk).enumerate() {
            let mut out = bytes::BytesMut::new();
            let now = t0 + std::time::Duration::from_micros(i as u64);
            let _ = if i % 2 == 0 { s.client_bytes(piece, &mut out, now) } else { s.server_bytes(piece, &mut out, now) };
            for ev in s.events() {
                if let Event::Span(rec) = ev {
                    prop_assert!(rec.start <= rec.end && rec.span_id != [0; 8], "{rec:?}");
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_statements_each_get_their_own_span_even_after_an_error() {
    let proxy = traced_proxy(false).await;
    let c = connect(proxy.local_addr().port(), "spanpipe").await;
    let int4 = tokio_postgres::types::Type::INT4;
    // tokio-postgres pipelines concurrent requests: one write, three Sync-terminated batches.
    let (pa, pc) = ([(&1i32 as &(dyn tokio_postgres::types::ToSql + Sync), int4.clone())], [(&4i32 as _, int4)]);
    let (a, b, d) = futures_util::join!(
        c.query_typed("SELECT $1::int AS marker_pipe_a", &pa),
        c.query_typed("SELECT 1/0 AS marker_pipe_b", &[]),
        c.query_typed("SELECT g AS marker_pipe_c FROM generate_series(1, $1::int) g", &pc),
    );
    assert_eq!(a.unwrap().len(), 1);
    assert_eq!(b.unwrap_err().code().map(|c| c.code()), Some("22012"));
    assert_eq!(d.unwrap().len(), 4);
    drop(c);
    proxy.shutdown().await;

    let one = |m: &str| {
        let s = spans_with(m, 1);
        assert_eq!(s.len(), 1, "{m}: {s:#?}");
        s.into_iter().next().unwrap()
    };
    let (sa, sb, sc) = (one("marker_pipe_a"), one("marker_pipe_b"), one("marker_pipe_c"));
    assert_eq!(attr_int(&sa, "db.response.returned_rows"), 1);
    assert!(attr(&sa, "db.response.status_code").is_none());
    assert_eq!(attr_str(&sb, "db.response.status_code"), "22012");
    assert_eq!(attr_int(&sc, "db.response.returned_rows"), 4);
    assert!(attr(&sc, "db.response.status_code").is_none(), "the error stays with its own statement");
    assert!(sa.end_time_unix_nano <= sc.end_time_unix_nano);
    for (m, s) in [("marker_pipe_a", &sa), ("marker_pipe_c", &sc)] {
        let lines = exec_lines(m, 1);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert_eq!(comment_tp(&lines[0]).parent_id().to_vec(), s.span_id, "{m}");
    }
}

/// A multi-statement simple Query: one span for the Query (the server's log line points at it) and a
/// child per statement, each with its own text and rows; the failing one carries the error, and the
/// statements the server skipped after it get none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_query_gets_a_child_span_per_statement() {
    let proxy = traced_proxy(false).await;
    let tp: TraceParent = CLIENT_TP.parse().unwrap();
    let app = carrier::encode_application_name("spanmulti", &tp);
    let c = connect(proxy.local_addr().port(), &app).await;
    c.simple_query("SELECT g AS marker_multi_a FROM generate_series(1, 3) g; SELECT 1 AS marker_multi_b;")
        .await
        .unwrap();
    let err =
        c.simple_query("SELECT 5 AS marker_multi_c; SELECT 1/0 AS marker_multi_d; SELECT 6 AS marker_multi_e").await;
    assert_eq!(err.unwrap_err().code().map(|c| c.code()), Some("22012"));
    drop(c);
    proxy.shutdown().await;

    let by_text = |m: &str| -> Vec<Span> {
        spans_with(m, 1).into_iter().filter(|s| !attr_str(s, "db.query.text").contains(';')).collect()
    };
    let parent = spans_with("marker_multi_b", 2)
        .into_iter()
        .find(|s| attr_str(s, "db.query.text").contains("marker_multi_a"))
        .expect("the Query's span");
    assert_eq!(parent.parent_span_id, tp.parent_id().to_vec());
    let (a, b) = (by_text("marker_multi_a"), by_text("marker_multi_b"));
    assert_eq!((a.len(), b.len()), (1, 1), "{a:#?} {b:#?}");
    for (child, rows) in [(&a[0], 3), (&b[0], 1)] {
        assert_eq!(child.parent_span_id, parent.span_id, "a child of the Query span");
        assert_eq!(child.trace_id, tp.trace_id().to_vec());
        assert_eq!(attr_int(child, "db.response.returned_rows"), rows);
    }
    assert!(a[0].end_time_unix_nano <= b[0].start_time_unix_nano + 1);
    let d = by_text("marker_multi_d");
    assert_eq!(attr_str(&d[0], "db.response.status_code"), "22012");
    assert!(by_text("marker_multi_e").is_empty(), "the skipped statement did not run");
    let c_ = by_text("marker_multi_c");
    assert!(attr(&c_[0], "db.response.status_code").is_none());
    // The server's log line for the Query points at the Query's span.
    let lines = log_lines("marker_multi_a", 1);
    assert_eq!(comment_tp(&lines[0]).parent_id().to_vec(), parent.span_id);
}
