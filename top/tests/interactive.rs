//! The interactive view driven in tmux (send-keys, capture-pane): the blocking tree with the blocker's
//! trace, the filter, a lost connection reported and retried, and a clean quit (`q`, Ctrl-C) that leaves
//! the terminal as it found it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `None` (after saying so loudly) when tmux is missing outside CI; under CI=true a missing tmux fails.
    fn start() -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "tmux is required under CI (installed by .ci/run)");
            eprintln!("\n*** SKIPPED: tmux is not installed; the interactive view was NOT tested ***\n");
            return None;
        }
        Some(Tmux { socket: format!("sqlc-top-{}", std::process::id()) })
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `top_args` in a 230x40 window; after top exits the shell prints its exit code and whether the
    /// terminal is back in canonical mode with echo.
    fn run_top(&self, name: &str, top_args: &str) {
        let script = format!(
            "env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGPASSWORD {} {top_args}; \
             echo TOP-EXIT=$?; echo TTY: $(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo) END; \
             sleep 120",
            env!("CARGO_BIN_EXE_sqlcommenter-top")
        );
        self.cmd(&["new-session", "-d", "-x", "230", "-y", "40", "-s", name, &script]);
    }

    fn screen(&self, name: &str) -> String {
        self.cmd(&["capture-pane", "-p", "-t", name])
    }

    /// Waits up to 10 s for the screen to satisfy `ok`.
    fn wait_for(&self, name: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.screen(name);
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "waiting for {what}; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", name];
        args.extend_from_slice(keys);
        self.cmd(&args);
    }

    fn alternate_on(&self, name: &str) -> bool {
        self.cmd(&["display-message", "-p", "-t", name, "#{alternate_on}"]).trim() == "1"
    }
}

/// A process stopped with SIGSTOP, continued on drop (also when an assertion fails).
struct Stopped(String);

