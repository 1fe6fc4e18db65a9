//! PgBouncer in front of a harness cluster: routing, pool mode, user, cleanup, errors.

use std::time::{Duration, Instant};

use sqlcommenter_testpg::{pgbouncer_or_skip, Cluster, HarnessError, PgBouncer, PoolMode};

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !matches!(stat[stat.rfind(')').unwrap() + 1..].trim_start().chars().next(), Some('Z' | 'X')))
}

#[test]
fn routes_to_the_cluster_in_session_and_transaction_mode() {
    let Some(bin) = pgbouncer_or_skip("routes_to_the_cluster_in_session_and_transaction_mode") else { return };
    let pg = Cluster::builder().start().unwrap();
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let bouncer = PgBouncer::builder(mode).binary(&bin).start(&pg).unwrap();
        assert!(bouncer.version().starts_with("PgBouncer 1."), "{}", bouncer.version());
        assert_ne!(bouncer.port(), pg.port());
        // A table created through PgBouncer exists on the cluster: the far side saw it.
        let table = format!("via_bouncer_{}", mode.as_str());
        bouncer.query("postgres", &format!("CREATE TABLE {table} (x int)")).unwrap();
        assert_eq!(pg.query(&format!("SELECT count(*) FROM pg_class WHERE relname = '{table}'")).unwrap(), "1");
        assert_eq!(bouncer.query("postgres", "SHOW port").unwrap(), pg.port().to_string());
        // PgBouncer's own console reports the mode and pool size it runs with.
        let config = bouncer.query("pgbouncer", "SHOW CONFIG").unwrap();
        let value = |key: &str| {
            config.lines().find_map(|l| l.strip_prefix(&format!("{key}|"))).map(|rest| rest.split('|').next().unwrap())
        };
        assert_eq!(value("pool_mode"), Some(mode.as_str()), "{config}");
        assert_eq!(value("default_pool_size"), Some("2"), "{config}");
        assert_eq!(value("max_prepared_statements"), Some("200"), "{config}");
    }
}

#[test]
fn runs_unprivileged_and_drop_kills_and_cleans_up() {
    let Some(bin) = pgbouncer_or_skip("runs_unprivileged_and_drop_kills_and_cleans_up") else { return };
    let pg = Cluster::builder().start().unwrap();
    let bouncer = PgBouncer::builder(PoolMode::Transaction).binary(bin).start(&pg).unwrap();
    let pid = bouncer.pid().unwrap();
    let dir = bouncer.dir().to_path_buf();
    assert!(alive(pid));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid =
        status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().next().unwrap().to_owned();
    assert_ne!(uid, "0", "PgBouncer must not run as root");
    assert!(bouncer.read_log().contains("listening on"), "{}", bouncer.read_log());
    drop(bouncer);
    let started = Instant::now();
    while alive(pid) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "pgbouncer {pid} still running after drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn missing_or_old_binary_is_a_clear_error() {
    let pg = Cluster::builder().start().unwrap();
    let err = PgBouncer::builder(PoolMode::Session).binary("/nonexistent/pgbouncer").start(&pg).unwrap_err();
    assert!(matches!(err, HarnessError::PgBouncerNotFound { .. }), "{err}");
    assert!(err.to_string().contains("PGBOUNCER_BIN"), "{err}");
    let err = PgBouncer::builder(PoolMode::Session).binary("/bin/true").start(&pg).unwrap_err();
    assert!(matches!(err, HarnessError::PgBouncerTooOld { .. }), "{err}");
    let err = PgBouncer::builder(PoolMode::Session).setting("bad name", "1").start(&pg).unwrap_err();
    assert!(matches!(err, HarnessError::InvalidSettingName(_)), "{err}");
}
