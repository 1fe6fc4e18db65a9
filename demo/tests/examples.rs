//! The examples run: the unmodified application through the proxy (the server sees the proxy's comment and
//! carrier), and the axum application (its request spans reach an OTLP receiver with the same trace ids the
//! server logged for its queries). The example binaries are the ones `cargo test` builds.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlcommenter_testpg::{Cluster, LogFormat};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "{} missing: build with `cargo build -p sqlcommenter-demo --examples`", path.display());
    path
}

fn cluster() -> Cluster {
    Cluster::builder()
        .setting("log_min_duration_statement", "0")
        .log_format(LogFormat::Stderr { prefix: "%m [%p] %a ".into() })
        .start()
        .unwrap()
}

#[test]
fn unmodified_app_gets_context_through_the_proxy() {
    let pg = cluster();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let upstream = sqlcommenter_proxy::Upstream { host: pg.host().into(), port: pg.port() };
    let mut config = sqlcommenter_proxy::ProxyConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    // The second run hands over no context: the proxy invents roots only when told to.
    config.inject.root_contexts = true;
    let proxy = rt.block_on(sqlcommenter_proxy::start(config)).unwrap();
    let url = format!("postgres://postgres@{}/postgres", proxy.local_addr());

    // A context handed over in the application name (TRACEPARENT): every statement carries that trace.
    let out =
        Command::new(example("unmodified_app")).env("DATABASE_URL", &url).env("TRACEPARENT", TP).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let simple = stdout.lines().find(|l| l.starts_with("simple query")).unwrap();
    assert!(simple.contains(&format!("traceparent='00-{trace}-")), "{simple}");
    let named = stdout.lines().find(|l| l.starts_with("named prepared #2")).unwrap();
    // The carrier is the bare traceparent (what OpenTelemetry's tools read).
    assert!(named.contains(&format!("carrier:    00-{trace}-")), "{named}");
    // The server log has them too: the comment, and %a on the named execution.
    let log = pg.wait_for_log("current_setting('application_name')", Duration::from_secs(10)).unwrap();
    assert!(log.lines().any(|l| l.contains("SELECT current_query()") && l.contains(trace)));
    assert!(log
        .lines()
        .any(|l| l.contains("execute s") && l.contains(&format!(" 00-{trace}-")) && l.contains("current_setting")));

    // Without a context: the proxy starts a trace per transaction, still a valid traceparent.
    let out = Command::new(example("unmodified_app")).env("DATABASE_URL", &url).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let simple = stdout.lines().find(|l| l.starts_with("simple query")).unwrap();
    let tp = simple.split("traceparent='").nth(1).unwrap().split('\'').next().unwrap();
    assert!(sqlcommenter::TraceParent::parse(tp).is_ok(), "{simple}");
    assert!(!tp.contains(trace));
    rt.block_on(proxy.shutdown());
}

fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, resp))
}

#[test]
fn axum_app_spans_and_server_log_share_trace_ids() {
    let pg = cluster();
    let (endpoint, received) = common::otlp_receiver();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(example("axum_app"))
        .env("DATABASE_URL", pg.url("postgres"))
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env_remove("OTEL_SERVICE_NAME")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while http(port, "GET", "/healthz").is_none_or(|(s, _)| s != 200) {
        assert!(started.elapsed() < Duration::from_secs(30), "axum_app did not come up");
        assert!(child.try_wait().unwrap().is_none(), "axum_app exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = http(port, "GET", "/orders/7").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"id\":7"), "{body}");
    assert_eq!(http(port, "POST", "/orders/7/ship").unwrap().0, 204);
    assert_eq!(http(port, "POST", "/orders/7/ship").unwrap().0, 409);
    // Graceful stop (Ctrl-C): the batch exporter flushes on shutdown.
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());

    let log = pg.wait_for_log("INSERT INTO shop_events", Duration::from_secs(10)).unwrap();
    let trace_of = |needle: &str| -> String {
        let line =
            log.lines().find(|l| l.contains(needle) && l.contains("execute")).unwrap_or_else(|| panic!("{needle}"));
        // `%a` is the carrier: the bare traceparent (or `shop@` + it in the named form).
        let at = line.find(" 00-").or_else(|| line.find("@00-")).unwrap_or_else(|| panic!("no carrier: {line}"));
        line[at + 4..at + 36].to_owned()
    };
    let get = trace_of("FROM shop_orders WHERE id");
    let ship = trace_of("INSERT INTO shop_events");
    assert_ne!(get, ship, "one trace per request");
    for (trace, span) in [(get, &b"get_order"[..]), (ship, &b"ship_order"[..])] {
        assert!(received.one_contains_all(&[&common::hex_bytes(&trace), span, b"axum-shop"]), "{trace}");
    }
}
