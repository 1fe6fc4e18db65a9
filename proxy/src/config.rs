//! Configuration: [`ProxyConfig`] (what the proxy runs with) and [`ProxyArgs`] (command-line flags).
//!
//! Precedence, per setting: command-line flag > `SQLCOMMENTER_*` environment variable > TOML file given
//! with `--config` (or `SQLCOMMENTER_CONFIG`) > built-in default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sqlcommenter::carrier::Target;
use sqlcommenter::Placement;

use crate::error::ProxyError;

/// Parses the `--carrier` word: `application_name` (the bare W3C traceparent, what OpenTelemetry's tools
/// read), `application_name:named` (`name@traceparent`), `guc` (the setting `guc_name`), `pg_tracing`, or
/// `off` (`None`: named statements run without context). The carrier itself is the core's
/// [`sqlcommenter::carrier::Target`].
pub fn parse_carrier(s: &str, guc_name: &str) -> Result<Option<Target>, ProxyError> {
    match s {
        "off" => Ok(None),
        other => Target::parse(other, guc_name).map(Some).map_err(|e| ProxyError::Config(format!("{e} or off"))),
    }
}

/// How the proxy adds trace context.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectConfig {
    /// Master switch: off = a plain relay.
    pub enabled: bool,
    /// Carrier for named statements (`None`: off), written transaction-scoped right before each named
    /// Bind whose context the server's transaction does not already carry.
    pub carrier: Option<Target>,
    /// The custom GUC a client may set to give its session a context (also the `guc` carrier's name).
    pub session_guc: String,
    /// Comment placement for simple queries and unnamed Parse.
    pub placement: Placement,
    /// Probability that a fresh root context is sampled (0.0..=1.0).
    pub sample_ratio: f64,
    /// Invent a root context per transaction when the client supplies none and the proxy exports no
    /// spans. Off by default: such trace ids exist in no tracing backend. With span export on, the
    /// proxy's spans are the roots whatever this says.
    pub root_contexts: bool,
    /// Static tags added to every comment.
    pub tags: Vec<(String, String)>,
    /// Add `application=<client's startup application_name>` to comments (off by default: the server
    /// already has it in `%a` and `pg_stat_activity`).
    pub application_tag: bool,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            enabled: true,
            carrier: Some(Target::default()),
            session_guc: sqlcommenter::carrier::DEFAULT_GUC.to_owned(),
            placement: Placement::Append,
            sample_ratio: 1.0,
            root_contexts: false,
            tags: Vec::new(),
            application_tag: false,
        }
    }
}

