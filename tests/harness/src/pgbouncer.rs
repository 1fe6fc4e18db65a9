//! [`PgBouncer`]: a throwaway PgBouncer (1.21+, prepared statements in transaction
//! pooling) in front of a harness [`Cluster`], and finding its binary.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, HOST, USER};
use crate::error::{HarnessError, Result};
use crate::sys;

/// Environment variable naming the `pgbouncer` binary to use.
pub const PGBOUNCER_BIN_ENV: &str = "PGBOUNCER_BIN";

/// Where `../shared/tools/pgbouncer-build.sh` installs PgBouncer 1.24 (Debian 12 ships 1.18,
/// which has no prepared statements in transaction pooling).
pub const DEFAULT_PGBOUNCER_BIN: &str = "/usr/local/lib/pgbouncer-trixie/inst/bin/pgbouncer";

/// The oldest PgBouncer that tracks protocol-level prepared statements
/// (`max_prepared_statements`).
const MIN_VERSION: (u32, u32) = (1, 21);

/// How many times `start` retries with a new port when the chosen one was taken.
const START_ATTEMPTS: u32 = 5;

/// How long `start` waits for PgBouncer to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the file (in the PgBouncer's scratch directory) holding its pid, read by the
/// exit watchdog.
pub(crate) const PID_FILE: &str = "pgbouncer.pid";

/// PgBouncer's `pool_mode`: when a server connection goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolMode {
    /// Released when the client disconnects (after `server_reset_query`, `DISCARD ALL`).
    Session,
    /// Released after each transaction (an implicit one: after each Sync outside a block).
    Transaction,
    /// Released after each statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    /// The `pool_mode` value (`session`, `transaction`, `statement`).
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// Finds the `pgbouncer` binary: `PGBOUNCER_BIN` when set (an error if it does not
/// exist), else [`DEFAULT_PGBOUNCER_BIN`].
///
/// # Errors
/// [`HarnessError::PgBouncerNotFound`] naming the places looked at and how to build it.
pub fn find_pgbouncer() -> Result<PathBuf> {
    let (path, searched) = match std::env::var_os(PGBOUNCER_BIN_ENV).filter(|v| !v.is_empty()) {
        Some(bin) => {
            let path = PathBuf::from(bin);
            let searched = format!("{PGBOUNCER_BIN_ENV}={}", path.display());
            (path, searched)
        }
        None => (PathBuf::from(DEFAULT_PGBOUNCER_BIN), DEFAULT_PGBOUNCER_BIN.to_owned()),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::PgBouncerNotFound { searched })
    }
}

