//! Shared test setup: one PostgreSQL cluster per test binary (statement logging with `%a`), and an
//! in-process proxy per test.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use sqlcommenter_proxy::{ProxyConfig, ProxyHandle, Upstream};
use sqlcommenter_testpg::{Cluster, LogFormat};

/// `log_line_prefix`: pid and application name between markers, so tests can read `%a` exactly.
pub const PREFIX: &str = "%m [%p] app=<%a> ";

pub fn pg() -> &'static Cluster {
    static PG: OnceLock<Cluster> = OnceLock::new();
    PG.get_or_init(|| {
        Cluster::builder()
            .setting("log_min_duration_statement", "0")
            .setting("password_encryption", "scram-sha-256")
            .log_format(LogFormat::Stderr { prefix: PREFIX.into() })
            .start()
            .unwrap()
    })
}

pub fn upstream() -> Upstream {
    Upstream::parse(&format!("127.0.0.1:{}", pg().port())).unwrap()
}

pub async fn proxy_with(f: impl FnOnce(&mut ProxyConfig)) -> ProxyHandle {
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), upstream());
    config.shutdown_timeout = Duration::from_secs(2);
    // The tests exercise injection for clients that supply no context: a root per transaction (off by
    // default, see `relay::nothing_to_carry_by_default`), and the application tag.
    config.inject.root_contexts = true;
    config.inject.application_tag = true;
    f(&mut config);
    sqlcommenter_proxy::start(config).await.unwrap()
}

pub async fn proxy() -> ProxyHandle {
    proxy_with(|_| {}).await
}

/// A tokio-postgres client through `addr` (or directly when `addr` is None) with `application_name`.
pub async fn connect(port: u16, app: &str) -> tokio_postgres::Client {
    connect_str(&format!("host=127.0.0.1 port={port} user=postgres dbname=postgres application_name={app}")).await
}

pub async fn connect_str(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Server log lines containing `needle`, waiting up to 5 s for at least `min` of them.
pub fn log_lines(needle: &str, min: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = pg().read_log().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect();
        if lines.len() >= min || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `%a` of a log line.
pub fn app_of(line: &str) -> &str {
    let start = line.find("app=<").map(|i| i + 5).unwrap_or(0);
    let end = line[start..].find("> ").map(|i| start + i).unwrap_or(start);
    &line[start..end]
}

/// The trace id in a `traceparent='00-<id>-...'` comment of a log line.
pub fn comment_trace_id(line: &str) -> Option<&str> {
    let at = line.find("traceparent='00-")? + "traceparent='00-".len();
    line.get(at..at + 32)
}

/// The trace id of an `application_name` carrier (`name@00-<id>-<span>-<flags>`).
pub fn carrier_trace_id(app: &str) -> Option<String> {
    sqlcommenter::carrier::decode_application_name(app).map(|(_, tp)| tp.trace_id_hex())
}

/// Server log `execute` lines containing `needle`, waiting up to 5 s for at least `min` of them.
pub fn exec_lines(needle: &str, min: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = pg()
            .read_log()
            .lines()
            .filter(|l| l.contains(needle) && l.contains("execute"))
            .map(str::to_owned)
            .collect();
        if lines.len() >= min || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
