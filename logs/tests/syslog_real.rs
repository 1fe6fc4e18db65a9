//! Real syslog output: a PostgreSQL server with `log_destination = 'stderr,syslog'` runs the workload while
//! this test listens on `/dev/log` (where glibc's `syslog(3)` sends), and writes each datagram it receives
//! as one line (RFC 3164 as sent, without the host a daemon would add). The statements read from it must
//! be the ones read from the same run's stderr log: same kinds, queries, durations and trace context;
//! including a statement longer than PostgreSQL's 900-byte syslog pieces.
//!
//! Needs `/dev/log` free (no syslog daemon) and the right to create it (root); skipped otherwise, with a
//! message.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlcommenter_logs::{parse_file, parse_file_with, InputFormat, Prefix, ReadOptions, Statement};
use sqlcommenter_testpg::{Cluster, LogFormat, LogKind};

mod common;
use common::{run_workload, APP};

const DEV_LOG: &str = "/dev/log";

/// Removes `/dev/log` when the test ends, however it ends.
struct Listener(UnixDatagram);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(DEV_LOG);
    }
}

fn listen() -> Option<Listener> {
    if Path::new(DEV_LOG).exists() {
        eprintln!("SKIPPED: {DEV_LOG} exists (a syslog daemon runs): its messages cannot be intercepted here");
        return None;
    }
    match UnixDatagram::bind(DEV_LOG) {
        Ok(s) => {
            let l = Listener(s);
            std::fs::set_permissions(DEV_LOG, std::fs::Permissions::from_mode(0o666)).unwrap();
            Some(l)
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot create {DEV_LOG}: {e}");
            None
        }
    }
}

type Row = (sqlcommenter_logs::Kind, Option<String>, String, Option<f64>);

fn workload_rows(stmts: &[Statement]) -> Vec<Row> {
    stmts
        .iter()
        .filter(|s| !s.carrier && sqlcommenter::carrier::strip_carrier(&s.application_name).starts_with(&APP[..4]))
        .map(|s| (s.kind, s.trace_id(), s.query.clone(), s.duration_ms))
        .collect()
}

#[test]
fn statements_from_syslog_match_stderr() {
    let Some(listener) = listen() else { return };
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sock = listener.0.try_clone().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (sink, flag) = (got.clone(), stop.clone());
    // Read before the server starts: a Unix datagram socket queues only a few messages (net.unix.
    // max_dgram_qlen), then syslog(3) blocks the sender.
    let receiver = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !flag.load(Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                sink.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).trim_end_matches('\n').to_owned());
            }
        }
    });
    let prefix = "%m [%p] %q%u@%d %a ";
    let pg = Cluster::builder()
        .setting("log_min_duration_statement", "0")
        .log_format(LogFormat::Stderr { prefix: prefix.into() })
        .setting("log_destination", "stderr,syslog")
        .setting("syslog_ident", "postgres")
        .start()
        .unwrap();

    run_workload(&pg);
    // A statement longer than a syslog piece (PostgreSQL cuts at 900 bytes, on a space).
    let long: Vec<String> = (0..80).map(|i| format!("{i} as column_number_{i}")).collect();
    let long = format!("select {}", long.join(", "));
    let mut cfg: tokio_postgres::Config = pg.url("work").parse().unwrap();
    cfg.application_name(APP);
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.simple_query(&long).await.unwrap();
        client.simple_query("select 'syslog-end'").await.unwrap();
    });
    pg.wait_for_log_for(LogKind::Stderr, "syslog-end", Duration::from_secs(15)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();

    let lines = got.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.contains("syslog-end")), "the server's syslog messages arrived: {lines:#?}");
    let dir = std::env::temp_dir().join(format!("sqlc-logs-syslog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("syslog.log");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let opts = ReadOptions { source: None, prefix: Some(Prefix::new(prefix).unwrap()), ..ReadOptions::default() };
    let head = std::fs::read(&file).unwrap();
    let d = sqlcommenter_logs::detect(&head, &Prefix::new(prefix).unwrap(), &sqlcommenter_logs::Zones::new());
    assert_eq!((d.format, d.doubt), (InputFormat::Syslog, None), "detected as syslog");
    let (from_syslog, stats) = parse_file_with(&file, opts).unwrap();
    assert_eq!(stats.parse.unknown, 0, "every syslog line read: {lines:#?}");
    let stderr_log = pg.log_file_for(LogKind::Stderr);
    let (from_stderr, _) = parse_file(&stderr_log, Some(InputFormat::Stderr), &Prefix::new(prefix).unwrap()).unwrap();

    // Pieces of one backend's message are joined when it logs again, so statements of different backends
    // may come out in another order than in the stderr log: compare them sorted.
    let sorted = |mut v: Vec<_>| {
        v.sort_by(|x: &Row, y: &Row| format!("{x:?}").cmp(&format!("{y:?}")));
        v
    };
    let (a, b) = (sorted(workload_rows(&from_syslog)), sorted(workload_rows(&from_stderr)));
    assert!(a.len() >= 20, "workload statements: {}", a.len());
    if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
        panic!(
            "syslog and stderr differ at statement {i} of {}/{}:\n syslog: {:?}\n stderr: {:?}",
            a.len(),
            b.len(),
            a.get(i),
            b.get(i)
        );
    }
    assert!(from_syslog.iter().any(|s| s.query == long && s.duration_ms.is_some()), "the long statement joined back");
    assert!(lines.iter().any(|l| l.contains("-2] ")), "the long statement was sent in pieces");
    let with_context = a.iter().filter(|r| r.1.is_some()).count();
    assert!(with_context >= 12, "trace context from comments and application_name: {with_context}");
    std::fs::remove_dir_all(&dir).unwrap();
}
