//! [`Cluster`], its [`ClusterBuilder`] and the log format types.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};
use crate::sys::{self, Identity};

/// The host every cluster listens on.
pub const HOST: &str = "127.0.0.1";

/// The superuser every cluster is initialised with (trust authentication, no password).
pub const USER: &str = "postgres";

/// A `log_line_prefix` that carries what log parsers usually need:
/// timestamp, pid, and (for session processes) user, database and application name.
pub const DEFAULT_STDERR_PREFIX: &str = "%m [%p] %q%u@%d %a ";

/// How many times `start` retries with a new port when the chosen one was taken.
const START_ATTEMPTS: u32 = 5;

/// The kind of a server log file, without format options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// Plain text `stderr` log (`*.log`), lines start with `log_line_prefix`.
    Stderr,
    /// `csvlog` (`*.csv`).
    Csv,
    /// `jsonlog` (`*.json`, PostgreSQL 15+).
    Json,
}

impl LogKind {
    /// The file extension PostgreSQL uses for this kind (`log`, `csv`, `json`).
    pub fn extension(self) -> &'static str {
        match self {
            LogKind::Stderr => "log",
            LogKind::Csv => "csv",
            LogKind::Json => "json",
        }
    }

    fn destination(self) -> &'static str {
        match self {
            LogKind::Stderr => "stderr",
            LogKind::Csv => "csvlog",
            LogKind::Json => "jsonlog",
        }
    }
}

/// A server log destination, written by the logging collector into the cluster's
/// log directory (`logging_collector=on`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// `log_destination=stderr` with the given `log_line_prefix`
    /// (see [`DEFAULT_STDERR_PREFIX`]).
    Stderr {
        /// The `log_line_prefix` to use.
        prefix: String,
    },
    /// `log_destination=csvlog`.
    Csv,
    /// `log_destination=jsonlog` (PostgreSQL 15+).
    Json,
}

impl LogFormat {
    /// `Stderr` with [`DEFAULT_STDERR_PREFIX`].
    pub fn stderr() -> Self {
        LogFormat::Stderr { prefix: DEFAULT_STDERR_PREFIX.to_owned() }
    }

    /// The kind of file this format produces.
    pub fn kind(&self) -> LogKind {
        match self {
            LogFormat::Stderr { .. } => LogKind::Stderr,
            LogFormat::Csv => LogKind::Csv,
            LogFormat::Json => LogKind::Json,
        }
    }
}

/// Configures and starts a [`Cluster`]; obtained from [`Cluster::builder`].
///
/// Defaults: no extra settings, server log (PostgreSQL's default format) captured in
/// [`Cluster::server_log`], nothing preloaded.
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `.start()` is called"]
pub struct ClusterBuilder {
    settings: Vec<(String, String)>,
    logs: Vec<LogFormat>,
    preload: Vec<String>,
    databases: Vec<String>,
    extensions: Vec<String>,
    bindir: Option<PathBuf>,
}

impl ClusterBuilder {
    /// The configuration of [`crate::shared`]: `log_min_duration_statement=0`,
    /// stderr logging to a file with prefix `%m [%p] %a %u@%d `,
    /// `compute_query_id=on`, `pg_stat_statements` preloaded and created in `postgres`.
    pub fn shared_defaults() -> Self {
        ClusterBuilder::default()
            .setting("log_min_duration_statement", "0")
            .setting("compute_query_id", "on")
            .log_format(LogFormat::Stderr { prefix: "%m [%p] %a %u@%d ".to_owned() })
            .preload(&["pg_stat_statements"])
            .create_extension("pg_stat_statements")
    }

