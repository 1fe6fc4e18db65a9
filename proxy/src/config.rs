//! Configuration: [`ProxyConfig`] (what the proxy runs with) and [`ProxyArgs`] (command-line flags).
//!
//! Precedence, per setting: command-line flag > `SQLCOMMENTER_*` environment variable > TOML file given
//! with `--config` (or `SQLCOMMENTER_CONFIG`) > built-in default. Flag, variable and file key of a setting
//! are derived from one field of [`ProxyArgs`]; an unknown key in the file is an error naming it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sqlcommenter::carrier::{Scope, Target};
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
    /// Scope of the carrier written for a client's own session context (from its startup packet or its
    /// `SET` of the session GUC). [`CarrierScope::Auto`] (default): written once per change where the
    /// server session is known to be the client's alone, before each named execution's transaction
    /// elsewhere — safe behind any pooler. Per-statement contexts (spans, roots, a statement's own) are
    /// always transaction-scoped.
    pub carrier_scope: CarrierScope,
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
            carrier_scope: CarrierScope::Auto,
            root_contexts: false,
            tags: Vec::new(),
            application_tag: false,
        }
    }
}

/// How long the carrier for a client's own session context lasts on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierScope {
    /// Session-scoped (written once per change) once the carrier's `pg_backend_pid()` showed that the
    /// server session is the proxy's own — the process PostgreSQL named in its BackendKeyData, so no pooler
    /// in between hands it to others — and transaction-scoped before that and behind a pooler (whose keys
    /// are its own). A pooler that passed one server's keys on while moving the client between servers
    /// would pass for PostgreSQL; none is known to (its clients' cancel requests would reach the wrong
    /// server): use `Fixed(Scope::Transaction)` behind such a thing.
    Auto,
    /// Always this scope. [`Scope::Transaction`] leaves nothing behind a transaction. [`Scope::Session`]
    /// behind PgBouncer's transaction pooling stays correct with the `application_name` carrier (PgBouncer
    /// keeps it per client) but PgBouncer re-syncs it with a `SET application_name = '…'` per link, a text
    /// pg_stat_statements keys per trace.
    Fixed(Scope),
}

impl CarrierScope {
    /// Parses `auto`, `transaction` or `session`.
    pub fn parse(s: &str) -> Result<CarrierScope, ProxyError> {
        match s {
            "auto" => Ok(CarrierScope::Auto),
            "transaction" => Ok(CarrierScope::Fixed(Scope::Transaction)),
            "session" => Ok(CarrierScope::Fixed(Scope::Session)),
            other => Err(ProxyError::Config(format!("carrier_scope {other:?}: use auto, transaction or session"))),
        }
    }
}

/// The upstream server address (`host`, `port`), as libpq reads it: a `host` that starts with `/` is the
/// directory of the server's Unix-domain socket, `<host>/.s.PGSQL.<port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Host name, IP literal (without brackets), or an absolute socket directory.
    pub host: String,
    /// TCP port, or the number in the socket file's name.
    pub port: u16,
}

impl Upstream {
    /// Parses `postgres://[user@]HOST[:PORT][/db][?...]`, `postgresql://...` or `HOST[:PORT]` (default port
    /// 5432; IPv6 in brackets). HOST may be a socket directory: `/var/run/postgresql[:PORT]`, or in a URL
    /// percent-encoded (`postgres://%2Fvar%2Frun%2Fpostgresql:5432/db`). Only the address is used:
    /// authentication is end to end.
    pub fn parse(s: &str) -> Result<Self, ProxyError> {
        let bad = |why: &str| ProxyError::Config(format!("invalid upstream {s:?}: {why}"));
        if s.starts_with('/') {
            let (dir, port) = match s.rsplit_once(':') {
                Some((d, p)) => (d, p.parse::<u16>().map_err(|_| bad("bad port"))?),
                None => (s, 5432),
            };
            let dir = match dir.trim_end_matches('/') {
                "" => "/",
                d => d,
            };
            return Ok(Upstream { host: dir.to_owned(), port });
        }
        let url = s.strip_prefix("postgres://").or_else(|| s.strip_prefix("postgresql://"));
        let rest = url.unwrap_or(s);
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if url.is_some() && hostport.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("%2F")) {
            let decoded = percent_encoding::percent_decode_str(hostport)
                .decode_utf8()
                .map_err(|_| bad("the socket directory is not UTF-8"))?;
            return Upstream::parse(&decoded);
        }
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

