//! TLS on the upstream leg: encryption, certificate verification, and SCRAM through two TLS legs (works
//! with `channel_binding=disable`; with libpq's default `prefer` the server's downgrade protection refuses,
//! because channel binding cannot pass through a proxy).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlcommenter_proxy::{ProxyConfig, TlsFiles, Upstream, UpstreamTlsMode};
use sqlcommenter_testpg::Cluster;

fn openssl_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "openssl is needed for this test");
    (cert, key)
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca cert, server cert, server key).
fn ca_signed(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, ca_key) = openssl_cert(dir, "ca");
    let (cert, key, csr, ext) =
        (dir.join("server.crt"), dir.join("server.key"), dir.join("server.csr"), dir.join("ext"));
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let p = |p: &PathBuf| p.to_str().unwrap().to_owned();
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", &p(&key), "-out", &p(&csr)]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        &p(&cert),
        "-extfile",
        &p(&ext),
    ]);
    (ca, cert, key)
}

fn tls_cluster(dir: &Path) -> (Cluster, PathBuf, PathBuf) {
    let (ca, cert, key) = ca_signed(dir);
    // The server runs as `postgres` when the tests run as root: give it the key, private.
    let _ = Command::new("chown").arg("postgres").arg(&cert).arg(&key).status();
    let _ = Command::new("chmod").arg("600").arg(&key).status();
    let pg = Cluster::builder()
        .setting("ssl", "on")
        .setting("ssl_cert_file", cert.to_str().unwrap())
        .setting("ssl_key_file", key.to_str().unwrap())
        .setting("password_encryption", "scram-sha-256")
        .start()
        .unwrap();
    pg.execute_sql("CREATE ROLE u_tls LOGIN PASSWORD 'pw'").unwrap();
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("hostssl all u_tls 127.0.0.1/32 scram-sha-256\nhost all u_tls 127.0.0.1/32 reject\n{old}"),
    )
    .unwrap();
    pg.execute_sql("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    (pg, ca, cert)
}

fn config(pg: &Cluster, mode: UpstreamTlsMode, ca: Option<PathBuf>) -> ProxyConfig {
    let mut c =
        ProxyConfig::new("127.0.0.1:0".parse().unwrap(), Upstream::parse(&format!("127.0.0.1:{}", pg.port())).unwrap());
    c.upstream_tls = mode;
    c.upstream_ca = ca;
    c.shutdown_timeout = Duration::from_secs(2);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_modes_and_scram_over_two_tls_legs() {
    let dir = std::env::temp_dir().join(format!("sqlc-utls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _ = Command::new("chmod").arg("755").arg(&dir).status();
    let (pg, ca, _) = tls_cluster(&dir);

    // require: encrypted, SCRAM passes (the user is only allowed over TLS).
    let proxy = sqlcommenter_proxy::start(config(&pg, UpstreamTlsMode::Require, None)).await.unwrap();
    let conn = format!("host=127.0.0.1 port={} user=u_tls password=pw dbname=postgres", proxy.local_addr().port());
    let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let ssl: bool = c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(ssl, "the upstream leg is TLS");
    drop(c);
    proxy.shutdown().await;

    // verify-full with the right CA works; with another CA the client gets an error.
    let proxy = sqlcommenter_proxy::start(config(&pg, UpstreamTlsMode::VerifyFull, Some(ca.clone()))).await.unwrap();
    let conn = format!("host=127.0.0.1 port={} user=u_tls password=pw dbname=postgres", proxy.local_addr().port());
    let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    drop(c);
    proxy.shutdown().await;
    let (other_ca, _) = openssl_cert(&dir, "other");
    let proxy = sqlcommenter_proxy::start(config(&pg, UpstreamTlsMode::VerifyFull, Some(other_ca))).await.unwrap();
    let conn = format!("host=127.0.0.1 port={} user=u_tls password=pw dbname=postgres", proxy.local_addr().port());
    let e = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.err().expect("unverifiable upstream refused");
    let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
    assert!(msg.contains("cannot connect to upstream") && msg.contains("certificate"), "{e:?}");
    proxy.shutdown().await;

    // Both legs TLS with psql: channel binding cannot span two TLS sessions. With channel_binding=disable
    // the login works; with libpq's default (prefer) the server refuses, as it must (SCRAM downgrade
    // protection) -- the proxy never weakens authentication.
    let (ccert, ckey) = openssl_cert(&dir, "client-leg");
    let mut cfg = config(&pg, UpstreamTlsMode::Require, None);
    cfg.tls = Some(TlsFiles { cert: ccert, key: ckey });
    let proxy = sqlcommenter_proxy::start(cfg).await.unwrap();
    let psql = |binding: &str| {
        pg.client_command("psql")
            .env("PGPORT", proxy.local_addr().port().to_string())
            .env("PGUSER", "u_tls")
            .env("PGPASSWORD", "pw")
            .env("PGSSLMODE", "require")
            .env("PGCHANNELBINDING", binding)
            .args(["-X", "-A", "-t", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"])
            .output()
            .unwrap()
    };
    let out = psql("disable");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    let out = psql("prefer");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("channel binding"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.shutdown().await;
}
