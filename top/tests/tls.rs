//! TLS with libpq's `sslmode` semantics against a cluster that accepts only TLS over TCP: `prefer` and
//! `require` encrypt, `verify-ca` checks the chain, `verify-full` the chain and the host name; a wrong CA
//! or host is one line and exit 2.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use sqlcommenter_testpg::Cluster;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl (installed by .ci/run)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate it signs for `localhost` only (not for 127.0.0.1); plus an unrelated CA.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for ca in ["ca", "other"] {
        let (subject, key, pem) = (format!("/CN={ca}"), format!("{ca}.key"), format!("{ca}.pem"));
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject, "-keyout", &key, "-out", &pem];
        args.extend(ec);
        openssl(dir, &args);
    }
    let mut args = vec!["req", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"];
    args.extend(ec);
    openssl(dir, &args);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    // The server runs as `postgres` when the tests run as root: give it the key, private.
    let _ = Command::new("chown").arg("postgres").arg(dir.join("server.pem")).arg(dir.join("server.key")).status();
    let _ = Command::new("chmod").arg("600").arg(dir.join("server.key")).status();
    let _ = Command::new("chmod").arg("755").arg(dir).status();
    (dir.join("ca.pem"), dir.join("other.pem"), dir.join("server.pem"), dir.join("server.key"))
}

fn tls_cluster(cert: &Path, key: &Path) -> Cluster {
    let pg = Cluster::builder()
        .setting("ssl", "on")
        .setting("ssl_cert_file", cert.to_str().unwrap())
        .setting("ssl_key_file", key.to_str().unwrap())
        .start()
        .unwrap();
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("hostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n{old}"))
        .unwrap();
    pg.execute_sql("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_as_libpq() {
    let dir = std::env::temp_dir().join(format!("sqlc-top-tls-{}", std::process::id()));
    let (ca, other, cert, key) = certificates(&dir);
    let pg = tls_cluster(&cert, &key);
    let port = pg.port();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let env = [("HOME", home.to_str().unwrap())];
    let (ca, other) = (ca.to_str().unwrap(), other.to_str().unwrap());

    // Works: the server only accepts TLS, so each of these negotiated it.
    for conninfo in [
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require"),
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-ca sslrootcert={ca}"),
        format!("host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{ca}'"),
        format!("postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let out = top(&["--once", "--format", "json", &conninfo], &env).await;
        assert!(out.status.success(), "{conninfo}: {}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(doc["sessions"].is_array(), "{conninfo}");
    }
    // PGSSLMODE / PGSSLROOTCERT as psql reads them.
    let out = top(
        &["--once", &format!("host=localhost port={port} user=postgres dbname=postgres")],
        &[("HOME", home.to_str().unwrap()), ("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", ca)],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Refused: one line, exit 2.
    for (conninfo, needle) in [
        (format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable"), "no encryption"),
        (
            format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={ca}"),
            "certificate",
        ),
        (
            format!("host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={other}"),
            "certificate",
        ),
        (
            format!("host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full"),
            "needs root certificates",
        ),
        (
            format!("host=localhost port={port} user=postgres sslmode=verify-ca sslrootcert=/nonexistent.pem"),
            "/nonexistent.pem",
        ),
    ] {
        let out = top(&["--once", "--format", "json", &conninfo], &env).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{conninfo}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{conninfo}: {stderr}");
        assert!(stderr.contains(needle), "{conninfo}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // libpq's default root file: ~/.postgresql/root.crt makes verify-full work without sslrootcert.
    std::fs::create_dir_all(home.join(".postgresql")).unwrap();
    std::fs::copy(ca, home.join(".postgresql/root.crt")).unwrap();
    let out = top(
        &["--once", &format!("host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full")],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}
