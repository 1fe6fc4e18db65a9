//! Raw protocol through the proxy: exactly which messages the client receives (nothing of the proxy's
//! own), FunctionCall, NegotiateProtocolVersion, and what the server saw.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn startup(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    p.extend(body);
    p
}

/// Reads messages until ReadyForQuery; returns (tag, body) pairs.
async fn until_ready(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let tag = s.read_u8().await.unwrap();
        let len = s.read_i32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await.unwrap();
        out.push((tag, body));
        if tag == b'Z' {
            return out;
        }
    }
}

fn tags(m: &[(u8, Vec<u8>)]) -> String {
    m.iter().map(|(t, _)| *t as char).collect()
}

async fn session(port: u16, app: &str) -> (TcpStream, Vec<(u8, Vec<u8>)>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&startup(196608, &[("user", "postgres"), ("database", "postgres"), ("application_name", app)]))
        .await
        .unwrap();
    let m = until_ready(&mut s).await;
    (s, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_receives_exactly_its_own_responses() {
    let proxy = proxy().await;
    let port = proxy.local_addr().port();
    let (mut s, _) = session(port, "rawc").await;
    let (mut d, _) = session(pg().port(), "rawd").await;
    let mut batch = msg(b'P', b"s1\0SELECT pg_backend_pid()\0\0\0");
    batch.extend(msg(b'B', b"\0s1\0\0\0\0\0\0\0"));
    batch.extend(msg(b'E', b"\0\0\0\0\0"));
    batch.extend(msg(b'S', b""));
    let mut again = msg(b'B', b"\0s1\0\0\0\0\0\0\0");
    again.extend(msg(b'E', b"\0\0\0\0\0"));
    again.extend(msg(b'S', b""));
    let mut seen = Vec::new();
    for (to_proxy, bytes) in [(true, &batch), (false, &batch), (true, &again), (false, &again)] {
        let conn = if to_proxy { &mut s } else { &mut d };
        conn.write_all(bytes).await.unwrap();
        seen.push(tags(&until_ready(conn).await));
    }
    assert_eq!(seen, ["12DCZ", "12DCZ", "2DCZ", "2DCZ"], "proxy and direct identical, no carrier messages");
    // The server saw the carrier on this backend: the execute lines of the proxied session carry a
    // traceparent in `%a`, the direct session's its own name.
    let lines = exec_lines("SELECT pg_backend_pid()", 4);
    let carried = lines.iter().filter(|l| carrier_trace_id(app_of(l)).is_some()).count();
    let direct = lines.iter().filter(|l| app_of(l) == "rawd").count();
    assert_eq!((carried, direct), (2, 2), "{lines:#?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_and_protocol_negotiation_are_relayed() {
    let proxy = proxy().await;
    let port = proxy.local_addr().port();
    let (mut s, _) = session(port, "rawf").await;
    // FunctionCall of pg_backend_pid() (oid 2026): no args, text result.
    s.write_all(&msg(b'F', &[0, 0, 0x07, 0xea, 0, 0, 0, 0, 0, 0])).await.unwrap();
    let m = until_ready(&mut s).await;
    assert_eq!(tags(&m), "VZ");
    let pid: i32 = std::str::from_utf8(&m[0].1[4..]).unwrap().parse().unwrap();
    assert!(pid > 0);
    // Protocol 3.2 with an unknown _pq_ option: PostgreSQL 15 answers NegotiateProtocolVersion.
    let mut n = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    n.write_all(&startup(196610, &[("user", "postgres"), ("database", "postgres"), ("_pq_.unknown", "1")]))
        .await
        .unwrap();
    let m = until_ready(&mut n).await;
    assert_eq!(m[0].0, b'v', "{}", tags(&m));
    assert!(tags(&m).ends_with("KZ"), "{}", tags(&m));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_text_passes_byte_for_byte() {
    let proxy = proxy().await;
    let port = proxy.local_addr().port();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&startup(
        196608,
        &[("user", "postgres"), ("database", "postgres"), ("client_encoding", "LATIN1"), ("application_name", "rawl")],
    ))
    .await
    .unwrap();
    until_ready(&mut s).await;
    // 'é' in LATIN1 is 0xE9: not UTF-8, so the proxy must relay it untouched (no comment, no mangling).
    s.write_all(&msg(b'Q', b"SELECT '\xe9' AS v, length('\xe9') /*marker_latin1*/\0")).await.unwrap();
    let m = until_ready(&mut s).await;
    let row = m.iter().find(|(t, _)| *t == b'D').unwrap();
    assert_eq!(&row.1[..], b"\0\x02\0\0\0\x01\xe9\0\0\0\x011");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_are_refused_cleanly_without_tls() {
    let proxy = proxy().await;
    let mut s = TcpStream::connect(("127.0.0.1", proxy.local_addr().port())).await.unwrap();
    for code in [80877104i32, 80877103] {
        let mut req = 8i32.to_be_bytes().to_vec();
        req.extend_from_slice(&code.to_be_bytes());
        s.write_all(&req).await.unwrap();
        assert_eq!(s.read_u8().await.unwrap(), b'N', "request {code}");
    }
    s.write_all(&startup(196608, &[("user", "postgres"), ("database", "postgres")])).await.unwrap();
    let m = until_ready(&mut s).await;
    assert_eq!(m.last().map(|(t, b)| (*t, b.clone())), Some((b'Z', b"I".to_vec())));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_first_packet_gets_an_error_and_others_continue() {
    let proxy = proxy().await;
    let port = proxy.local_addr().port();
    let (mut good, _) = session(port, "rawg").await;
    let mut bad = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    bad.read_to_end(&mut reply).await.unwrap();
    // "GET " read as a length is far over the startup limit: an ErrorResponse, then close.
    assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
    assert!(String::from_utf8_lossy(&reply).contains("invalid startup packet length"));
    good.write_all(&msg(b'Q', b"SELECT 1\0")).await.unwrap();
    assert_eq!(tags(&until_ready(&mut good).await), "TDCZ");
    proxy.shutdown().await;
}

async fn read_n(s: &mut TcpStream, n: usize) -> String {
    let mut t = String::new();
    for _ in 0..n {
        let tag = s.read_u8().await.unwrap();
        let len = s.read_i32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await.unwrap();
        t.push(tag as char);
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_then_flush_then_execute_like_asyncpg() {
    let proxy = proxy().await;
    let (mut s, _) = session(proxy.local_addr().port(), "rawa").await;
    let mut prefix = msg(b'P', b"s9\0SELECT 7 /*marker_raw_flush*/\0\0\0");
    prefix.extend(msg(b'D', b"Ss9\0"));
    prefix.extend(msg(b'H', b""));
    s.write_all(&prefix).await.unwrap();
    assert_eq!(read_n(&mut s, 3).await, "1tT");
    let mut exec = msg(b'B', b"\0s9\0\0\0\0\0\0\0");
    exec.extend(msg(b'E', b"\0\0\0\0\0"));
    exec.extend(msg(b'S', b""));
    s.write_all(&exec).await.unwrap();
    assert_eq!(tags(&until_ready(&mut s).await), "2DCZ", "exactly the client's responses");
    let l = exec_lines("marker_raw_flush", 1);
    assert!(carrier_trace_id(app_of(&l[0])).is_some(), "{l:?}");
    proxy.shutdown().await;
}

/// A server shutdown reaches the client as the server's own `FATAL 57P01`, exactly as directly, not as a
/// bare closed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_reaches_the_client_as_its_fatal() {
    let pg = sqlcommenter_testpg::Cluster::builder().start().unwrap();
    let up = sqlcommenter_proxy::Upstream::parse(&format!("127.0.0.1:{}", pg.port())).unwrap();
    let proxy = sqlcommenter_proxy::start(sqlcommenter_proxy::ProxyConfig::new("127.0.0.1:0".parse().unwrap(), up))
        .await
        .unwrap();
    let (mut via, _) = session(proxy.local_addr().port(), "rawstop").await;
    let (mut direct, _) = session(pg.port(), "rawstopd").await;
    tokio::task::block_in_place(|| pg.stop().unwrap());
    for s in [&mut direct, &mut via] {
        let mut rest = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert_eq!(rest.first(), Some(&b'E'), "{rest:?}");
        let text = String::from_utf8_lossy(&rest);
        assert!(text.contains("FATAL") && text.contains("C57P01"), "{text}");
    }
    proxy.shutdown().await;
}

/// The unnamed statement bound again in a later request (JDBC below its prepare threshold, drivers that
/// re-bind `""`): each execution's own log line carries its own context, not the first execution's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_statement_executed_again_logs_its_own_context() {
    let proxy = proxy().await;
    let (mut s, _) = session(proxy.local_addr().port(), "rawagain").await;
    let exec = [msg(b'B', b"\0\0\0\0\0\0\0\0"), msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")].concat();
    let first = [msg(b'P', b"\0SELECT 8 /*marker_raw_again*/\0\0\0"), exec.clone()].concat();
    s.write_all(&first).await.unwrap();
    assert_eq!(tags(&until_ready(&mut s).await), "12DCZ");
    // Two more requests, each its own transaction (so its own root context), no new Parse.
    for _ in 0..2 {
        s.write_all(&exec).await.unwrap();
        assert_eq!(tags(&until_ready(&mut s).await), "2DCZ", "exactly the client's responses");
    }
    let lines = exec_lines("marker_raw_again", 3);
    let ids: std::collections::HashSet<_> = lines.iter().filter_map(|l| comment_trace_id(l)).collect();
    assert_eq!((lines.len(), ids.len()), (3, 3), "three executions, three contexts: {lines:#?}");
    proxy.shutdown().await;
}
