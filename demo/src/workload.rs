//! The traced workload: three small applications, each request a `tracing` span (exported through
//! tracing-opentelemetry), every statement recorded with the span it runs under.
//!
//! - `orders`: the sqlx wrapper ([`sqlcommenter_sqlx::TracedPool`]), with child spans, one deliberately
//!   slow statement (pg_sleep, planned by auto_explain) and a transaction.
//! - `cart`: the tokio-postgres wrapper ([`sqlcommenter_tokio_postgres::Client`]): a statement
//!   prepared once and executed per request, `query_typed`, a simple query, a transaction.
//! - `legacy` / `batch`: plain tokio-postgres through the proxy, unmodified except for how it
//!   hands over its context, the two ways the proxy reads it: `SELECT set_config('sqlcommenter.traceparent',
//!   '...', false)` (one pg_stat_statements entry for every trace, unlike a `SET` text) at the
//!   start of each request, or (a batch job) the traceparent in the startup `application_name`
//!   (`PGAPPNAME`-style, [`sqlcommenter::carrier::encode_application_name`]).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use sqlcommenter::TraceContext;
use sqlcommenter_proxy::{parse_carrier, ProxyConfig, Upstream};
use sqlcommenter_testpg::Cluster;
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;
use tracing::Instrument;

use crate::completeness::StatementPath;
use crate::probe::Recorder;
use crate::{interrupt, DemoArgs, DemoError};

/// Starts the proxy, runs the three applications concurrently, stops the proxy.
pub(crate) async fn run(pg: &Cluster, rec: &Recorder, args: &DemoArgs, out: &mut dyn Write) -> Result<(), DemoError> {
    let upstream = Upstream { host: pg.host().to_owned(), port: pg.port() };
    let listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = ProxyConfig::new(listen, upstream);
    config.worker_threads = Some(1);
    config.shutdown_timeout = Duration::from_secs(2);
    config.inject.carrier = parse_carrier(&args.proxy_carrier, sqlcommenter::carrier::DEFAULT_GUC)?;
    let proxy = sqlcommenter_proxy::start(config).await?;
    let proxy_addr = proxy.local_addr();
    let say = |out: &mut dyn Write, s: String| out.write_all(s.as_bytes()).map_err(DemoError::Output);
    say(out, format!("  proxy on {proxy_addr} -> {}:{}\n", pg.host(), pg.port()))?;
    say(
        out,
        format!(
            "Running the traced workload: {} requests each from orders (sqlx wrapper), cart \
             (tokio-postgres wrapper), legacy (unmodified, through the proxy), plus one batch job (context in its startup application_name) ...\n",
            args.requests
        ),
    )?;

    let slow = Duration::from_millis(args.slow_ms);
    let work = async {
        tokio::try_join!(
            sqlx_app(format!("{}?application_name=orders", pg.url("postgres")), rec, args.requests, slow),
            tokio_postgres_app(
                format!("{} application_name=cart", pg.keyword_conn_str("postgres")),
                rec,
                args.requests
            ),
            unmodified_app(proxy_addr, rec, args.requests),
        )
    };
    let result = tokio::select! {
        r = work => r.map(drop),
        () = interrupt::interrupted() => Err(DemoError::Interrupted),
    };
    proxy.shutdown().await;
    result
}

/// The id column value for a probe (unique per statement).
fn row_id(probe: &str) -> i64 {
    probe.trim_start_matches("demo-").parse::<i64>().map_or(0, |n| 1_000_000 + n)
}

// ---------------------------------------------------------------------------------------------------------
// orders: the sqlx wrapper

async fn sqlx_app(url: String, rec: &Recorder, requests: u32, slow: Duration) -> Result<(), DemoError> {
    let err = |e: sqlx::Error| DemoError::workload("orders", e);
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.map_err(err)?;
    let config = sqlcommenter_sqlx::Config::builder()
        .application("orders")
        .base_application_name("orders")
        .tag("route", "/orders/{id}")
        .build()
        .map_err(|e| DemoError::workload("orders", e))?;
    let db = sqlcommenter_sqlx::TracedPool::new(pool, &config);
    for i in 0..requests {
        let span = tracing::info_span!("GET /orders/{id}", app = "orders", order = i);
        sqlx_request(&db, rec, i, slow).instrument(span).await.map_err(err)?;
    }
    db.inner().close().await;
    Ok(())
}

