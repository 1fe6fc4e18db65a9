//! Throughput of `TracedMySqlPool`/`TracedMySqlConnection` beside plain sqlx on MySQL/MariaDB. A request =
//! 5 point-selects by primary key under one trace context (a new trace id per request). Variants run
//! interleaved in rounds (the order rotating); ratios are per round against the mean of the round's two plain
//! sqlx runs (cached statements), reported as medians with min–max. Round trips per query come from the server's counters (`Com_stmt_prepare` +
//! `Com_stmt_execute` + `Com_query` per statement: each of those is answered; `Com_stmt_close` is not),
//! and `Prepared_stmt_count` after each variant shows what stays prepared. Nothing else should use the
//! server while it runs (the counters are global).
//!
//! `cargo bench -p sqlcommenter-sqlx --bench mysql_bench -- [rounds] [requests] [pool] [socket|tcp]`
//! Default transport: the server's Unix socket (the server must be on this machine). Over TCP, sqlx 0.9.0
//! leaves Nagle's algorithm on (sqlx#4335), so every command after an unanswered `COM_STMT_CLOSE` waits
//! for the server's delayed ACK (~40 ms): the traced variants then measure that stall.
//! (`SQLCOMMENTER_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`; creates and drops its own database).

use std::time::Instant;

use anyhow::{Context as _, Result};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use sqlcommenter_sqlx::mysql::{MySqlConfig, TracedMySqlConnection, TracedMySqlPool};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Connection, Executor, MySqlConnection, MySqlPool, Row};

const IDS: u32 = 10_000;
const QUERY: &str = "SELECT id, v FROM bench_kv WHERE id = ?";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    /// Plain sqlx, cached statements.
    Plain,
    /// Plain sqlx again: the noise floor.
    Control,
    /// The wrapper, every request traced (sampled): commented texts, uncached.
    Traced100,
    /// The wrapper, 10 % of traces carried (`sample_ratio(0.1)`); the others cached with static tags.
    Traced10,
    /// The wrapper outside any span: static tags only, cached.
    Untraced,
    /// What the wrapper avoids: a unique comment per request left in sqlx's cache (plain sqlx, text
    /// commented by hand, `persistent(true)`): each request's texts are prepared and cached, evicting.
    NaiveCached,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::Plain,
        Variant::Control,
        Variant::Traced100,
        Variant::Traced10,
        Variant::Untraced,
        Variant::NaiveCached,
    ];

    fn label(self) -> &'static str {
        match self {
            Variant::Plain => "plain sqlx, cached statements",
            Variant::Control => "plain sqlx again (noise floor)",
            Variant::Traced100 => "wrapper, 100 % traced (commented, uncached)",
            Variant::Traced10 => "wrapper, 10 % traced (sample_ratio 0.1)",
            Variant::Untraced => "wrapper, no span (static tags, cached)",
            Variant::NaiveCached => "unique comment per request left cached (what the wrapper avoids)",
        }
    }

    fn config(self) -> Option<MySqlConfig> {
        let b = MySqlConfig::builder().application("bench");
        match self {
            Variant::Traced100 | Variant::Untraced => Some(b.build().ok()?),
            Variant::Traced10 => Some(b.sample_ratio(0.1).build().ok()?),
            _ => None,
        }
    }

    fn traced(self) -> bool {
        !matches!(self, Variant::Plain | Variant::Control | Variant::Untraced)
    }
}

fn otel(n: u64) -> opentelemetry::Context {
    // A spread of trace ids (the ratio sampler reads the low 64 bits).
    let low = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&(n | 1 << 63).to_be_bytes());
    trace[8..].copy_from_slice(&low.to_be_bytes());
    let sc = SpanContext::new(
        TraceId::from_bytes(trace),
        SpanId::from_bytes((n | 1).to_be_bytes()),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(sc)
}

/// Global status counters of interest.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    prepare: i64,
    execute: i64,
    prepared_now: i64,
}

async fn counters(admin: &MySqlPool) -> Result<Counters> {
    let rows = sqlx::raw_sql(
        "SHOW GLOBAL STATUS WHERE Variable_name IN \
         ('Com_stmt_prepare', 'Com_stmt_execute', 'Prepared_stmt_count')",
    )
    .fetch_all(admin)
    .await?;
    let mut c = Counters::default();
    for r in rows {
        let name: String = r.get(0);
        let value: i64 = r.get::<String, _>(1).parse()?;
        match name.as_str() {
            "Com_stmt_prepare" => c.prepare = value,
            "Com_stmt_execute" => c.execute = value,
            "Prepared_stmt_count" => c.prepared_now = value,
            _ => {}
        }
    }
    Ok(c)
}