    /// Sets a server setting (written to the cluster's configuration file, so any
    /// context works, including `postmaster` settings). Later calls win.
    ///
    /// `port`, `listen_addresses` and `unix_socket_directories` are managed by the
    /// harness; overriding them breaks [`Cluster::url`] and friends.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Adds a log destination written by the logging collector into
    /// [`Cluster::log_dir`] as `postgresql.log` / `.csv` / `.json`. Sets
    /// `logging_collector`, `log_destination`, `log_directory`, `log_filename` and, for
    /// [`LogFormat::Stderr`], `log_line_prefix`.
    ///
    /// May be called several times to log in several formats at once; the first call
    /// picks the primary format read by [`Cluster::read_log`]. A repeated kind replaces
    /// the earlier one.
    pub fn log_format(mut self, format: LogFormat) -> Self {
        if let Some(existing) = self.logs.iter_mut().find(|f| f.kind() == format.kind()) {
            *existing = format;
        } else {
            self.logs.push(format);
        }
        self
    }

    /// Adds libraries to `shared_preload_libraries` (e.g. `pg_stat_statements`,
    /// `auto_explain`).
    pub fn preload(mut self, libraries: &[&str]) -> Self {
        for lib in libraries {
            if !self.preload.iter().any(|l| l == lib) {
                self.preload.push((*lib).to_owned());
            }
        }
        self
    }

    /// Creates a database once the server is up.
    pub fn create_database(mut self, name: impl Into<String>) -> Self {
        self.databases.push(name.into());
        self
    }

    /// Runs `CREATE EXTENSION IF NOT EXISTS <name>` in database `postgres` once the
    /// server is up (after [`create_database`](Self::create_database)).
    pub fn create_extension(mut self, name: impl Into<String>) -> Self {
        self.extensions.push(name.into());
        self
    }

    /// Uses the binaries in `dir` instead of looking them up with [`crate::find_bindir`].
    pub fn bindir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bindir = Some(dir.into());
        self
    }

    /// Creates the cluster (a copy of a per-process initdb template), starts it on a
    /// free port and runs the requested database/extension creation.
    ///
    /// # Errors
    /// Missing binaries, a failed start (with the server log), or a failed setup
    /// statement. Nothing is left behind on error.
    pub fn start(self) -> Result<Cluster> {
        for (name, _) in &self.settings {
            validate_setting_name(name)?;
        }
        let bindir = match self.bindir {
            Some(dir) => {
                sys::check_bindir(&dir)?;
                dir
            }
            None => sys::find_bindir()?,
        };
        let id = sys::identity()?;
        sys::ensure_watchdog()?;
        let template = sys::template_data_dir(&bindir, id)?;
        let base = sys::new_scratch_dir(id)?;

        let socket_dir = base.join("sock");
        let log_dir = base.join("log");
        let conf = base_conf(&self.logs, &socket_dir, &log_dir, &self.preload, &self.settings);
        // From here on, dropping `cluster` cleans up whatever exists.
        let cluster = Cluster {
            data_dir: base.join("data"),
            server_log: base.join("server.log"),
            socket_dir,
            log_dir,
            base_dir: base,
            bindir,
            id,
            port: AtomicU16::new(0),
            logs: self.logs,
            conf,
            keep: sys::keep_requested(),
        };
        sys::copy_data_dir(&template, &cluster.data_dir)?;
        sys::make_dir(&cluster.socket_dir, id)?;
        sys::make_dir(&cluster.log_dir, id)?;
        cluster.start_server(sys::free_port()?)?;

        for db in &self.databases {
            cluster.create_database(db)?;
        }
        for ext in &self.extensions {
            cluster.execute_sql(&format!("CREATE EXTENSION IF NOT EXISTS {}", quote_ident(ext)))?;
        }
        Ok(cluster)
    }
}

/// A throwaway PostgreSQL cluster listening on `127.0.0.1:<port>` and on a private unix
/// socket directory, with superuser `postgres` (trust authentication).
///
/// Dropping it stops the server (`pg_ctl stop -m immediate`) and deletes its
/// directories (kept when `SQLCOMMENTER_KEEP_PG=1`). All methods take `&self`, so a
/// cluster can be shared between threads.
#[derive(Debug)]
pub struct Cluster {
    bindir: PathBuf,
    base_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_dir: PathBuf,
    server_log: PathBuf,
    id: Identity,
    port: AtomicU16,
    logs: Vec<LogFormat>,
    /// Contents of harness.conf without the `port` line.
    conf: String,
    keep: bool,
}

