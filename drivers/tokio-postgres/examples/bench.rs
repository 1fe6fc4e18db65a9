//! Throughput benchmark against a throwaway PostgreSQL (harness cluster, statement logging off).
//!
//! A request = 5 primary-key point-selects under one `tracing` span (tracing-opentelemetry, always
//! sampled, no exporter). Variants run interleaved in rounds in this one process (order rotated per
//! round); each round's throughput is divided by the plain baseline's in the same round, and the median,
//! min and max of those ratios are reported (see prior-art.md §11). Because wall-clock throughput on a
//! shared 2-core machine swings with other load, the CPU time spent per request by this process and all
//! PostgreSQL backends (`/proc/*/schedstat`) is reported too, as a ratio plain/variant: what the
//! throughput ratio would be if both sides were CPU-bound.
//!
//! ```text
//! cargo run --release -p sqlcommenter-tokio-postgres --example bench
//! BENCH_REQUESTS=4000 BENCH_ROUNDS=16 BENCH_PIN=1 ...   (requests per variant and setup, split in rounds)
//! ```
//! `BENCH_PIN=1` (default) pins this process to CPU 0 and the server to CPU 1 with `taskset`.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use opentelemetry::trace::TracerProvider as _;
use sqlcommenter_testpg::Cluster;
use sqlcommenter_tokio_postgres::{CarrierScope, Client, Config, Mode, Pool};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const QUERY: &str = "SELECT id, name FROM bench_items WHERE id = $1";
const ROWS: i64 = 10_000;
const PER_REQUEST: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    /// tokio-postgres, statement prepared once per connection (deadpool `prepare_cached` on the pool).
    Plain,
    /// Same as `Plain`: shows the noise floor.
    Control,
    /// Wrapper, session carrier, every request carried.
    Carrier100,
    /// Wrapper, session carrier, 10 % of requests carried (`sample_ratio(0.1)`).
    Carrier10,
    /// Wrapper, `CarrierScope::Transaction` (for transaction poolers): every carried statement outside a
    /// transaction is wrapped in a pipelined `BEGIN`, transaction-scoped carrier, statement, `COMMIT`.
    Carrier100TxScope,
    /// Wrapper, per-query comment (text query through `query_typed` + cached parameter types).
    Comment100,
    /// tokio-postgres `query_typed`, no comment (the floor for any one-round-trip unprepared query).
    PlainTyped,
}

const VARIANTS: [Variant; 7] = [
    Variant::Plain,
    Variant::Control,
    Variant::Carrier100,
    Variant::Carrier10,
    Variant::Carrier100TxScope,
    Variant::Comment100,
    Variant::PlainTyped,
];

impl Variant {
    fn config(self) -> Option<Config> {
        let b = Config::builder().application_name("bench");
        match self {
            Variant::Carrier100 => Some(b.build().ok()?),
            Variant::Carrier10 => Some(b.sample_ratio(0.1).build().ok()?),
            Variant::Carrier100TxScope => Some(b.carrier_scope(CarrierScope::Transaction).build().ok()?),
            Variant::Comment100 => Some(b.mode(Mode::PerQueryComment).build().ok()?),
            _ => None,
        }
    }
}

static POSTMASTER: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn schedstat(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// CPU time (ns) used so far by this process's threads and by every PostgreSQL backend process.
fn cpu_ns() -> u64 {
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            total += schedstat(&t.path().join("schedstat"));
        }
    }
    let Some(&pm) = POSTMASTER.get() else { return total };
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else { continue };
            let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if ppid == Some(pm) {
                total += schedstat(&p.path().join("schedstat"));
            }
        }
    }
    total
}

/// Throughput and CPU per request of one run.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    per_sec: f64,
    cpu_ns: f64,
}

fn sample(n: usize, start: Instant, cpu0: u64) -> Sample {
    let cpu = cpu_ns().saturating_sub(cpu0);
    Sample { per_sec: n as f64 / start.elapsed().as_secs_f64(), cpu_ns: cpu as f64 / n as f64 }
}