/// The upstream server address (`host`, `port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Upstream {
    /// Parses `postgres://[user@]HOST[:PORT][/db][?...]`, `postgresql://...` or `HOST[:PORT]` (default port
    /// 5432; IPv6 in brackets). Only the address is used: authentication is end to end.
    pub fn parse(s: &str) -> Result<Self, ProxyError> {
        let bad = |why: &str| ProxyError::Config(format!("invalid upstream {s:?}: {why}"));
        let rest = s.strip_prefix("postgres://").or_else(|| s.strip_prefix("postgresql://")).unwrap_or(s);
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if hostport.contains(',') {
            return Err(bad("multiple hosts are not supported"));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None => 5432,
        };
        Ok(Upstream { host: host.to_owned(), port })
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// TLS on the client leg: certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Everything the proxy runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Address to listen on (port 0 picks a free port; see [`crate::ProxyHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The PostgreSQL server.
    pub upstream: Upstream,
    /// Injection settings.
    pub inject: InjectConfig,
    /// How long open sessions may continue after SIGTERM/SIGINT before they are closed.
    pub shutdown_timeout: Duration,
    /// Timeout for connecting to the upstream.
    pub connect_timeout: Duration,
    /// TLS for clients (answering SSLRequest with `S`); `None` answers `N`.
    pub tls: Option<TlsFiles>,
    /// Refuse clients that do not use TLS (needs `tls`).
    pub require_tls: bool,
    /// Session threads, each a single-threaded tokio runtime (`None`: half the CPUs, at least one: the
    /// proxy usually shares its host with clients or the server).
    pub worker_threads: Option<usize>,
    /// TLS to the upstream server.
    pub upstream_tls: crate::tls::UpstreamTlsMode,
    /// CA certificates (PEM) for `upstream_tls = verify-full`.
    pub upstream_ca: Option<PathBuf>,
    /// Export a span per statement over OTLP (`None`: off, no span objects at all).
    pub telemetry: Option<crate::telemetry::TelemetryConfig>,
    /// Address of the admin endpoint (`/metrics`, `/health`); `None`: off.
    pub admin: Option<SocketAddr>,
    /// Most client connections at once; beyond, clients get SQLSTATE 53300 (`None`: no limit).
    pub max_clients: Option<usize>,
    /// How long a client may take from connecting to a complete startup packet.
    pub startup_timeout: Duration,
    /// Close a session idle this long (no bytes either way, no request pending); `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl ProxyConfig {
    /// A configuration with defaults for everything but the addresses.
    pub fn new(listen: SocketAddr, upstream: Upstream) -> Self {
        ProxyConfig {
            listen,
            upstream,
            inject: InjectConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            tls: None,
            require_tls: false,
            worker_threads: None,
            upstream_tls: crate::tls::UpstreamTlsMode::Disable,
            upstream_ca: None,
            telemetry: None,
            admin: None,
            max_clients: None,
            startup_timeout: Duration::from_secs(10),
            idle_timeout: None,
        }
    }
}

