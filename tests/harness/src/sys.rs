//! Process-level plumbing: finding binaries, running commands (as `postgres` when we
//! are root), scratch directories, the initdb template and the exit watchdog.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::error::{HarnessError, Result};

/// Environment variable that overrides where the PostgreSQL binaries are looked up.
pub const PG_BINDIR_ENV: &str = "PG_BINDIR";

/// Environment variable that, when set to `1`, keeps cluster directories after the
/// cluster is dropped (the server is still stopped).
pub const KEEP_ENV: &str = "SQLCOMMENTER_KEEP_PG";

/// Environment variable overriding the directory scratch directories are created in.
pub const SCRATCH_ENV: &str = "SQLCOMMENTER_PG_SCRATCH";

const SCRATCH_PREFIX: &str = "pgh-";

/// Marker file put into a scratch directory that must survive stale-directory reaping.
const KEEP_MARKER: &str = "KEEP";

/// libpq environment variables that would change where our own client or server
/// commands connect or how they behave; removed from every command we run.
const PG_CLIENT_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGDATA",
];

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `SQLCOMMENTER_KEEP_PG=1` is set.
pub(crate) fn keep_requested() -> bool {
    std::env::var(KEEP_ENV).is_ok_and(|v| v == "1")
}

/// Locates the directory holding `initdb`, `pg_ctl` and `postgres`.
///
/// Order: the `PG_BINDIR` environment variable, then `pg_config --bindir`, then the
/// highest-numbered `/usr/lib/postgresql/<version>/bin`. A candidate only counts if it
/// contains `initdb`, `pg_ctl` and `postgres`.
///
/// # Errors
/// [`HarnessError::BinariesNotFound`] when none of the candidates has the binaries
/// (the message tells how to install them).
pub fn find_bindir() -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Some(dir) = std::env::var_os(PG_BINDIR_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_server_binaries(&dir) {
            return Ok(dir);
        }
        // An explicit override that is wrong is an error, not something to paper over.
        return Err(HarnessError::BinariesNotFound { searched: format!("{PG_BINDIR_ENV}={}", dir.display()) });
    }

    match Command::new("pg_config").arg("--bindir").output() {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
            searched.push(format!("pg_config --bindir ({})", dir.display()));
        }
        _ => searched.push("pg_config --bindir (not available)".to_owned()),
    }

    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            key.map(|k| (k, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.into_iter().rev().find(|(_, d)| has_server_binaries(d)) {
        return Ok(dir);
    }
    searched.push("/usr/lib/postgresql/*/bin".to_owned());
    Err(HarnessError::BinariesNotFound { searched: searched.join(", ") })
}

/// Checks `dir` holds the server binaries; used to validate an explicit bindir too.
pub(crate) fn check_bindir(dir: &Path) -> Result<()> {
    if has_server_binaries(dir) {
        Ok(())
    } else {
        Err(HarnessError::BinariesNotFound { searched: dir.display().to_string() })
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"].iter().all(|b| dir.join(b).is_file())
}

/// Who runs the server processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `Some((uid, gid))` of the `postgres` user when we are root and must switch to it.
    pub(crate) run_as: Option<(u32, u32)>,
}

static IDENTITY: OnceLock<Identity> = OnceLock::new();

pub(crate) fn identity() -> Result<Identity> {
    if let Some(id) = IDENTITY.get() {
        return Ok(*id);
    }
    let euid = id_query(&["-u"])?;
    let id = if euid == 0 {
        let uid = id_query(&["-u", "postgres"]);
        let gid = id_query(&["-g", "postgres"]);
        match (uid, gid) {
            (Ok(uid), Ok(gid)) => Identity { run_as: Some((uid, gid)) },
            (Err(e), _) | (_, Err(e)) => {
                let stderr = match e {
                    HarnessError::CommandFailed { stderr, .. } => stderr,
                    other => other.to_string(),
                };
                return Err(HarnessError::NoPostgresUser { stderr });
            }
        }
    } else {
        Identity { run_as: None }
    };
    Ok(*IDENTITY.get_or_init(|| id))
}

fn id_query(args: &[&str]) -> Result<u32> {
    let out = run(Command::new("id").args(args))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().map_err(|_| HarnessError::CommandFailed {
        command: describe(Command::new("id").args(args)),
        status: "unparsable output".to_owned(),
        stdout: text.into_owned(),
        stderr: String::new(),
    })
}

/// A command for a server-side binary (`initdb`, `pg_ctl`, ...), run as `postgres`
/// through `runuser` when we are root. Runs in `cwd` (which that user can enter).
pub(crate) fn server_command(id: Identity, bin: &Path, cwd: &Path) -> Command {
    let mut cmd = if id.run_as.is_some() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.current_dir(cwd).stdin(Stdio::null());
    for var in PG_CLIENT_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Removes libpq variables inherited from the environment.
pub(crate) fn scrub_client_env(cmd: &mut Command) {
    for var in PG_CLIENT_ENV {
        cmd.env_remove(var);
    }
}

/// A printable form of a command line.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(OsStr::to_string_lossy).collect::<Vec<_>>().join(" ")
}

/// Runs a command to completion, capturing output; non-zero exit is an error.
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().map_err(|source| HarnessError::Spawn { command: describe(cmd), source })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(command_failed(cmd, &out))
    }
}