    /// The server's socket file when `host` is a socket directory.
    pub fn socket_path(&self) -> Option<PathBuf> {
        self.host.starts_with('/').then(|| Path::new(&self.host).join(format!(".s.PGSQL.{}", self.port)))
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(path) = self.socket_path() {
            write!(f, "{}", path.display())
        } else if self.host.contains(':') {
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
    /// A directory for a Unix socket as well, `<dir>/.s.PGSQL.<listen port>` (libpq's `host=<dir>`);
    /// `None`: TCP only.
    pub listen_socket: Option<PathBuf>,
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
            listen_socket: None,
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

/// The proxy's settings, one field each: its command-line flag (`--listen`), its `SQLCOMMENTER_*`
/// environment variable (`SQLCOMMENTER_LISTEN`, the field name in upper case) and its key in the TOML file
/// (`listen`, the field name) all come from the same field, so a setting cannot exist in one place and
/// not the others (`config` aside: it names the file). clap merges flag over variable; [`ProxyArgs::with_file`]
/// puts the file under both, field by field; [`ProxyArgs::resolve`] adds the defaults and checks values.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyArgs {
    /// TOML configuration file (flags and environment variables override it).
    #[arg(long, env = "SQLCOMMENTER_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:6432].
    #[arg(long, env = "SQLCOMMENTER_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also listen on a Unix socket in this directory, named `.s.PGSQL.<port>` after the listen port, so
    /// local clients connect with `host=DIR` (as to PostgreSQL's own socket) [default: none].
    #[arg(long, env = "SQLCOMMENTER_LISTEN_SOCKET", value_name = "DIR")]
    pub listen_socket: Option<PathBuf>,
    /// PostgreSQL server: postgres://HOST[:PORT] or HOST[:PORT]; a HOST starting with / is the server's
    /// Unix-socket directory, as in libpq (required here or in the file).
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
    /// Scope of the carrier for a client's own session context: auto (written once per change where the
    /// server session is PostgreSQL's own for this client, per transaction behind a pooler), transaction
    /// (always per transaction) or session (always once per change) [default: auto].
    #[arg(long, env = "SQLCOMMENTER_CARRIER_SCOPE")]
    pub carrier_scope: Option<String>,
    /// Invent a root trace context per transaction for clients that supply none, without exporting
    /// spans (their trace ids exist in no tracing backend) [default: false].
    #[arg(long, env = "SQLCOMMENTER_ROOT_CONTEXTS")]
    pub root_contexts: Option<bool>,
    /// Static tag KEY=VALUE (repeatable; the variable takes a comma-separated list; in the file a
    /// `[tags]` table or a list of "KEY=VALUE").
    #[arg(long = "tag", env = "SQLCOMMENTER_TAGS", value_delimiter = ',', value_name = "KEY=VALUE")]
    #[serde(default, deserialize_with = "file_tags")]
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
    /// Seconds to wait for the upstream's connect [default: 10].
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

/// The file's `tags`: a table (`[tags]`, `team = "payments"`) or a list of "KEY=VALUE" as the flag takes
/// them; either way the flag's form.
fn file_tags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a table of KEY = \"VALUE\" or a list of \"KEY=VALUE\"")]
    enum Tags {
        Table(BTreeMap<String, String>),
        List(Vec<String>),
    }
    match Tags::deserialize(d)? {
        Tags::List(list) => Ok(list),
        Tags::Table(table) => table
            .into_iter()
            .map(|(k, v)| {
                if k.contains('=') {
                    Err(serde::de::Error::custom(format!("tag key {k:?} contains '='")))
                } else {
                    Ok(format!("{k}={v}"))
                }
            })
            .collect(),
    }
}

fn read_file(path: &Path) -> Result<ProxyArgs, ProxyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ProxyError::Config(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| format!(", line {}", 1 + text[..s.start].matches('\n').count()));
        ProxyError::Config(format!(
            "config file {}{}: {}",
            path.display(),
            line.unwrap_or_default(),
            e.message().trim_end()
        ))
    })
}

fn seconds(name: &str, v: f64) -> Result<Duration, ProxyError> {
    Duration::try_from_secs_f64(v).map_err(|_| ProxyError::Config(format!("{name} must be a non-negative number")))
}

impl ProxyArgs {
    /// These settings (flags merged over environment variables, as clap parsed them) over the TOML file
    /// named by `config`, field by field: a setting given neither as flag nor as variable takes the
    /// file's value. The result names no file (`config` is `None`), so resolving it reads none again.
    pub fn with_file(self) -> Result<ProxyArgs, ProxyError> {
        match self.config.clone() {
            Some(path) => Ok(self.over(read_file(&path)?)),
            None => Ok(self),
        }
    }