/// Command-line flags of `sqlcommenter proxy` (each also readable from an `SQLCOMMENTER_*` variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProxyArgs {
    /// TOML configuration file (flags and environment variables override it).
    #[arg(long, env = "SQLCOMMENTER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:6432].
    #[arg(long, env = "SQLCOMMENTER_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// PostgreSQL server: postgres://HOST[:PORT] or HOST[:PORT] (required here or in the file).
    #[arg(long, env = "SQLCOMMENTER_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// Carrier for named statements: application_name (bare traceparent), application_name:named
    /// (name@traceparent), guc, pg_tracing or off [default: application_name].
    #[arg(long, env = "SQLCOMMENTER_CARRIER")]
    pub carrier: Option<String>,
    /// Custom GUC for the session context and the `guc` carrier [default: sqlcommenter.traceparent].
    #[arg(long, env = "SQLCOMMENTER_GUC")]
    pub guc: Option<String>,
    /// Comment placement: append or prepend [default: append].
    #[arg(long, env = "SQLCOMMENTER_PLACEMENT")]
    pub placement: Option<String>,
    /// Probability that a fresh root context is sampled, 0.0 to 1.0 [default: 1.0].
    #[arg(long, env = "SQLCOMMENTER_SAMPLE_RATIO")]
    pub sample_ratio: Option<f64>,
    /// Invent a root trace context per transaction for clients that supply none, without exporting
    /// spans (their trace ids exist in no tracing backend) [default: false].
    #[arg(long, env = "SQLCOMMENTER_ROOT_CONTEXTS")]
    pub root_contexts: Option<bool>,
    /// Static tag KEY=VALUE (repeatable; the variable takes a comma-separated list).
    #[arg(long = "tag", env = "SQLCOMMENTER_TAGS", value_delimiter = ',', value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Shortcut for --tag db_driver=NAME.
    #[arg(long, env = "SQLCOMMENTER_DB_DRIVER")]
    pub db_driver: Option<String>,
    /// Add application=<client's startup application_name> to comments [default: false].
    #[arg(long, env = "SQLCOMMENTER_APPLICATION_TAG")]
    pub application_tag: Option<bool>,
    /// Inject trace context at all (false = plain relay) [default: true].
    #[arg(long, env = "SQLCOMMENTER_INJECT")]
    pub inject: Option<bool>,
    /// Seconds open sessions may continue after SIGTERM/SIGINT [default: 30].
    #[arg(long, env = "SQLCOMMENTER_SHUTDOWN_TIMEOUT", value_name = "SECS")]
    pub shutdown_timeout: Option<f64>,
    /// Seconds to wait for the upstream's TCP connect [default: 10].
    #[arg(long, env = "SQLCOMMENTER_CONNECT_TIMEOUT", value_name = "SECS")]
    pub connect_timeout: Option<f64>,
    /// TLS certificate chain (PEM) for client connections; with --tls-key enables TLS.
    #[arg(long, env = "SQLCOMMENTER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for client connections.
    #[arg(long, env = "SQLCOMMENTER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not negotiate TLS [default: false].
    #[arg(long, env = "SQLCOMMENTER_REQUIRE_TLS")]
    pub require_tls: Option<bool>,
    /// Session threads [default: half the CPUs, at least 1].
    #[arg(long, env = "SQLCOMMENTER_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// TLS to the upstream: disable, prefer, require or verify-full [default: disable].
    #[arg(long, env = "SQLCOMMENTER_UPSTREAM_TLS")]
    pub upstream_tls: Option<String>,
    /// CA certificates (PEM) to verify the upstream with (verify-full).
    #[arg(long, env = "SQLCOMMENTER_UPSTREAM_CA", value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// Export a span per statement over OTLP/HTTP (configured by the standard `OTEL_*` variables).
    #[arg(long, env = "SQLCOMMENTER_OTLP")]
    pub otlp: Option<bool>,
    /// With `--otlp`: replace literals in `db.query.text` with `?`.
    #[arg(long, env = "SQLCOMMENTER_OTLP_NORMALIZE")]
    pub otlp_normalize: Option<bool>,
    /// With `--otlp`: `grpc` or `http/protobuf` [default: `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`, else http/protobuf].
    #[arg(long, env = "SQLCOMMENTER_OTLP_PROTOCOL", value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
    /// Admin endpoint address (`/metrics`, `/health`), or `off` [default: 127.0.0.1:9187].
    #[arg(long, env = "SQLCOMMENTER_ADMIN", value_name = "ADDR|off")]
    pub admin: Option<String>,
    /// Most client connections at once (beyond: SQLSTATE 53300) [default: no limit].
    #[arg(long, env = "SQLCOMMENTER_MAX_CLIENTS")]
    pub max_clients: Option<usize>,
    /// Seconds a client may take to send its startup packet [default: 10].
    #[arg(long, env = "SQLCOMMENTER_STARTUP_TIMEOUT", value_name = "SECS")]
    pub startup_timeout: Option<f64>,
    /// Close sessions idle (no bytes either way, nothing pending) this many seconds (FATAL 57P05) [default: never].
    #[arg(long, env = "SQLCOMMENTER_IDLE_TIMEOUT", value_name = "SECS")]
    pub idle_timeout: Option<f64>,
    /// Log format: human or json (level from RUST_LOG, default info) [default: human].
    #[arg(long, env = "SQLCOMMENTER_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// The TOML file: the same keys as the flags (`listen`, `upstream`, `carrier`, `guc`, `placement`,
/// `sample_ratio`, `root_contexts`, `db_driver`, `application_tag`, `inject`, `shutdown_timeout`, `connect_timeout`,
/// `tls_cert`, `tls_key`, `require_tls`, `worker_threads`, `upstream_tls`, `upstream_ca`) plus a `[tags]`
/// table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    upstream: Option<String>,
    carrier: Option<String>,
    guc: Option<String>,
    placement: Option<String>,
    sample_ratio: Option<f64>,
    root_contexts: Option<bool>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    db_driver: Option<String>,
    application_tag: Option<bool>,
    inject: Option<bool>,
    shutdown_timeout: Option<f64>,
    connect_timeout: Option<f64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    require_tls: Option<bool>,
    worker_threads: Option<usize>,
    upstream_tls: Option<String>,
    upstream_ca: Option<PathBuf>,
}

fn read_file(path: &Path) -> Result<FileConfig, ProxyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ProxyError::Config(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| ProxyError::Config(format!("config file {}: {}", path.display(), e.message().trim_end())))
}

