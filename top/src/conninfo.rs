//! From `[CONNINFO]` to a tokio-postgres configuration, filling the gaps as psql would: `PGHOST`,
//! `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, `PGPASSFILE` / `~/.pgpass`, `PGAPPNAME`, `PGOPTIONS`,
//! `PGCONNECT_TIMEOUT`, `PGSSLMODE`, `PGSSLROOTCERT`; then libpq's defaults (local socket, port 5432, the
//! OS user, a database named like the user). tokio-postgres itself parses the URL or key/value string,
//! after `sslmode` and `sslrootcert` are taken out of it (it knows neither `verify-*` nor root files; see
//! [`crate::tls`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::Config;

use crate::error::TopError;
use crate::pgpass::{self, PgpassKey};
use crate::tls::TlsSettings;

/// The `application_name` top connects with, so it can be told apart in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "sqlcommenter-top";

/// Socket directories tried when no host is given (Debian's, then upstream's default).
const SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];

/// Connect timeout when neither the connection string nor `PGCONNECT_TIMEOUT` sets one.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A resolved connection target.
#[derive(Debug, Clone)]
pub struct Target {
    /// What tokio-postgres connects with.
    pub config: Config,
    /// `host:port/database as user`, for messages.
    pub display: String,
    /// Things psql would have warned about (e.g. an ignored password file).
    pub warnings: Vec<String>,
    /// `sslmode` and the root certificates.
    pub tls: TlsSettings,
}

/// The TLS options taken out of a connection string, and the rest of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TlsOptions {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

const TLS_KEYS: [&str; 2] = ["sslmode", "sslrootcert"];

