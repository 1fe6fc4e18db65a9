//! Throughput of the wrapper against plain sqlx, on a PostgreSQL started by the test harness (statement
//! logging off). A request = 5 point-selects by primary key under one trace context. Variants run
//! interleaved in rounds; ratios are per round against plain sqlx with cached statements.
//!
//! `cargo run --release -p sqlcommenter-sqlx --example sqlx_bench -- [rounds] [requests] [pool]`
//! The client pins itself to CPU 0 and the server to CPU 1 when `taskset` exists (prior-art §11).

use std::time::Instant;

use anyhow::{Context as _, Result};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use sqlcommenter_sqlx::{CarrierReset, Config, Mode, OutsideTransaction, PoolHooks, TracedConnection, TracedPool};
use sqlx::{Connection, PgConnection, Row};

const IDS: u32 = 10_000;
const QUERY: &str = "SELECT id, v FROM bench_kv WHERE id = $1";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Plain,
    Control,
    Carrier100,
    Carrier10,
    Comment100,
    Wrapped100,
    Wrapped10,
    WrapTx100,
    FormPrepared,
    FormLiteral,
    Carrier10Unnamed,
    HookRelease100,
    HookRelease10,
    HookAcquire100,
    HookAcquire10,
}

impl Variant {
    const ALL: [Variant; 15] = [
        Variant::Plain,
        Variant::Control,
        Variant::Carrier100,
        Variant::Carrier10,
        Variant::Comment100,
        Variant::Wrapped100,
        Variant::Wrapped10,
        Variant::WrapTx100,
        Variant::FormPrepared,
        Variant::FormLiteral,
        Variant::Carrier10Unnamed,
        Variant::HookRelease100,
        Variant::HookRelease10,
        Variant::HookAcquire100,
        Variant::HookAcquire10,
    ];

    /// The carrier-form comparisons run on one connection only.
    fn connection_only(self) -> bool {
        matches!(self, Variant::FormPrepared | Variant::FormLiteral | Variant::Carrier10Unnamed)
    }

    /// Skipped in this topology (0: one connection, 1: pool).
    fn skipped(self, topology: u8) -> bool {
        if topology == 0 {
            self.pool_only()
        } else {
            self.connection_only()
        }
    }

    /// `TracedPool::new` (clear on release) only differs from `connect_with` for pools; the plain-pool
    /// hooks only exist for pools.
    fn pool_only(self) -> bool {
        matches!(self, Variant::Wrapped100 | Variant::Wrapped10) || self.hook().is_some()
    }

    /// A plain `PgPool` with `PoolHooks` (the application's code unchanged: `pool.acquire()`, plain sqlx).
    fn hook(self) -> Option<CarrierReset> {
        match self {
            Variant::HookRelease100 | Variant::HookRelease10 => Some(CarrierReset::OnRelease),
            Variant::HookAcquire100 | Variant::HookAcquire10 => Some(CarrierReset::OnAcquire),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain sqlx (cached statements)",
            Variant::Control => "plain sqlx again (noise floor)",
            Variant::Carrier100 => {
                "session carrier (pool: connect_with, written at checkout instead of the ping), 100% sampled"
            }
            Variant::Carrier10 => {
                "session carrier (pool: connect_with, written at checkout instead of the ping), 10% sampled"
            }
            Variant::Carrier10Unnamed => {
                "session carrier, 10% sampled, own application_name not configured (read once before the first write)"
            }
            Variant::Comment100 => "per-query comment, 100% sampled",
            Variant::Wrapped100 => "session carrier, TracedPool::new (cleared on release), 100% sampled",
            Variant::Wrapped10 => "session carrier, TracedPool::new (cleared on release), 10% sampled",
            Variant::WrapTx100 => "WrapInTransaction (transaction-pooler mode), 100% sampled",
            Variant::FormPrepared => "form only: plain sqlx + prepared SET_CONFIG_SQL per request",
            Variant::FormLiteral => "form only: plain sqlx + literal set_config (simple Query) per request",
            Variant::HookRelease100 => "plain PgPool + PoolHooks, cleared on release (default), 100% sampled",
            Variant::HookRelease10 => "plain PgPool + PoolHooks, cleared on release (default), 10% sampled",
            Variant::HookAcquire100 => "plain PgPool + PoolHooks, overwritten on acquire, 100% sampled",
            Variant::HookAcquire10 => "plain PgPool + PoolHooks, overwritten on acquire, 10% sampled",
        }
    }

