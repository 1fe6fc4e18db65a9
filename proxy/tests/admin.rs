//! The admin endpoint scraped over HTTP while real clients run through the proxy.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_over_http() {
    let proxy = proxy_with(|c| c.admin = Some("127.0.0.1:0".parse().unwrap())).await;
    let admin = proxy.admin_addr().unwrap();
    assert!(admin.ip().is_loopback());
    let (head, body) = get(admin, "/health").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");

    let (_, before) = get(admin, "/metrics").await;
    let c = connect(proxy.local_addr().port(), "t_metrics").await;
    c.simple_query("SELECT 1 /*marker_metrics*/").await.unwrap();
    c.simple_query("SELECT 2 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/").await.unwrap();
    let st = c.prepare("SELECT $1::int").await.unwrap();
    for i in 0..5i32 {
        c.query_one(&st, &[&i]).await.unwrap();
    }
    let (head, after) = get(admin, "/metrics").await;
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    let d = |series: &str| value(&after, series) - value(&before, series);
    assert!(d("sqlc_proxy_client_connections_total") >= 1.0);
    assert!(value(&after, "sqlc_proxy_client_connections") >= 1.0);
    assert!(value(&after, "sqlc_proxy_server_connections") >= 1.0);
    assert!(d("sqlc_proxy_statements_total{kind=\"simple\"}") >= 2.0);
    assert!(d("sqlc_proxy_statements_total{kind=\"extended\"}") >= 5.0);
    assert!(d("sqlc_proxy_injections_total{kind=\"comment\"}") >= 1.0);
    assert!(d("sqlc_proxy_injections_total{kind=\"carrier\"}") >= 1.0);
    assert!(d("sqlc_proxy_skips_total{reason=\"has_traceparent\"}") >= 1.0);
    assert!(d("sqlc_proxy_bytes_total{from=\"client\"}") > 100.0);
    assert!(d("sqlc_proxy_bytes_total{from=\"server\"}") > 100.0);
    assert!(d("sqlc_proxy_request_duration_seconds_count") >= 7.0);
    assert!(d("sqlc_proxy_request_duration_seconds_bucket{le=\"+Inf\"}") >= 7.0);
    let (head, _) = get(admin, "/nope").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    drop(c);
    proxy.shutdown().await;
    // The listener closes when its task ends; on a loaded machine that can lag the shutdown a little.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while tokio::net::TcpStream::connect(admin).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "admin endpoint stops with the proxy");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[test]
fn admin_defaults_to_localhost_and_can_be_turned_off() {
    let args = sqlcommenter_proxy::ProxyArgs { upstream: Some("127.0.0.1:5".into()), ..Default::default() };
    let c = args.resolve().unwrap();
    assert_eq!(c.admin, Some("127.0.0.1:9187".parse().unwrap()));
    let off = sqlcommenter_proxy::ProxyArgs { admin: Some("off".into()), ..args };
    assert_eq!(off.resolve().unwrap().admin, None);
}
