//! tokio-postgres through the proxy against a real PostgreSQL: protocol features, and what the server saw.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt, TryStreamExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_carries_a_comment_and_results_match() {
    let proxy = proxy().await;
    let via = connect(proxy.local_addr().port(), "t_simple").await;
    let direct = connect(pg().port(), "t_simple_direct").await;
    let q = "SELECT g, md5(g::text) FROM generate_series(1, 50) g /*marker_simple*/";
    let a = via.simple_query(q).await.unwrap();
    let b = direct.simple_query(q).await.unwrap();
    let rows = |v: &[tokio_postgres::SimpleQueryMessage]| {
        v.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((r.get(0).unwrap().to_owned(), r.get(1).unwrap().to_owned()))
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&a), rows(&b));
    assert_eq!(rows(&a).len(), 50);
    // Multi-statement string through the proxy: one comment, both statements run.
    via.batch_execute("CREATE TEMP TABLE t_ms(x int); INSERT INTO t_ms VALUES (1),(2) /*marker_multi*/").await.unwrap();
    let n: i64 = via.query_one("SELECT count(*) FROM t_ms", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
    let lines = log_lines("marker_simple", 2);
    let proxied: Vec<_> = lines.iter().filter(|l| app_of(l) == "t_simple").collect();
    assert_eq!(proxied.len(), 1, "{lines:#?}");
    let tid = comment_trace_id(proxied[0]).expect("comment with traceparent");
    assert!(proxied[0].contains("application='t_simple'"), "{}", proxied[0]);
    assert_eq!(tid.len(), 32);
    let direct_line = lines.iter().find(|l| app_of(l) == "t_simple_direct").unwrap();
    assert!(comment_trace_id(direct_line).is_none());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_extended_statements_get_a_comment_per_transaction() {
    let proxy = proxy().await;
    let mut c = connect(proxy.local_addr().port(), "t_unnamed").await;
    for i in 0..3i32 {
        let v: i32 = c
            .query_typed("SELECT $1::int + 1 /*marker_unnamed*/", &[(&i, tokio_postgres::types::Type::INT4)])
            .await
            .unwrap()[0]
            .get(0);
        assert_eq!(v, i + 1);
    }
    let tx = c.transaction().await.unwrap();
    for _ in 0..2 {
        tx.query_typed("SELECT 1 /*marker_tx*/", &[]).await.unwrap();
    }
    tx.commit().await.unwrap();
    let lines = exec_lines("marker_unnamed", 3);
    let execs: Vec<_> = lines.iter().collect();
    assert_eq!(execs.len(), 3, "{lines:#?}");
    let ids: std::collections::HashSet<_> = execs.iter().map(|l| comment_trace_id(l).unwrap()).collect();
    assert_eq!(ids.len(), 3, "a fresh root per transaction");
    let tx_lines = exec_lines("marker_tx", 2);
    let tx_ids: std::collections::HashSet<_> =
        tx_lines.iter().map(|l| comment_trace_id(l).unwrap().to_owned()).collect();
    assert_eq!(tx_ids.len(), 1, "one root for the whole transaction: {tx_lines:#?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_keep_their_text_and_get_the_carrier() {
    let proxy = proxy().await;
    let c = connect(proxy.local_addr().port(), "t_named").await;
    let stmt = c.prepare("SELECT $1::int * 2 /*marker_named*/").await.unwrap();
    for i in 0..4i32 {
        let v: i32 = c.query_one(&stmt, &[&i]).await.unwrap().get(0);
        assert_eq!(v, i * 2);
    }
    // SHOW (a named statement too, as tokio-postgres prepares it) runs in a transaction that carries its
    // own context: the bare traceparent.
    let app: String = c.query_one("SHOW application_name", &[]).await.unwrap().get(0);
    assert!(sqlcommenter::TraceParent::parse(&app).is_ok(), "{app}");
    // The server-side statement text is unchanged, and the server holds the client's statements only:
    // the carrier runs as the unnamed statement, nothing of the proxy's shows in pg_prepared_statements.
    let n: i64 = c
        .query_one("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%marker' || '_named%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let names: Vec<String> =
        c.query("SELECT statement FROM pg_prepared_statements", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert!(names.iter().all(|s| !s.contains("set_config")), "{names:?}");
    let lines = exec_lines("marker_named", 4);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let mut ids = std::collections::HashSet::new();
    for l in &lines {
        assert!(comment_trace_id(l).is_none(), "named text must stay unchanged: {l}");
        let app = app_of(l);
        assert!(sqlcommenter::TraceParent::parse(app).is_ok(), "bare traceparent: {l}");
        ids.insert(carrier_trace_id(app).unwrap());
    }
    assert_eq!(ids.len(), 4, "each autocommit execution its own trace: {lines:#?}");
    // The carrier is transaction-scoped: once the batch is over the server holds the client's own name
    // (read directly, not through the proxy).
    let direct = connect(pg().port(), "observer").await;
    let names: Vec<String> = direct
        .query("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 't_named%'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["t_named"]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_context_from_startup_application_name_is_used() {
    let proxy = proxy().await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let c = connect(proxy.local_addr().port(), &format!("svc@{tp}")).await;
    c.simple_query("SELECT 1 /*marker_startup_ctx*/").await.unwrap();
    let stmt = c.prepare("SELECT 2 /*marker_startup_named*/").await.unwrap();
    c.query(&stmt, &[]).await.unwrap();
    let l = log_lines("marker_startup_ctx", 1);
    assert_eq!(comment_trace_id(&l[0]), Some("4bf92f3577b34da6a3ce929d0e0e4736"), "{l:?}");
    let l = exec_lines("marker_startup_named", 1);
    assert_eq!(carrier_trace_id(app_of(&l[0])).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guc_carrier_and_session_set() {
    let proxy = proxy_with(|c| {
        c.inject.carrier = Some(sqlcommenter_proxy::CarrierTarget::Guc("sqlcommenter.traceparent".into()))
    })
    .await;
    let c = connect(proxy.local_addr().port(), "t_guc").await;
    let tp = "00-11111111111111111111111111111111-2222222222222222-01";
    c.batch_execute(&format!("SET sqlcommenter.traceparent = '{tp}'")).await.unwrap();
    let stmt = c.prepare("SELECT current_setting('sqlcommenter.traceparent') /*marker_guc*/").await.unwrap();
    let v: String = c.query_one(&stmt, &[]).await.unwrap().get(0);
    assert_eq!(v, tp);
    c.batch_execute("RESET sqlcommenter.traceparent").await.unwrap();
    let v1: String = c.query_one(&stmt, &[]).await.unwrap().get(0);
    let v2: String = c.query_one(&stmt, &[]).await.unwrap().get(0);
    assert!(v1.starts_with("00-") && v2.starts_with("00-") && v1 != v2 && v1 != tp, "{v1} {v2}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_and_error_mid_pipeline() {
    let proxy = proxy().await;
    let c = connect(proxy.local_addr().port(), "t_pipe").await;
    let s = c.prepare("SELECT $1::int").await.unwrap();
    let futs: Vec<_> = (0..50i32).map(|i| c.query_one(&s, &[]).map(move |_| i).boxed()).collect();
    drop(futs);
    let mut futs = Vec::new();
    for i in 0..50i32 {
        let c = &c;
        let s = &s;
        futs.push(async move { c.query_one(s, &[&i]).await.map(|r| r.get::<_, i32>(0)) });
    }
    let out = futures_util::future::join_all(futs).await;
    assert_eq!(out.into_iter().map(Result::unwrap).collect::<Vec<_>>(), (0..50).collect::<Vec<_>>());
    // An error in the middle of pipelined requests affects only its own request.
    let (a, b, d) = tokio::join!(
        c.query_one("SELECT 1::int", &[]),
        c.query_one("SELECT 1/0", &[]),
        c.query_one("SELECT 3::int", &[])
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(b.unwrap_err().code(), Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO));
    assert_eq!(d.unwrap().get::<_, i32>(0), 3);
    proxy.shutdown().await;
}

use futures_util::FutureExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transaction_is_not_poisoned() {
    let proxy = proxy().await;
    let mut c = connect(proxy.local_addr().port(), "t_failed").await;
    let s = c.prepare("SELECT 1").await.unwrap();
    let tx = c.transaction().await.unwrap();
    assert!(tx.query("SELECT 1/0", &[]).await.is_err());
    // In the failed state, a named execution fails with 25P02 as it would directly (no injected part).
    let e = tx.query(&s, &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION));
    tx.rollback().await.unwrap();
    assert_eq!(c.query_one(&s, &[]).await.unwrap().get::<_, i32>(0), 1);
    // VACUUM through the extended protocol still works with a carrier set before it.
    c.batch_execute("CREATE TABLE IF NOT EXISTS t_vac(x int)").await.unwrap();
    c.query(&s, &[]).await.unwrap();
    c.execute("VACUUM t_vac", &[]).await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_and_discard_all_recreate_the_reserved_statement() {
    let proxy = proxy().await;
    let c = connect(proxy.local_addr().port(), "t_dealloc").await;
    let s = c.prepare("SELECT 1 /*marker_dealloc_a*/").await.unwrap();
    c.query(&s, &[]).await.unwrap();
    c.batch_execute("DEALLOCATE ALL").await.unwrap();
    let s = c.prepare("SELECT 1 /*marker_dealloc_b*/").await.unwrap();
    c.query(&s, &[]).await.unwrap();
    c.batch_execute("DISCARD ALL").await.unwrap();
    let s = c.prepare("SELECT 1 /*marker_dealloc_c*/").await.unwrap();
    c.query(&s, &[]).await.unwrap();
    for m in ["marker_dealloc_a", "marker_dealloc_b", "marker_dealloc_c"] {
        let l = exec_lines(m, 1);
        assert!(carrier_trace_id(app_of(&l[0])).is_some(), "{m}: {l:?}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_statement_and_portal() {
    let proxy = proxy().await;
    let mut c = connect(proxy.local_addr().port(), "t_describe").await;
    let s = c.prepare("SELECT $1::text AS a, 2::int8 AS b").await.unwrap();
    assert_eq!(s.params(), &[tokio_postgres::types::Type::TEXT]);
    assert_eq!(s.columns().iter().map(|c| c.name()).collect::<Vec<_>>(), ["a", "b"]);
    let tx = c.transaction().await.unwrap();
    let portal = tx.bind("SELECT g FROM generate_series(1, 10) g", &[]).await.unwrap();
    let first = tx.query_portal(&portal, 4).await.unwrap();
    let rest = tx.query_portal(&portal, 0).await.unwrap();
    assert_eq!((first.len(), rest.len()), (4, 6));
    tx.commit().await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_100k_rows() {
    let proxy = proxy().await;
    let c = connect(proxy.local_addr().port(), "t_copy").await;
    c.batch_execute("DROP TABLE IF EXISTS t_copy; CREATE TABLE t_copy(id int, v text)").await.unwrap();
    let mut data = Vec::new();
    for i in 0..100_000 {
        data.extend_from_slice(format!("{i}\tvalue-{}\n", i * 7).as_bytes());
    }
    let sink = c.copy_in("COPY t_copy FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in data.chunks(65_536) {
        sink.send(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 100_000);
    let stream = c.copy_out("COPY (SELECT * FROM t_copy ORDER BY id) TO STDOUT").await.unwrap();
    let out: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = out.concat();
    assert_eq!(out.len(), data.len());
    assert!(out == data, "copy out differs");
    let direct = connect(pg().port(), "t_copy_direct").await;
    let sum_direct: String =
        direct.query_one("SELECT md5(string_agg(id || v, ',' ORDER BY id)) FROM t_copy", &[]).await.unwrap().get(0);
    let sum_proxy: String =
        c.query_one("SELECT md5(string_agg(id || v, ',' ORDER BY id)) FROM t_copy", &[]).await.unwrap().get(0);
    assert_eq!(sum_direct, sum_proxy);
    // The session works normally after COPY, with injection.
    let s = c.prepare("SELECT 1").await.unwrap();
    c.query(&s, &[]).await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_reaches_an_idle_client() {
    let proxy = proxy().await;
    let conn = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", proxy.local_addr().port());
    let (listener, mut connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    listener.batch_execute("LISTEN t_chan").await.unwrap();
    let other = connect(proxy.local_addr().port(), "t_notify").await;
    other.batch_execute("NOTIFY t_chan, 'hello'").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await.expect("notification in time");
    assert_eq!(got.as_deref(), Some("hello"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_right_backend() {
    let proxy = proxy().await;
    let c = connect(proxy.local_addr().port(), "t_cancel").await;
    let token = c.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(60)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), sleeper).await.unwrap().unwrap();
    assert_eq!(r.unwrap_err().code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED));
    assert!(started.elapsed() < Duration::from_millis(1200), "{:?}", started.elapsed());
    proxy.shutdown().await;
}

fn hba_reload(lines: &str) {
    let path = pg().data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&path).unwrap();
    if !old.contains(lines) {
        std::fs::write(&path, format!("{lines}\n{old}")).unwrap();
        pg().execute_sql("SELECT pg_reload_conf()").unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_pass_through_md5_and_scram() {
    pg().execute_sql(
        "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='u_md5') THEN \
         SET password_encryption='md5'; CREATE ROLE u_md5 LOGIN PASSWORD 'right'; \
         SET password_encryption='scram-sha-256'; CREATE ROLE u_scram LOGIN PASSWORD 'right'; END IF; END$$",
    )
    .unwrap();
    hba_reload("host all u_md5 127.0.0.1/32 md5\nhost all u_scram 127.0.0.1/32 scram-sha-256");
    let proxy = proxy().await;
    let port = proxy.local_addr().port();
    for user in ["u_md5", "u_scram"] {
        let ok = format!("host=127.0.0.1 port={port} user={user} password=right dbname=postgres");
        let c = connect_str(&ok).await;
        let who: String = c.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
        assert_eq!(who, user);
        let bad = format!("host=127.0.0.1 port={port} user={user} password=wrong dbname=postgres");
        let e = tokio_postgres::connect(&bad, tokio_postgres::NoTls).await.err().expect("wrong password rejected");
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD), "{user}: {e}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_a_typed_error_and_shutdown_waits() {
    let mut config = sqlcommenter_proxy::ProxyConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        sqlcommenter_proxy::Upstream::parse("127.0.0.1:1").unwrap(),
    );
    config.connect_timeout = Duration::from_secs(2);
    let e = sqlcommenter_proxy::start(config).await.unwrap_err();
    assert!(matches!(e, sqlcommenter_proxy::ProxyError::UpstreamUnreachable { .. }), "{e}");
    let proxy = proxy().await;
    let c = connect(proxy.local_addr().port(), "t_shutdown").await;
    let t = Instant::now();
    let sleeper = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(0.5)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.shutdown().await;
    assert!(sleeper.await.unwrap().is_ok(), "an open session may finish its statement");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_tracing_carrier_uses_its_value_format() {
    let proxy = proxy_with(|c| c.inject.carrier = Some(sqlcommenter_proxy::CarrierTarget::PgTracing)).await;
    let c = connect(proxy.local_addr().port(), "t_pgtr").await;
    let tp = "00-33333333333333333333333333333333-4444444444444444-01";
    let c2 = connect_str(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres options='-c sqlcommenter.traceparent={tp}'",
        proxy.local_addr().port()
    ))
    .await;
    let s = c.prepare("SELECT current_setting('pg_tracing.trace_context')").await.unwrap();
    let v: String = c.query_one(&s, &[]).await.unwrap().get(0);
    assert!(sqlcommenter::carrier::decode_pg_tracing(&v).is_some(), "{v}");
    // A session context from the startup options is what the carrier holds.
    let s2 = c2.prepare("SELECT current_setting('pg_tracing.trace_context')").await.unwrap();
    let v2: String = c2.query_one(&s2, &[]).await.unwrap().get(0);
    assert_eq!(v2, format!("traceparent='{tp}'"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_closes_lingering_sessions() {
    let proxy = proxy_with(|c| c.shutdown_timeout = Duration::from_millis(800)).await;
    let c = connect(proxy.local_addr().port(), "t_linger").await;
    let sleeper = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.active_sessions(), 1);
    let t = Instant::now();
    proxy.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let r = tokio::time::timeout(Duration::from_secs(5), sleeper).await.unwrap().unwrap();
    assert!(r.is_err(), "the lingering session was closed");
}

/// Error positions count characters of the text the server received; the proxy maps them back so the
/// client sees what it would see directly (psql draws its `^` from them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_positions_are_those_of_the_clients_text() {
    let proxy = proxy().await;
    let via = connect(proxy.local_addr().port(), "t_pos").await;
    let direct = connect(pg().port(), "t_pos_direct").await;
    let position = |e: tokio_postgres::Error| match e.as_db_error().and_then(|d| d.position()) {
        Some(tokio_postgres::error::ErrorPosition::Original(p)) => *p,
        other => panic!("no position: {other:?} ({e})"),
    };
    for sql in ["SELECT 1 UNION;", "SELECT 'é', 'x'::int /* note */", "  select nosuchcolumn from pg_class"] {
        let want = position(direct.simple_query(sql).await.unwrap_err());
        let got = position(via.simple_query(sql).await.unwrap_err());
        assert_eq!(got, want, "simple {sql:?}");
        // The unnamed statement of the extended protocol (query_typed: Parse/Bind/Execute in one batch).
        let want = position(direct.query_typed(sql, &[]).await.unwrap_err());
        let got = position(via.query_typed(sql, &[]).await.unwrap_err());
        assert_eq!(got, want, "extended {sql:?}");
    }
    // The server really got a comment (so the mapping was needed).
    assert!(log_lines("SELECT 1 UNION /*", 1).iter().any(|l| comment_trace_id(l).is_some()));
    proxy.shutdown().await;
}

/// Texts the server keeps and shows back stay as the client wrote them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_and_declare_texts_are_left_as_written() {
    let proxy = proxy().await;
    let c = connect(proxy.local_addr().port(), "t_stored").await;
    c.batch_execute("PREPARE q_stored AS SELECT 1").await.unwrap();
    let stmt: String =
        c.query_one("SELECT statement FROM pg_prepared_statements WHERE name = 'q_stored'", &[]).await.unwrap().get(0);
    assert_eq!(stmt, "PREPARE q_stored AS SELECT 1");
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("DECLARE c_stored CURSOR FOR SELECT 2").await.unwrap();
    let cur: String =
        c.query_one("SELECT statement FROM pg_cursors WHERE name = 'c_stored'", &[]).await.unwrap().get(0);
    assert_eq!(cur, "DECLARE c_stored CURSOR FOR SELECT 2");
    c.batch_execute("COMMIT").await.unwrap();
    // Their uses carry the context.
    c.batch_execute("EXECUTE q_stored /*marker_execute_stored*/").await.unwrap();
    assert!(log_lines("marker_execute_stored", 1).iter().all(|l| comment_trace_id(l).is_some()));
    proxy.shutdown().await;
}

/// With the defaults and a client that supplies no context, the proxy has nothing to carry: statements
/// reach the server as the client wrote them (no invented trace ids that exist in no tracing backend)
/// and named executions get no carrier. A client context is carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_to_carry_by_default() {
    let proxy = proxy_with(|c| c.inject = sqlcommenter_proxy::InjectConfig::default()).await;
    let c = connect(proxy.local_addr().port(), "t_plain").await;
    c.simple_query("SELECT 1 /*marker_plain_simple*/").await.unwrap();
    let stmt = c.prepare("SELECT $1::int /*marker_plain_named*/").await.unwrap();
    c.query_one(&stmt, &[&1i32]).await.unwrap();
    let l = log_lines("marker_plain_simple", 1);
    assert!(l.iter().all(|l| l.ends_with("statement: SELECT 1 /*marker_plain_simple*/")), "{l:#?}");
    let l = exec_lines("marker_plain_named", 1);
    assert!(l.iter().all(|l| app_of(l) == "t_plain"), "{l:#?}");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    c.simple_query(&format!("SELECT set_config('sqlcommenter.traceparent', '{tp}', false)")).await.unwrap();
    c.query_one(&stmt, &[&2i32]).await.unwrap();
    let l = exec_lines("marker_plain_named", 2);
    assert!(l.iter().any(|l| carrier_trace_id(app_of(l)).as_deref() == Some("4bf92f3577b34da6a3ce929d0e0e4736")));
    proxy.shutdown().await;
}

/// An upstream given as a socket directory is reached over the server's Unix socket: the server sees a
/// socket client (no address, port -1), injection works as over TCP, and a cancel is forwarded there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_servers_unix_socket() {
    let socket = format!("{}:{}", pg().socket_dir().display(), pg().port());
    let proxy = proxy_with(|c| c.upstream = sqlcommenter_proxy::Upstream::parse(&socket).unwrap()).await;
    let c = connect(proxy.local_addr().port(), "t_unix").await;
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let direct = connect(pg().port(), "t_unix_observer").await;
    let sql = "SELECT client_addr::text, client_port FROM pg_stat_activity WHERE pid = $1";
    let row = direct.query_one(sql, &[&pid]).await.unwrap();
    let (addr, port): (Option<String>, Option<i32>) = (row.get(0), row.get(1));
    assert_eq!((addr, port), (None, Some(-1)), "the proxy's session reached the server over its socket");
    c.simple_query("SELECT 1 /*marker_unix_simple*/").await.unwrap();
    assert!(log_lines("marker_unix_simple", 1).iter().all(|l| comment_trace_id(l).is_some()));
    let stmt = c.prepare("SELECT $1::int /*marker_unix_named*/").await.unwrap();
    c.query_one(&stmt, &[&1i32]).await.unwrap();
    assert!(exec_lines("marker_unix_named", 1).iter().all(|l| carrier_trace_id(app_of(l)).is_some()));
    // A cancel forwarded over the socket ends the statement long before its end.
    let cancel = c.cancel_token();
    let started = Instant::now();
    let sleeping = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(30) /*marker_unix_cancel*/").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = sleeping.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    proxy.shutdown().await;

    // No server behind a socket directory: a clear error naming the socket file.
    let mut config = sqlcommenter_proxy::ProxyConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        sqlcommenter_proxy::Upstream::parse("/nonexistent-sqlc-dir:5432").unwrap(),
    );
    config.connect_timeout = Duration::from_secs(2);
    let Err(err) = sqlcommenter_proxy::start(config).await else { panic!("no server there") };
    assert!(err.to_string().contains("/nonexistent-sqlc-dir/.s.PGSQL.5432"), "{err}");
}
