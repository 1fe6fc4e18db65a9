//! Faults: malformed and oversized frames, the connection limit, the upstream going away mid-transaction,
//! a client killed mid-transaction, a client that stops reading. Effects checked from the far side
//! (what the client received, pg_stat_activity).

mod common;

use std::time::{Duration, Instant};

use common::*;
use sqlcommenter_testpg::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn startup(app: &str) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for (k, v) in [("user", "postgres"), ("database", "postgres"), ("application_name", app)] {
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

/// Reads messages until ReadyForQuery (or EOF); returns (tag, body) pairs.
async fn until_ready(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let Ok(tag) = s.read_u8().await else { return out };
        let len = s.read_i32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await.unwrap();
        out.push((tag, body));
        if tag == b'Z' {
            return out;
        }
    }
}

async fn session(port: u16, app: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&startup(app)).await.unwrap();
    let m = until_ready(&mut s).await;
    assert_eq!(m.last().map(|(t, _)| *t), Some(b'Z'));
    s
}

async fn select_one(s: &mut TcpStream) {
    s.write_all(&msg(b'Q', b"SELECT 1\0")).await.unwrap();
    let tags: String = until_ready(s).await.iter().map(|(t, _)| *t as char).collect();
    assert_eq!(tags, "TDCZ");
}