/// One request on a connection: 5 lookups under trace `n` (or none).
async fn request_on<E>(exec: E, n: u64, traced: bool, naive: bool) -> Result<()>
where
    E: Copy,
    for<'e> E: Executor<'e, Database = sqlx::MySql>,
{
    let work = async move {
        for k in 0..5u64 {
            let id = ((n * 5 + k) % u64::from(IDS)) as i64 + 1;
            let row = if naive {
                let sql = format!("{QUERY} /*traceparent='00-{n:032x}-{:016x}-01'*/", n | 1);
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(exec).await?
            } else {
                sqlx::query(QUERY).bind(id).fetch_one(exec).await?
            };
            let got: i64 = row.get(0);
            anyhow::ensure!(got == id, "wrong row");
        }
        Ok::<_, anyhow::Error>(())
    };
    if traced {
        work.with_context(otel(n)).await
    } else {
        work.await
    }
}

/// `Prepared_stmt_count` now.
async fn prepared_now(admin: &MySqlPool) -> Result<i64> {
    Ok(counters(admin).await?.prepared_now)
}

/// One connection: `requests` requests; returns requests/s and the server's prepared statements left
/// open by the run (before the connection closes).
async fn run_connection(
    admin: &MySqlPool,
    url: &MySqlConnectOptions,
    v: Variant,
    requests: u64,
    seq: &mut u64,
) -> Result<(f64, i64)> {
    let base = prepared_now(admin).await?;
    let conn = MySqlConnection::connect_with(url).await?;
    let start;
    match v.config() {
        Some(cfg) => {
            let mut c = TracedMySqlConnection::new(conn, &cfg);
            start = Instant::now();
            for _ in 0..requests {
                *seq += 1;
                request_conn(&mut c, *seq, v.traced()).await?;
            }
            let el = start.elapsed();
            let left = prepared_now(admin).await? - base;
            c.into_inner().close().await?;
            Ok((requests as f64 / el.as_secs_f64(), left))
        }
        None => {
            let mut c = conn;
            start = Instant::now();
            for _ in 0..requests {
                *seq += 1;
                request_plain(&mut c, *seq, v == Variant::NaiveCached).await?;
            }
            let el = start.elapsed();
            let left = prepared_now(admin).await? - base;
            c.close().await?;
            Ok((requests as f64 / el.as_secs_f64(), left))
        }
    }
}

async fn request_conn(c: &mut TracedMySqlConnection<MySqlConnection>, n: u64, traced: bool) -> Result<()> {
    let work = async {
        for k in 0..5u64 {
            let id = ((n * 5 + k) % u64::from(IDS)) as i64 + 1;
            let row = sqlx::query(QUERY).bind(id).fetch_one(&mut *c).await?;
            anyhow::ensure!(row.get::<i64, _>(0) == id, "wrong row");
        }
        Ok::<_, anyhow::Error>(())
    };
    if traced {
        work.with_context(otel(n)).await
    } else {
        work.await
    }
}

async fn request_plain(c: &mut MySqlConnection, n: u64, naive: bool) -> Result<()> {
    for k in 0..5u64 {
        let id = ((n * 5 + k) % u64::from(IDS)) as i64 + 1;
        let row = if naive {
            let sql = format!("{QUERY} /*traceparent='00-{n:032x}-{:016x}-01'*/", n | 1);
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(&mut *c).await?
        } else {
            sqlx::query(QUERY).bind(id).fetch_one(&mut *c).await?
        };
        anyhow::ensure!(row.get::<i64, _>(0) == id, "wrong row");
    }
    Ok(())
}