struct Rng(u64);
impl Rng {
    fn id(&mut self) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % ROWS as u64) as i64 + 1
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn pool(url: &str, size: usize) -> Result<deadpool_postgres::Pool> {
    let mut cfg = deadpool_postgres::Config::new();
    cfg.url = Some(url.to_owned());
    cfg.pool = Some(deadpool_postgres::PoolConfig::new(size));
    Ok(cfg.create_pool(Some(deadpool_postgres::Runtime::Tokio1), tokio_postgres::NoTls)?)
}

/// One connection, one task, `n` requests. Returns requests per second.
async fn run_single(url: &str, variant: Variant, n: usize, seed: u64) -> Result<Sample> {
    let pg = connect(url).await?;
    let mut rng = Rng(seed | 1);
    let start;
    let cpu0;
    match variant.config() {
        None => {
            let stmt = pg.prepare(QUERY).await?;
            start = Instant::now();
            cpu0 = cpu_ns();
            for _ in 0..n {
                let span = tracing::info_span!("request");
                async {
                    for _ in 0..PER_REQUEST {
                        let id = rng.id();
                        let row = if variant == Variant::PlainTyped {
                            pg.query_typed_one(QUERY, &[(&id, tokio_postgres::types::Type::INT8)]).await?
                        } else {
                            pg.query_one(&stmt, &[&id]).await?
                        };
                        std::hint::black_box(row);
                    }
                    Ok::<_, tokio_postgres::Error>(())
                }
                .instrument(span)
                .await?;
            }
        }
        Some(cfg) => {
            let client = Client::new(pg, &cfg);
            let stmt = client.prepare(QUERY).await?;
            start = Instant::now();
            cpu0 = cpu_ns();
            for _ in 0..n {
                let span = tracing::info_span!("request");
                async {
                    for _ in 0..PER_REQUEST {
                        let id = rng.id();
                        let row = if variant == Variant::Comment100 {
                            client.query_one(QUERY, &[&id]).await?
                        } else {
                            client.query_one(&stmt, &[&id]).await?
                        };
                        std::hint::black_box(row);
                    }
                    Ok::<_, tokio_postgres::Error>(())
                }
                .instrument(span)
                .await?;
            }
        }
    }
    Ok(sample(n, start, cpu0))
}

