//! Throughput of SeaORM with the context carried (a `PoolHooks` pool, optionally `Tagged`) against plain
//! SeaORM on the same sqlx pool options, on a PostgreSQL started by the test harness (statement logging
//! off). A request = 5 `find_by_id` point-selects through `&DatabaseConnection` (SeaORM checks a
//! connection out per statement: the worst case for a per-checkout carrier) under one trace context (a new
//! trace per request); 8 tasks on a pool of 8. Variants run interleaved in rounds (the order rotated each
//! round); ratios are per round against plain SeaORM.
//!
//! `cargo run --release -p sqlcommenter-sea-orm --example sea_orm_bench -- [rounds] [requests]`
//! The client pins itself to CPU 0 and the server to CPU 1 when `taskset` exists.

use std::time::Instant;

use anyhow::{Context as _, Result};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, SqlxPostgresConnector, TransactionTrait};
use sqlcommenter_sea_orm::{CarrierReset, Config, PoolHooks, Tagged, Tags};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const IDS: i32 = 10_000;
const TASKS: u64 = 8;

mod kv {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "bench_kv")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub v: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Plain,
    Control,
    Release100,
    Release10,
    Acquire100,
    Acquire10,
    Tagged100,
    TxPlain,
    TxRelease100,
    TxAcquire100,
}

impl Variant {
    const ALL: [Variant; 10] = [
        Variant::Plain,
        Variant::Control,
        Variant::Release100,
        Variant::Release10,
        Variant::Acquire100,
        Variant::Acquire10,
        Variant::Tagged100,
        Variant::TxPlain,
        Variant::TxRelease100,
        Variant::TxAcquire100,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain SeaORM (sqlx pool, default options)",
            Variant::Control => "plain SeaORM again (noise floor)",
            Variant::Release100 => "connect(): PoolHooks, cleared on release (default), 100% sampled",
            Variant::Release10 => "connect(): PoolHooks, cleared on release (default), 10% sampled",
            Variant::Acquire100 => "PoolHooks, overwritten on acquire, 100% sampled",
            Variant::Acquire10 => "PoolHooks, overwritten on acquire, 10% sampled",
            Variant::Tagged100 => "Tagged (fixed tags in the text) + PoolHooks cleared on release, 100% sampled",
            Variant::TxPlain => "request in one transaction: plain SeaORM",
            Variant::TxRelease100 => "request in one transaction: PoolHooks, cleared on release, 100% sampled",
            Variant::TxAcquire100 => "request in one transaction: PoolHooks, overwritten on acquire, 100% sampled",
        }
    }

    /// The request runs its 5 selects in one `db.transaction(..)` (one checkout).
    fn in_transaction(self) -> bool {
        matches!(self, Variant::TxPlain | Variant::TxRelease100 | Variant::TxAcquire100)
    }

    /// What its ratio is taken against: plain SeaORM with the same request shape.
    fn baseline(self) -> usize {
        let base = if self.in_transaction() { Variant::TxPlain } else { Variant::Plain };
        Variant::ALL.iter().position(|v| *v == base).unwrap_or(0)
    }

    fn reset(self) -> Option<CarrierReset> {
        match self {
            Variant::Plain | Variant::Control | Variant::TxPlain => None,
            Variant::Release100 | Variant::Release10 | Variant::Tagged100 | Variant::TxRelease100 => {
                Some(CarrierReset::OnRelease)
            }
            Variant::Acquire100 | Variant::Acquire10 | Variant::TxAcquire100 => Some(CarrierReset::OnAcquire),
        }
    }

    fn sampled(self, n: u64) -> bool {
        match self {
            Variant::Release10 | Variant::Acquire10 => n % 10 == 0,
            _ => true,
        }
    }
}

/// The OpenTelemetry context of request `n` (a new trace per request).
fn request_context(n: u64, sampled: bool) -> opentelemetry::Context {
    let mut trace = [0x5bu8; 16];
    trace[8..].copy_from_slice(&(n + 1).to_be_bytes());
    let mut span = [0x18u8; 8];
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
        ((self.0 >> 33) % IDS as u64) as i32 + 1
    }
}

async fn selects<C: ConnectionTrait>(db: &C, ids: [i32; 5]) -> Result<(), DbErr> {
    for id in ids {
        let row = kv::Entity::find_by_id(id).one(db).await?;
        if row.is_none() {
            return Err(DbErr::RecordNotFound(id.to_string()));
        }
    }
    Ok(())
}

async fn request<C>(db: &C, rng: &mut Lcg, in_transaction: bool) -> Result<()>
where
    C: ConnectionTrait + TransactionTrait,
{
    let ids = [rng.id(), rng.id(), rng.id(), rng.id(), rng.id()];
    if in_transaction {
        db.transaction::<_, _, DbErr>(|txn| Box::pin(async move { selects(txn, ids).await })).await?;
    } else {
        selects(db, ids).await?;
    }
    Ok(())
}

#[derive(Clone)]
enum Db {
    Plain(DatabaseConnection),
    Tagged(Tagged<DatabaseConnection>),
}