    fn config(self) -> Option<Config> {
        match self {
            Variant::Plain | Variant::Control | Variant::FormPrepared | Variant::FormLiteral => None,
            // the connections' own name (from the URL), as a pool's connect options give it
            Variant::Carrier100
            | Variant::Carrier10
            | Variant::Wrapped100
            | Variant::Wrapped10
            | Variant::HookRelease100
            | Variant::HookRelease10
            | Variant::HookAcquire100
            | Variant::HookAcquire10 => Config::builder().base_application_name("bench").build().ok(),
            Variant::Carrier10Unnamed => Some(Config::default()),
            Variant::Comment100 => Config::builder().mode(Mode::PerQueryComment).build().ok(),
            Variant::WrapTx100 => Config::builder()
                .base_application_name("bench")
                .outside_transaction(OutsideTransaction::WrapInTransaction)
                .build()
                .ok(),
        }
    }

    /// Whether request `n` is sampled.
    fn sampled(self, n: u64) -> bool {
        match self {
            Variant::Carrier10
            | Variant::Wrapped10
            | Variant::Carrier10Unnamed
            | Variant::HookRelease10
            | Variant::HookAcquire10 => n % 10 == 0,
            _ => true,
        }
    }
}

/// The OpenTelemetry context of request `n` (a new trace per request).
fn request_context(n: u64, sampled: bool) -> opentelemetry::Context {
    let mut trace = [0x5au8; 16];
    trace[8..].copy_from_slice(&(n + 1).to_be_bytes());
    let mut span = [0x17u8; 8];
    span[4..].copy_from_slice(&((n as u32) | 1).to_be_bytes());
    let sc = SpanContext::new(
        TraceId::from_bytes(trace),
        SpanId::from_bytes(span),
        if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() },
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(sc)
}

struct Lcg(u64);
impl Lcg {
    fn id(&mut self) -> i32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % u64::from(IDS)) as i32 + 1
    }
}

async fn request_plain(conn: &mut PgConnection, rng: &mut Lcg) -> Result<()> {
    for _ in 0..5 {
        let row = sqlx::query(QUERY).bind(rng.id()).fetch_one(&mut *conn).await?;
        let _: &str = row.try_get(1)?;
    }
    Ok(())
}

async fn request_traced<C: sqlcommenter_sqlx::PgConn>(conn: &mut TracedConnection<C>, rng: &mut Lcg) -> Result<()> {
    for _ in 0..5 {
        let row = sqlx::query(QUERY).bind(rng.id()).fetch_one(&mut *conn).await?;
        let _: &str = row.try_get(1)?;
    }
    Ok(())
}

/// Requests per second of `requests` requests on one connection.
async fn one_connection(url: &str, v: Variant, requests: u64, seed: u64) -> Result<(f64, i64)> {
    let mut rng = Lcg(seed);
    let mut conn = PgConnection::connect(url).await?;
    let start;
    let prepared;
    match v.config() {
        None => {
            // warm the statement cache
            sqlx::query(QUERY).bind(1).fetch_one(&mut conn).await?;
            start = Instant::now();
            for n in 0..requests {
                carrier_form(&mut conn, v, n).await?;
                request_plain(&mut conn, &mut rng).with_context(request_context(n, v.sampled(n))).await?;
            }
            let el = start.elapsed();
            prepared = server_prepared(&mut conn).await?;
            Ok((requests as f64 / el.as_secs_f64(), prepared))
        }
        Some(cfg) => {
            let mut conn = TracedConnection::new(conn, &cfg);
            // warm the statement cache through the wrapper (the text it caches has the static tags)
            sqlx::query(QUERY).bind(1).fetch_one(&mut conn).await?;
            start = Instant::now();
            for n in 0..requests {
                request_traced(&mut conn, &mut rng).with_context(request_context(n, v.sampled(n))).await?;
            }
            let el = start.elapsed();
            prepared = server_prepared(conn.inner_mut()).await?;
            Ok((requests as f64 / el.as_secs_f64(), prepared))
        }
    }
}