/// One connection shared by 8 tasks (each request its own span), `n` requests in all: contexts
/// interleave on the connection, so the carrier switches as often as the context does.
async fn run_shared(url: &str, variant: Variant, n: usize, seed: u64) -> Result<Sample> {
    const TASKS: usize = 8;
    let pg = connect(url).await?;
    let (plain, wrapped) = match variant.config() {
        None => (Some(Arc::new(pg)), None),
        Some(cfg) => (None, Some(Arc::new(Client::new(pg, &cfg)))),
    };
    let stmt = match (&plain, &wrapped) {
        (Some(p), _) => p.prepare(QUERY).await?,
        (_, Some(w)) => w.prepare(QUERY).await?,
        _ => unreachable!(),
    };
    let cpu0 = cpu_ns();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (plain, wrapped, stmt) = (plain.clone(), wrapped.clone(), stmt.clone());
        let mut rng = Rng((seed ^ (t as u64 * 0x9e37_79b9)) | 1);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / TASKS {
                let span = tracing::info_span!("request");
                async {
                    for _ in 0..PER_REQUEST {
                        let id = rng.id();
                        let row = match (&plain, &wrapped) {
                            (Some(p), _) if variant == Variant::PlainTyped => {
                                p.query_typed_one(QUERY, &[(&id, tokio_postgres::types::Type::INT8)]).await?
                            }
                            (Some(p), _) => p.query_one(&stmt, &[&id]).await?,
                            (_, Some(w)) if variant == Variant::Comment100 => w.query_one(QUERY, &[&id]).await?,
                            (_, Some(w)) => w.query_one(&stmt, &[&id]).await?,
                            _ => unreachable!(),
                        };
                        std::hint::black_box(row);
                        // let other tasks' requests interleave on the connection
                        tokio::task::yield_now().await;
                    }
                    Ok::<_, tokio_postgres::Error>(())
                }
                .instrument(span)
                .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(sample(n, start, cpu0))
}

/// A pool of 8 connections, 8 tasks, `n` requests in all (each request checks a connection out).
async fn run_pool(url: &str, variant: Variant, n: usize, seed: u64) -> Result<Sample> {
    const TASKS: usize = 8;
    let plain = pool(url, TASKS)?;
    let wrapped = variant.config().map(|cfg| Ok::<_, anyhow::Error>(Pool::new(pool(url, TASKS)?, cfg))).transpose()?;
    // warm up: open every connection and prepare the statement on it
    match &wrapped {
        Some(p) => {
            let mut held = Vec::new();
            for _ in 0..TASKS {
                let c = p.get().await?;
                c.prepare_cached(QUERY).await?;
                held.push(c);
            }
        }
        None => {
            let mut held = Vec::new();
            for _ in 0..TASKS {
                let c = plain.get().await?;
                c.prepare_cached(QUERY).await?;
                held.push(c);
            }
        }
    }
    let plain = Arc::new(plain);
    let wrapped = Arc::new(wrapped);
    let cpu0 = cpu_ns();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (plain, wrapped) = (plain.clone(), wrapped.clone());
        let mut rng = Rng((seed ^ (t as u64 * 0x9e37_79b9)) | 1);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / TASKS {
                let span = tracing::info_span!("request");
                async {
                    match wrapped.as_ref() {
                        Some(p) => {
                            let c = p.get().await?;
                            for _ in 0..PER_REQUEST {
                                let id = rng.id();
                                let row = if variant == Variant::Comment100 {
                                    c.query_one(QUERY, &[&id]).await?
                                } else {
                                    let s = c.prepare_cached(QUERY).await?;
                                    c.query_one(&s, &[&id]).await?
                                };
                                std::hint::black_box(row);
                            }
                        }
                        None => {
                            let c = plain.get().await?;
                            for _ in 0..PER_REQUEST {
                                let id = rng.id();
                                let row = if variant == Variant::PlainTyped {
                                    c.query_typed_one(QUERY, &[(&id, tokio_postgres::types::Type::INT8)]).await?
                                } else {
                                    let s = c.prepare_cached(QUERY).await?;
                                    c.query_one(&s, &[&id]).await?
                                };
                                std::hint::black_box(row);
                            }
                        }
                    }
                    Ok::<_, anyhow::Error>(())
                }
                .instrument(span)
                .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(sample(n, start, cpu0))
}

/// A TCP stream that counts round trips: each write that follows a read starts a new one.
struct Counting {
    inner: tokio::net::TcpStream,
    last_was_read: bool,
    turns: Arc<std::sync::atomic::AtomicU64>,
}

impl tokio::io::AsyncRead for Counting {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last_was_read = true;
        }
        r
    }
}