    /// `self` over `file`. Destructured in full: a new field does not compile until it is merged here.
    fn over(self, file: ProxyArgs) -> ProxyArgs {
        let ProxyArgs {
            config: _,
            listen,
            listen_socket,
            upstream,
            carrier,
            guc,
            placement,
            sample_ratio,
            carrier_scope,
            root_contexts,
            tags,
            db_driver,
            application_tag,
            inject,
            shutdown_timeout,
            connect_timeout,
            tls_cert,
            tls_key,
            require_tls,
            worker_threads,
            upstream_tls,
            upstream_ca,
            otlp,
            otlp_normalize,
            otlp_protocol,
            admin,
            max_clients,
            startup_timeout,
            idle_timeout,
            log_format,
        } = file;
        // Tags are a list: the file's first (its db_driver as a tag among them), then the flags'/variable's,
        // which replace a file tag of the same key when resolved.
        let mut all_tags = tags;
        all_tags.extend(db_driver.map(|d| format!("db_driver={d}")));
        all_tags.extend(self.tags);
        ProxyArgs {
            config: None,
            listen: self.listen.or(listen),
            listen_socket: self.listen_socket.or(listen_socket),
            upstream: self.upstream.or(upstream),
            carrier: self.carrier.or(carrier),
            guc: self.guc.or(guc),
            placement: self.placement.or(placement),
            sample_ratio: self.sample_ratio.or(sample_ratio),
            carrier_scope: self.carrier_scope.or(carrier_scope),
            root_contexts: self.root_contexts.or(root_contexts),
            tags: all_tags,
            db_driver: self.db_driver,
            application_tag: self.application_tag.or(application_tag),
            inject: self.inject.or(inject),
            shutdown_timeout: self.shutdown_timeout.or(shutdown_timeout),
            connect_timeout: self.connect_timeout.or(connect_timeout),
            tls_cert: self.tls_cert.or(tls_cert),
            tls_key: self.tls_key.or(tls_key),
            require_tls: self.require_tls.or(require_tls),
            worker_threads: self.worker_threads.or(worker_threads),
            upstream_tls: self.upstream_tls.or(upstream_tls),
            upstream_ca: self.upstream_ca.or(upstream_ca),
            otlp: self.otlp.or(otlp),
            otlp_normalize: self.otlp_normalize.or(otlp_normalize),
            otlp_protocol: self.otlp_protocol.or(otlp_protocol),
            admin: self.admin.or(admin),
            max_clients: self.max_clients.or(max_clients),
            startup_timeout: self.startup_timeout.or(startup_timeout),
            idle_timeout: self.idle_timeout.or(idle_timeout),
            log_format: self.log_format.or(log_format),
        }
    }