/// The carrier write alone, in one of its two forms, for request `n`.
async fn carrier_form(conn: &mut PgConnection, v: Variant, n: u64) -> Result<()> {
    use sqlcommenter::carrier::{Action, Scope, Target, SET_CONFIG_SQL};
    let tp = sqlcommenter::TraceParent::new(
        {
            let mut t = [0x5au8; 16];
            t[8..].copy_from_slice(&(n + 1).to_be_bytes());
            t
        },
        [0x17; 8],
        1,
    )?;
    let target = Target::default();
    let write = target.write(&Action::Set(tp), Scope::Session, "bench");
    match v {
        Variant::FormPrepared => {
            sqlx::query(SET_CONFIG_SQL).bind(write.variable).bind(&write.value).bind(false).execute(&mut *conn).await?;
        }
        Variant::FormLiteral => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(write.literal_sql())).execute(&mut *conn).await?;
        }
        _ => {}
    }
    Ok(())
}

async fn server_prepared(conn: &mut PgConnection) -> Result<i64> {
    let row = sqlx::raw_sql("SELECT count(*) FROM pg_prepared_statements").fetch_one(conn).await?;
    Ok(row.try_get(0)?)
}

/// Requests per second with 8 tasks on a pool of 8, each request on one acquired connection.
async fn pooled(url: &str, v: Variant, requests: u64, seed: u64) -> Result<(f64, i64)> {
    let options = sqlx::postgres::PgPoolOptions::new().max_connections(8).min_connections(8);
    let (pool, db) = match v.config() {
        None => (options.connect(url).await?, None),
        // the application's own pool and code; only the hooks differ
        Some(cfg) if v.hook().is_some() => {
            let connect: sqlx::postgres::PgConnectOptions = url.parse()?;
            let hooks = PoolHooks::new(&cfg, &connect).reset(v.hook().unwrap_or_default());
            (hooks.connect(options, connect).await?, None)
        }
        Some(cfg) if v.pool_only() => {
            let pool = options.connect(url).await?;
            (pool.clone(), Some(TracedPool::new(pool, &cfg)))
        }
        Some(cfg) => {
            let db = TracedPool::connect_with(options, url.parse()?, &cfg).await?;
            (db.inner().clone(), Some(db))
        }
    };
    // warm every connection's statement cache (through the wrapper for wrapper variants)
    let mut held = Vec::new();
    let mut traced = Vec::new();
    for _ in 0..8 {
        match &db {
            None => {
                let mut c = pool.acquire().await?;
                sqlx::query(QUERY).bind(1).fetch_one(&mut *c).await?;
                held.push(c);
            }
            Some(db) => {
                let mut c = db.acquire().await?;
                sqlx::query(QUERY).bind(1).fetch_one(&mut c).await?;
                traced.push(c);
            }
        }
    }
    drop(held);
    drop(traced);
    let per_task = requests / 8;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (pool, db) = (pool.clone(), db.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(seed ^ (t << 32));
            for i in 0..per_task {
                let n = t * per_task + i;
                let cx = request_context(n, v.sampled(n));
                match &db {
                    None => {
                        async {
                            let mut c = pool.acquire().await?;
                            request_plain(&mut c, &mut rng).await
                        }
                        .with_context(cx)
                        .await?
                    }
                    Some(db) => {
                        async {
                            let mut c = db.acquire().await?;
                            request_traced(&mut c, &mut rng).await
                        }
                        .with_context(cx)
                        .await?
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let el = start.elapsed();
    let mut prepared = 0;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = pool.acquire().await?;
        prepared += server_prepared(&mut c).await?;
        held.push(c);
    }
    drop(held);
    pool.close().await;
    Ok(((per_task * 8) as f64 / el.as_secs_f64(), prepared))
}

/// Carrier statements per query and all statements per query (each one round trip with sqlx), counted
/// by the server (pg_stat_statements) over `requests` requests.
async fn carrier_per_query(
    url: &str,
    pg: &sqlcommenter_testpg::Cluster,
    v: Variant,
    requests: u64,
    topology: u8,
) -> Result<(f64, f64)> {
    pg.execute_sql("SELECT pg_stat_statements_reset()")?;
    if topology == 0 {
        one_connection(url, v, requests, 7).await?;
    } else {
        pooled(url, v, requests, 7).await?;
        // resets of released connections run in spawned tasks
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let count = |filter: &str| -> Result<f64> {
        let n = pg.query(&format!("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE {filter}"))?;
        n.trim().parse::<f64>().context("pg_stat_statements")
    };
    let queries = (requests * 5) as f64;
    let sets = count("query ILIKE '%set_config%' OR query ILIKE '%application_name%'")?;
    // every statement the client sent in the measured part (not the run's own bookkeeping)
    let all = count(
        "query NOT ILIKE '%pg_stat_statements%' AND query NOT ILIKE '%pg_prepared_statements%' \
         AND query NOT ILIKE 'VACUUM%'",
    )?;
    Ok((sets / queries, all / queries))
}

fn pin(pg: &sqlcommenter_testpg::Cluster) {
    let me = std::process::id().to_string();
    let ok_client = std::process::Command::new("taskset").args(["-a", "-cp", "0", &me]).output().is_ok();
    let ok_server = pg
        .pid()
        .map(|pid| std::process::Command::new("taskset").args(["-a", "-cp", "1", &pid.to_string()]).output().is_ok());
    eprintln!("pinned client to CPU 0: {ok_client}, server to CPU 1: {ok_server:?}");
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(7);
    let requests: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(4_000);

    let pg = sqlcommenter_testpg::Cluster::builder()
        .setting("max_connections", "40")
        .preload(&["pg_stat_statements"])
        .create_extension("pg_stat_statements")
        .start()?;
    pin(&pg);
    pg.execute_sql(&format!(
        "CREATE TABLE bench_kv (id int PRIMARY KEY, v text NOT NULL); \
         INSERT INTO bench_kv SELECT g, md5(g::text) FROM generate_series(1, {IDS}) g"
    ))?;
    pg.execute_sql("VACUUM ANALYZE bench_kv")?;
    let url = format!("{}?application_name=bench", pg.url("postgres"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    rt.block_on(async {
        // `-- <rounds> <requests> pool`: the pool topology only
        let only_pool = args.get(3).is_some_and(|a| a == "pool");
        for (topology, label) in [(0u8, "one connection"), (1u8, "pool of 8, 8 tasks")] {
            if only_pool && topology == 0 {
                continue;
            }
            let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); Variant::ALL.len()];
            let mut prepared = vec![0i64; Variant::ALL.len()];
            for round in 0..rounds {
                let mut rps = Vec::new();
                // rotate the order each round so no variant always runs first
                let order: Vec<usize> = (0..Variant::ALL.len()).map(|i| (i + round) % Variant::ALL.len()).collect();
                let mut by_variant = vec![0.0; Variant::ALL.len()];
                for &i in &order {
                    let v = Variant::ALL[i];
                    if v.skipped(topology) {
                        by_variant[i] = f64::NAN;
                        continue;
                    }
                    let (r, p) = if topology == 0 {
                        one_connection(&url, v, requests, round as u64).await?
                    } else {
                        pooled(&url, v, requests, round as u64).await?
                    };
                    by_variant[i] = r;
                    prepared[i] = p;
                }
                rps.extend_from_slice(&by_variant);
                for (i, r) in by_variant.iter().enumerate() {
                    ratios[i].push(r / by_variant[0]);
                }
                eprintln!("{label} round {round}: plain {:.0} req/s", by_variant[0]);
            }
            println!("\n{label}: {requests} requests x 5 point-selects per variant per round, {rounds} rounds");
            println!(
                "| variant | median ratio | min | max | carrier statements / query | statements / query | server prepared statements |"
            );
            println!("|---|---|---|---|---|---|---|");
            for (i, v) in Variant::ALL.iter().enumerate() {
                if v.skipped(topology) {
                    continue;
                }
                let (med, min, max) = stats(ratios[i].clone());
                let (carrier, all) = carrier_per_query(&url, &pg, *v, 1000, topology).await?;
                println!(
                    "| {} | {med:.3} | {min:.3} | {max:.3} | {carrier:.3} | {all:.3} | {} |",
                    v.name(),
                    prepared[i]
                );
            }
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