fn seconds(name: &str, v: f64) -> Result<Duration, ProxyError> {
    Duration::try_from_secs_f64(v).map_err(|_| ProxyError::Config(format!("{name} must be a non-negative number")))
}

impl ProxyArgs {
    /// Resolves flags, environment (already merged by clap), the config file and defaults.
    pub fn resolve(&self) -> Result<ProxyConfig, ProxyError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = self.listen.clone().or(file.listen).unwrap_or_else(|| "127.0.0.1:6432".to_owned());
        let listen: SocketAddr =
            listen.parse().map_err(|_| ProxyError::Config(format!("invalid listen address {listen:?}")))?;
        let upstream = self
            .upstream
            .clone()
            .or(file.upstream)
            .ok_or_else(|| ProxyError::Config("no upstream given (--upstream or SQLCOMMENTER_UPSTREAM)".into()))?;
        let mut config = ProxyConfig::new(listen, Upstream::parse(&upstream)?);
        let inject = &mut config.inject;
        if let Some(g) = self.guc.clone().or(file.guc) {
            if g.is_empty() || !g.contains('.') {
                return Err(ProxyError::Config(format!("guc {g:?} must be a dotted custom name like a.b")));
            }
            inject.session_guc = g;
        }
        if let Some(c) = self.carrier.clone().or(file.carrier) {
            inject.carrier = parse_carrier(&c, &inject.session_guc)?;
        }
        if let Some(p) = self.placement.clone().or(file.placement) {
            inject.placement = p.parse().map_err(ProxyError::Config)?;
        }
        if let Some(r) = self.sample_ratio.or(file.sample_ratio) {
            if !(0.0..=1.0).contains(&r) {
                return Err(ProxyError::Config(format!("sample_ratio {r} is not within 0.0..=1.0")));
            }
            inject.sample_ratio = r;
        }
        if let Some(r) = self.root_contexts.or(file.root_contexts) {
            inject.root_contexts = r;
        }
        // Tags: file first, then flags/env override the same key.
        let mut tags: Vec<(String, String)> = file.tags.into_iter().collect();
        let mut set = |k: String, v: String| {
            tags.retain(|(key, _)| *key != k);
            tags.push((k, v));
        };
        if let Some(d) = file.db_driver {
            set("db_driver".into(), d);
        }
        for t in &self.tags {
            let (k, v) = t.split_once('=').ok_or_else(|| ProxyError::Config(format!("tag {t:?} is not KEY=VALUE")))?;
            set(k.trim().to_owned(), v.to_owned());
        }
        if let Some(d) = &self.db_driver {
            set("db_driver".into(), d.clone());
        }
        inject.tags = tags;
        if let Some(a) = self.application_tag.or(file.application_tag) {
            inject.application_tag = a;
        }
        if let Some(i) = self.inject.or(file.inject) {
            inject.enabled = i;
        }
        // Validate tags the way the commenter will.
        let mut b = sqlcommenter::Commenter::builder();
        for (k, v) in &inject.tags {
            b = b.tag(k, v);
        }
        if inject.application_tag {
            b = b.tag("application", "x");
        }
        b.build().map_err(|e| ProxyError::Config(format!("tags: {e}")))?;
        if let Some(s) = self.shutdown_timeout.or(file.shutdown_timeout) {
            config.shutdown_timeout = seconds("shutdown_timeout", s)?;
        }
        if let Some(s) = self.connect_timeout.or(file.connect_timeout) {
            config.connect_timeout = seconds("connect_timeout", s)?;
        }
        match (self.tls_cert.clone().or(file.tls_cert), self.tls_key.clone().or(file.tls_key)) {
            (Some(cert), Some(key)) => config.tls = Some(TlsFiles { cert, key }),
            (None, None) => {}
            _ => return Err(ProxyError::Config("tls_cert and tls_key must be given together".into())),
        }
        config.require_tls = self.require_tls.or(file.require_tls).unwrap_or(false);
        config.worker_threads = self.worker_threads.or(file.worker_threads);
        if config.worker_threads == Some(0) {
            return Err(ProxyError::Config("worker_threads must be at least 1".into()));
        }
        if let Some(m) = self.upstream_tls.clone().or(file.upstream_tls) {
            config.upstream_tls = m.parse()?;
        }
        config.upstream_ca = self.upstream_ca.clone().or(file.upstream_ca);
        if self.otlp.unwrap_or(false) {
            config.telemetry = Some(crate::telemetry::TelemetryConfig {
                normalize_query: self.otlp_normalize.unwrap_or(false),
                protocol: self.otlp_protocol.as_deref().map(str::parse).transpose()?,
            });
        }
        match self.admin.as_deref().unwrap_or("127.0.0.1:9187") {
            "off" => config.admin = None,
            a => {
                config.admin = Some(a.parse().map_err(|_| ProxyError::Config(format!("invalid admin address {a:?}")))?)
            }
        }
        config.max_clients = self.max_clients;
        if let Some(s) = self.startup_timeout {
            config.startup_timeout = seconds("startup_timeout", s)?;
        }
        if let Some(s) = self.idle_timeout {
            config.idle_timeout = Some(seconds("idle_timeout", s)?);
        }
        if config.require_tls && config.tls.is_none() {
            return Err(ProxyError::Config("require_tls needs tls_cert and tls_key".into()));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        let u = |s| Upstream::parse(s).unwrap();
        assert_eq!(
            u("postgres://db.example:6543/app?sslmode=disable"),
            Upstream { host: "db.example".into(), port: 6543 }
        );
        assert_eq!(u("postgresql://me:pw@10.0.0.1/x"), Upstream { host: "10.0.0.1".into(), port: 5432 });
        assert_eq!(u("[::1]:5433"), Upstream { host: "::1".into(), port: 5433 });
        assert_eq!(u("localhost").to_string(), "localhost:5432");
        assert!(Upstream::parse("postgres://:5432").is_err());
        assert!(Upstream::parse("h:99999").is_err());
        assert!(Upstream::parse("a,b").is_err());
    }