/// For tests that need PgBouncer: the binary when it is found; otherwise `None` after
/// printing a loud SKIPPED line naming `test` — or a panic when `CI=true`, so that CI
/// never passes a test it did not run.
///
/// # Panics
/// When the binary is missing and the `CI` environment variable is `true`.
pub fn pgbouncer_or_skip(test: &str) -> Option<PathBuf> {
    match find_pgbouncer() {
        Ok(bin) => Some(bin),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{test}: {e} (CI=true: not skipping)"),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

/// Configures and starts a [`PgBouncer`]; obtained from [`PgBouncer::builder`].
///
/// Defaults: pool of 2 server connections per database/user, `max_prepared_statements
/// = 200`, `max_client_conn = 200`, trust authentication for `postgres`,
/// `ignore_startup_parameters = extra_float_digits`, admin console database `pgbouncer`
/// open to `postgres`, TCP only.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.start()` is called"]
pub struct PgBouncerBuilder {
    mode: PoolMode,
    pool_size: u32,
    max_prepared_statements: u32,
    settings: Vec<(String, String)>,
    binary: Option<PathBuf>,
}

impl PgBouncerBuilder {
    /// `default_pool_size`: server connections per database/user pair (default 2).
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// `max_prepared_statements` (default 200; 0 switches prepared-statement tracking off).
    pub fn max_prepared_statements(mut self, max: u32) -> Self {
        self.max_prepared_statements = max;
        self
    }

    /// Any other `[pgbouncer]` setting (e.g. `server_reset_query`, `track_extra_parameters`).
    /// Later calls win, also over the defaults. `listen_addr`, `listen_port`,
    /// `unix_socket_dir`, `auth_type` and `auth_file` are managed by the harness.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        let value = value.into();
        match self.settings.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = value,
            None => self.settings.push((name, value)),
        }
        self
    }

    /// Uses this binary instead of [`find_pgbouncer`]'s.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Starts PgBouncer in front of `cluster` (every database name is routed to it over
    /// TCP) on a free port of `127.0.0.1` and waits until it accepts connections. As
    /// root it runs as the `postgres` user (PgBouncer refuses root).
    ///
    /// # Errors
    /// Missing binary, a version without prepared-statement support (< 1.21), an
    /// invalid setting name, or a failed start (with PgBouncer's log). Nothing is left
    /// behind on error.
    pub fn start(self, cluster: &Cluster) -> Result<PgBouncer> {
        for (name, value) in &self.settings {
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
                return Err(HarnessError::InvalidSettingName(name.clone()));
            }
            if value.contains('\n') {
                return Err(HarnessError::InvalidSettingName(format!("{name} (value with a newline)")));
            }
        }
        let binary = match self.binary.clone() {
            Some(bin) if bin.is_file() => bin,
            Some(bin) => return Err(HarnessError::PgBouncerNotFound { searched: bin.display().to_string() }),
            None => find_pgbouncer()?,
        };
        let version = version_of(&binary)?;
        let id = sys::identity()?;
        sys::ensure_watchdog()?;
        let dir = sys::new_scratch_dir(id)?;
        let mut bouncer = PgBouncer {
            binary,
            version,
            mode: self.mode,
            log: dir.join("pgbouncer.log"),
            ini: dir.join("pgbouncer.ini"),
            dir,
            pg_bindir: cluster.bindir().to_path_buf(),
            port: 0,
            child: None,
            keep: sys::keep_requested(),
        };
        // From here on, dropping `bouncer` cleans up whatever exists.
        let userlist = bouncer.dir.join("userlist.txt");
        write_file(&userlist, &format!("\"{USER}\" \"\"\n"))?;
        let mut attempt = 1;
        loop {
            let port = sys::free_port()?;
            write_file(&bouncer.ini, &self.ini(cluster.port(), port, &userlist))?;
            match bouncer.spawn_and_wait(port, id)? {
                Started::Up => return Ok(bouncer),
                Started::PortTaken if attempt < START_ATTEMPTS => attempt += 1,
                Started::PortTaken | Started::Failed => {
                    return Err(HarnessError::PgBouncerStartFailed { attempts: attempt, log: bouncer.read_log() })
                }
            }
        }
    }

    fn ini(&self, upstream_port: u16, port: u16, userlist: &Path) -> String {
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addr".into(), HOST.into()),
            ("listen_port".into(), port.to_string()),
            ("unix_socket_dir".into(), String::new()),
            ("auth_type".into(), "trust".into()),
            ("auth_file".into(), userlist.to_string_lossy().into_owned()),
            ("admin_users".into(), USER.into()),
            ("stats_users".into(), USER.into()),
            ("pool_mode".into(), self.mode.as_str().into()),
            ("default_pool_size".into(), self.pool_size.to_string()),
            ("max_client_conn".into(), "200".into()),
            ("max_prepared_statements".into(), self.max_prepared_statements.to_string()),
            ("ignore_startup_parameters".into(), "extra_float_digits".into()),
        ];
        for (name, value) in &self.settings {
            match settings.iter_mut().find(|(n, _)| n == name) {
                Some(existing) => existing.1.clone_from(value),
                None => settings.push((name.clone(), value.clone())),
            }
        }
        let mut ini = format!(
            "; written by sqlcommenter-testpg\n[databases]\n* = host={HOST} port={upstream_port}\n\n[pgbouncer]\n"
        );
        for (name, value) in settings {
            let _ = writeln!(ini, "{name} = {value}");
        }
        ini
    }
}

/// Outcome of one start attempt.
enum Started {
    Up,
    PortTaken,
    Failed,
}

/// A throwaway PgBouncer listening on `127.0.0.1:<port>` in front of a harness
/// [`Cluster`], user `postgres` (trust authentication).
///
/// Dropping it kills the process and deletes its directory (kept when
/// `SQLCOMMENTER_KEEP_PG=1`); if the test process dies first, the harness watchdog
/// does both. Stop it before the cluster it fronts goes away, or it only logs
/// connection failures.
#[derive(Debug)]
pub struct PgBouncer {
    binary: PathBuf,
    version: String,
    mode: PoolMode,
    dir: PathBuf,
    ini: PathBuf,
    log: PathBuf,
    pg_bindir: PathBuf,
    port: u16,
    child: Option<Child>,
    keep: bool,
}