impl tokio::io::AsyncWrite for Counting {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) && self.last_was_read {
            self.last_was_read = false;
            self.turns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn connect_counting(port: u16) -> Result<(tokio_postgres::Client, Arc<std::sync::atomic::AtomicU64>)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let turns = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stream = Counting { inner: tcp, last_was_read: false, turns: turns.clone() };
    let mut cfg = tokio_postgres::Config::new();
    cfg.user("postgres").dbname("postgres");
    let (client, conn) = cfg.connect_raw(stream, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((client, turns))
}

/// Server-side accounting for one variant on one connection: statements the server executed per
/// query (pg_stat_statements) and prepared statements left on the connection.
async fn account(url: &str, port: u16, variant: Variant, n: usize) -> Result<(f64, f64, f64, i64, f64, f64)> {
    let admin = connect(url).await?;
    let (pg, turns) = connect_counting(port).await?;
    let backend: i32 = pg.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    let backend_stat = std::path::PathBuf::from(format!("/proc/{backend}/schedstat"));
    let client_cpu = || -> u64 {
        std::fs::read_dir("/proc/self/task")
            .map(|d| d.flatten().map(|t| schedstat(&t.path().join("schedstat"))).sum())
            .unwrap_or(0)
    };
    let (client0, server0) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    let (client1, server1) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    admin.batch_execute("SELECT pg_stat_statements_reset()").await?;
    let start_turns = std::sync::atomic::AtomicU64::new(0);
    let mut rng = Rng(7);
    let prepared: i64;
    let end_turns: u64;
    let count_sql = "SELECT count(*) FROM pg_prepared_statements";
    match variant.config() {
        None => {
            let stmt = if variant == Variant::PlainTyped { None } else { Some(pg.prepare(QUERY).await?) };
            start_turns.store(turns.load(std::sync::atomic::Ordering::Relaxed), std::sync::atomic::Ordering::Relaxed);
            client0.set(client_cpu());
            server0.set(schedstat(&backend_stat));
            for _ in 0..n {
                let span = tracing::info_span!("request");
                async {
                    for _ in 0..PER_REQUEST {
                        let id = rng.id();
                        match &stmt {
                            None => {
                                pg.query_typed_one(QUERY, &[(&id, tokio_postgres::types::Type::INT8)]).await?;
                            }
                            Some(stmt) => {
                                pg.query_one(stmt, &[&id]).await?;
                            }
                        }
                    }
                    Ok::<_, tokio_postgres::Error>(())
                }
                .instrument(span)
                .await?;
            }
            end_turns = turns.load(std::sync::atomic::Ordering::Relaxed);
            client1.set(client_cpu());
            server1.set(schedstat(&backend_stat));
            prepared = pg.query_typed_one(count_sql, &[]).await?.get(0);
        }
        Some(cfg) => {
            let client = Client::new(pg, &cfg);
            let stmt = if variant == Variant::Comment100 { None } else { Some(client.prepare(QUERY).await?) };
            start_turns.store(turns.load(std::sync::atomic::Ordering::Relaxed), std::sync::atomic::Ordering::Relaxed);
            client0.set(client_cpu());
            server0.set(schedstat(&backend_stat));
            for _ in 0..n {
                let span = tracing::info_span!("request");
                async {
                    for _ in 0..PER_REQUEST {
                        let id = rng.id();
                        match &stmt {
                            None => {
                                client.query_one(QUERY, &[&id]).await?;
                            }
                            Some(stmt) => {
                                client.query_one(stmt, &[&id]).await?;
                            }
                        }
                    }
                    Ok::<_, tokio_postgres::Error>(())
                }
                .instrument(span)
                .await?;
            }
            end_turns = turns.load(std::sync::atomic::Ordering::Relaxed);
            client1.set(client_cpu());
            server1.set(schedstat(&backend_stat));
            prepared = client.get_ref().query_typed_one(count_sql, &[]).await?.get(0);
        }
    }
    let rows = admin
        .query(
            "SELECT query, calls FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' \
             AND query NOT LIKE '%pg_prepared_statements%'",
            &[],
        )
        .await?;
    let total: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
    let carriers: i64 =
        rows.iter().filter(|r| r.get::<_, &str>(0).contains("set_config")).map(|r| r.get::<_, i64>(1)).sum();
    let queries = (n * PER_REQUEST) as f64;
    let trips = (end_turns - start_turns.load(std::sync::atomic::Ordering::Relaxed)) as f64;
    let per_req = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / n as f64 / 1000.0;
    Ok((
        trips / queries,
        total as f64 / queries,
        carriers as f64 / queries,
        prepared,
        per_req(client0.get(), client1.get()),
        per_req(server0.get(), server1.get()),
    ))
}

fn pin(pid: u32, cpu: &str) {
    let _ = Command::new("taskset").args(["-a", "-p", "-c", cpu, &pid.to_string()]).output();
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> Result<()> {
    let n: usize = std::env::var("BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(4000);
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(16).max(1);
    let pin_cpus = std::env::var("BENCH_PIN").map(|v| v != "0").unwrap_or(true);

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    tracing::subscriber::set_global_default(subscriber)?;

    let pg = Cluster::builder()
        .setting("log_min_duration_statement", "-1")
        .setting("max_connections", "100")
        .preload(&["pg_stat_statements"])
        .create_extension("pg_stat_statements")
        .start()
        .context("starting PostgreSQL")?;
    if let Some(pid) = pg.pid() {
        let _ = POSTMASTER.set(pid);
    }
    if pin_cpus {
        if let Some(pid) = pg.pid() {
            pin(pid, "1");
        }
        pin(std::process::id(), "0");
    }
    pg.execute_sql(&format!(
        "CREATE TABLE bench_items (id bigint PRIMARY KEY, name text NOT NULL); \
         INSERT INTO bench_items SELECT i, 'item ' || i FROM generate_series(1, {ROWS}) i; ANALYZE bench_items;"
    ))?;
    let url = pg.url("postgres");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    rt.block_on(async {
        // warm-up
        for v in VARIANTS {
            run_single(&url, v, n / 10, 1).await?;
        }
        let only_accounting = std::env::var("BENCH_ONLY_ACCOUNTING").is_ok();
        for (setup, kind) in [("one connection", 0), ("pool of 8, 8 tasks", 1), ("one connection shared by 8 tasks", 2)] {
            if only_accounting {
                break;
            }
            let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
            let mut cpu_ratios: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
            let mut abs: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
            let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
            let per_round = n / rounds;
            for round in 0..rounds {
                let mut got = [Sample::default(); VARIANTS.len()];
                for k in 0..VARIANTS.len() {
                    let i = (k + round) % VARIANTS.len();
                    let seed = 0x5eed + round as u64;
                    got[i] = match kind {
                        0 => run_single(&url, VARIANTS[i], per_round, seed).await?,
                        1 => run_pool(&url, VARIANTS[i], per_round, seed).await?,
                        _ => run_shared(&url, VARIANTS[i], per_round, seed).await?,
                    };
                }
                for i in 0..VARIANTS.len() {
                    ratios[i].push(got[i].per_sec / got[0].per_sec);
                    cpu_ratios[i].push(got[0].cpu_ns / got[i].cpu_ns);
                    abs[i].push(got[i].per_sec);
                    cpu[i].push(got[i].cpu_ns / 1000.0);
                }
            }
            println!(
                "\n## {setup}: {} requests x {PER_REQUEST} queries per variant ({rounds} rounds of {per_round}), pinned={pin_cpus}",
                per_round * rounds
            );
            println!("| variant | throughput ratio median (min-max) | CPU-per-request ratio median (min-max) | requests/s | CPU µs/request (client+server) |");
            println!("|---|---|---|---|---|");
            for (i, v) in VARIANTS.iter().enumerate() {
                let (med, min, max) = stats(ratios[i].clone());
                let (cmed, cmin, cmax) = stats(cpu_ratios[i].clone());
                let (a, _, _) = stats(abs[i].clone());
                let (c, _, _) = stats(cpu[i].clone());
                println!("| {v:?} | {med:.3} ({min:.2}-{max:.2}) | {cmed:.3} ({cmin:.2}-{cmax:.2}) | {a:.0} | {c:.0} |");
            }
        }
        println!("\n## server-side accounting (one connection, {} requests)", n / 4);
        println!(
            "| variant | round trips per query | statements executed per query | carrier statements per query | prepared statements on the connection | client CPU µs/request | backend CPU µs/request |"
        );
        println!("|---|---|---|---|---|---|---|");
        for v in VARIANTS {
            let (trips, per_query, carriers, prepared, client, server) = account(&url, pg.port(), v, n / 4).await?;
            println!("| {v:?} | {trips:.3} | {per_query:.3} | {carriers:.3} | {prepared} | {client:.0} | {server:.0} |");
        }
        Ok::<_, anyhow::Error>(())
    })
}