pub(crate) fn command_failed(cmd: &Command, out: &Output) -> HarnessError {
    HarnessError::CommandFailed {
        command: describe(cmd),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
    }
}

/// Creates a directory and hands it to the server user if needed.
pub(crate) fn make_dir(path: &Path, id: Identity) -> Result<()> {
    fs::create_dir(path).map_err(|e| HarnessError::io(format!("creating {}", path.display()), e))?;
    give_to_server_user(path, id)
}

pub(crate) fn give_to_server_user(path: &Path, id: Identity) -> Result<()> {
    if let Some((uid, gid)) = id.run_as {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| HarnessError::io(format!("chown postgres {}", path.display()), e))?;
    }
    Ok(())
}

/// Where scratch directories go: `SQLCOMMENTER_PG_SCRATCH`, else `/dev/shm` when it is
/// a writable directory (tmpfs: copying a data directory there is ~10x faster than to
/// disk), else `/tmp`. Kept short on purpose: the unix socket path
/// (`<root>/pgh-<pid>-<n>/sock/.s.PGSQL.<port>`) must fit in ~107 bytes.
pub(crate) fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os(SCRATCH_ENV).filter(|v| !v.is_empty()) {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        let probe = shm.join(format!("{SCRATCH_PREFIX}probe-{}", std::process::id()));
        if fs::create_dir(&probe).is_ok() && fs::remove_dir(&probe).is_ok() {
            shm.to_path_buf()
        } else {
            PathBuf::from("/tmp")
        }
    })
}

fn scratch_prefix() -> String {
    format!("{}/{SCRATCH_PREFIX}{}-", scratch_root().display(), std::process::id())
}

/// Creates a fresh, uniquely named scratch directory `<root>/pgh-<pid>-<n>` owned by the
/// server user. The watchdog removes every `<root>/pgh-<pid>-*` when this process exits.
pub(crate) fn new_scratch_dir(id: Identity) -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!("{}{n}", scratch_prefix()));
        match fs::create_dir(&path) {
            Ok(()) => {
                give_to_server_user(&path, id)?;
                if keep_requested() {
                    let _ = fs::write(path.join(KEEP_MARKER), b"");
                }
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(HarnessError::io(format!("creating {}", path.display()), e)),
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, then release).
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to pick a free port", e))?;
    let port = listener.local_addr().map_err(|e| HarnessError::io("reading the picked port", e))?.port();
    Ok(port)
}

/// Whether a process exists and is not a zombie.
pub(crate) fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // Format: `pid (comm) S ...`; comm may contain spaces and parentheses.
            let state = stat.rfind(')').and_then(|i| stat[i + 1..].trim_start().chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
        Err(_) if Path::new("/proc/self").exists() => false,
        // No procfs: fall back to kill -0.
        Err(_) => Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    }
}

/// Reads the postmaster pid from `<data>/postmaster.pid`.
pub(crate) fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Per-bindir initdb'd template data directories (initdb once per process, copy after).
static TEMPLATES: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

/// Name of the include file (in the data dir) that carries the harness's settings.
pub(crate) const HARNESS_CONF: &str = "harness.conf";

