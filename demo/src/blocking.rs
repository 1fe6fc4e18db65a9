//! A small blocking scenario shown with `sqlcommenter top`: three requests, each under its own trace, queue
//! on one row — `checkout` (tokio-postgres, trace in a comment) updates it and leaves its transaction
//! open, `billing` (unmodified, through the proxy: `set_config('sqlcommenter.traceparent', …)`) waits for it, and
//! `report` (unmodified, its trace in the startup `application_name`) waits behind `billing`. One sample of
//! `pg_stat_activity` ([`sqlcommenter_top::Sampler`]) then prints the chain by trace.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlcommenter::{carrier, Commenter, TraceContext, TraceParent};
use sqlcommenter_proxy::{ProxyConfig, Upstream};
use sqlcommenter_testpg::Cluster;
use sqlcommenter_top::{Sampler, Snapshot};
use tokio_postgres::NoTls;

use crate::DemoError;

/// One link of the chain: a waiting trace and the trace it waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub waiting: String,
    pub blocking: String,
}

fn err(e: impl std::fmt::Display) -> DemoError {
    DemoError::workload("blocking", e)
}

async fn connect(conn: &str) -> Result<Arc<tokio_postgres::Client>, DemoError> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await.map_err(err)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Arc::new(client))
}

/// Runs the scenario on `pg`, prints the chain, and returns its links (waiting → blocking trace).
pub(crate) fn show(pg: &Cluster, out: &mut dyn Write) -> Result<Vec<Link>, DemoError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(DemoError::Runtime)?;
    let snapshot = rt.block_on(scenario(pg))?;
    let links: Vec<Link> = snapshot
        .sessions
        .iter()
        .filter_map(|s| {
            let blocker = sqlcommenter_top::tree::shown_blocker(&snapshot, s)?;
            Some(Link { waiting: s.trace.as_ref()?.trace_id(), blocking: blocker.trace.as_ref()?.trace_id() })
        })
        .collect();
    let text = sqlcommenter_top::text::render(&snapshot, sqlcommenter_top::Session::is_blocked);
    let say = |out: &mut dyn Write, s: &str| out.write_all(s.as_bytes()).map_err(DemoError::Output);
    say(out, "\nWho blocks whom, by trace (sqlcommenter top: one sample of pg_stat_activity + pg_blocking_pids):\n")?;
    say(out, &text)?;
    if links.len() < 2 {
        say(out, "  (the blocking chain was not fully visible in the sample)\n")?;
    }
    say(
        out,
        "  live: sqlcommenter top <conninfo>   one JSON sample: sqlcommenter top --once --format json <conninfo>\n",
    )?;
    Ok(links)
}