/// Splits `sslmode` / `sslrootcert` from a URL (query parameters) or a key/value string (libpq quoting:
/// `'…'` with `\'` and `\\`, or a bare word with `\` escapes).
fn take_tls_options(conninfo: &str) -> Result<TlsOptions, TopError> {
    let mut out = TlsOptions::default();
    let mut keep = |key: &str, value: String| -> bool {
        match key {
            "sslmode" => out.sslmode = Some(value),
            "sslrootcert" => out.sslrootcert = Some(value),
            _ => return true,
        }
        false
    };
    if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        let Some((base, query)) = conninfo.split_once('?') else {
            return Ok(TlsOptions { rest: conninfo.to_owned(), ..out });
        };
        let params: Vec<&str> = query
            .split('&')
            .filter(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                !TLS_KEYS.contains(&percent_decode(k).as_str()) || keep(&percent_decode(k), percent_decode(v))
            })
            .collect();
        let rest = if params.is_empty() { base.to_owned() } else { format!("{base}?{}", params.join("&")) };
        return Ok(TlsOptions { rest, ..out });
    }
    let mut rest = String::with_capacity(conninfo.len());
    let mut chars = conninfo.char_indices().peekable();
    let bad = |what: &str| TopError::Conninfo(what.to_owned());
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(bad(&format!("expected `=` after {key:?}")));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        loop {
            match chars.peek().map(|&(_, c)| c) {
                None if quoted => return Err(bad("unterminated quoted value")),
                None => break,
                Some('\'') if quoted => {
                    chars.next();
                    break;
                }
                Some(c) if c.is_whitespace() && !quoted => break,
                Some('\\') => {
                    chars.next();
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                Some(c) => {
                    chars.next();
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(conninfo.len(), |&(i, _)| i);
        if keep(&key, value) {
            rest.push_str(&conninfo[start..end]);
            rest.push(' ');
        }
    }
    Ok(TlsOptions { rest: rest.trim_end().to_owned(), ..out })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|&c| (c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where environment values come from (the process environment, or a map in tests).
pub trait Env {
    /// The value of `name`, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name).filter(|v| !v.is_empty())
    }
}

/// Resolves `conninfo` (a `postgres://` URL or `key=value` pairs; empty or `None` for defaults only).
///
/// # Errors
/// [`TopError::Conninfo`] for a string tokio-postgres cannot parse, a bad `PGPORT`, a bad `sslmode`, or
/// `verify-*` without root certificates.
pub fn resolve(conninfo: Option<&str>, env: &dyn Env) -> Result<Target, TopError> {
    let tls_options = take_tls_options(conninfo.unwrap_or_default().trim())?;
    let mut config: Config = match tls_options.rest.as_str() {
        "" => Config::new(),
        s => s.parse().map_err(|e: tokio_postgres::Error| TopError::Conninfo(e.to_string()))?,
    };
    let home = env.var("HOME").map(PathBuf::from);
    let tls = TlsSettings::new(
        tls_options.sslmode.or_else(|| env.var("PGSSLMODE")).as_deref(),
        tls_options.sslrootcert.or_else(|| env.var("PGSSLROOTCERT")).as_deref(),
        home.as_deref(),
    )?;
    config.ssl_mode(tls.mode.ssl_mode());
    let mut warnings = Vec::new();

    if config.get_ports().is_empty() {
        let port = match env.var("PGPORT") {
            Some(p) => p.parse::<u16>().map_err(|_| TopError::Conninfo(format!("PGPORT={p:?} is not a port")))?,
            None => 5432,
        };
        config.port(port);
    }
    let port = config.get_ports()[0];
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        match env.var("PGHOST") {
            Some(hosts) => {
                for h in hosts.split(',') {
                    config.host(h);
                }
            }
            None => {
                let socket = SOCKET_DIRS.iter().find(|d| Path::new(d).join(format!(".s.PGSQL.{port}")).exists());
                config.host(socket.copied().unwrap_or("localhost"));
            }
        }
    }
    if config.get_user().is_none() {
        let user = env
            .var("PGUSER")
            .or_else(|| env.var("USER"))
            .or_else(|| env.var("LOGNAME"))
            .ok_or_else(|| TopError::Conninfo("no user given (set user=, PGUSER or USER)".into()))?;
        config.user(user);
    }
    if config.get_dbname().is_none() {
        let db = env.var("PGDATABASE").unwrap_or_else(|| config.get_user().unwrap_or_default().to_owned());
        config.dbname(db);
    }
    if config.get_application_name().is_none() {
        config.application_name(env.var("PGAPPNAME").unwrap_or_else(|| APPLICATION_NAME.to_owned()));
    }
    if config.get_options().is_none() {
        if let Some(options) = env.var("PGOPTIONS") {
            config.options(options);
        }
    }
    if config.get_connect_timeout().is_none() {
        let secs = env.var("PGCONNECT_TIMEOUT").and_then(|s| s.parse::<u64>().ok()).filter(|&s| s > 0);
        config.connect_timeout(secs.map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_secs));
    }
    let host_text = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => config.get_hostaddrs().first().map(ToString::to_string).unwrap_or_default(),
    };
    if config.get_password().is_none() {
        if let Some(pw) = env.var("PGPASSWORD") {
            config.password(pw);
        } else if let Some(file) =
            env.var("PGPASSFILE").map(PathBuf::from).or_else(|| env.var("HOME").map(|h| Path::new(&h).join(".pgpass")))
        {
            // libpq matches the default socket directory as `localhost`.
            let host = if host_text.is_empty() || SOCKET_DIRS.contains(&host_text.as_str()) {
                "localhost"
            } else {
                host_text.as_str()
            };
            let port_text = port.to_string();
            let key = PgpassKey {
                host,
                port: &port_text,
                database: config.get_dbname().unwrap_or_default(),
                user: config.get_user().unwrap_or_default(),
            };
            match pgpass::lookup(&file, &key) {
                Ok(Some(pw)) => {
                    config.password(pw);
                }
                Ok(None) => {}
                Err(skipped) => warnings.push(skipped.to_string()),
            }
        }
    }
    let display = format!(
        "{host_text}:{port}/{} as {}",
        config.get_dbname().unwrap_or_default(),
        config.get_user().unwrap_or_default()
    );
    Ok(Target { config, display, warnings, tls })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn url_and_key_value_win_over_the_environment() {
        let e = env(&[("PGHOST", "envhost"), ("PGUSER", "envuser"), ("PGPORT", "7000"), ("PGDATABASE", "envdb")]);
        let t = resolve(Some("postgres://u@h:6000/d"), &e).unwrap();
        assert_eq!(t.display, "h:6000/d as u");
        let t = resolve(Some("host=h2 user=u2"), &e).unwrap();
        assert_eq!(t.display, "h2:7000/envdb as u2");
        assert_eq!(t.config.get_application_name(), Some(APPLICATION_NAME));
        let t = resolve(None, &e).unwrap();
        assert_eq!(t.display, "envhost:7000/envdb as envuser");
    }

    #[test]
    fn defaults_follow_libpq() {
        let t = resolve(Some("host=h"), &env(&[("USER", "alice")])).unwrap();
        assert_eq!(t.display, "h:5432/alice as alice");
        assert_eq!(t.config.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        let t = resolve(Some("host=h"), &env(&[("USER", "a"), ("PGAPPNAME", "oncall"), ("PGCONNECT_TIMEOUT", "3")]))
            .unwrap();
        assert_eq!(t.config.get_application_name(), Some("oncall"));
        assert_eq!(t.config.get_connect_timeout(), Some(&Duration::from_secs(3)));
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let e = env(&[("USER", "a")]);
        for (conninfo, needle) in [
            ("host=h port=notaport", "invalid connection string"),
            ("postgres://h:99999999/d", "invalid connection string"),
            ("host=h sslmode=verify-full", "needs root certificates"),
            ("host=h sslmode=secure", "sslmode=\"secure\""),
            ("host='h", "unterminated"),
        ] {
            let err = resolve(Some(conninfo), &e).unwrap_err().to_string();
            assert!(err.contains(needle), "{conninfo}: {err}");
        }
        let err = resolve(Some("host=h"), &env(&[("USER", "a"), ("PGPORT", "x")])).unwrap_err().to_string();
        assert!(err.contains("PGPORT"), "{err}");
        let err = resolve(Some("host=h"), &env(&[("USER", "a"), ("PGSSLMODE", "verify-ca")])).unwrap_err();
        assert!(err.to_string().contains("needs root certificates"), "{err}");
    }

    #[test]
    fn tls_options_are_taken_out_of_both_forms() {
        let t = take_tls_options("host=h sslmode = verify-full  sslrootcert='/a b/c\\'d' user=u").unwrap();
        assert_eq!(t.rest, "host=h user=u");
        assert_eq!(t.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(t.sslrootcert.as_deref(), Some("/a b/c'd"));
        let t = take_tls_options("postgres://u@h/db?sslmode=verify-ca&application_name=x&sslrootcert=%2Ftmp%2Fca.pem")
            .unwrap();
        assert_eq!(t.rest, "postgres://u@h/db?application_name=x");
        assert_eq!((t.sslmode.as_deref(), t.sslrootcert.as_deref()), (Some("verify-ca"), Some("/tmp/ca.pem")));
        let t = take_tls_options("postgresql://h/db?sslmode=require").unwrap();
        assert_eq!((t.rest.as_str(), t.sslmode.as_deref()), ("postgresql://h/db", Some("require")));
        let e = env(&[("USER", "a"), ("PGSSLMODE", "require")]);
        let t = resolve(Some("host=h options='-c a=b'"), &e).unwrap();
        assert_eq!(t.tls.mode, crate::tls::TlsMode::Require);
        assert_eq!(t.config.get_options(), Some("-c a=b"));
        let t = resolve(Some("host=h sslmode=disable"), &e).unwrap();
        assert_eq!(t.tls.mode, crate::tls::TlsMode::Disable, "the string wins over PGSSLMODE");
    }

    #[test]
    fn password_from_env_then_pgpass() {
        let dir = std::env::temp_dir().join(format!("sqlc-top-conninfo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgpass");
        std::fs::write(&file, "h:5432:db:mon:from-file\nlocalhost:5432:*:mon:local\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let f = file.to_str().unwrap();
        let t = resolve(Some("host=h dbname=db user=mon"), &env(&[("PGPASSFILE", f)])).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"from-file"[..]));
        let t = resolve(Some("host=/var/run/postgresql user=mon"), &env(&[("PGPASSFILE", f)])).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"local"[..]), "default socket dir matches localhost");
        let t = resolve(Some("host=h dbname=db user=mon"), &env(&[("PGPASSFILE", f), ("PGPASSWORD", "env")])).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"env"[..]));
        let t = resolve(Some("host=h dbname=db user=mon password=given"), &env(&[("PGPASSFILE", f)])).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"given"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