impl PgBouncer {
    /// A builder for a PgBouncer in `mode` with the defaults of [`PgBouncerBuilder`].
    pub fn builder(mode: PoolMode) -> PgBouncerBuilder {
        PgBouncerBuilder { mode, pool_size: 2, max_prepared_statements: 200, settings: Vec::new(), binary: None }
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP host, always `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The pool mode it was started with.
    pub fn mode(&self) -> PoolMode {
        self.mode
    }

    /// The first line of `pgbouncer --version`, e.g. `PgBouncer 1.24.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Its pid (`None` once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The scratch directory holding `pgbouncer.ini`, `userlist.txt` and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration file it runs with.
    pub fn ini_path(&self) -> &Path {
        &self.ini
    }

    /// PgBouncer's own log (its standard error).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// PgBouncer's log so far (empty if none yet).
    pub fn read_log(&self) -> String {
        fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// `postgres://postgres@127.0.0.1:<port>/<dbname>` (the admin console is database
    /// `pgbouncer`).
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://{USER}@{HOST}:{}/{dbname}", self.port)
    }

    /// `host=127.0.0.1 port=<port> user=postgres dbname=<dbname>`.
    pub fn keyword_conn_str(&self, dbname: &str) -> String {
        format!("host={HOST} port={} user={USER} dbname={dbname}", self.port)
    }

    /// Runs one SQL string through PgBouncer with `psql -X -A -t` (from the cluster's
    /// bindir) in database `dbname` and returns its output, trailing newline removed.
    /// `dbname = "pgbouncer"` reaches the admin console (`SHOW POOLS`, `SHOW SERVERS`…).
    ///
    /// # Errors
    /// [`HarnessError::CommandFailed`] with psql's stderr when it exits non-zero.
    pub fn query(&self, dbname: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(self.pg_bindir.join("psql"));
        sys::scrub_client_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.keyword_conn_str(dbname), "-c", sql])
            .stdin(Stdio::null());
        let out = sys::run(&mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_owned())
    }

    /// Kills PgBouncer (server connections close with it) and waits for it to exit;
    /// files are kept until drop. Does nothing when already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_file(self.dir.join(PID_FILE));
        }
    }

    /// Spawns PgBouncer on `port` and waits until it accepts connections or exits.
    fn spawn_and_wait(&mut self, port: u16, id: sys::Identity) -> Result<Started> {
        let log =
            fs::File::create(&self.log).map_err(|e| HarnessError::io(format!("creating {}", self.log.display()), e))?;
        let log_err = log.try_clone().map_err(|e| HarnessError::io("duplicating the log handle", e))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg(&self.ini).current_dir(&self.dir).stdin(Stdio::null()).stdout(log).stderr(log_err);
        sys::scrub_client_env(&mut cmd);
        if let Some((uid, gid)) = id.run_as {
            // Direct setuid rather than `runuser`, so the child is PgBouncer itself and
            // killing it on drop kills PgBouncer.
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn { command: sys::describe(&cmd), source })?;
        write_file(&self.dir.join(PID_FILE), &format!("{}\n", child.id()))?;
        self.child = Some(child);
        self.port = port;

        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    let log = self.read_log();
                    return Ok(if log.contains("Address already in use") {
                        Started::PortTaken
                    } else {
                        Started::Failed
                    });
                }
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(Started::Up);
            }
            if started.elapsed() > START_TIMEOUT {
                self.stop();
                return Err(HarnessError::Timeout {
                    what: format!("PgBouncer to listen on {addr}; its log:\n{}", self.read_log()),
                    waited: START_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
        if self.keep {
            eprintln!("sqlcommenter-testpg: keeping {} ({}=1)", self.dir.display(), sys::KEEP_ENV);
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("sqlcommenter-testpg: removing {}: {e}", self.dir.display());
            }
        }
    }
}

/// The first line of `<binary> --version`, checked to be at least 1.21.
fn version_of(binary: &Path) -> Result<String> {
    let out = sys::run(Command::new(binary).arg("--version").stdin(Stdio::null()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    let number = line.strip_prefix("PgBouncer ").unwrap_or_default();
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) if (major, minor) >= MIN_VERSION => Ok(line),
        _ => Err(HarnessError::PgBouncerTooOld { binary: binary.display().to_string(), version: line }),
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_has_mode_pool_and_overrides() {
        let ini = PgBouncer::builder(PoolMode::Transaction)
            .pool_size(3)
            .setting("max_client_conn", "50")
            .setting("server_reset_query", "")
            .ini(5433, 6543, Path::new("/x/userlist.txt"));
        assert!(ini.contains("* = host=127.0.0.1 port=5433\n"), "{ini}");
        assert!(ini.contains("listen_port = 6543\n"), "{ini}");
        assert!(ini.contains("pool_mode = transaction\n"), "{ini}");
        assert!(ini.contains("default_pool_size = 3\n"), "{ini}");
        assert!(ini.contains("max_prepared_statements = 200\n"), "{ini}");
        assert!(ini.contains("max_client_conn = 50\n") && !ini.contains("max_client_conn = 200"), "{ini}");
        assert!(ini.contains("server_reset_query = \n"), "{ini}");
    }
}
