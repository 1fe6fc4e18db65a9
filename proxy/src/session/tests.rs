//! Scenario tests: message sequences (client sends / server answers / what each side sees).

use super::spans::SpanRecord;
use super::*;
use crate::config::CarrierScope;
use sqlcommenter::carrier::SET_CONFIG_PID_SQL;
use sqlcommenter::TraceParent;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn status(name: &str, value: &str) -> Vec<u8> {
    msg(b'S', format!("{name}\0{value}\0").as_bytes())
}

/// A session that invents roots and tags the application (the mechanics under test need a context).
fn session() -> Session {
    let cfg = InjectConfig { root_contexts: true, application_tag: true, ..InjectConfig::default() };
    session_with(cfg)
}

fn session_with(cfg: InjectConfig) -> Session {
    let info = StartupInfo { application_name: Some("app".into()), options: None };
    let mut s = Session::new(Arc::new(cfg), &info, 1).with_ids(IdGenerator::seeded(3));
    let mut startup = msg(b'R', &[0, 0, 0, 0]);
    startup.extend(status("application_name", "app"));
    startup.extend(msg(b'K', &[0, 0, 0, 9, 1, 2, 3, 4]));
    startup.extend(msg(b'Z', b"I"));
    let mut out = BytesMut::new();
    assert_eq!(s.server_bytes(&startup, &mut out, std::time::Instant::now()).unwrap(), startup.len());
    assert_eq!(&out[..], &startup[..], "startup is relayed unchanged");
    assert_eq!(s.backend_key(), Some(&[0, 0, 0, 9, 1, 2, 3, 4][..]));
    s
}

fn feed_client(s: &mut Session, bytes: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    assert_eq!(s.client_bytes(bytes, &mut out, std::time::Instant::now()).unwrap(), bytes.len());
    out
}

fn feed_server(s: &mut Session, bytes: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    assert_eq!(s.server_bytes(bytes, &mut out, std::time::Instant::now()).unwrap(), bytes.len());
    out
}

fn named_batch() -> Vec<u8> {
    let mut b = msg(b'B', b"\0stmt1\0\0\0\0\0\0\0");
    b.extend(msg(b'E', b"\0\0\0\0\0"));
    b.extend(msg(b'S', b""));
    b
}

/// The server's replies to the proxy's carrier (Parse/Bind/Execute/Close, and `restore`: the
/// client's unnamed statement parsed again) and a client Bind/Execute/Sync, ending in `status`.
fn replies(restore: bool, status: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut server = Vec::new();
    server.extend(msg(b'1', b""));
    server.extend(msg(b'2', b""));
    server.extend(msg(b'D', b"\0\x01\0\0\0\x01x"));
    server.extend(msg(b'C', b"SELECT 1\0"));
    server.extend(msg(b'3', b""));
    if restore {
        server.extend(msg(b'1', b""));
    }
    let client_part = [msg(b'2', b""), msg(b'C', b"SELECT 0\0"), msg(b'Z', status)].concat();
    server.extend(&client_part);
    (server, client_part)
}

#[test]
fn named_execution_gets_a_transaction_scoped_carrier_inline() {
    let mut s = session();
    let batch = named_batch();
    let out = feed_client(&mut s, &batch);
    assert!(out.ends_with(&batch), "client bytes follow unchanged");
    let injected = &out[..out.len() - batch.len()];
    let text = String::from_utf8_lossy(injected);
    assert!(text.contains("__sqlc_tcp") && text.contains(SET_CONFIG_PID_SQL), "{text}");
    assert!(text.contains("application_name\0") && text.contains("true\0"), "transaction-scoped: {text}");
    let mut pos = 0;
    while let Ok(Some(h)) = frame::header(&injected[pos..]) {
        assert_ne!(h.tag, frame::SYNC, "no Sync of its own");
        pos += h.frame_len;
    }
    assert_eq!(pos, injected.len());
    // The bare traceparent is the value.
    let at = text.find("00-").unwrap();
    assert!(TraceParent::parse(&text[at..at + 55]).is_ok(), "{text}");
    assert_eq!(s.proto.pending(), 4 + 3);
    let (server, client_part) = replies(false, b"I");
    let out = feed_server(&mut s, &server);
    assert_eq!(&out[..], &client_part[..], "only the client's replies reach the client");
    assert_eq!(s.proto.pending(), 0);
    // The next transaction gets a new root context: a new carrier.
    let out = feed_client(&mut s, &batch);
    assert!(out.len() > batch.len());
}