/// Returns an initdb'd data directory to copy clusters from, creating it on first use.
pub(crate) fn template_data_dir(bindir: &Path, id: Identity) -> Result<PathBuf> {
    let mut templates = lock(&TEMPLATES);
    if let Some((_, data)) = templates.iter().find(|(b, _)| b == bindir) {
        return Ok(data.clone());
    }
    let scratch = new_scratch_dir(id)?;
    let data = scratch.join("data");
    let mut cmd = server_command(id, &bindir.join("initdb"), &scratch);
    cmd.arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]);
    run(&mut cmd)?;
    // Every copy includes harness.conf, which the cluster writes before each start.
    let conf = data.join("postgresql.conf");
    let mut text = fs::read_to_string(&conf).map_err(|e| HarnessError::io(format!("reading {}", conf.display()), e))?;
    text.push_str(&format!("\n# added by sqlcommenter-testpg\ninclude_if_exists = '{HARNESS_CONF}'\n"));
    fs::write(&conf, text).map_err(|e| HarnessError::io(format!("writing {}", conf.display()), e))?;
    templates.push((bindir.to_path_buf(), data.clone()));
    Ok(data)
}

/// Copies a data directory preserving modes and ownership.
pub(crate) fn copy_data_dir(from: &Path, to: &Path) -> Result<()> {
    run(Command::new("cp").arg("-a").arg(from).arg(to)).map(drop)
}

static WATCHDOG: Mutex<bool> = Mutex::new(false);

/// Shell script run detached: waits for the test process to exit, then stops every
/// server still running from `<root>/pgh-<pid>-*` (SIGQUIT = immediate shutdown), kills
/// every PgBouncer whose pid file is there, and removes those directories (unless keeping was requested).
const WATCHDOG_SCRIPT: &str = r#"
parent=$1; prefix=$2; keep=$3
while kill -0 "$parent" 2>/dev/null; do sleep 0.25; done
for d in "$prefix"*; do
  [ -d "$d" ] || continue
  f="$d/data/postmaster.pid"
  if [ -f "$f" ]; then
    pid=$(head -n 1 "$f")
    if [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null; then
      i=0
      while [ "$i" -lt 100 ] && [ -f "$f" ] && kill -0 "$pid" 2>/dev/null; do
        sleep 0.1; i=$((i+1))
      done
    fi
  fi
  b="$d/pgbouncer.pid"
  if [ -f "$b" ]; then
    pid=$(head -n 1 "$b")
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  fi
  [ "$keep" = 1 ] || rm -rf "$d"
done
"#;

/// Starts (once per process) the detached watchdog that cleans up after the process
/// exits — the only cleanup path for [`crate::shared`] clusters, since statics are never
/// dropped. Also reaps directories left behind by processes that died without cleanup.
pub(crate) fn ensure_watchdog() -> Result<()> {
    let mut started = lock(&WATCHDOG);
    if *started {
        return Ok(());
    }
    reap_stale_dirs();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("sqlcommenter-testpg-watchdog")
        .arg(std::process::id().to_string())
        .arg(scratch_prefix())
        .arg(if keep_requested() { "1" } else { "0" })
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Own process group: a Ctrl-C to the test run must not kill the cleaner.
        .process_group(0);
    cmd.spawn().map_err(|source| HarnessError::Spawn { command: "sh -c <watchdog>".to_owned(), source })?;
    *started = true;
    Ok(())
}

/// Removes `<root>/pgh-<pid>-*` directories whose owning process is gone (stopping a
/// server still running from one), except those marked to be kept.
fn reap_stale_dirs() {
    let Ok(entries) = fs::read_dir(scratch_root()) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        if owner == me || process_alive(owner) || dir.join(KEEP_MARKER).exists() {
            continue;
        }
        if let Some(pid) = postmaster_pid(&dir.join("data")) {
            if process_alive(pid) {
                let _ = Command::new("kill").args(["-QUIT", &pid.to_string()]).stderr(Stdio::null()).status();
                for _ in 0..100 {
                    if !process_alive(pid) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
        if let Some(pid) = fs::read_to_string(dir.join(crate::pgbouncer::PID_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|&pid| process_alive(pid))
        {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