/// A pool of `size` with `size` tasks sharing `requests` requests; as [`run_connection`].
async fn run_pool(
    admin: &MySqlPool,
    url: &MySqlConnectOptions,
    v: Variant,
    requests: u64,
    size: u32,
    seq: &mut u64,
) -> Result<(f64, i64)> {
    let prepared_base = prepared_now(admin).await?;
    let pool = MySqlPoolOptions::new().max_connections(size).min_connections(size).connect_with(url.clone()).await?;
    // warm the connections (as a long-running service's pool is)
    let mut held = Vec::new();
    for _ in 0..size {
        held.push(pool.acquire().await?);
    }
    drop(held);
    let traced_pool = v.config().map(|cfg| TracedMySqlPool::new(pool.clone(), &cfg));
    let per_task = requests / u64::from(size);
    let base = *seq;
    *seq += per_task * u64::from(size);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..u64::from(size) {
        let (pool, traced_pool) = (pool.clone(), traced_pool.clone());
        tasks.push(tokio::spawn(async move {
            for r in 0..per_task {
                let n = base + t * per_task + r + 1;
                match &traced_pool {
                    Some(tp) => request_on(tp, n, v.traced(), false).await?,
                    None => request_on(&pool, n, false, v == Variant::NaiveCached).await?,
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let el = start.elapsed();
    let left = prepared_now(admin).await? - prepared_base;
    pool.close().await;
    Ok(((per_task * u64::from(size)) as f64 / el.as_secs_f64(), left))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let rounds: usize = args.first().map_or(Ok(7), |s| s.parse())?;
    let requests: u64 = args.get(1).map_or(Ok(2000), |s| s.parse())?;
    let size: u32 = args.get(2).map_or(Ok(8), |s| s.parse())?;
    let server = std::env::var("SQLCOMMENTER_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let admin = MySqlPoolOptions::new().max_connections(1).connect(&server).await.context("connect to MySQL")?;
    let db = format!("sqlcommenter_bench_{}", std::process::id());
    admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{db}`"))).await?;
    let mut url: MySqlConnectOptions = format!("{server}/{db}").parse()?;
    let transport = args.get(3).map_or("socket", String::as_str);
    if transport == "socket" {
        let socket: String = sqlx::raw_sql("SELECT @@socket").fetch_one(&admin).await?.get(0);
        url = url.socket(socket);
    }
    println!("transport: {transport}");
    let result = bench(&admin, &url, rounds, requests, size).await;
    admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE `{db}`"))).await?;
    result
}

async fn bench(admin: &MySqlPool, url: &MySqlConnectOptions, rounds: usize, requests: u64, size: u32) -> Result<()> {
    let mut setup = MySqlConnection::connect_with(url).await?;
    setup.execute("CREATE TABLE bench_kv (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL)").await?;
    setup
        .execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO bench_kv SELECT seq, CONCAT('value-', seq) FROM seq_1_to_{IDS}"
        )))
        .await
        .context("fill (MariaDB's seq_1_to_N engine)")?;
    setup.close().await?;
    let version: String = sqlx::raw_sql("SELECT version()").fetch_one(admin).await?.get(0);
    println!("server {version}; {rounds} rounds × {requests} requests × 5 queries per variant; pool {size}");

    for topology in 0..2u8 {
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); Variant::ALL.len()];
        let mut speeds: Vec<Vec<f64>> = vec![Vec::new(); Variant::ALL.len()];
        let mut structure: Vec<Option<(f64, f64, i64)>> = vec![None; Variant::ALL.len()];
        let mut seq = 0u64;
        for round in 0..rounds {
            let mut rps = vec![0.0; Variant::ALL.len()];
            // Rotate the order each round so no variant always runs first.
            for k in 0..Variant::ALL.len() {
                let i = (k + round) % Variant::ALL.len();
                let v = Variant::ALL[i];
                let before = counters(admin).await?;
                let (r, left) = if topology == 0 {
                    run_connection(admin, url, v, requests, &mut seq).await?
                } else {
                    run_pool(admin, url, v, requests, size, &mut seq).await?
                };
                rps[i] = r;
                let after = counters(admin).await?;
                if structure[i].is_none() {
                    let queries = (requests - requests % u64::from(if topology == 0 { 1 } else { size })) as f64 * 5.0;
                    let prepares = (after.prepare - before.prepare) as f64 / queries;
                    let trips = ((after.prepare - before.prepare) + (after.execute - before.execute)) as f64 / queries;
                    structure[i] = Some((prepares, trips, left));
                }
            }
            // Against both plain runs of the round (their mean), so one disturbed baseline run weighs half.
            let base = (rps[0] + rps[1]) / 2.0;
            for (i, r) in rps.iter().enumerate() {
                ratios[i].push(r / base);
                speeds[i].push(*r);
            }
            eprintln!("round {round}: plain {:.0} req/s", rps[0]);
        }
        println!();
        println!("{}", if topology == 0 { "one connection" } else { "pool, one task per connection" });
        println!("| variant | ratio: median (min–max) | median req/s | prepares / query | round trips / query | prepared left |");
        println!("|---|---|---|---|---|---|");
        for (i, v) in Variant::ALL.iter().enumerate() {
            let r = &mut ratios[i];
            let (lo, hi) = (r.iter().copied().fold(f64::MAX, f64::min), r.iter().copied().fold(0.0, f64::max));
            let m = median(r);
            let (p, t, left) = structure[i].unwrap_or_default();
            let rps = median(&mut speeds[i]);
            println!("| {} | {m:.3} ({lo:.2}–{hi:.2}) | {rps:.0} | {p:.3} | {t:.3} | {left} |", v.label());
        }
    }
    Ok(())
}