async fn sqlx_request(
    db: &sqlcommenter_sqlx::TracedPool,
    rec: &Recorder,
    i: u32,
    slow: Duration,
) -> Result<(), sqlx::Error> {
    if i == 0 {
        rec.mark_showcase();
    }
    let id = i64::from(i) + 1;
    let p = rec.probe(StatementPath::Sqlx, false);
    sqlx::query("SELECT $1::text AS probe, count(*) FROM demo_items").bind(&p).fetch_one(db).await?;

    async {
        let mut conn = db.acquire().await?;
        let p = rec.probe(StatementPath::Sqlx, false);
        sqlx::query("SELECT $1::text AS probe, label FROM demo_items WHERE id = $2")
            .bind(&p)
            .bind(id)
            .fetch_one(&mut conn)
            .await?;
        Ok::<_, sqlx::Error>(())
    }
    .instrument(tracing::info_span!("load_order"))
    .await?;

    if i == 0 {
        async {
            let p = rec.probe(StatementPath::Sqlx, false);
            sqlx::query("SELECT $1::text AS probe, pg_sleep($2)::text")
                .bind(&p)
                .bind(slow.as_secs_f64())
                .execute(db)
                .await?;
            Ok::<_, sqlx::Error>(())
        }
        .instrument(tracing::info_span!("slow_report"))
        .await?;
    }

    let mut tx = db.begin().await?;
    let p = rec.probe(StatementPath::Sqlx, true);
    sqlx::query("UPDATE demo_items SET note = $1 WHERE id = $2").bind(&p).bind(id).execute(&mut tx).await?;
    let p = rec.probe(StatementPath::Sqlx, true);
    sqlx::query("SELECT $1::text AS probe, note FROM demo_items WHERE id = $2")
        .bind(&p)
        .bind(id)
        .fetch_one(&mut tx)
        .await?;
    tx.commit().await
}

// ---------------------------------------------------------------------------------------------------------
// cart: the tokio-postgres wrapper

async fn tokio_postgres_app(conninfo: String, rec: &Recorder, requests: u32) -> Result<(), DemoError> {
    let err = |e: tokio_postgres::Error| DemoError::workload("cart", e);
    let (pg, conn) = tokio_postgres::connect(&conninfo, NoTls).await.map_err(err)?;
    let conn_task = tokio::spawn(conn);
    let config = sqlcommenter_tokio_postgres::Config::builder()
        .application_name("cart")
        .tag("route", "/cart")
        .build()
        .map_err(|e| DemoError::workload("cart", e))?;
    let mut client = sqlcommenter_tokio_postgres::Client::new(pg, &config);
    // Prepared once, outside any request; each execution carries the context of the request running it.
    let stmt = client.prepare("SELECT $1::text AS probe, label FROM demo_items WHERE id = $2").await.map_err(err)?;
    for i in 0..requests {
        let span = tracing::info_span!("POST /cart", app = "cart", cart = i);
        tokio_postgres_request(&mut client, &stmt, rec, i).instrument(span).await.map_err(err)?;
    }
    drop(stmt);
    drop(client);
    let _ = conn_task.await;
    Ok(())
}

async fn tokio_postgres_request(
    client: &mut sqlcommenter_tokio_postgres::Client,
    stmt: &tokio_postgres::Statement,
    rec: &Recorder,
    i: u32,
) -> Result<(), tokio_postgres::Error> {
    let id = i64::from(i) + 1;
    let p = rec.probe(StatementPath::TokioPostgres, false);
    client.query_one(stmt, &[&p, &id]).await?;
    let p = rec.probe(StatementPath::TokioPostgres, false);
    client.query_typed("SELECT $1::text AS probe, now()", &[(&p, Type::TEXT)]).await?;
    let p = rec.probe(StatementPath::TokioPostgres, false);
    client.simple_query(&format!("SELECT '{p}' AS probe")).await?;

    let tx = client.transaction().await?;
    let p = rec.probe(StatementPath::TokioPostgres, true);
    tx.execute("UPDATE demo_items SET note = $1 WHERE id = $2", &[&p, &id]).await?;
    let p = rec.probe(StatementPath::TokioPostgres, true);
    tx.query_one(stmt, &[&p, &id]).await?;
    tx.commit().await
}

