//! Throughput of `TracedPgConnection` against plain diesel-async, on a PostgreSQL started by the test
//! harness (statement logging off). A request = 5 primary-key selects (diesel DSL, cached statements).
//! Variants run interleaved in rounds; each round's requests/s are divided by plain diesel-async's in the
//! same round and topology; medians (min–max) are printed. Carrier statements per query are counted on the
//! server (`pg_stat_statements` calls of the carrier ÷ calls of the application's statement).
//!
//! Round trips per query are measured through a relay that delays every client→server chunk by
//! `DELAY` (chunks in flight together stay together): a request's time ÷ (`DELAY` × statements) is the
//! number of waits per statement; a carrier written in a separate round trip would show as +1 per write.
//!
//! `cargo run --release -p sqlcommenter-diesel --example bench -- [rounds] [requests]`

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use sqlcommenter_diesel::{manager, Config, TracedPgConnection};

const IDS: i32 = 10_000;
const PER_REQUEST: i32 = 5;
const TASKS: usize = 8;
const POOL: usize = 4;

diesel::table! {
    bench_kv (id) {
        id -> Int4,
        v -> Text,
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    /// Plain `AsyncPgConnection`, no wrapper.
    Plain,
    /// `TracedPgConnection`, every request a new trace (one carrier write per request).
    Traced,
    /// `TracedPgConnection`, work outside any span (the static comment only).
    NoSpan,
    /// `TracedPgConnection`, every statement a new span (one carrier write per statement: the worst case).
    PerStatement,
    /// `TracedPgConnection` with `OutsideTransaction::WrapInTransaction` (transaction poolers), every request
    /// a new trace: every statement in a transaction of its own.
    Wrapped,
}

impl Variant {
    const ALL: [Variant; 5] =
        [Variant::Plain, Variant::Traced, Variant::NoSpan, Variant::PerStatement, Variant::Wrapped];

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain diesel-async",
            Variant::Traced => "traced, new trace per request",
            Variant::NoSpan => "traced, no span (comment only)",
            Variant::PerStatement => "traced, new span per statement",
            Variant::Wrapped => "traced, WrapInTransaction, new trace per request",
        }
    }
}