async fn open(url: &str, v: Variant) -> Result<(Db, DatabaseConnection)> {
    let options = PgPoolOptions::new().max_connections(8).min_connections(8);
    let connect: PgConnectOptions = url.parse()?;
    let db = match v.reset() {
        None => SqlxPostgresConnector::from_sqlx_postgres_pool(options.connect_with(connect).await?),
        Some(reset) => {
            let hooks = PoolHooks::new(&Config::default(), &connect).reset(reset);
            sqlcommenter_sea_orm::connect_with(options, connect, &hooks).await?
        }
    };
    let wrapped = match v {
        Variant::Tagged100 => Db::Tagged(Tagged::new(db.clone(), Tags::new([("application", "bench")])?)),
        _ => Db::Plain(db.clone()),
    };
    Ok((wrapped, db))
}

/// Requests per second of `requests` requests, 8 tasks on a pool of 8.
async fn run(url: &str, v: Variant, requests: u64, seed: u64) -> Result<f64> {
    let (db, raw) = open(url, v).await?;
    // warm every connection's statement cache
    let mut warm = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        warm.push(tokio::spawn(async move {
            let mut rng = Lcg(t);
            match &db {
                Db::Plain(d) => request(d, &mut rng, v.in_transaction()).await,
                Db::Tagged(d) => request(d, &mut rng, v.in_transaction()).await,
            }
        }));
    }
    for w in warm {
        w.await??;
    }
    let per_task = requests / TASKS;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(seed ^ (t << 32));
            for i in 0..per_task {
                let n = t * per_task + i;
                let cx = request_context(n, v.sampled(n));
                match &db {
                    Db::Plain(d) => request(d, &mut rng, v.in_transaction()).with_context(cx).await?,
                    Db::Tagged(d) => request(d, &mut rng, v.in_transaction()).with_context(cx).await?,
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    raw.close().await?;
    Ok((per_task * TASKS) as f64 / elapsed.as_secs_f64())
}

/// Carrier statements and all statements per query, counted by the server over `requests` requests, and
/// SeaORM's prepared statements on the server (summed over the 8 connections).
async fn per_query(url: &str, pg: &sqlcommenter_testpg::Cluster, v: Variant, requests: u64) -> Result<(f64, f64, i64)> {
    pg.execute_sql("SELECT pg_stat_statements_reset()")?;
    let (db, raw) = open(url, v).await?;
    let mut rng = Lcg(7);
    for n in 0..requests {
        match &db {
            Db::Plain(d) => {
                request(d, &mut rng, v.in_transaction()).with_context(request_context(n, v.sampled(n))).await?
            }
            Db::Tagged(d) => {
                request(d, &mut rng, v.in_transaction()).with_context(request_context(n, v.sampled(n))).await?
            }
        }
    }
    // the clears run in sqlx's release tasks
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let count = |filter: &str| -> Result<f64> {
        let n = pg.query(&format!("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE {filter}"))?;
        n.trim().parse::<f64>().context("pg_stat_statements")
    };
    let queries = (requests * 5) as f64;
    let sets = count("query ILIKE '%set_config%'")?;
    let all = count("query NOT ILIKE '%pg_stat_statements%'")?;
    let pool = raw.get_postgres_connection_pool();
    let mut held = Vec::new();
    let mut prepared = 0;
    for _ in 0..8 {
        let mut c = pool.acquire().await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement NOT ILIKE '%pg_prepared_statements%'",
        )
        .fetch_one(&mut *c)
        .await?;
        prepared += n;
        held.push(c);
    }
    drop(held);
    raw.close().await?;
    Ok((sets / queries, all / queries, prepared))
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
    let requests: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2_000);

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
    // one thread, as the sqlx bench: the client's CPU is CPU 0
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); Variant::ALL.len()];
        for round in 0..rounds {
            let mut by_variant = vec![0.0; Variant::ALL.len()];
            for k in 0..Variant::ALL.len() {
                let i = (k + round) % Variant::ALL.len();
                by_variant[i] = run(&url, Variant::ALL[i], requests, round as u64).await?;
            }
            for (i, r) in by_variant.iter().enumerate() {
                ratios[i].push(r / by_variant[Variant::ALL[i].baseline()]);
            }
            eprintln!("round {round}: plain SeaORM {:.0} req/s", by_variant[0]);
        }
        println!("\npool of 8, 8 tasks: {requests} requests x 5 find_by_id per variant per round, {rounds} rounds");
        println!("(ratios of the transaction variants are against plain SeaORM in a transaction)");
        println!(
            "| variant | median ratio | min | max | carrier statements / query | statements / query | server prepared |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (i, v) in Variant::ALL.iter().enumerate() {
            let (med, min, max) = stats(ratios[i].clone());
            let (carrier, all, prepared) = per_query(&url, &pg, *v, 1_000).await?;
            println!("| {} | {med:.3} | {min:.3} | {max:.3} | {carrier:.3} | {all:.3} | {prepared} |", v.name());
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
