//! An unmodified application: plain tokio-postgres, no sqlcommenter code. Point `DATABASE_URL` at the proxy
//! and every statement reaches PostgreSQL with trace context.
//!
//! ```text
//! sqlcommenter proxy --listen 127.0.0.1:6432 --upstream postgres://127.0.0.1:5432 &
//! DATABASE_URL=postgres://postgres@127.0.0.1:6432/postgres cargo run -p sqlcommenter-demo --example unmodified_app
//! ```
//! It prints what the server saw: `current_query()` shows the comment the proxy added to simple and unnamed
//! extended statements; `current_setting('application_name')` shows the carrier the proxy set for a named
//! prepared statement. Without a context from the client, the proxy starts a new trace per transaction.
//!
//! Handing over a context without code changes: a scheduler or wrapper script that knows the job's
//! traceparent puts it in the application name (`PGAPPNAME=nightly@00-<trace>-<span>-01`; the name is cut to 7 bytes to fit PostgreSQL's 63, here via the
//! `TRACEPARENT` variable), and the proxy uses it for the whole session.

use anyhow::{Context, Result};
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:6432/postgres".into());
    let mut config: tokio_postgres::Config = url.parse().context("DATABASE_URL")?;
    let name = config.get_application_name().unwrap_or("legacy").to_owned();
    match std::env::var("TRACEPARENT") {
        // `name@traceparent` (at most 63 bytes): the format the proxy reads from the startup packet.
        Ok(tp) if !tp.is_empty() => config.application_name(format!("{name}@{tp}")),
        _ => config.application_name(name),
    };
    let (client, connection) = config.connect(NoTls).await.context("connecting")?;
    let conn = tokio::spawn(connection);

    let rows = client.simple_query("SELECT current_query()").await?;
    for msg in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
            println!("simple query, server saw:      {}", row.get(0).unwrap_or(""));
        }
    }
    let row = client.query_typed_one("SELECT current_query()", &[]).await?;
    println!("unnamed extended, server saw:  {}", row.get::<_, String>(0));
    let stmt = client.prepare_typed("SELECT current_setting('application_name'), $1::int", &[Type::INT4]).await?;
    for i in 1..=2 {
        let row = client.query_one(&stmt, &[&i]).await?;
        println!("named prepared #{i}, carrier:    {}", row.get::<_, String>(0));
    }
    drop(stmt);
    drop(client);
    conn.await??;
    Ok(())
}
