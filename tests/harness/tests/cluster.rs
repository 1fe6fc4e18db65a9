//! Integration tests against real PostgreSQL clusters.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sqlcommenter_testpg::{shared, try_shared, Cluster, HarnessError, LogFormat, LogKind};

const WAIT: Duration = Duration::from_secs(10);

/// A process that still exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..].trim_start().chars().next();
            !matches!(state, Some('Z' | 'X'))
        }
        Err(_) => false,
    }
}

fn wait_until(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Runs a uniquely marked statement and returns (marker, backend pid of that session).
fn marked_statement(pg: &Cluster, tag: &str) -> (String, u32) {
    let marker = format!("marker_{tag}_{}", std::process::id());
    let out = pg.query(&format!("SELECT pg_backend_pid(), '{marker}'")).unwrap();
    let pid = out.split('|').next().unwrap().parse().unwrap();
    (marker, pid)
}

#[test]
fn two_clusters_start_concurrently_on_different_ports() {
    let handles: Vec<_> = (0..2).map(|_| std::thread::spawn(|| Cluster::builder().start().unwrap())).collect();
    let clusters: Vec<Cluster> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ports: HashSet<u16> = clusters.iter().map(Cluster::port).collect();
    assert_eq!(ports.len(), 2, "ports must differ");
    let dirs: HashSet<&Path> = clusters.iter().map(Cluster::data_dir).collect();
    assert_eq!(dirs.len(), 2);
    for pg in &clusters {
        assert_eq!(pg.host(), "127.0.0.1");
        assert_eq!(pg.query("SELECT 40 + 2").unwrap(), "42");
        assert_eq!(pg.query("SHOW port").unwrap(), pg.port().to_string(), "server reports the port we think it has");
        assert!(pg.socket_dir().join(format!(".s.PGSQL.{}", pg.port())).exists());
        assert!(pg.socket_dir().as_os_str().len() < 60);
    }
    // The two servers are distinct: a table in one is absent from the other.
    clusters[0].execute_sql("CREATE TABLE only_here (x int)").unwrap();
    assert_eq!(clusters[1].query("SELECT count(*) FROM pg_class WHERE relname = 'only_here'").unwrap(), "0");
}

#[test]
fn stderr_log_has_prefix_and_statement() {
    let pg = Cluster::builder()
        .setting("log_min_duration_statement", "0")
        .log_format(LogFormat::Stderr { prefix: "%m [%p] %q%u@%d %a ".into() })
        .start()
        .unwrap();
    let (marker, backend) = marked_statement(&pg, "stderr");
    let log = pg.wait_for_log(&marker, WAIT).unwrap();
    let line = log.lines().find(|l| l.contains(&marker)).expect("statement line");
    assert!(
        line.contains(&format!("[{backend}] postgres@postgres psql LOG:  duration: ")),
        "prefix not applied: {line}"
    );
    assert!(line.contains("statement: SELECT pg_backend_pid()"), "{line}");
    // Timestamp from %m, e.g. `2025-01-01 12:00:00.123 UTC`.
    assert!(line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b' ', "{line}");

    let file = pg.log_file_for(LogKind::Stderr);
    assert_eq!(file, pg.log_dir().join("postgresql.log"));
    assert!(pg.log_files().contains(&file));
    assert_eq!(pg.primary_log_kind(), LogKind::Stderr);
}

#[test]
fn csv_log_has_statement() {
    let pg = Cluster::builder().setting("log_min_duration_statement", "0").log_format(LogFormat::Csv).start().unwrap();
    let (marker, backend) = marked_statement(&pg, "csv");
    let log = pg.wait_for_log(&marker, WAIT).unwrap();
    let line = log.lines().find(|l| l.contains(&marker)).unwrap();
    // log_time,user_name,database_name,process_id,...
    assert!(line.contains(&format!(r#","postgres","postgres",{backend},"127.0.0.1:"#)), "{line}");
    assert!(line.contains("duration: "), "{line}");
    assert!(line.contains(r#","psql","client backend","#), "{line}");
    assert_eq!(pg.log_file_for(LogKind::Csv).extension().unwrap(), "csv");
    assert!(pg.log_file_for(LogKind::Csv).is_file());
    assert_eq!(pg.read_log(), pg.read_log_for(LogKind::Csv));
}

#[test]
fn json_log_has_statement() {
    let pg = Cluster::builder().setting("log_min_duration_statement", "0").log_format(LogFormat::Json).start().unwrap();
    let (marker, backend) = marked_statement(&pg, "json");
    let log = pg.wait_for_log(&marker, WAIT).unwrap();
    let line = log.lines().find(|l| l.contains(&marker)).unwrap();
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    for needle in [
        r#""user":"postgres""#.to_owned(),
        r#""dbname":"postgres""#.to_owned(),
        format!(r#""pid":{backend},"#),
        r#""application_name":"psql""#.to_owned(),
        r#""message":"duration: "#.to_owned(),
    ] {
        assert!(line.contains(&needle), "{needle} missing in {line}");
    }
    assert!(pg.log_file_for(LogKind::Json).is_file());
}

#[test]
fn several_formats_at_once() {
    let pg = Cluster::builder()
        .setting("log_statement", "all")
        .log_format(LogFormat::Csv)
        .log_format(LogFormat::Json)
        .log_format(LogFormat::stderr())
        .start()
        .unwrap();
    let (marker, _) = marked_statement(&pg, "multi");
    assert_eq!(pg.primary_log_kind(), LogKind::Csv);
    for kind in [LogKind::Csv, LogKind::Json, LogKind::Stderr] {
        pg.wait_for_log_for(kind, &marker, WAIT).unwrap();
    }
    assert_eq!(pg.query("SHOW log_destination").unwrap(), "csvlog,jsonlog,stderr");
}

#[test]
fn default_cluster_logs_to_server_log() {
    let pg = Cluster::builder().setting("log_statement", "all").start().unwrap();
    let (marker, _) = marked_statement(&pg, "plain");
    pg.wait_for_log(&marker, WAIT).unwrap();
    assert_eq!(pg.log_files(), vec![pg.server_log().to_path_buf()]);
    assert_eq!(pg.query("SHOW logging_collector").unwrap(), "off");
}

#[test]
fn settings_take_effect() {
    let pg = Cluster::builder()
        .setting("log_min_duration_statement", "0")
        .setting("compute_query_id", "on")
        .setting("work_mem", "7MB")
        .setting("auto_explain.log_min_duration", "0")
        .preload(&["pg_stat_statements", "auto_explain"])
        .create_database("other db")
        .create_extension("pg_stat_statements")
        .start()
        .unwrap();
    assert_eq!(pg.query("SHOW log_min_duration_statement").unwrap(), "0");
    assert_eq!(pg.query("SHOW compute_query_id").unwrap(), "on");
    assert_eq!(pg.query("SHOW work_mem").unwrap(), "7MB");
    assert_eq!(pg.query("SHOW fsync").unwrap(), "off");
    assert_eq!(pg.query("SHOW synchronous_commit").unwrap(), "off");
    assert_eq!(pg.query("SHOW full_page_writes").unwrap(), "off");
    assert_eq!(pg.query("SHOW shared_preload_libraries").unwrap(), "pg_stat_statements,auto_explain");
    assert_eq!(pg.query("SHOW auto_explain.log_min_duration").unwrap(), "0");
    assert_eq!(pg.query("SELECT count(*) > 0 FROM pg_stat_statements").unwrap(), "t");
    assert_eq!(pg.psql(&["-At", "-d", "other db", "-c", "SELECT current_database()"]).unwrap(), "other db\n");
    assert_eq!(pg.query("SHOW server_encoding").unwrap(), "UTF8");
}

#[test]
fn reload_and_restart() {
    let pg = Cluster::builder().start().unwrap();
    let port = pg.port();
    pg.execute_sql("CREATE TABLE survives (x int); INSERT INTO survives VALUES (1)").unwrap();

    pg.set_setting_and_reload("log_min_duration_statement", "250ms").unwrap();
    assert_eq!(pg.query("SHOW log_min_duration_statement").unwrap(), "250ms");

    // A postmaster-context setting needs a restart.
    pg.set_setting_and_reload("max_connections", "42").unwrap();
    assert_eq!(pg.query("SHOW max_connections").unwrap(), "100");
    let old_pid = pg.pid().unwrap();
    pg.restart().unwrap();
    assert_eq!(pg.query("SHOW max_connections").unwrap(), "42");
    assert_eq!(pg.port(), port, "restart keeps the port");
    assert_ne!(pg.pid().unwrap(), old_pid);
    assert_eq!(pg.query("SELECT x FROM survives").unwrap(), "1");

    pg.stop().unwrap();
    assert!(!pg.is_running());
    assert!(!alive(old_pid));
    pg.stop().unwrap(); // idempotent
    assert!(pg.query("SELECT 1").is_err());
    pg.restart().unwrap();
    assert_eq!(pg.query("SELECT 1").unwrap(), "1");
}

#[test]
fn errors_carry_stderr() {
    let pg = shared();
    match pg.execute_sql("SELEC 1") {
        Err(HarnessError::CommandFailed { stderr, .. }) => {
            assert!(stderr.contains("syntax error"), "{stderr}")
        }
        other => panic!("expected CommandFailed, got {other:?}"),
    }
    assert!(matches!(pg.set_setting_and_reload("work_mem = 1; --", "x"), Err(HarnessError::InvalidSettingName(_))));
    match Cluster::builder().bindir("/nonexistent/bin").start() {
        Err(e @ HarnessError::BinariesNotFound { .. }) => {
            assert!(e.to_string().contains("apt-get install postgresql"), "{e}")
        }
        other => panic!("expected BinariesNotFound, got {other:?}"),
    }
    let e = pg.wait_for_log("never-logged-text", Duration::from_millis(100));
    assert!(matches!(e, Err(HarnessError::Timeout { .. })));
}

#[test]
fn connection_strings_and_binaries() {
    let pg = shared();
    let port = pg.port();
    assert_eq!(pg.url("postgres"), format!("postgres://postgres@127.0.0.1:{port}/postgres"));
    assert_eq!(pg.keyword_conn_str("postgres"), format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"));
    for conn in [pg.url("postgres"), pg.keyword_conn_str("postgres"), pg.socket_conn_str("postgres")] {
        let out = Command::new(pg.bin("psql"))
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .args(["-X", "-At", "-d", &conn, "-c", "SELECT current_user"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{conn}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "postgres\n");
    }
    assert!(pg.bin("pgbench").is_file());
    let out = pg.client_command("pgbench").arg("--version").output().unwrap();
    assert!(out.status.success());
    let script = pg
        .run_script("postgres", "CREATE DATABASE scripted_db;\n\\c scripted_db\nSELECT current_database();\n")
        .unwrap();
    assert!(script.contains("scripted_db"), "{script}");
}

#[test]
fn shared_is_reused_and_configured() {
    let addrs: HashSet<usize> = (0..4)
        .map(|_| std::thread::spawn(|| shared() as *const Cluster as usize))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(addrs.len(), 1, "one shared cluster per process");
    let pg = try_shared().unwrap();
    assert_eq!(pg as *const Cluster as usize, *addrs.iter().next().unwrap());
    assert_eq!(pg.query("SHOW log_min_duration_statement").unwrap(), "0");
    assert_eq!(pg.query("SHOW compute_query_id").unwrap(), "on");
    assert_eq!(pg.query("SHOW log_line_prefix").unwrap(), "%m [%p] %a %u@%d ");
    assert_eq!(
        pg.query("SELECT extname FROM pg_extension WHERE extname = 'pg_stat_statements'").unwrap(),
        "pg_stat_statements"
    );
    let (marker, _) = marked_statement(pg, "shared");
    pg.wait_for_log(&marker, WAIT).unwrap();
    if sqlcommenter_testpg::external_url().is_none() {
        assert_eq!(sqlcommenter_testpg::shared_url(), pg.url("postgres"));
    }
}

#[test]
fn drop_stops_server_and_removes_dirs() {
    let pg = Cluster::builder().start().unwrap();
    let pid = pg.pid().unwrap();
    let base: PathBuf = pg.base_dir().to_path_buf();
    assert!(alive(pid));
    assert!(pg.is_running());
    drop(pg);
    assert!(!alive(pid), "postmaster {pid} still running after drop");
    if std::env::var(sqlcommenter_testpg::KEEP_ENV).as_deref() != Ok("1") {
        assert!(!base.exists(), "{} not removed", base.display());
    }
}

#[test]
fn start_time() {
    // Warm the per-process template first so the measurement is the per-cluster cost.
    drop(Cluster::builder().start().unwrap());
    let start = Instant::now();
    let pg = Cluster::builder().start().unwrap();
    let elapsed = start.elapsed();
    eprintln!("cluster start (template warm): {elapsed:?}");
    let start = Instant::now();
    drop(pg);
    eprintln!("cluster drop: {:?}", start.elapsed());
    assert!(elapsed < Duration::from_secs(20));
}

const CHILD_ENV: &str = "SQLCOMMENTER_TESTPG_WATCHDOG_CHILD";

/// Helper run in a child process by `watchdog_cleans_up_after_process_exit`: starts the
/// shared cluster and leaks another one, prints where they are, and exits.
#[test]
#[ignore = "helper: run by watchdog_cleans_up_after_process_exit"]
fn watchdog_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let pg = shared();
    println!("CLUSTER {} {}", pg.pid().unwrap(), pg.base_dir().display());
    let leaked = Cluster::builder().start().unwrap();
    println!("CLUSTER {} {}", leaked.pid().unwrap(), leaked.base_dir().display());
    if let Ok(bin) = sqlcommenter_testpg::find_pgbouncer() {
        let bouncer = sqlcommenter_testpg::PgBouncer::builder(sqlcommenter_testpg::PoolMode::Session)
            .binary(bin)
            .start(&leaked)
            .unwrap();
        println!("CLUSTER {} {}", bouncer.pid().unwrap(), bouncer.dir().display());
        std::mem::forget(bouncer);
    }
    std::mem::forget(leaked);
}

#[test]
fn watchdog_cleans_up_after_process_exit() {
    if std::env::var(sqlcommenter_testpg::KEEP_ENV).as_deref() == Ok("1") {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "watchdog_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let clusters: Vec<(u32, PathBuf)> = stdout
        .lines()
        .filter_map(|l| l.split_once("CLUSTER ").map(|(_, rest)| rest))
        .map(|l| {
            let (pid, dir) = l.split_once(' ').unwrap();
            (pid.parse().unwrap(), PathBuf::from(dir))
        })
        .collect();
    let expected = if sqlcommenter_testpg::find_pgbouncer().is_ok() { 3 } else { 2 };
    assert_eq!(clusters.len(), expected, "{stdout}");
    for (pid, dir) in clusters {
        assert!(
            wait_until(|| !alive(pid) && !dir.exists(), Duration::from_secs(20)),
            "postmaster {pid} / {} left behind after the child process exited",
            dir.display()
        );
    }
}