impl Cluster {
    /// A builder with default settings.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The TCP port the server listens on (stable across [`restart`](Self::restart)
    /// unless the port was taken meanwhile).
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// The TCP host, always `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The superuser name, always `"postgres"`.
    pub fn user(&self) -> &'static str {
        USER
    }

    /// The unix socket directory (`host=` value for a unix-socket connection).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// `postgres://postgres@127.0.0.1:<port>/<dbname>`.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://{USER}@{HOST}:{}/{}", self.port(), percent_encode(dbname))
    }

    /// `host=127.0.0.1 port=<port> user=postgres dbname=<dbname>`.
    pub fn keyword_conn_str(&self, dbname: &str) -> String {
        format!("host={HOST} port={} user={USER} dbname={}", self.port(), quote_conninfo(dbname))
    }

    /// Like [`keyword_conn_str`](Self::keyword_conn_str) but over the unix socket:
    /// `host=<socket_dir> port=<port> user=postgres dbname=<dbname>`.
    pub fn socket_conn_str(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={USER} dbname={}",
            quote_conninfo(&self.socket_dir.to_string_lossy()),
            self.port(),
            quote_conninfo(dbname)
        )
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The scratch directory holding `data/`, `sock/`, `log/` and `server.log`.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// The directory the logging collector writes to (empty without a log format).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The server's own stderr (`pg_ctl -l`): startup messages, and all log output
    /// when no [`LogFormat`] was chosen.
    pub fn server_log(&self) -> &Path {
        &self.server_log
    }

    /// The directory holding the PostgreSQL binaries in use.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The path of a PostgreSQL binary, e.g. `bin("pgbench")`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// A [`Command`] for a client binary (`psql`, `pgbench`, ...) from the cluster's
    /// bindir, with `PGHOST`, `PGPORT`, `PGUSER` and `PGDATABASE=postgres` set for this
    /// cluster and other libpq variables from the environment removed.
    pub fn client_command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin(name));
        sys::scrub_client_env(&mut cmd);
        cmd.env("PGHOST", HOST)
            .env("PGPORT", self.port().to_string())
            .env("PGUSER", USER)
            .env("PGDATABASE", "postgres")
            .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Runs `psql -X -q -v ON_ERROR_STOP=1 <args>` against database `postgres`
    /// (override with `-d <db>`), returning its standard output.
    ///
    /// # Errors
    /// [`HarnessError::CommandFailed`] with psql's stderr when it exits non-zero.
    pub fn psql(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.client_command("psql");
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]).args(args).stdin(Stdio::null());
        let out = sys::run(&mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs one SQL string (sent as a single simple-query message) in database
    /// `postgres`.
    ///
    /// # Errors
    /// As [`psql`](Self::psql).
    pub fn execute_sql(&self, sql: &str) -> Result<()> {
        self.psql(&["-c", sql]).map(drop)
    }

    /// Runs one SQL string in database `postgres` and returns the result unaligned and
    /// without headers (`psql -At`), trailing newline removed. Fields are separated by
    /// `|`, rows by newlines.
    ///
    /// # Errors
    /// As [`psql`](Self::psql).
    pub fn query(&self, sql: &str) -> Result<String> {
        let out = self.psql(&["-A", "-t", "-c", sql])?;
        Ok(out.trim_end_matches('\n').to_owned())
    }

    /// Runs a multi-statement SQL script in database `dbname` via psql's standard input
    /// (statements are sent one by one, so `CREATE DATABASE` etc. may appear among them).
    /// Returns psql's standard output.
    ///
    /// # Errors
    /// As [`psql`](Self::psql); stops at the first failing statement.
    pub fn run_script(&self, dbname: &str, script: &str) -> Result<String> {
        let mut cmd = self.client_command("psql");
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbname, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn { command: sys::describe(&cmd), source })?;
        let stdin = child.stdin.take();
        let script = script.to_owned();
        let writer = std::thread::spawn(move || {
            if let Some(mut stdin) = stdin {
                // A write error means psql exited early; its status tells why.
                let _ = stdin.write_all(script.as_bytes());
            }
        });
        let out = child.wait_with_output().map_err(|e| HarnessError::io("waiting for psql", e))?;
        let _ = writer.join();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(sys::command_failed(&cmd, &out))
        }
    }

    /// `CREATE DATABASE <name>`.
    ///
    /// # Errors
    /// As [`psql`](Self::psql).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.execute_sql(&format!("CREATE DATABASE {}", quote_ident(name)))
    }

    /// `ALTER SYSTEM SET <name> = '<value>'` plus `pg_reload_conf()`, then waits until
    /// new sessions see the reloaded configuration. Only settings of context `sighup`
    /// or below take effect this way; for others call [`restart`](Self::restart)
    /// afterwards (the value persists in `postgresql.auto.conf`). The value is sent as
    /// one quoted string, so list settings take a single element.
    ///
    /// # Errors
    /// An invalid name, a rejected value, or a reload not observed within 10 s.
    pub fn set_setting_and_reload(&self, name: &str, value: &str) -> Result<()> {
        validate_setting_name(name)?;
        let before = self.query("SELECT pg_conf_load_time()")?;
        self.execute_sql(&format!("ALTER SYSTEM SET {name} = {}", quote_literal(value)))?;
        self.execute_sql("SELECT pg_reload_conf()")?;
        let check = format!("SELECT pg_conf_load_time() > {}::timestamptz", quote_literal(&before));
        let timeout = Duration::from_secs(10);
        let started = Instant::now();
        loop {
            if self.query(&check)? == "t" {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(HarnessError::Timeout {
                    what: format!("the server to reload its configuration ({name})"),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The postmaster's pid, from `postmaster.pid` (`None` when stopped).
    pub fn pid(&self) -> Option<u32> {
        sys::postmaster_pid(&self.data_dir)
    }

    /// Whether the postmaster is running.
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(sys::process_alive)
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`), keeping all files so logs can
    /// still be read. Does nothing when already stopped.
    ///
    /// # Errors
    /// [`HarnessError::CommandFailed`] when `pg_ctl stop` fails.
    pub fn stop(&self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        self.pg_ctl_stop("fast")
    }

    /// Stops the server if it is running and starts it again on the same port (a new
    /// port only if that one was taken meanwhile). Settings changed with `ALTER SYSTEM`
    /// take effect.
    ///
    /// # Errors
    /// As [`stop`](Self::stop), or [`HarnessError::StartFailed`].
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start_server(self.port())
    }

    /// All log files: the collector's files in [`log_dir`](Self::log_dir) (sorted by
    /// name) when a [`LogFormat`] was chosen, otherwise [`server_log`](Self::server_log).
    pub fn log_files(&self) -> Vec<PathBuf> {
        if self.logs.is_empty() {
            return vec![self.server_log.clone()];
        }
        let mut files: Vec<PathBuf> = fs::read_dir(&self.log_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    }

    /// The file the collector writes `kind` to (`<log_dir>/postgresql.<ext>`). Without
    /// any [`LogFormat`], `Stderr` maps to [`server_log`](Self::server_log).
    pub fn log_file_for(&self, kind: LogKind) -> PathBuf {
        if self.logs.is_empty() && kind == LogKind::Stderr {
            return self.server_log.clone();
        }
        self.log_dir.join(format!("postgresql.{}", kind.extension()))
    }

    /// The primary log kind: the first [`LogFormat`] given, else `Stderr`.
    pub fn primary_log_kind(&self) -> LogKind {
        self.logs.first().map_or(LogKind::Stderr, LogFormat::kind)
    }

    /// The whole log in the primary format (see [`read_log_for`](Self::read_log_for)).
    /// Logs only grow, so `&log[earlier_len..]` is what was logged since an earlier
    /// read.
    pub fn read_log(&self) -> String {
        self.read_log_for(self.primary_log_kind())
    }

    /// All log files of `kind` concatenated in name order (empty if none yet). Without
    /// any [`LogFormat`], `Stderr` reads [`server_log`](Self::server_log).
    ///
    /// The collector writes asynchronously: a line may show up a moment after the
    /// statement returned — use [`wait_for_log`](Self::wait_for_log).
    pub fn read_log_for(&self, kind: LogKind) -> String {
        let files: Vec<PathBuf> = if self.logs.is_empty() {
            if kind == LogKind::Stderr {
                vec![self.server_log.clone()]
            } else {
                Vec::new()
            }
        } else {
            self.log_files().into_iter().filter(|p| p.extension().is_some_and(|e| e == kind.extension())).collect()
        };
        let mut text = String::new();
        for file in files {
            if let Ok(bytes) = fs::read(&file) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        text
    }

    /// Polls the primary log until it contains `needle`; returns the whole log.
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] (the message includes the log's tail).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_for_log_for(self.primary_log_kind(), needle, timeout)
    }

    /// Polls the log of `kind` until it contains `needle`; returns that whole log.
    ///
    /// # Errors
    /// [`HarnessError::Timeout`] (the message includes the log's tail).
    pub fn wait_for_log_for(&self, kind: LogKind, needle: &str, timeout: Duration) -> Result<String> {
        let started = Instant::now();
        loop {
            let log = self.read_log_for(kind);
            if log.contains(needle) {
                return Ok(log);
            }
            if started.elapsed() > timeout {
                return Err(HarnessError::Timeout {
                    what: format!("{needle:?} in the {kind:?} log; its tail:\n{}", tail(&log, 2000)),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = sys::server_command(self.id, &self.bin("pg_ctl"), &self.base_dir);
        cmd.arg("-D").arg(&self.data_dir);
        cmd
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        let mut cmd = self.pg_ctl();
        cmd.args(["-w", "-t", "60", "-s", "-m", mode, "stop"]);
        sys::run(&mut cmd).map(drop)
    }

    /// Writes harness.conf with `port` and runs `pg_ctl start`, retrying on a new port
    /// when the port is taken.
    fn start_server(&self, first_port: u16) -> Result<()> {
        let mut port = first_port;
        let mut attempt = 1;
        loop {
            let conf_path = self.data_dir.join(sys::HARNESS_CONF);
            let conf = format!("{}port = {port}\n", self.conf);
            fs::write(&conf_path, conf).map_err(|e| HarnessError::io(format!("writing {}", conf_path.display()), e))?;
            sys::give_to_server_user(&conf_path, self.id)?;
            let log_start = fs::metadata(&self.server_log).map_or(0, |m| m.len());

            let mut cmd = self.pg_ctl();
            cmd.arg("-l").arg(&self.server_log).args(["-w", "-t", "60", "-s", "start"]);
            let out = cmd.output().map_err(|source| HarnessError::Spawn { command: sys::describe(&cmd), source })?;
            if out.status.success() {
                self.port.store(port, Ordering::SeqCst);
                return Ok(());
            }
            let log = fs::read(&self.server_log)
                .map(|b| {
                    let start = usize::try_from(log_start).unwrap_or(0).min(b.len());
                    String::from_utf8_lossy(&b[start..]).into_owned()
                })
                .unwrap_or_default();
            let port_taken =
                log.contains("Address already in use") || log.contains("could not create any TCP/IP sockets");
            if port_taken && attempt < START_ATTEMPTS {
                attempt += 1;
                port = sys::free_port()?;
                continue;
            }
            return Err(HarnessError::StartFailed {
                attempts: attempt,
                stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
                log,
            });
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.is_running() {
            if let Err(e) = self.pg_ctl_stop("immediate") {
                eprintln!("sqlcommenter-testpg: stopping {}: {e}", self.data_dir.display());
                if let Some(pid) = self.pid() {
                    let _ = Command::new("kill").args(["-QUIT", &pid.to_string()]).status();
                }
            }
        }
        if self.keep {
            eprintln!("sqlcommenter-testpg: keeping {} ({}=1)", self.base_dir.display(), sys::KEEP_ENV);
        } else if let Err(e) = fs::remove_dir_all(&self.base_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("sqlcommenter-testpg: removing {}: {e}", self.base_dir.display());
            }
        }
    }
}

/// Builds harness.conf (everything except the `port` line).
fn base_conf(
    logs: &[LogFormat],
    socket_dir: &Path,
    log_dir: &Path,
    preload: &[String],
    settings: &[(String, String)],
) -> String {
    let mut lines: Vec<(String, String)> = vec![
        ("listen_addresses".into(), HOST.into()),
        ("unix_socket_directories".into(), socket_dir.to_string_lossy().into_owned()),
        ("fsync".into(), "off".into()),
        ("synchronous_commit".into(), "off".into()),
        ("full_page_writes".into(), "off".into()),
    ];
    if !logs.is_empty() {
        let destinations: Vec<&str> = logs.iter().map(|f| f.kind().destination()).collect();
        lines.extend([
            ("logging_collector".into(), "on".into()),
            ("log_destination".into(), destinations.join(",")),
            ("log_directory".into(), log_dir.to_string_lossy().into_owned()),
            ("log_filename".into(), "postgresql.log".into()),
            ("log_rotation_age".into(), "0".into()),
            ("log_rotation_size".into(), "0".into()),
            ("log_file_mode".into(), "0644".into()),
        ]);
        for format in logs {
            if let LogFormat::Stderr { prefix } = format {
                lines.push(("log_line_prefix".into(), prefix.clone()));
            }
        }
    }
    if !preload.is_empty() {
        lines.push(("shared_preload_libraries".into(), preload.join(",")));
    }
    lines.extend(settings.iter().cloned());

    let mut conf = String::from("# written by sqlcommenter-testpg; rewritten at each start\n");
    for (name, value) in lines {
        let _ = writeln!(conf, "{name} = {}", quote_conf(&value));
    }
    conf
}

fn validate_setting_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(HarnessError::InvalidSettingName(name.to_owned()))
    }
}

/// A postgresql.conf string literal (backslashes are escapes there too).
fn quote_conf(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// An SQL string literal (standard_conforming_strings=on).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// An SQL identifier, always quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A libpq keyword/value value, quoted only when needed.
fn quote_conninfo(value: &str) -> String {
    if !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_conf(r"a'b\c"), r"'a''b\\c'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_conninfo("postgres"), "postgres");
        assert_eq!(quote_conninfo("my db"), "'my db'");
        assert_eq!(quote_conninfo(""), "''");
        assert_eq!(percent_encode("db name/é"), "db%20name%2F%C3%A9");
    }

    #[test]
    fn setting_names() {
        assert!(validate_setting_name("auto_explain.log_min_duration").is_ok());
        assert!(validate_setting_name("work_mem; drop").is_err());
        assert!(validate_setting_name("").is_err());
    }

    #[test]
    fn log_format_replaces_same_kind() {
        let b = ClusterBuilder::default()
            .log_format(LogFormat::Csv)
            .log_format(LogFormat::stderr())
            .log_format(LogFormat::Stderr { prefix: "x ".into() });
        assert_eq!(b.logs, vec![LogFormat::Csv, LogFormat::Stderr { prefix: "x ".into() }]);
    }
}