#[test]
fn the_clients_unnamed_statement_is_restored_after_the_carrier() {
    let mut s = session();
    let parse = msg(b'P', b"\0select $1\0\0\0");
    let out = feed_client(&mut s, &[parse, msg(b'S', b"")].concat());
    let sent_parse = out[..out.len() - 5].to_vec();
    feed_server(&mut s, &[msg(b'1', b""), msg(b'Z', b"I")].concat());
    let out = feed_client(&mut s, &named_batch());
    let injected = &out[..out.len() - named_batch().len()];
    assert!(injected.ends_with(&sent_parse), "the client's unnamed Parse (as sent) follows the carrier");
    let (server, client_part) = replies(true, b"I");
    assert_eq!(&feed_server(&mut s, &server)[..], &client_part[..]);
    // A simple Query drops the unnamed statement: nothing to restore then.
    feed_client(&mut s, &msg(b'Q', b"select 1\0"));
    feed_server(&mut s, &[msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat());
    let out = feed_client(&mut s, &named_batch());
    assert!(!out.windows(sent_parse.len()).any(|w| w == &sent_parse[..]));
}

#[test]
fn a_pipeline_carries_every_named_execution_once_per_transaction() {
    let mut s = session();
    let one = [msg(b'B', b"\0stmt1\0\0\0\0\0\0\0"), msg(b'E', b"\0\0\0\0\0")].concat();
    let pipeline = [one.clone(), one.clone(), one, msg(b'S', b"")].concat();
    let out = feed_client(&mut s, &pipeline);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("__sqlc_tcp").count(), 3, "one carrier (Bind, Execute, Close) for the batch");
    // In an explicit transaction, after its ReadyForQuery the carrier is still in effect.
    let mut s = session();
    feed_client(&mut s, &msg(b'Q', b"BEGIN\0"));
    feed_server(&mut s, &[msg(b'C', b"BEGIN\0"), msg(b'Z', b"T")].concat());
    let batch = named_batch();
    assert!(feed_client(&mut s, &batch).len() > batch.len());
    feed_server(&mut s, &replies(false, b"T").0);
    assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..], "same transaction, same context");
    // The application's ROLLBACK TO SAVEPOINT may have undone it: written again.
    feed_server(&mut s, &[msg(b'2', b""), msg(b'C', b"SELECT 0\0"), msg(b'Z', b"T")].concat());
    feed_client(&mut s, &msg(b'Q', b"ROLLBACK TO SAVEPOINT a\0"));
    feed_server(&mut s, &[msg(b'C', b"ROLLBACK\0"), msg(b'Z', b"T")].concat());
    assert!(feed_client(&mut s, &batch).len() > batch.len());
}

#[test]
fn an_error_before_the_carrier_skips_it_and_the_batch() {
    let mut s = session();
    let failing = [msg(b'B', b"\0stmt0\0\0\0\0\0\0\0"), msg(b'E', b"\0\0\0\0\0")].concat();
    let pipeline = [failing, named_batch()].concat();
    feed_client(&mut s, &pipeline);
    // stmt0's Bind fails: the server skips the carrier and the rest up to Sync.
    let err = msg(b'E', b"SERROR\0VERROR\0C26000\0Mno\0\0");
    let out = feed_server(&mut s, &[err.clone(), msg(b'Z', b"I")].concat());
    assert_eq!(&out[..], &[err, msg(b'Z', b"I")].concat()[..]);
    assert_eq!(s.proto.pending(), 0);
    // The carrier is written again next time.
    let out = feed_client(&mut s, &named_batch());
    assert!(String::from_utf8_lossy(&out).contains(SET_CONFIG_PID_SQL));
}

#[test]
fn a_failing_carrier_tells_the_client_why_its_batch_got_no_answer() {
    let mut s = session();
    feed_client(&mut s, &named_batch());
    let err = msg(b'E', b"SERROR\0VERROR\0C57014\0Mcanceling statement due to user request\0\0");
    let out = feed_server(&mut s, &[msg(b'1', b""), err.clone(), msg(b'Z', b"I")].concat());
    assert_eq!(&out[..], &[err, msg(b'Z', b"I")].concat()[..]);
    assert_eq!(s.events().filter(|e| *e == Event::CarrierFailed).count(), 1);
}

#[test]
fn out_of_sync_replies_are_an_error() {
    let mut s = session();
    let mut out = BytesMut::new();
    assert!(s.server_bytes(&msg(b'2', b""), &mut out, std::time::Instant::now()).is_err());
}