// ---------------------------------------------------------------------------------------------------------
// legacy / batch: plain tokio-postgres through the proxy

async fn unmodified_app(proxy: SocketAddr, rec: &Recorder, requests: u32) -> Result<(), DemoError> {
    let err = |e: tokio_postgres::Error| DemoError::workload("legacy", e);
    let conninfo = |app: &str| {
        format!("host={} port={} user=postgres dbname=postgres application_name={app}", proxy.ip(), proxy.port())
    };

    // Requests: the app sets the session context at the start of each request.
    let (mut client, conn) = tokio_postgres::connect(&conninfo("legacy"), NoTls).await.map_err(err)?;
    let conn_task = tokio::spawn(conn);
    let named = client.prepare("SELECT $1::text AS probe, 'named' AS how").await.map_err(err)?;
    for i in 0..requests {
        let span = tracing::info_span!("GET /legacy/report", app = "legacy", report = i);
        async {
            // Without a span there is nothing to hand over (and the statements would count as misses).
            let tp = TraceContext::current_span().map(|c| c.traceparent.to_string()).unwrap_or_default();
            client.simple_query(&format!("SELECT set_config('sqlcommenter.traceparent', '{tp}', false)")).await?;
            proxy_statements(&mut client, &named, rec).await
        }
        .instrument(span)
        .await
        .map_err(err)?;
    }
    drop(named);
    drop(client);
    let _ = conn_task.await;

    // A batch job: its context travels in the startup application_name for the whole connection.
    let err = |e: tokio_postgres::Error| DemoError::workload("batch", e);
    async {
        let ctx = TraceContext::current_span()
            .ok_or_else(|| DemoError::workload("batch", "no current span (tracing not set up)"))?;
        let app = sqlcommenter::carrier::encode_application_name("batch", &ctx.traceparent);
        let (mut client, conn) = tokio_postgres::connect(&conninfo(&app), NoTls).await.map_err(err)?;
        let conn_task = tokio::spawn(conn);
        let named = client.prepare("SELECT $1::text AS probe, 'named' AS how").await.map_err(err)?;
        proxy_statements(&mut client, &named, rec).await.map_err(err)?;
        drop(named);
        drop(client);
        let _ = conn_task.await;
        Ok::<_, DemoError>(())
    }
    .instrument(tracing::info_span!("nightly-batch", app = "batch"))
    .await
}

/// Simple, unnamed extended, named prepared and COPY, outside and then inside a transaction.
async fn proxy_statements(
    client: &mut tokio_postgres::Client,
    named: &tokio_postgres::Statement,
    rec: &Recorder,
) -> Result<(), tokio_postgres::Error> {
    proxy_kinds(client, named, rec, false).await?;
    let tx = client.transaction().await?;
    proxy_kinds(tx.client(), named, rec, true).await?;
    tx.commit().await
}

async fn proxy_kinds(
    c: &tokio_postgres::Client,
    named: &tokio_postgres::Statement,
    rec: &Recorder,
    in_tx: bool,
) -> Result<(), tokio_postgres::Error> {
    let p = rec.probe(StatementPath::ProxySimple, in_tx);
    c.simple_query(&format!("SELECT '{p}' AS probe, 'simple' AS how")).await?;
    let p = rec.probe(StatementPath::ProxyExtended, in_tx);
    c.query_typed("SELECT $1::text AS probe, 'unnamed' AS how", &[(&p, Type::TEXT)]).await?;
    let p = rec.probe(StatementPath::ProxyPrepared, in_tx);
    c.query(named, &[&p]).await?;
    let p = rec.probe(StatementPath::ProxyCopy, in_tx);
    let sink = c.copy_in::<_, Bytes>(&format!("COPY demo_items (id, label) FROM STDIN /* {p} */")).await?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(format!("{}\t{p}\n", row_id(&p)))).await?;
    sink.finish().await?;
    Ok(())
}