async fn scenario(pg: &Cluster) -> Result<Snapshot, DemoError> {
    let base = pg.keyword_conn_str("postgres");
    let setup = connect(&base).await?;
    setup
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS demo_stock (sku text PRIMARY KEY, qty int);
             INSERT INTO demo_stock VALUES ('sku-1', 10) ON CONFLICT DO NOTHING;",
        )
        .await
        .map_err(err)?;
    let (t_checkout, t_billing, t_report) = (fresh(1)?, fresh(2)?, fresh(3)?);

    // checkout: holds the row, idle in transaction; its last statement carries its trace in a comment.
    let checkout = connect(&format!("{base} application_name=checkout")).await?;
    let commenter = Commenter::builder().tag("application", "checkout").build().map_err(err)?;
    checkout.batch_execute("BEGIN").await.map_err(err)?;
    let update = commenter.inject("UPDATE demo_stock SET qty = qty - 1 WHERE sku = 'sku-1'", Some(&t_checkout));
    checkout.batch_execute(update.as_str()).await.map_err(err)?;

    // billing: unmodified, through the proxy, hands over its trace with SET; waits for checkout.
    let upstream = Upstream { host: pg.host().to_owned(), port: pg.port() };
    let mut config = ProxyConfig::new(([127, 0, 0, 1], 0).into(), upstream);
    config.worker_threads = Some(1);
    config.shutdown_timeout = Duration::from_secs(1);
    let proxy = sqlcommenter_proxy::start(config).await?;
    let billing = connect(&format!(
        "host=127.0.0.1 port={} user={} dbname=postgres application_name=billing",
        proxy.local_addr().port(),
        pg.user()
    ))
    .await?;
    billing
        .batch_execute(&format!("SELECT set_config('sqlcommenter.traceparent', '{}', false)", t_billing.traceparent))
        .await
        .map_err(err)?;
    let b = billing.clone();
    let billing_wait =
        tokio::spawn(async move { b.batch_execute("UPDATE demo_stock SET qty = qty + 5 WHERE sku = 'sku-1'").await });

    // report: its trace in the startup application_name (`report@<traceparent>`); waits behind billing.
    let app = carrier::encode_application_name("report", &t_report.traceparent);
    let report = connect(&format!("{base} application_name={app}")).await?;
    let r = report.clone();
    // Only once billing is queued, so that report lines up behind it.
    let target = sqlcommenter_top::conninfo::resolve(Some(&base), &|_: &str| None::<String>).map_err(err)?;
    let sampler = Sampler::connect(&target).await.map_err(err)?;
    let queued = |snap: &Snapshot, n: usize| snap.sessions.iter().filter(|s| s.is_blocked()).count() >= n;
    wait_for(&sampler, |s| queued(s, 1)).await?;
    let report_wait =
        tokio::spawn(async move { r.batch_execute("SELECT qty FROM demo_stock WHERE sku = 'sku-1' FOR UPDATE").await });
    let snapshot = wait_for(&sampler, |s| queued(s, 2)).await;

    // Let everyone go: checkout rolls back, billing and report finish.
    checkout.batch_execute("ROLLBACK").await.map_err(err)?;
    let _ = tokio::time::timeout(Duration::from_secs(5), billing_wait).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), report_wait).await;
    drop((billing, report, checkout));
    proxy.shutdown().await;
    snapshot
}

/// A new sampled root context: random ids from std's per-process random hasher keys.
fn fresh(salt: u64) -> Result<TraceContext, DemoError> {
    use std::hash::{BuildHasher, Hasher};
    let random = |n: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt.wrapping_mul(31).wrapping_add(n));
        h.finish().max(1).to_be_bytes()
    };
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&random(0));
    trace_id[8..].copy_from_slice(&random(1));
    TraceParent::new(trace_id, random(2), 1).map(TraceContext::new).map_err(err)
}

/// Samples until `done` holds (up to 5 s), returning the last sample either way.
async fn wait_for(sampler: &Sampler, done: impl Fn(&Snapshot) -> bool) -> Result<Snapshot, DemoError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snap = sampler.sample().await.map_err(err)?;
        if done(&snap) || Instant::now() > deadline {
            return Ok(snap);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_chain_by_trace() {
        let pg = Cluster::builder().start().unwrap();
        let mut out = Vec::new();
        let links = show(&pg, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        // billing waits for checkout, report for billing (or for checkout, whichever PostgreSQL names first).
        assert_eq!(links.len(), 2, "{text}");
        let first = text.lines().find(|l| l.starts_with("pid ")).unwrap_or_else(|| panic!("{text}"));
        assert!(first.contains(" checkout trace ") && first.contains("(comment) idle in transaction"), "{text}");
        let billing = text.lines().find(|l| l.contains(" billing trace ")).unwrap_or_else(|| panic!("{text}"));
        assert!(billing.trim_start().starts_with("└─ pid") && billing.contains("wait Lock/transactionid"), "{text}");
        assert!(text.lines().any(|l| l.contains(" report trace ") && l.contains("(application_name)")), "{text}");
        let checkout_trace = &first[first.find(" trace ").unwrap() + 7..][..32];
        assert!(links.iter().any(|l| l.blocking == checkout_trace), "{links:?}\n{text}");
        assert!(text.contains(&format!("blocked by pid {}", &first[4..first[4..].find(' ').unwrap() + 4])), "{text}");
    }
}