#[test]
fn reset_returns_the_session_context_to_the_startup_options() {
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let info = StartupInfo { application_name: None, options: Some(format!("-c sqlcommenter.traceparent={tp}")) };
    let mut s = Session::new(Arc::new(InjectConfig::default()), &info, 1);
    feed_server(&mut s, &msg(b'Z', b"I"));
    for reset in ["DISCARD ALL", "RESET ALL", "RESET sqlcommenter.traceparent"] {
        feed_client(&mut s, &msg(b'Q', format!("{reset}\0").as_bytes()));
        feed_server(&mut s, &[msg(b'C', b"DISCARD ALL\0"), msg(b'Z', b"I")].concat());
        let out = feed_client(&mut s, &msg(b'Q', b"select 1\0"));
        assert!(String::from_utf8_lossy(&out).contains(tp), "after {reset}");
        feed_server(&mut s, &[msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat());
    }
}

#[test]
fn nothing_to_carry_means_nothing_injected() {
    // Default: no client context, no span export, no configured tags.
    let mut s = session_with(InjectConfig::default());
    let q = msg(b'Q', b"select 1;\0");
    assert_eq!(&feed_client(&mut s, &q)[..], &q[..]);
    let batch = named_batch();
    assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
    // A client context (the session GUC) is carried.
    let mut s = session_with(InjectConfig::default());
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    feed_client(&mut s, &msg(b'Q', format!("SET sqlcommenter.traceparent = '{tp}'\0").as_bytes()));
    feed_server(&mut s, &[msg(b'C', b"SET\0"), msg(b'Z', b"I")].concat());
    assert!(String::from_utf8_lossy(&feed_client(&mut s, &q)).contains(tp));
    assert!(String::from_utf8_lossy(&feed_client(&mut s, &batch)).contains(tp));
}

#[test]
fn a_context_the_server_holds_from_startup_is_not_written_again() {
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    // The client connected with the bare traceparent as its application_name: the server's
    // application_name carries it already, so named executions need no carrier.
    let info = StartupInfo { application_name: Some(tp.into()), options: None };
    let mut s = Session::new(Arc::new(InjectConfig::default()), &info, 1);
    feed_server(&mut s, &[msg(b'R', &[0, 0, 0, 0]), msg(b'Z', b"I")].concat());
    let batch = named_batch();
    assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
    // Its simple statements still get the comment.
    assert!(String::from_utf8_lossy(&feed_client(&mut s, &msg(b'Q', b"select 1\0"))).contains(tp));
    // The context in another format (`name@traceparent`): written in the configured one.
    let info = StartupInfo { application_name: Some(format!("legacy@{tp}")), options: None };
    let mut s = Session::new(Arc::new(InjectConfig::default()), &info, 1);
    feed_server(&mut s, &[msg(b'R', &[0, 0, 0, 0]), msg(b'Z', b"I")].concat());
    let out = String::from_utf8_lossy(&feed_client(&mut s, &batch)).into_owned();
    assert!(out.contains("__sqlc_tcp") && out.contains(tp) && !out.contains("legacy@"), "{out}");
    // The same context in the startup options, with the application_name carrier: written per batch.
    let info = StartupInfo { application_name: None, options: Some(format!("-c sqlcommenter.traceparent={tp}")) };
    let mut s = Session::new(Arc::new(InjectConfig::default()), &info, 1);
    feed_server(&mut s, &[msg(b'R', &[0, 0, 0, 0]), msg(b'Z', b"I")].concat());
    assert!(String::from_utf8_lossy(&feed_client(&mut s, &batch)).contains(tp));
    // ... and with the GUC as the carrier: the server holds it from the options.
    let cfg = InjectConfig {
        carrier: Some(sqlcommenter::carrier::Target::guc("sqlcommenter.traceparent").unwrap()),
        ..InjectConfig::default()
    };
    let mut s = Session::new(Arc::new(cfg), &info, 1);
    feed_server(&mut s, &[msg(b'R', &[0, 0, 0, 0]), msg(b'Z', b"I")].concat());
    assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
}

#[test]
fn an_unnamed_statement_executed_again_carries_the_new_context() {
    let mut s = session();
    let tps = |b: &[u8]| -> Vec<String> {
        let t = String::from_utf8_lossy(b).into_owned();
        t.match_indices("traceparent='").map(|(i, _)| t[i + 13..i + 68].to_owned()).collect()
    };
    let exec = [msg(b'B', b"\0\0\0\0\0\0"), msg(b'E', b"\0\0\0\0\0")].concat();
    // One batch: Parse, two executions — one transaction, one root: the comment holds for both.
    let batch = [msg(b'P', b"\0select 1\0\0\0"), exec.clone(), exec.clone(), msg(b'S', b"")].concat();
    let out = feed_client(&mut s, &batch);
    let first = tps(&out);
    assert_eq!(first.len(), 1, "{:?}", String::from_utf8_lossy(&out));
    let reply = |n: usize| {
        let mut r = msg(b'1', b"");
        for _ in 0..n {
            r.extend([msg(b'2', b""), msg(b'C', b"SELECT 1\0")].concat());
        }
        r.extend(msg(b'Z', b"I"));
        r
    };
    assert_eq!(&feed_server(&mut s, &reply(2))[..], &reply(2)[..]);
    // The next request executes the statement again in a new transaction (a new root): parsed again
    // with that context first, its ParseComplete swallowed.
    let again = [exec.clone(), msg(b'S', b"")].concat();
    let out = feed_client(&mut s, &again);
    assert!(out.ends_with(&again));
    let second = tps(&out);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    let server = [msg(b'1', b""), msg(b'2', b""), msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat();
    let client = [msg(b'2', b""), msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat();
    assert_eq!(&feed_server(&mut s, &server)[..], &client[..]);
    assert_eq!(s.proto.pending(), 0);
    // A constant client context needs no new Parse.
    let mut s = session_with(InjectConfig::default());
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    feed_client(&mut s, &msg(b'Q', format!("SET sqlcommenter.traceparent = '{tp}'\0").as_bytes()));
    feed_server(&mut s, &[msg(b'C', b"SET\0"), msg(b'Z', b"I")].concat());
    assert_eq!(tps(&feed_client(&mut s, &batch)), vec![tp.to_owned()]);
    feed_server(&mut s, &reply(2));
    assert_eq!(&feed_client(&mut s, &again)[..], &again[..]);
}

#[test]
fn no_carrier_in_failed_transaction() {
    let mut s = session();
    feed_client(&mut s, &msg(b'Q', b"BEGIN\0"));
    let z = [msg(b'C', b"BEGIN\0"), msg(b'Z', b"E")].concat();
    feed_server(&mut s, &z);
    let batch = named_batch();
    assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
}

#[test]
fn statements_that_cannot_share_a_transaction_get_no_carrier() {
    let mut s = session();
    let p = [msg(b'P', b"v\0VACUUM t\0\0\0"), msg(b'S', b"")].concat();
    feed_client(&mut s, &p);
    feed_server(&mut s, &[msg(b'1', b""), msg(b'Z', b"I")].concat());
    let b = [msg(b'B', b"\0v\0\0\0\0\0\0\0"), msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")].concat();
    assert_eq!(&feed_client(&mut s, &b)[..], &b[..]);
}

#[test]
fn simple_query_and_unnamed_parse_are_commented() {
    let mut s = session();
    let out = feed_client(&mut s, &msg(b'Q', b"select 1;\0"));
    let text = String::from_utf8_lossy(&out[5..]);
    assert!(text.starts_with("select 1 /*application='app',traceparent='00-"), "{text}");
    assert!(text.ends_with("*/;\0"));
    assert_eq!(frame::header(&out).unwrap().unwrap().frame_len, out.len());
    let p = msg(b'P', b"\0select $1\0\0\x01\0\0\0\x17");
    let out = feed_client(&mut s, &p);
    let body = frame::parse_body(&out[5..]).unwrap();
    assert!(String::from_utf8_lossy(body.query).contains("traceparent="));
    assert_eq!(body.rest, b"\0\x01\0\0\0\x17", "parameter types kept");
    // An existing traceparent is left alone; non-UTF-8 text is relayed as is.
    let own = msg(b'Q', b"select 2 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/\0");
    assert_eq!(&feed_client(&mut s, &own)[..], &own[..]);
    let latin1 = msg(b'Q', b"select '\xe9'\0");
    assert_eq!(&feed_client(&mut s, &latin1)[..], &latin1[..]);
}

#[test]
fn client_application_name_change_is_relayed_and_used() {
    let info = StartupInfo { application_name: Some("app".into()), options: None };
    let cfg = InjectConfig {
        carrier: Some(carrier::Target::ApplicationName(carrier::AppNameFormat::Named)),
        root_contexts: true,
        ..InjectConfig::default()
    };
    let mut s = Session::new(Arc::new(cfg), &info, 1).with_ids(IdGenerator::seeded(3));
    feed_server(&mut s, &[status("application_name", "app"), msg(b'Z', b"I")].concat());
    let st = status("application_name", "renamed");
    assert_eq!(&feed_server(&mut s, &st)[..], &st[..]);
    let out = feed_client(&mut s, &named_batch());
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.contains("renamed@00-"), "{text}");
    // The server reports our value at the end of an explicit transaction's request: hidden.
    let at = text.find("renamed@00-").unwrap();
    let ours = status("application_name", &text[at..at + 8 + 55]);
    assert_eq!(&feed_server(&mut s, &ours)[..], b"");
}

#[test]
fn large_frames_stream_through_in_pieces() {
    let mut s = session();
    feed_client(&mut s, &msg(b'Q', b"select big\0"));
    let big = msg(b'D', &vec![7u8; 3 * MAX_DECODE]);
    let mut relayed = Vec::new();
    let mut pending = Vec::new();
    for chunk in big.chunks(8192) {
        pending.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        let used = s.server_bytes(&pending, &mut out, std::time::Instant::now()).unwrap();
        pending.drain(..used);
        relayed.extend_from_slice(&out);
        assert!(pending.len() < 16, "bounded buffering");
    }
    assert!(relayed == big);
    // A 2 MB query is relayed untouched in pieces too.
    let mut q = vec![b'Q'];
    let text = vec![b'x'; 2 * MAX_DECODE];
    q.extend_from_slice(&((text.len() + 5) as i32).to_be_bytes());
    q.extend_from_slice(&text);
    q.push(0);
    let mut relayed = Vec::new();
    let mut pending = Vec::new();
    for chunk in q.chunks(100_000) {
        pending.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        let used = s.client_bytes(&pending, &mut out, std::time::Instant::now()).unwrap();
        pending.drain(..used);
        relayed.extend_from_slice(&out);
    }
    assert!(relayed == q);
}

#[test]
fn a_session_scoped_carrier_is_written_once_per_change() {
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let info = StartupInfo { application_name: None, options: Some(format!("-c sqlcommenter.traceparent={tp}")) };
    let cfg = InjectConfig { carrier_scope: CarrierScope::Fixed(Scope::Session), ..InjectConfig::default() };
    let mut s = Session::new(Arc::new(cfg), &info, 1);
    feed_server(&mut s, &[msg(b'R', &[0, 0, 0, 0]), msg(b'Z', b"I")].concat());
    let batch = named_batch();
    let out = feed_client(&mut s, &batch);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains(tp) && text.contains("false\0"), "session-scoped: {text}");
    let (server, client_part) = replies(false, b"I");
    assert_eq!(&feed_server(&mut s, &server)[..], &client_part[..]);
    // The next transactions: the server's session holds it.
    for _ in 0..3 {
        assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
        feed_server(&mut s, &[msg(b'2', b""), msg(b'C', b"SELECT 0\0"), msg(b'Z', b"I")].concat());
    }
    // The client changes its context: written again, once.
    let tp2 = "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01";
    feed_client(&mut s, &msg(b'Q', format!("SET sqlcommenter.traceparent = '{tp2}'\0").as_bytes()));
    feed_server(&mut s, &[msg(b'C', b"SET\0"), msg(b'Z', b"I")].concat());
    assert!(String::from_utf8_lossy(&feed_client(&mut s, &batch)).contains(tp2));
}

/// The default scope: the carrier's `pg_backend_pid()` against the BackendKeyData decides. The process the
/// keys name (PostgreSQL itself): the client's context stays on the session and the carrier statement is
/// bound again in later transactions. Another process (a pooler's keys): transaction-scoped, parsed anew in
/// every transaction.
#[test]
fn the_default_scope_follows_whose_server_session_it_is() {
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let row = |pid: &[u8]| {
        let mut b = 2u16.to_be_bytes().to_vec();
        for col in [tp.as_bytes(), pid] {
            b.extend((col.len() as i32).to_be_bytes());
            b.extend(col);
        }
        msg(b'D', &b)
    };
    let client_part = [msg(b'2', b""), msg(b'C', b"SELECT 0\0"), msg(b'Z', b"I")].concat();
    let carrier_replies = |parsed: bool, pid: &[u8]| {
        let mut r = if parsed { msg(b'1', b"") } else { Vec::new() };
        r.extend([msg(b'2', b""), row(pid), msg(b'C', b"SELECT 1\0"), msg(b'3', b""), client_part.clone()].concat());
        r
    };
    for (pid, own) in [(&b"9"[..], true), (&b"4242"[..], false)] {
        let info = StartupInfo { application_name: None, options: Some(format!("-c sqlcommenter.traceparent={tp}")) };
        let mut s = Session::new(Arc::new(InjectConfig::default()), &info, 1);
        let keys = msg(b'K', &[0, 0, 0, 9, 1, 2, 3, 4]);
        feed_server(&mut s, &[msg(b'R', &[0, 0, 0, 0]), keys, msg(b'Z', b"I")].concat());
        let batch = named_batch();
        let text = String::from_utf8_lossy(&feed_client(&mut s, &batch)).into_owned();
        assert!(text.contains(SET_CONFIG_PID_SQL) && text.contains("true\0"), "nothing known yet: {text}");
        assert_eq!(&feed_server(&mut s, &carrier_replies(true, pid))[..], &client_part[..]);
        let text = String::from_utf8_lossy(&feed_client(&mut s, &batch)).into_owned();
        if own {
            assert!(text.contains(tp) && text.contains("false\0"), "session-scoped now: {text}");
            assert!(!text.contains(SET_CONFIG_PID_SQL), "the carrier statement stayed: {text}");
            assert_eq!(&feed_server(&mut s, &carrier_replies(false, pid))[..], &client_part[..]);
            // The server session holds it: nothing more to write.
            assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..]);
        } else {
            assert!(text.contains(SET_CONFIG_PID_SQL) && text.contains("true\0"), "per transaction: {text}");
            assert_eq!(&feed_server(&mut s, &carrier_replies(true, b"9"))[..], &client_part[..]);
            let text = String::from_utf8_lossy(&feed_client(&mut s, &batch)).into_owned();
            assert!(text.contains(SET_CONFIG_PID_SQL) && text.contains("true\0"), "once pooled, always: {text}");
        }
    }
}