/// Everything the peer sends until it closes (bounded by 5 s).
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut v)).await;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_end_only_that_session() {
    let proxy = proxy().await;
    let port = proxy.local_addr().port();
    let mut good = session(port, "f_good").await;
    // A length field below 4: the proxy cannot frame it and answers with an ErrorResponse.
    let mut bad = session(port, "f_badlen").await;
    bad.write_all(&[b'Q', 0, 0, 0, 2, b'x']).await.unwrap();
    let reply = read_all(&mut bad).await;
    assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
    assert!(String::from_utf8_lossy(&reply).contains("08P01"), "{}", String::from_utf8_lossy(&reply));
    // A 1 GB (or 2 GB) length claim followed by a few bytes: refused by the proxy.
    for len in [0x4000_0000i32, i32::MAX] {
        let mut big = session(port, "f_big").await;
        let mut frame = vec![b'Q'];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(b"SELECT 1");
        big.write_all(&frame).await.unwrap();
        let reply = read_all(&mut big).await;
        assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("08P01") && text.contains("invalid length"), "{text}");
    }
    // Garbage before startup (a TLS ClientHello-like blob of wrong length).
    let mut junk = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]).await.unwrap();
    let reply = read_all(&mut junk).await;
    assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
    // The other session never noticed.
    select_one(&mut good).await;
    let c = connect(port, "f_after").await;
    c.simple_query("SELECT 1").await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_beyond_the_limit_get_53300() {
    let proxy = proxy_with(|c| c.max_clients = Some(2)).await;
    let port = proxy.local_addr().port();
    let a = connect(port, "f_lim_a").await;
    let b = connect(port, "f_lim_b").await;
    let conn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres application_name=f_lim_c");
    let err = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.err().expect("third client refused");
    assert_eq!(err.code().map(|c| c.code()), Some("53300"), "{err}");
    a.simple_query("SELECT 1").await.unwrap();
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.active_sessions() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = connect(port, "f_lim_c").await;
    c.simple_query("SELECT 1").await.unwrap();
    b.simple_query("SELECT 1").await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_timeout_closes_silent_clients() {
    let proxy = proxy_with(|c| c.startup_timeout = Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let reply = read_all(&mut silent).await;
    assert_eq!(reply.first(), Some(&b'E'), "closed with an error after the startup timeout: {reply:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.active_sessions() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.active_sessions(), 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stopped_mid_transaction_then_restarted() {
    let pg = Cluster::builder().start().unwrap();
    let up = sqlcommenter_proxy::Upstream::parse(&format!("127.0.0.1:{}", pg.port())).unwrap();
    let mut config = sqlcommenter_proxy::ProxyConfig::new("127.0.0.1:0".parse().unwrap(), up);
    config.shutdown_timeout = Duration::from_secs(2);
    let proxy = sqlcommenter_proxy::start(config).await.unwrap();
    let port = proxy.local_addr().port();
    let c = connect(port, "f_stop").await;
    c.batch_execute("CREATE TABLE IF NOT EXISTS f_t(x int)").await.unwrap();
    c.batch_execute("BEGIN; INSERT INTO f_t VALUES (1)").await.unwrap();
    tokio::task::block_in_place(|| pg.stop().unwrap());
    let err = tokio::time::timeout(Duration::from_secs(10), c.simple_query("INSERT INTO f_t VALUES (2)"))
        .await
        .expect("the client is not left hanging")
        .expect_err("the statement fails");
    eprintln!("client error after stop: {err}");
    // While the server is down, new clients get a clean error.
    let conn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let err = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.err().expect("no server");
    assert_eq!(err.code().map(|c| c.code()), Some("08006"), "{err}");
    tokio::task::block_in_place(|| pg.restart().unwrap());
    let c2 = connect(port, "f_after_restart").await;
    let rows = c2.simple_query("SELECT count(*) FROM f_t").await.unwrap();
    let n = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(n.as_deref(), Some("0"), "the interrupted transaction was rolled back");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_leaves_no_idle_in_transaction_backend() {
    let proxy = proxy().await;
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres application_name=f_kill",
        proxy.local_addr().port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
    let task = tokio::spawn(connection);
    client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let direct = connect(pg().port(), "f_observer").await;
    assert_eq!(state(&direct, pid).await.as_deref(), Some("idle in transaction"));
    // Kill: the socket closes without a Terminate message.
    task.abort();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = state(&direct, pid).await;
    while last.is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = state(&direct, pid).await;
    }
    assert_eq!(last, None, "the backend ended with the client");
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_stall_others() {
    let proxy = proxy().await;
    let port = proxy.local_addr().port();
    let mut stalled = session(port, "f_stalled").await;
    // About 200 MB of rows, never read.
    stalled.write_all(&msg(b'Q', b"SELECT repeat('x', 1000) FROM generate_series(1, 200000)\0")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = connect(port, "f_busy").await;
    let started = Instant::now();
    for i in 0..50i32 {
        let v: i32 = c.query_one("SELECT $1::int", &[&i]).await.unwrap().get(0);
        assert_eq!(v, i);
    }
    // Liveness (not speed): 50 statements finish while the other session is blocked on its socket.
    assert!(started.elapsed() < Duration::from_secs(10));
    // Backpressure: the proxy stopped reading the stalled session's rows, so its backend still waits to
    // write them (a proxy that buffered the 200 MB would have let the statement finish long ago).
    let direct = connect(pg().port(), "f_stalled_observer").await;
    let row = direct
        .query_one("SELECT state, wait_event FROM pg_stat_activity WHERE application_name = 'f_stalled'", &[])
        .await
        .unwrap();
    let (state, wait): (Option<String>, Option<String>) = (row.get(0), row.get(1));
    assert_eq!((state.as_deref(), wait.as_deref()), (Some("active"), Some("ClientWrite")));
    // Once it reads again, it gets every row and the statement's end: the relay resumes when the client's
    // socket has room again.
    let mut total = 0usize;
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let ready = b"Z\0\0\0\x05I";
    while !tail.ends_with(ready) {
        let n = tokio::time::timeout(Duration::from_secs(30), stalled.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the proxy closed the stalled session after {total} bytes");
        total += n;
        tail.extend_from_slice(&buf[..n]);
        tail.drain(..tail.len().saturating_sub(ready.len()));
    }
    assert!(total > 200_000 * 1000, "{total} bytes");
    drop(stalled);
    proxy.shutdown().await;
}

async fn state(d: &tokio_postgres::Client, pid: i32) -> Option<String> {
    d.query_opt("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap().map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_but_long_statements_are_not() {
    let proxy = proxy_with(|c| c.idle_timeout = Some(Duration::from_millis(400))).await;
    let port = proxy.local_addr().port();
    let mut s = session(port, "f_idle").await;
    // A statement running longer than the timeout is not idle.
    s.write_all(&msg(b'Q', b"SELECT pg_sleep(1)\0")).await.unwrap();
    let tags: String = until_ready(&mut s).await.iter().map(|(t, _)| *t as char).collect();
    assert_eq!(tags, "TDCZ");
    let pid = {
        s.write_all(&msg(b'Q', b"SELECT pg_backend_pid()\0")).await.unwrap();
        let m = until_ready(&mut s).await;
        let row = &m.iter().find(|(t, _)| *t == b'D').unwrap().1;
        String::from_utf8_lossy(&row[6..]).parse::<i32>().unwrap()
    };
    // Then idle: FATAL 57P05 and the server session ends.
    let reply = read_all(&mut s).await;
    assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
    assert!(String::from_utf8_lossy(&reply).contains("57P05"));
    let direct = connect(pg().port(), "f_idle_observer").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(&direct, pid).await.is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state(&direct, pid).await, None);
    proxy.shutdown().await;
}