    /// Resolves flags, environment (already merged by clap), the config file and defaults.
    pub fn resolve(&self) -> Result<ProxyConfig, ProxyError> {
        let args = self.clone().with_file()?;
        let listen = args.listen.unwrap_or_else(|| "127.0.0.1:6432".to_owned());
        let listen: SocketAddr =
            listen.parse().map_err(|_| ProxyError::Config(format!("invalid listen address {listen:?}")))?;
        let upstream = args.upstream.ok_or_else(|| {
            ProxyError::Config("no upstream given (--upstream, SQLCOMMENTER_UPSTREAM or upstream in the file)".into())
        })?;
        let mut config = ProxyConfig::new(listen, Upstream::parse(&upstream)?);
        config.listen_socket = args.listen_socket;
        let inject = &mut config.inject;
        if let Some(g) = args.guc {
            if g.is_empty() || !g.contains('.') {
                return Err(ProxyError::Config(format!("guc {g:?} must be a dotted custom name like a.b")));
            }
            inject.session_guc = g;
        }
        if let Some(c) = args.carrier {
            inject.carrier = parse_carrier(&c, &inject.session_guc)?;
        }
        if let Some(p) = args.placement {
            inject.placement = p.parse().map_err(ProxyError::Config)?;
        }
        if let Some(r) = args.sample_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(ProxyError::Config(format!("sample_ratio {r} is not within 0.0..=1.0")));
            }
            inject.sample_ratio = r;
        }
        if let Some(r) = args.root_contexts {
            inject.root_contexts = r;
        }
        if let Some(c) = &args.carrier_scope {
            inject.carrier_scope = CarrierScope::parse(c)?;
        }
        // Tags in order (file, then flags/variable): a later one replaces an earlier one of the same key.
        let mut tags: Vec<(String, String)> = Vec::new();
        let mut set = |k: String, v: String| {
            tags.retain(|(key, _)| *key != k);
            tags.push((k, v));
        };
        for t in &args.tags {
            let (k, v) = t.split_once('=').ok_or_else(|| ProxyError::Config(format!("tag {t:?} is not KEY=VALUE")))?;
            set(k.trim().to_owned(), v.to_owned());
        }
        if let Some(d) = args.db_driver {
            set("db_driver".into(), d);
        }
        inject.tags = tags;
        if let Some(a) = args.application_tag {
            inject.application_tag = a;
        }
        if let Some(i) = args.inject {
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
        if let Some(s) = args.shutdown_timeout {
            config.shutdown_timeout = seconds("shutdown_timeout", s)?;
        }
        if let Some(s) = args.connect_timeout {
            config.connect_timeout = seconds("connect_timeout", s)?;
        }
        match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => config.tls = Some(TlsFiles { cert, key }),
            (None, None) => {}
            _ => return Err(ProxyError::Config("tls_cert and tls_key must be given together".into())),
        }
        config.require_tls = args.require_tls.unwrap_or(false);
        config.worker_threads = args.worker_threads;
        if config.worker_threads == Some(0) {
            return Err(ProxyError::Config("worker_threads must be at least 1".into()));
        }
        if let Some(m) = args.upstream_tls {
            config.upstream_tls = m.parse()?;
        }
        config.upstream_ca = args.upstream_ca;
        if args.otlp.unwrap_or(false) {
            config.telemetry = Some(crate::telemetry::TelemetryConfig {
                normalize_query: args.otlp_normalize.unwrap_or(false),
                protocol: args.otlp_protocol.as_deref().map(str::parse).transpose()?,
            });
        }
        match args.admin.as_deref().unwrap_or("127.0.0.1:9187") {
            "off" => config.admin = None,
            a => {
                config.admin = Some(a.parse().map_err(|_| ProxyError::Config(format!("invalid admin address {a:?}")))?)
            }
        }
        config.max_clients = args.max_clients;
        if let Some(s) = args.startup_timeout {
            config.startup_timeout = seconds("startup_timeout", s)?;
        }
        if let Some(s) = args.idle_timeout {
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
        assert_eq!(u("localhost").socket_path(), None);
    }

    #[test]
    fn upstream_socket_directories() {
        let u = |s| Upstream::parse(s).unwrap();
        let run = Upstream { host: "/var/run/postgresql".into(), port: 5432 };
        assert_eq!(u("/var/run/postgresql"), run);
        assert_eq!(u("/var/run/postgresql/"), run);
        assert_eq!(u("postgres://%2Fvar%2Frun%2Fpostgresql/app"), run);
        assert_eq!(u("postgresql://me@%2fvar%2frun%2fpostgresql:5433"), Upstream { port: 5433, ..run.clone() });
        assert_eq!(u("/tmp:6000"), Upstream { host: "/tmp".into(), port: 6000 });
        assert_eq!(run.socket_path(), Some(PathBuf::from("/var/run/postgresql/.s.PGSQL.5432")));
        assert_eq!(run.to_string(), "/var/run/postgresql/.s.PGSQL.5432");
        assert!(Upstream::parse("/tmp:x").is_err());
        assert!(Upstream::parse("postgres://%2Ftmp%FF").is_err());
        // Not a socket directory, and no panic on a multi-byte character where `%2F` would be.
        assert_eq!(u("postgres://ééé:1"), Upstream { host: "ééé".into(), port: 1 });
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

    /// clap reads the process's `SQLCOMMENTER_*` variables while parsing: tests that parse or set them
    /// take this lock.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn env_lock() -> std::sync::MutexGuard<'static, ()> {
        ENV.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn command() -> clap::Command {
        use clap::Args;
        ProxyArgs::augment_args(clap::Command::new("proxy").no_binary_name(true))
    }

    /// Flags (and the variables present) as clap parses them.
    fn parse(argv: &[&str]) -> ProxyArgs {
        use clap::FromArgMatches;
        let m = command().try_get_matches_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        ProxyArgs::from_arg_matches(&m).unwrap()
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sqlc-proxy-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// What a setting means once resolved: the runtime configuration and the log format (read by the
    /// binary, not part of [`ProxyConfig`]).
    fn meaning(args: ProxyArgs) -> (ProxyConfig, Option<String>) {
        try_meaning(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_meaning(args: ProxyArgs) -> Result<(ProxyConfig, Option<String>), String> {
        let merged = args.with_file().map_err(|e| e.to_string())?;
        let config = merged.resolve().map_err(|e| format!("{merged:?}: {e}"))?;
        Ok((config, merged.log_format))
    }

    /// One value per setting: (field, flag value, TOML value, other flags it needs to mean anything).
    /// A new setting without a row here fails `every_flag_has_its_variable_and_file_key`.
    const SAMPLES: &[(&str, &str, &str, &[&str])] = &[
        ("listen", "127.0.0.1:7001", "\"127.0.0.1:7001\"", &[]),
        ("listen_socket", "/run/sqlc", "\"/run/sqlc\"", &[]),
        ("upstream", "db.example:7", "\"postgres://db.example:7/app\"", &[]),
        ("carrier", "guc", "\"guc\"", &[]),
        ("guc", "my.tp", "\"my.tp\"", &[]),
        ("placement", "prepend", "\"prepend\"", &[]),
        ("sample_ratio", "0.25", "0.25", &[]),
        ("root_contexts", "true", "true", &[]),
        ("carrier_scope", "session", "\"session\"", &[]),
        ("tags", "team=core", "[\"team=core\"]", &[]),
        ("db_driver", "pgx", "\"pgx\"", &[]),
        ("application_tag", "true", "true", &[]),
        ("inject", "false", "false", &[]),
        ("shutdown_timeout", "3", "3", &[]),
        ("connect_timeout", "2.5", "2.5", &[]),
        ("tls_cert", "c.pem", "\"c.pem\"", &["--tls-key", "k.pem"]),
        ("tls_key", "k.pem", "\"k.pem\"", &["--tls-cert", "c.pem"]),
        ("require_tls", "true", "true", &["--tls-cert", "c.pem", "--tls-key", "k.pem"]),
        ("worker_threads", "3", "3", &[]),
        ("upstream_tls", "require", "\"require\"", &[]),
        ("upstream_ca", "ca.pem", "\"ca.pem\"", &[]),
        ("otlp", "true", "true", &[]),
        ("otlp_normalize", "true", "true", &["--otlp", "true"]),
        ("otlp_protocol", "grpc", "\"grpc\"", &["--otlp", "true"]),
        ("admin", "off", "\"off\"", &[]),
        ("max_clients", "50", "50", &[]),
        ("startup_timeout", "4", "4", &[]),
        ("idle_timeout", "60", "60", &[]),
        ("log_format", "json", "\"json\"", &[]),
    ];

    /// Every flag has its `SQLCOMMENTER_*` variable and its TOML key, and the key means what the flag
    /// means: the same value resolves to the same configuration, one that differs from the default.
    #[test]
    fn every_flag_has_its_variable_and_file_key() {
        let _env = env_lock();
        let cmd = command();
        let mut seen = 0;
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let env = format!("SQLCOMMENTER_{}", id.to_uppercase());
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env.as_str()), "--{id}: variable");
            let long = arg.get_long().unwrap_or_else(|| panic!("{id} has no long flag"));
            if id == "config" {
                continue; // names the file itself
            }
            let Some(&(_, flag_value, toml_value, with)) = SAMPLES.iter().find(|s| s.0 == id) else {
                panic!("--{long} ({id}) has no row in SAMPLES: add one (and make sure the file takes `{id}`)")
            };
            let upstream: &[&str] = if id == "upstream" { &[] } else { &["--upstream", "h:1"] };
            let mut base = with.to_vec();
            base.extend(upstream);
            let mut by_flag = base.clone();
            let flag = format!("--{long}");
            by_flag.extend([flag.as_str(), flag_value]);
            let path = temp_file(&format!("key-{id}.toml"), &format!("{id} = {toml_value}\n"));
            let mut by_file = base.clone();
            by_file.extend(["--config", path.to_str().unwrap()]);
            let from_flag = meaning(parse(&by_flag));
            let from_file = meaning(parse(&by_file));
            assert_eq!(from_file, from_flag, "`{id} = {toml_value}` in the file vs --{long} {flag_value}");
            if id != "upstream" {
                // (`--tls-key` alone is an error: the setting's own value makes it valid.)
                let default = try_meaning(parse(&base));
                assert_ne!(Ok(from_flag), default, "--{long} {flag_value} changed nothing: pick a value that does");
            } else {
                assert_eq!(from_file.0.upstream, Upstream { host: "db.example".into(), port: 7 });
            }
            seen += 1;
        }
        assert_eq!(seen, SAMPLES.len(), "SAMPLES names a setting that is no flag");
        assert_eq!(seen, 29);
    }

    /// Flag > variable > file > default, for settings the file used not to take and for those it did.
    #[test]
    fn precedence_flag_env_file_default() {
        let _env = env_lock();
        let path = temp_file(
            "layers.toml",
            "upstream = \"file:1\"\nlisten = \"127.0.0.1:7000\"\nmax_clients = 10\nidle_timeout = 1\n\
             log_format = \"json\"\nadmin = \"127.0.0.1:9000\"\notlp = true\notlp_protocol = \"grpc\"\n\
             db_driver = \"f\"\n[tags]\nteam = \"file\"\nregion = \"eu\"\n",
        );
        let vars = [
            ("SQLCOMMENTER_CONFIG", path.to_str().unwrap()),
            ("SQLCOMMENTER_LISTEN", "127.0.0.1:7001"),
            ("SQLCOMMENTER_MAX_CLIENTS", "20"),
            ("SQLCOMMENTER_OTLP_PROTOCOL", "http/protobuf"),
            ("SQLCOMMENTER_TAGS", "team=env"),
        ];
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let result = std::panic::catch_unwind(|| {
            // Flag over variable over file over default.
            let (c, log) = meaning(parse(&["--listen", "127.0.0.1:7002", "--tag", "region=flag"]));
            assert_eq!(c.listen.port(), 7002, "flag");
            assert_eq!(c.max_clients, Some(20), "variable over file");
            assert_eq!(c.telemetry.as_ref().unwrap().protocol, Some(crate::telemetry::OtlpProtocol::HttpProtobuf));
            assert_eq!(c.idle_timeout, Some(Duration::from_secs(1)), "file");
            assert_eq!(c.admin, Some("127.0.0.1:9000".parse().unwrap()), "file");
            assert_eq!(log.as_deref(), Some("json"), "file");
            assert_eq!(c.upstream.host, "file");
            assert_eq!(c.startup_timeout, Duration::from_secs(10), "default");
            assert_eq!(c.connect_timeout, Duration::from_secs(10), "default");
            // The flag's tags replace the variable's list; both override the file's tags key by key.
            let tags = |c: &ProxyConfig| c.inject.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
            assert_eq!(tags(&c), ["team=file", "db_driver=f", "region=flag"]);
            let (c, _) = meaning(parse(&[]));
            assert_eq!(c.listen.port(), 7001, "variable over file");
            assert_eq!(tags(&c), ["region=eu", "db_driver=f", "team=env"]);
            let (c, _) = meaning(parse(&["--db-driver", "flag"]));
            assert_eq!(tags(&c), ["region=eu", "team=env", "db_driver=flag"]);
        });
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        result.unwrap();
        // Without the variables: the file, then the defaults.
        let (c, _) = meaning(parse(&["--config", path.to_str().unwrap()]));
        assert_eq!((c.listen.port(), c.max_clients), (7000, Some(10)));
        let (c, log) = meaning(parse(&["--upstream", "h"]));
        assert_eq!((c.listen.port(), c.max_clients, c.idle_timeout, log), (6432, None, None, None));
    }

    /// An unknown key (a typo, or `config` inside the file) is an error naming the key and its line.
    #[test]
    fn unknown_file_keys_are_named() {
        let err = |text: &str| {
            let path = temp_file("unknown.toml", text);
            match (ProxyArgs { config: Some(path), ..Default::default() }).resolve() {
                Err(ProxyError::Config(m)) => m,
                other => panic!("{text}: {other:?}"),
            }
        };
        let m = err("upstream = \"h\"\nidle_timout = 5\n");
        assert!(m.contains("unknown field `idle_timout`") && m.contains("line 2"), "{m}");
        let m = err("upstream = \"h\"\nconfig = \"other.toml\"\n");
        assert!(m.contains("`config`"), "{m}");
        let m = err("upstream = \"h\"\n[tags]\n\"a=b\" = \"c\"\n");
        assert!(m.contains("contains '='"), "{m}");
        let m = err("upstream = \"h\"\nmax_clients = \"many\"\n");
        assert!(m.contains("max_clients") || m.contains("line 2"), "{m}");
    }
}