impl Stopped {
    fn new(pid: &str) -> Stopped {
        assert!(pid.parse::<u32>().is_ok(), "pid {pid:?}");
        assert!(Command::new("kill").args(["-STOP", pid]).status().unwrap().success());
        Stopped(pid.to_owned())
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_tree_keys_lost_connection_and_clean_quit() {
    let Some(tmux) = Tmux::start() else { return };
    let pg = cluster();
    let sc = start(&pg).await;
    let conninfo = pg.keyword_conn_str("postgres");
    tokio::task::block_in_place(|| {
        tmux.run_top("main", &format!("--interval 0.3 '{conninfo}'"));
        // Every check in one predicate, retried until a whole frame satisfies it (a capture may land
        // in the middle of a redraw).
        let tree_ok = |screen: &str| -> Result<(), String> {
            let lines: Vec<&str> = screen.lines().collect();
            let a = lines
                .iter()
                .position(|l| l.starts_with(&format!("{} ", sc.a_pid)) && l.contains("checkout"))
                .ok_or("A's row")?;
            let (a_line, b) = (lines[a], *lines.get(a + 1).ok_or("a row under A")?);
            let checks = [
                (a_line.contains(trace_id(TP_A)) && a_line.contains("comment"), "A's trace from its comment"),
                (a_line.contains("idle in transaction") && a_line.contains("Client:ClientRead"), "A's state"),
                (b.starts_with(&format!("{} ", sc.b_pid)) && b.contains("└─ -"), "B right under A"),
                (b.contains(trace_id(TP_B)) && b.contains("app_name"), "B's own trace from application_name"),
                (b.contains(&format!("{} {}", sc.a_pid, trace_id(TP_A))), "B shows its blocker's pid and trace"),
                (b.contains("Lock:transactionid"), "B's wait"),
                (
                    lines.iter().any(|l| {
                        l.starts_with(&format!("{} ", sc.c_pid))
                            && l.contains("reports")
                            && l.contains(trace_id(TP_C))
                            && l.contains("Timeout:PgSleep")
                    }),
                    "C's row",
                ),
                (screen.contains("active 2  idle in transaction 1  waiting 1  oldest transaction"), "totals"),
                (screen.contains("q quit  s sort  r reverse  / filter"), "keys on screen"),
            ];
            match checks.iter().find(|(ok, _)| !ok) {
                Some((_, what)) => Err((*what).to_owned()),
                None => Ok(()),
            }
        };
        let screen = tmux.wait_for("main", "the blocking tree", |s| tree_ok(s).is_ok());
        tree_ok(&screen).unwrap();
        assert!(tmux.alternate_on("main"), "the view runs on the alternate screen");

        // Filter: only C's tree remains; Esc clears it.
        tmux.keys("main", &["/", "reports", "Enter"]);
        tmux.wait_for("main", "the filter showing C's tree only", |s| {
            s.contains("filter: reports") && s.contains(trace_id(TP_C)) && !s.contains(trace_id(TP_A))
        });
        tmux.keys("main", &["Escape"]);
        tmux.wait_for("main", "the filter cleared", |s| s.contains(trace_id(TP_A)));

        // The server goes away: reported, retried, and the view recovers when it is back.
        pg.stop().unwrap();
        tmux.wait_for("main", "the lost connection", |s| s.contains("connection lost:") && s.contains("retrying"));
        pg.restart().unwrap();
        tmux.wait_for("main", "the reconnection", |s| !s.contains("connection lost:") && s.contains("sessions 0"));

        // `q` quits; the terminal is back: main screen, canonical mode, echo.
        tmux.keys("main", &["q"]);
        let screen = tmux.wait_for("main", "the exit", |s| s.contains(" END"));
        assert!(screen.contains("TOP-EXIT=0"), "{screen}");
        assert!(screen.contains("TTY: icanon echo END"), "terminal modes restored:\n{screen}");
        assert!(!tmux.alternate_on("main"));

        // Ctrl-C quits the same way.
        tmux.run_top("ctrlc", &format!("--interval 0.3 '{conninfo}'"));
        tmux.wait_for("ctrlc", "the view", |s| s.contains("sessions "));
        tmux.keys("ctrlc", &["C-c"]);
        let screen = tmux.wait_for("ctrlc", "the exit", |s| s.contains(" END"));
        assert!(screen.contains("TOP-EXIT=0") && screen.contains("TTY: icanon echo END"), "{screen}");
        assert!(!tmux.alternate_on("ctrlc"));

        // The server stops answering (top's own backend is stopped): the view says it waits, and `q` still
        // quits at once.
        tmux.run_top("hung", &format!("--interval 0.3 '{conninfo}'"));
        tmux.wait_for("hung", "the view", |s| s.contains("sessions "));
        let backend = pg.query("SELECT pid FROM pg_stat_activity WHERE application_name = 'sqlcommenter-top'").unwrap();
        let _stopped = Stopped::new(backend.trim());
        tmux.wait_for("hung", "the overdue sample", |s| s.contains("waiting for the server"));
        tmux.keys("hung", &["q"]);
        let screen = tmux.wait_for("hung", "the exit", |s| s.contains(" END"));
        assert!(screen.contains("TOP-EXIT=0") && screen.contains("TTY: icanon echo END"), "{screen}");
        drop(_stopped);

        // Privileges revoked while the view runs: the next refresh fails, the terminal is restored first,
        // then one line and exit 2.
        pg.execute_sql("CREATE ROLE mon LOGIN IN ROLE pg_monitor").unwrap();
        tmux.run_top(
            "revoked",
            &format!("--interval 0.3 'host=127.0.0.1 port={} user=mon dbname=postgres'", pg.port()),
        );
        tmux.wait_for("revoked", "the view", |s| s.contains("sessions "));
        pg.execute_sql("REVOKE EXECUTE ON FUNCTION pg_blocking_pids(integer) FROM PUBLIC").unwrap();
        let screen = tmux.wait_for("revoked", "the exit", |s| s.contains(" END"));
        assert!(screen.contains("TOP-EXIT=2") && screen.contains("TTY: icanon echo END"), "{screen}");
        assert!(
            screen.starts_with("sqlcommenter top: permission denied") && screen.contains("pg_blocking_pids"),
            "{screen}"
        );
        assert!(!tmux.alternate_on("revoked"));

        // A wrong password never touches the terminal: one line, exit 2.
        tmux.run_top("bad", &format!("'host=127.0.0.1 port={} user=postgres dbname=nosuchdb'", pg.port()));
        let screen = tmux.wait_for("bad", "the exit", |s| s.contains(" END"));
        assert!(screen.contains("TOP-EXIT=2") && screen.contains("TTY: icanon echo END"), "{screen}");
        assert!(screen.starts_with("sqlcommenter top: could not connect") && screen.contains("nosuchdb"), "{screen}");
    });
    drop(sc);
}