    #[test]
    fn precedence_flag_over_file() {
        let dir = std::env::temp_dir().join(format!("sqlc-proxy-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\nupstream = \"h:1\"\ncarrier = \"guc\"\nsample_ratio = 0.5\n[tags]\ndb_driver = \"f\"\n",
        )
        .unwrap();
        let args = ProxyArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:7001".into()),
            tags: vec!["db_driver=flag".into(), "team=core".into()],
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 7001);
        assert_eq!(c.upstream.port, 1);
        assert_eq!(c.inject.carrier, Some(Target::Guc("sqlcommenter.traceparent".into())));
        assert_eq!(c.inject.sample_ratio, 0.5);
        assert_eq!(c.inject.tags, vec![("db_driver".into(), "flag".into()), ("team".into(), "core".into())]);
        std::fs::write(&path, "bogus = 1\n").unwrap();
        let err = ProxyArgs { config: Some(path), upstream: Some("h".into()), ..Default::default() }.resolve();
        assert!(matches!(err, Err(ProxyError::Config(m)) if m.contains("bogus")));
        assert!(ProxyArgs::default().resolve().is_err());
        let bad = ProxyArgs { upstream: Some("h".into()), sample_ratio: Some(2.0), ..Default::default() };
        assert!(bad.resolve().is_err());
        let bad = ProxyArgs { upstream: Some("h".into()), tags: vec!["traceparent=x".into()], ..Default::default() };
        assert!(bad.resolve().is_err());
        let otlp = |p: &str| {
            let a = ProxyArgs {
                upstream: Some("h".into()),
                otlp: Some(true),
                otlp_protocol: Some(p.into()),
                ..Default::default()
            };
            a.resolve().map(|c| c.telemetry.and_then(|t| t.protocol))
        };
        assert_eq!(otlp("grpc").unwrap(), Some(crate::telemetry::OtlpProtocol::Grpc));
        assert!(otlp("http/json").is_err());
    }
}