fn context(n: u64) -> opentelemetry::Context {
    let mut trace = [0x7au8; 16];
    trace[8..].copy_from_slice(&n.to_be_bytes());
    let sc = SpanContext::new(
        TraceId::from_bytes(trace),
        SpanId::from_bytes((n + 1).to_be_bytes()),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(sc)
}

async fn select<C>(conn: &mut C, id: i32) -> Result<()>
where
    C: AsyncConnection<Backend = diesel::pg::Pg> + 'static,
{
    let row: (i32, String) = bench_kv::table.find(id).first(conn).await?;
    debug_assert_eq!(row.0, id);
    Ok(())
}

/// One request of `variant`; `n` numbers the request (its trace).
async fn request<C>(conn: &mut C, variant: Variant, n: u64) -> Result<()>
where
    C: AsyncConnection<Backend = diesel::pg::Pg> + 'static,
{
    let base = (n as i32).wrapping_mul(7919).rem_euclid(IDS);
    let ids = (0..PER_REQUEST).map(|k| (base + k) % IDS + 1);
    match variant {
        Variant::Plain | Variant::NoSpan => {
            for id in ids {
                select(conn, id).await?;
            }
        }
        Variant::Traced | Variant::Wrapped => {
            async {
                for id in ids {
                    select(conn, id).await?;
                }
                Ok::<_, anyhow::Error>(())
            }
            .with_context(context(n))
            .await?
        }
        Variant::PerStatement => {
            for (k, id) in ids.enumerate() {
                async { select(conn, id).await }.with_context(context(n * 8 + k as u64)).await?;
            }
        }
    }
    Ok(())
}

struct Conns {
    plain: AsyncPgConnection,
    traced: TracedPgConnection,
    wrapped: TracedPgConnection,
    plain_pool: Pool<AsyncPgConnection>,
    traced_pool: Pool<TracedPgConnection>,
    wrapped_pool: Pool<TracedPgConnection>,
}

/// Requests/s of `variant` on one connection.
async fn one_connection(c: &mut Conns, variant: Variant, requests: u64, offset: u64) -> Result<f64> {
    let start = Instant::now();
    for n in offset..offset + requests {
        match variant {
            Variant::Plain => request(&mut c.plain, variant, n).await?,
            Variant::Wrapped => request(&mut c.wrapped, variant, n).await?,
            _ => request(&mut c.traced, variant, n).await?,
        }
    }
    Ok(requests as f64 / start.elapsed().as_secs_f64())
}

/// Requests/s of `variant` from `TASKS` tasks sharing a deadpool pool of `POOL` connections (a checkout,
/// with its ping, per request).
async fn pooled(c: &Conns, variant: Variant, requests: u64, offset: u64) -> Result<f64> {
    let start = Instant::now();
    let per_task = requests / TASKS as u64;
    let mut handles = Vec::new();
    for t in 0..TASKS as u64 {
        let (plain, traced, wrapped) = (c.plain_pool.clone(), c.traced_pool.clone(), c.wrapped_pool.clone());
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let n = offset + t * per_task + i;
                // The checkout runs inside the request (its ping carries the request's context).
                match variant {
                    Variant::Plain => {
                        let mut conn = plain.get().await?;
                        request(&mut *conn, variant, n).await?;
                    }
                    Variant::Traced | Variant::Wrapped => {
                        let pool = if variant == Variant::Traced { &traced } else { &wrapped };
                        async {
                            let mut conn = pool.get().await?;
                            request(&mut *conn, Variant::NoSpan, n).await
                        }
                        .with_context(context(n))
                        .await?
                    }
                    _ => {
                        let mut conn = traced.get().await?;
                        request(&mut *conn, variant, n).await?;
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok((per_task * TASKS as u64) as f64 / start.elapsed().as_secs_f64())
}

const DELAY: Duration = Duration::from_millis(10);

/// A relay to `upstream` that holds every client→server chunk for `DELAY` (concurrently: a chunk read
/// while another waits is not delayed further). Returns its port.
async fn delaying_relay(upstream: u16) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?;
                server.set_nodelay(true)?;
                client.set_nodelay(true)?;
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        if tx.send((Instant::now() + DELAY, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some((at, chunk)) = rx.recv().await {
                        tokio::time::sleep_until(at.into()).await;
                        if sw.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::io::copy(&mut sr, &mut cw).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    Ok(port)
}

/// Waits per statement of `variant` on one connection through the delaying relay (median of requests).
async fn round_trips(c: &mut Conns, variant: Variant, requests: u64) -> Result<f64> {
    let mut per_request = Vec::new();
    for n in 0..requests {
        let start = Instant::now();
        match variant {
            Variant::Plain => request(&mut c.plain, variant, 5_000_000 + n).await?,
            Variant::Wrapped => request(&mut c.wrapped, variant, 5_000_000 + n).await?,
            _ => request(&mut c.traced, variant, 5_000_000 + n).await?,
        }
        per_request.push(start.elapsed().as_secs_f64());
    }
    Ok(median(&mut per_request) / (DELAY.as_secs_f64() * PER_REQUEST as f64))
}

/// Synchronous diesel: requests/s from `TASKS` threads sharing an r2d2 pool of `POOL` `PgConnection`s (a
/// checkout per request; `traced`: each request under its own trace, current at checkout).
fn sync_pooled<M>(pool: &diesel::r2d2::Pool<M>, traced: bool, requests: u64, offset: u64) -> Result<f64>
where
    M: diesel::r2d2::ManageConnection<Connection = diesel::PgConnection>,
{
    let start = Instant::now();
    let per_task = requests / TASKS as u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..TASKS as u64)
            .map(|t| {
                s.spawn(move || {
                    for i in 0..per_task {
                        let n = offset + t * per_task + i;
                        let _cx = traced.then(|| context(n).attach());
                        let mut conn = pool.get()?;
                        let base = (n as i32).wrapping_mul(7919).rem_euclid(IDS);
                        for k in 0..PER_REQUEST {
                            let id = (base + k) % IDS + 1;
                            let _: (i32, String) = diesel::RunQueryDsl::first(bench_kv::table.find(id), &mut *conn)?;
                        }
                    }
                    Ok::<_, anyhow::Error>(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("thread panicked"))?)
    })?;
    Ok((per_task * TASKS as u64) as f64 / start.elapsed().as_secs_f64())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Carrier statements and application statements per query, from `pg_stat_statements`.
async fn counts(pg: &sqlcommenter_testpg::Cluster, c: &mut Conns, variant: Variant, pool: bool) -> Result<(f64, f64)> {
    pg.execute_sql("SELECT pg_stat_statements_reset()")?;
    if pool {
        pooled(c, variant, 800, 9_000_000).await?;
    } else {
        one_connection(c, variant, 200, 9_000_000).await?;
    }
    let calls = |filter: &str| -> Result<f64> {
        let out = pg.query(&format!("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE {filter}"))?;
        Ok(out.trim().parse()?)
    };
    let app = calls("query LIKE '%bench_kv%'")?;
    let carrier = calls("query LIKE '%set_config%' AND query NOT LIKE '%pg_stat_statements%'")?;
    let ping = calls("query LIKE 'SELECT $1%'")?;
    let txn = calls("query IN ('BEGIN', 'COMMIT')")?;
    Ok((carrier / app, (app + carrier + ping + txn) / app))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(7);
    let requests: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let pg = sqlcommenter_testpg::Cluster::builder()
        .preload(&["pg_stat_statements"])
        .create_extension("pg_stat_statements")
        .setting("max_connections", "40")
        .start()
        .context("start PostgreSQL")?;
    pg.execute_sql(&format!(
        "CREATE TABLE bench_kv (id int4 PRIMARY KEY, v text NOT NULL); \
         INSERT INTO bench_kv SELECT g, md5(g::text) FROM generate_series(1, {IDS}) g; ANALYZE bench_kv"
    ))?;
    let url = format!("{}?application_name=bench", pg.url("postgres"));
    let config = Config::builder().application("bench").build()?;
    let wrap = Config::builder()
        .application("bench")
        .outside_transaction(sqlcommenter_diesel::OutsideTransaction::WrapInTransaction)
        .build()?;
    let mut c = Conns {
        plain: AsyncPgConnection::establish(&url).await?,
        traced: TracedPgConnection::establish_with(&url, &config).await?,
        wrapped: TracedPgConnection::establish_with(&url, &wrap).await?,
        plain_pool: Pool::builder(AsyncDieselConnectionManager::<AsyncPgConnection>::new(&url))
            .max_size(POOL)
            .build()?,
        traced_pool: Pool::builder(manager(&url, &config)).max_size(POOL).build()?,
        wrapped_pool: Pool::builder(manager(&url, &wrap)).max_size(POOL).build()?,
    };
    // warm-up: connections opened, statements cached
    for v in Variant::ALL {
        one_connection(&mut c, v, 200, 0).await?;
        pooled(&c, v, 400, 0).await?;
    }
    // Round trips through the delaying relay (its own connections).
    let relay = delaying_relay(pg.port()).await?;
    let slow_url = format!("postgres://postgres@127.0.0.1:{relay}/postgres?application_name=bench");
    let mut slow = Conns {
        plain: AsyncPgConnection::establish(&slow_url).await?,
        traced: TracedPgConnection::establish_with(&slow_url, &config).await?,
        wrapped: TracedPgConnection::establish_with(&slow_url, &wrap).await?,
        plain_pool: c.plain_pool.clone(),
        traced_pool: c.traced_pool.clone(),
        wrapped_pool: c.wrapped_pool.clone(),
    };
    let mut waits = Vec::new();
    for v in Variant::ALL {
        round_trips(&mut slow, v, 2).await?; // warm-up: statements prepared
        waits.push(round_trips(&mut slow, v, 30).await?);
    }
    for (topology, pool) in [("one connection", false), (&*format!("pool of {POOL}, {TASKS} tasks"), true)] {
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); Variant::ALL.len()];
        let mut plain_rps = Vec::new();
        for round in 0..rounds {
            let mut rps = [0.0; Variant::ALL.len()];
            // rotate the order every round
            for k in 0..Variant::ALL.len() {
                let i = (k + round) % Variant::ALL.len();
                let offset = ((round * Variant::ALL.len() + i) as u64 + 1) * 1_000_000;
                rps[i] = if pool {
                    pooled(&c, Variant::ALL[i], requests, offset).await?
                } else {
                    one_connection(&mut c, Variant::ALL[i], requests, offset).await?
                };
            }
            plain_rps.push(rps[0]);
            for i in 0..rps.len() {
                ratios[i].push(rps[i] / rps[0]);
            }
        }
        println!("\n{topology}: {rounds} rounds × {requests} requests × {PER_REQUEST} selects");
        println!("plain requests/s: median {:.0}", median(&mut plain_rps.clone()));
        println!(
            "| variant | ratio median (min–max) | carrier stmts / query | server stmts / query | round trips / query |"
        );
        println!("|---|---|---|---|---|");
        for (i, v) in Variant::ALL.into_iter().enumerate() {
            let (carrier, stmts) = counts(&pg, &mut c, v, pool).await?;
            let r = &mut ratios[i];
            let (min, max) = (r.iter().cloned().fold(f64::MAX, f64::min), r.iter().cloned().fold(0.0, f64::max));
            let rt = if pool { "".to_owned() } else { format!("{:.2}", waits[i]) };
            println!("| {} | {:.2} ({:.2}–{:.2}) | {carrier:.2} | {stmts:.2} | {rt} |", v.name(), median(r), min, max);
        }
    }
    // Synchronous diesel through r2d2.
    let plain_sync = diesel::r2d2::Pool::builder()
        .max_size(POOL as u32)
        .build(diesel::r2d2::ConnectionManager::<diesel::PgConnection>::new(&url))?;
    let traced_sync = diesel::r2d2::Pool::builder()
        .max_size(POOL as u32)
        .build(sqlcommenter_diesel::CheckoutCarrier::new(&url, &config))?;
    sync_pooled(&plain_sync, false, 400, 0)?;
    sync_pooled(&traced_sync, true, 400, 0)?;
    let (mut plain_rps, mut ratio) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let offset = (round as u64 + 1) * 100_000_000;
        let (p, t) = if round % 2 == 0 {
            let p = sync_pooled(&plain_sync, false, requests, offset)?;
            (p, sync_pooled(&traced_sync, true, requests, offset)?)
        } else {
            let t = sync_pooled(&traced_sync, true, requests, offset)?;
            (sync_pooled(&plain_sync, false, requests, offset)?, t)
        };
        plain_rps.push(p);
        ratio.push(t / p);
    }
    let sync_counts = |pool_traced: bool| -> Result<(f64, f64)> {
        pg.execute_sql("SELECT pg_stat_statements_reset()")?;
        if pool_traced {
            sync_pooled(&traced_sync, true, 800, 9_000_000)?;
        } else {
            sync_pooled(&plain_sync, false, 800, 9_000_000)?;
        }
        let calls = |filter: &str| -> Result<f64> {
            let out = pg.query(&format!("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE {filter}"))?;
            Ok(out.trim().parse()?)
        };
        let app = calls("query LIKE '%bench_kv%'")?;
        let carrier = calls("query LIKE '%set_config%' AND query NOT LIKE '%pg_stat_statements%'")?;
        // r2d2's ping: diesel's prepared `SELECT 1` (kept as written)
        let ping = calls("query = 'SELECT 1'")?;
        Ok((carrier / app, (app + carrier + ping) / app))
    };
    println!("\nsync diesel, r2d2 pool of {POOL}, {TASKS} threads: {rounds} rounds × {requests} requests × {PER_REQUEST} selects");
    println!("plain requests/s: median {:.0}", median(&mut plain_rps));
    println!("| variant | ratio median (min–max) | carrier stmts / query | server stmts / query |");
    println!("|---|---|---|---|");
    let (min, max) = (ratio.iter().cloned().fold(f64::MAX, f64::min), ratio.iter().cloned().fold(0.0, f64::max));
    let (c0, s0) = sync_counts(false)?;
    let (c1, s1) = sync_counts(true)?;
    println!("| plain r2d2 | 1.00 | {c0:.2} | {s0:.2} |");
    println!(
        "| CheckoutCarrier, new trace per request | {:.2} ({min:.2}–{max:.2}) | {c1:.2} | {s1:.2} |",
        median(&mut ratio)
    );
    Ok(())
}
