//! The throwaway PostgreSQL cluster, configured the way docs/postgresql-setup.md recommends for trace
//! correlation (with every statement logged, since the demo's workload is small).

use std::time::{Duration, Instant};

use sqlcommenter_testpg::{Cluster, LogFormat};

use crate::{interrupt, DemoError};

/// `log_line_prefix` set on the server (used by stderr logs; jsonlog carries the same fields as keys).
pub const LOG_LINE_PREFIX: &str = "%m [%p] %q%u@%d %a %Q ";

/// The statement that marks the end of the workload in the log.
const END_MARKER: &str = "sqlcommenter-demo-end-of-workload";

/// Libraries the demo's server preloads (`shared_preload_libraries`).
pub const PRELOAD_LIBRARIES: [&str; 2] = ["pg_stat_statements", "auto_explain"];

/// The server settings of the demo besides logging destination and preloads (docker-compose.yml passes the
/// same as `-c` flags): every statement logged, `%a` in `log_line_prefix`, query ids, auto_explain for
/// statements slower than half of `slow`.
pub fn server_settings(slow: Duration) -> Vec<(&'static str, String)> {
    let half_ms = (slow.as_millis() / 2).max(1);
    vec![
        ("log_min_duration_statement", "0".to_owned()),
        ("log_line_prefix", LOG_LINE_PREFIX.to_owned()),
        ("compute_query_id", "on".to_owned()),
        ("track_activity_query_size", "4096".to_owned()),
        ("auto_explain.log_min_duration", format!("{half_ms}ms")),
        ("auto_explain.log_format", "text".to_owned()),
        ("lc_messages", "C".to_owned()),
        ("log_timezone", "UTC".to_owned()),
    ]
}

/// Starts the cluster: jsonlog, every statement logged, pg_stat_statements and auto_explain preloaded.
pub(crate) fn start(slow: Duration) -> Result<Cluster, DemoError> {
    let mut builder = Cluster::builder()
        .log_format(LogFormat::Json)
        .preload(&PRELOAD_LIBRARIES)
        .create_extension("pg_stat_statements");
    for (name, value) in server_settings(slow) {
        builder = builder.setting(name, value);
    }
    Ok(builder.start()?)
}

/// Creates the demo's table (with psql: these statements carry no trace context, which the gap report shows).
pub(crate) fn prepare_schema(pg: &Cluster) -> Result<(), DemoError> {
    pg.run_script(
        "postgres",
        "CREATE TABLE demo_items (id bigint PRIMARY KEY, label text NOT NULL, note text);\n\
         INSERT INTO demo_items SELECT g, 'item ' || g, NULL FROM generate_series(1, 1000) g;\n\
         ANALYZE demo_items;\n",
    )?;
    Ok(())
}

/// Runs a marker statement and waits until the logging collector has written it: every line the workload
/// caused was written before it.
pub(crate) fn flush_log(pg: &Cluster) -> Result<(), DemoError> {
    pg.execute_sql(&format!("SELECT '{END_MARKER}'"))?;
    let started = Instant::now();
    loop {
        interrupt::check()?;
        match pg.wait_for_log(END_MARKER, Duration::from_millis(500)) {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() > Duration::from_secs(20) => return Err(e.into()),
            Err(_) => {}
        }
    }
}