#[test]
fn a_named_statement_changing_another_setting_costs_nothing() {
    // asyncpg's introspection (named) sets `jit`: no carrier, not then nor later, with nothing to carry.
    let mut s = session_with(InjectConfig::default());
    let parse = msg(b'P', b"jit\0SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new\0\0\0");
    feed_client(&mut s, &[parse, msg(b'S', b"")].concat());
    feed_server(&mut s, &[msg(b'1', b""), msg(b'Z', b"I")].concat());
    for stmt in [&b"jit"[..], b"stmt1", b"stmt1"] {
        let batch =
            [msg(b'B', &[b"\0", stmt, b"\0\0\0\0\0\0\0"].concat()), msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")].concat();
        assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..], "nothing injected");
        feed_server(&mut s, &[msg(b'2', b""), msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat());
    }
    // The client's own SET application_name (named): its value is the connection's own from then on —
    // no clearing write before every later transaction either.
    let parse = msg(b'P', b"app\0SET application_name = 'mine'\0\0\0");
    feed_client(&mut s, &[parse, msg(b'S', b"")].concat());
    feed_server(&mut s, &[msg(b'1', b""), msg(b'Z', b"I")].concat());
    for stmt in [&b"app"[..], b"stmt1", b"stmt1"] {
        let batch =
            [msg(b'B', &[b"\0", stmt, b"\0\0\0\0\0\0\0"].concat()), msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")].concat();
        assert_eq!(&feed_client(&mut s, &batch)[..], &batch[..], "nothing injected");
        feed_server(&mut s, &[msg(b'2', b""), msg(b'C', b"SET\0"), msg(b'Z', b"I")].concat());
    }
}

/// Feeds `bytes` as read at `at` and returns what the session reported.
fn events_after(s: &mut Session, client: bool, bytes: &[u8], at: Instant) -> Vec<Event> {
    let mut out = BytesMut::new();
    let used = if client { s.client_bytes(bytes, &mut out, at) } else { s.server_bytes(bytes, &mut out, at) };
    assert_eq!(used.unwrap(), bytes.len());
    s.events().collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn request_latency_runs_from_each_request_to_its_own_ready_for_query() {
    let mut s = session();
    let t0 = Instant::now();
    // Two pipelined simple Queries, then their replies.
    let ev = events_after(&mut s, true, &msg(b'Q', b"select 1\0"), t0);
    assert!(ev.contains(&Event::Statement(Protocol::Simple)) && ev.contains(&Event::Commented), "{ev:?}");
    events_after(&mut s, true, &msg(b'Q', b"select 2\0"), t0 + ms(1));
    let first = [msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat();
    assert_eq!(events_after(&mut s, false, &first, t0 + ms(4)), [Event::RequestDone(ms(4))]);
    assert_eq!(events_after(&mut s, false, &first, t0 + ms(10)), [Event::RequestDone(ms(9))]);
    // An extended batch: measured from its Sync; the proxy's carrier adds no measurement.
    let ev = events_after(&mut s, true, &named_batch(), t0 + ms(20));
    assert!(ev.contains(&Event::Carrier) && ev.contains(&Event::Statement(Protocol::Extended)), "{ev:?}");
    assert_eq!(events_after(&mut s, false, &replies(false, b"I").0, t0 + ms(22)), [Event::RequestDone(ms(2))]);
    assert_eq!(s.idle_for(t0 + ms(30)), None, "idle tracking is off");
    s.track_idle(t0 + ms(30));
    assert_eq!(s.idle_for(t0 + ms(35)), Some(ms(5)));
}

/// tokio-postgres pipelines three unnamed-statement batches; the second fails. Each execution gets its
/// own span, timed by the instants the bytes were read; the error stays with its statement.
#[test]
fn pipelined_spans_are_finished_by_their_own_replies() {
    let mut s = session();
    s.spans = Some(SpanTracker::new("db"));
    let batch = |sql: &str| {
        [
            msg(b'P', format!("\0{sql}\0\0\0").as_bytes()),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
        ]
        .concat()
    };
    let t0 = Instant::now();
    let sent = [batch("select 1"), batch("select 1/0"), batch("select g from generate_series(1, 2) g")].concat();
    let ev = events_after(&mut s, true, &sent, t0);
    assert_eq!(ev.iter().filter(|e| **e == Event::Commented).count(), 3, "{ev:?}");
    let ok = |rows: &[u8]| [msg(b'1', b""), msg(b'2', b""), msg(b'C', rows), msg(b'Z', b"I")].concat();
    let err = msg(b'E', b"SERROR\0C22012\0Mdivision by zero\0\0");
    let spans = |ev: Vec<Event>| -> Vec<SpanRecord> {
        ev.into_iter()
            .filter_map(|e| match e {
                Event::Span(r) => Some(*r),
                _ => None,
            })
            .collect()
    };
    let a = spans(events_after(&mut s, false, &ok(b"SELECT 1\0"), t0 + ms(2)));
    let b = spans(events_after(
        &mut s,
        false,
        &[msg(b'1', b""), msg(b'2', b""), err, msg(b'Z', b"I")].concat(),
        t0 + ms(3),
    ));
    let c = spans(events_after(&mut s, false, &ok(b"SELECT 2\0"), t0 + ms(5)));
    assert_eq!((a.len(), b.len(), c.len()), (1, 1, 1));
    let (a, b, c) = (&a[0], &b[0], &c[0]);
    assert_eq!((&*a.text, a.rows, a.start, a.end), ("select 1", Some(1), t0, t0 + ms(2)));
    assert_eq!((&*b.text, b.error.as_ref().map(|e| e.0.as_str()), b.end), ("select 1/0", Some("22012"), t0 + ms(3)));
    assert_eq!((c.rows, c.error.is_none(), c.end), (Some(2), true, t0 + ms(5)));
    assert!(a.span_id != b.span_id && b.span_id != c.span_id);
    assert_eq!(s.proto.pending(), 0);
    // Executes the server skips after an error in their batch get no span: they never ran.
    let two = [
        msg(b'P', b"\0select 1/0\0\0\0"),
        msg(b'B', b"\0\0\0\0\0\0\0\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'B', b"\0\0\0\0\0\0\0\0"),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ]
    .concat();
    events_after(&mut s, true, &two, t0 + ms(6));
    let err = msg(b'E', b"SERROR\0C22012\0Mdivision by zero\0\0");
    let ev = events_after(&mut s, false, &[msg(b'1', b""), msg(b'2', b""), err, msg(b'Z', b"I")].concat(), t0 + ms(7));
    assert_eq!(spans(ev).len(), 1);
    // A statement whose Bind fails (planning: `1/0` is folded) ends its execution's span with the error.
    let one =
        [msg(b'P', b"\0select 1/0\0\0\0"), msg(b'B', b"\0\0\0\0\0\0\0\0"), msg(b'E', b"\0\0\0\0\0"), msg(b'S', b"")];
    events_after(&mut s, true, &one.concat(), t0 + ms(8));
    let err = msg(b'E', b"SERROR\0C22012\0Mdivision by zero\0\0");
    let ev = events_after(&mut s, false, &[msg(b'1', b""), err, msg(b'Z', b"I")].concat(), t0 + ms(9));
    let failed = spans(ev);
    assert_eq!(failed.len(), 1);
    assert_eq!((&*failed[0].text, failed[0].error.as_ref().map(|e| e.0.as_str())), ("select 1/0", Some("22012")));
}

/// With no client statement to restore, the carrier stays the server's unnamed statement: the next carrier
/// of the same transaction binds it again without a Parse — until the transaction ends (a transaction
/// pooler may give the next one another server session), the client replaces it, or an error may have
/// skipped it.
#[test]
fn the_carrier_statement_is_parsed_once_per_transaction_while_nothing_replaces_it() {
    let mut s = session();
    // Spans on: every execution has a context of its own, so every named execution needs a carrier.
    s.spans = Some(SpanTracker::new("db"));
    let parses = |out: &BytesMut| String::from_utf8_lossy(out).matches(SET_CONFIG_PID_SQL).count();
    let begin = |s: &mut Session| {
        feed_client(s, &msg(b'Q', b"BEGIN\0"));
        feed_server(s, &[msg(b'C', b"BEGIN\0"), msg(b'Z', b"T")].concat());
    };
    begin(&mut s);
    let out = feed_client(&mut s, &named_batch());
    assert_eq!(parses(&out), 1);
    feed_server(&mut s, &replies(false, b"T").0);
    // The same transaction: Bind/Execute/Close of the carrier only.
    let out = feed_client(&mut s, &named_batch());
    assert!(String::from_utf8_lossy(&out).contains("__sqlc_tcp"), "a carrier is written");
    assert_eq!(parses(&out), 0, "bound again without a Parse");
    assert_eq!(s.proto.pending(), 3 + 3);
    let (mut server, _) = replies(false, b"T");
    server.drain(..5); // no ParseComplete this time
    feed_server(&mut s, &server);
    assert_eq!(s.proto.pending(), 0);
    // The transaction ends: the next one parses it again (behind a transaction pooler its server session
    // may be another, whose unnamed statement is someone else's).
    feed_client(&mut s, &msg(b'Q', b"COMMIT\0"));
    feed_server(&mut s, &[msg(b'C', b"COMMIT\0"), msg(b'Z', b"I")].concat());
    let out = feed_client(&mut s, &named_batch());
    assert_eq!(parses(&out), 1, "a new transaction: parsed again");
    feed_server(&mut s, &replies(false, b"I").0);
    let out = feed_client(&mut s, &named_batch());
    assert_eq!(parses(&out), 1, "an implicit transaction ended: parsed again");
    feed_server(&mut s, &replies(false, b"T").0);
    // An error anywhere: parsed again (the server may have skipped it). Here the client's Bind fails after
    // a carrier bound without a Parse.
    let out = feed_client(&mut s, &named_batch());
    assert_eq!(parses(&out), 0);
    let err = msg(b'E', b"SERROR\0C22012\0Mdivision by zero\0\0");
    let carrier_part = [msg(b'2', b""), msg(b'D', b"\0\x01\0\0\0\x01x"), msg(b'C', b"SELECT 1\0"), msg(b'3', b"")];
    feed_server(&mut s, &[carrier_part.concat(), err, msg(b'Z', b"E")].concat());
    assert_eq!(s.proto.pending(), 0);
    assert_eq!(s.carrier_statement, CarrierStatement::Absent, "after an error: parsed again");
    feed_client(&mut s, &msg(b'Q', b"ROLLBACK\0"));
    feed_server(&mut s, &[msg(b'C', b"ROLLBACK\0"), msg(b'Z', b"I")].concat());
    begin(&mut s);
    let out = feed_client(&mut s, &named_batch());
    assert_eq!(parses(&out), 1);
    feed_server(&mut s, &replies(false, b"T").0);
    // The client's own unnamed statement replaces it: parsed again, and the client's restored after it.
    feed_client(&mut s, &[msg(b'P', b"\0select $1\0\0\0"), msg(b'S', b"")].concat());
    feed_server(&mut s, &[msg(b'1', b""), msg(b'Z', b"T")].concat());
    let out = feed_client(&mut s, &named_batch());
    assert_eq!(parses(&out), 1);
    feed_server(&mut s, &replies(true, b"T").0);
    assert_eq!(s.proto.pending(), 0);
}

#[test]
fn the_kept_carrier_write_and_comment_follow_the_context_and_name() {
    const TP1: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const TP2: &str = "00-11111111111111111111111111111111-2222222222222222-01";
    let info = StartupInfo {
        application_name: Some("app".into()),
        options: Some(format!("-c sqlcommenter.traceparent={TP1}")),
    };
    let cfg = InjectConfig {
        carrier: Some(carrier::Target::ApplicationName(carrier::AppNameFormat::Named)),
        ..InjectConfig::default()
    };
    let mut s = Session::new(Arc::new(cfg), &info, 1).with_ids(IdGenerator::seeded(3));
    feed_server(&mut s, &[status("application_name", "app"), msg(b'Z', b"I")].concat());
    let text = |out: &BytesMut| String::from_utf8_lossy(out).into_owned();
    let transaction = |s: &mut Session| {
        let out = text(&feed_client(s, &named_batch()));
        let (mut server, _) = replies(false, b"I");
        if !out.contains(SET_CONFIG_PID_SQL) {
            server.drain(..5); // the carrier statement was parsed before: no ParseComplete
        }
        feed_server(s, &server);
        out
    };
    let first = transaction(&mut s);
    assert!(first.contains(&format!("app@{TP1}")), "{first}");
    let again = transaction(&mut s);
    assert!(again.contains(&format!("app@{TP1}")), "the same write, sent again: {again}");
    // The server reports the proxy's value (at the end of an explicit transaction's request): still hidden.
    assert_eq!(&feed_server(&mut s, &status("application_name", &format!("app@{TP1}")))[..], b"");
    // The client's session context changes: the next write and the next comment carry the new one.
    let set = msg(b'Q', format!("SET sqlcommenter.traceparent = '{TP2}'\0").as_bytes());
    feed_client(&mut s, &set);
    feed_server(&mut s, &[msg(b'C', b"SET\0"), msg(b'Z', b"I")].concat());
    let next = transaction(&mut s);
    assert!(next.contains(&format!("app@{TP2}")) && !next.contains(TP1), "{next}");
    let query = text(&feed_client(&mut s, &msg(b'Q', b"select 1\0")));
    assert!(query.contains(&format!("traceparent='{TP2}'")), "{query}");
    feed_server(&mut s, &[msg(b'C', b"SELECT 1\0"), msg(b'Z', b"I")].concat());
    // The client renames itself: the kept write is stale.
    assert_eq!(
        &feed_server(&mut s, &status("application_name", "renamed"))[..],
        &status("application_name", "renamed")[..]
    );
    let renamed = transaction(&mut s);
    assert!(renamed.contains(&format!("renamed@{TP2}")), "{renamed}");
}
