//! Shared workload for the real-PostgreSQL tests.
#![allow(dead_code)]

use sqlcommenter::{carrier, Commenter, TraceContext, TraceParent};
use sqlcommenter_testpg::Cluster;

pub const APP: &str = "workload";
pub const STEPS: u32 = 12;

pub fn tp(step: u32) -> TraceParent {
    let mut trace = [0u8; 16];
    trace[0] = 0xab;
    trace[12..].copy_from_slice(&step.to_be_bytes());
    let mut parent = [0u8; 8];
    parent[0] = 0x11;
    parent[4..].copy_from_slice(&step.to_be_bytes());
    TraceParent::new(trace, parent, 1).unwrap()
}

pub fn trace_hex(step: u32) -> String {
    tp(step).trace_id_hex()
}

/// Runs the workload; returns the steps that went through the application_name carrier.
pub async fn workload(url: &str) -> Vec<u32> {
    let mut cfg: tokio_postgres::Config = url.parse().unwrap();
    cfg.application_name(APP);
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let commenter = Commenter::builder().tag("application", "checkout").tag("route", "/orders").build().unwrap();
    let ctx = |s: u32| TraceContext::new(tp(s));
    client.simple_query("create table if not exists items (id int primary key, name text)").await.unwrap();
    client
        .simple_query("insert into items select g, 'item ' || g from generate_series(1, 1000) g on conflict do nothing")
        .await
        .unwrap();
    // A named prepared statement, prepared once without context (its parse line carries none).
    let named = client.prepare("select name from items where id = $1").await.unwrap();
    let mut carried = Vec::new();
    for step in 1..=STEPS {
        match step % 6 {
            // simple protocol, appended comment
            0 => {
                let sql = format!("select 'step-{step}' as step, count(*) from items where id < {step}");
                client.simple_query(commenter.inject(&sql, Some(&ctx(step))).as_str()).await.unwrap();
            }
            // extended protocol, unnamed statement with a comment
            1 => {
                let sql = format!("select 'step-{step}' as step, name from items where id = $1");
                let q = commenter.inject(&sql, Some(&ctx(step)));
                client.query(q.as_str(), &[&(step as i32)]).await.unwrap();
            }
            // named prepared statement, context through application_name
            2 => {
                let carrier = carrier::encode_application_name(APP, &tp(step));
                if step == 8 {
                    // the drivers' form (sqlcommenter-tokio-postgres): set_config through the extended
                    // protocol with the setting's name as $1, and RESET afterwards
                    client.query("SELECT set_config($1, $2, false)", &[&"application_name", &carrier]).await.unwrap();
                    client.query(&named, &[&(step as i32)]).await.unwrap();
                    client.simple_query("RESET application_name").await.unwrap();
                } else {
                    client.simple_query(&format!("SET application_name = '{carrier}'")).await.unwrap();
                    client.query(&named, &[&(step as i32)]).await.unwrap();
                    client.simple_query(&format!("SET application_name = '{APP}'")).await.unwrap();
                }
                carried.push(step);
            }
            // a slow one
            3 => {
                let sql = format!("select 'step-{step}' as step, pg_sleep(0.06)");
                client.simple_query(commenter.inject(&sql, Some(&ctx(step))).as_str()).await.unwrap();
            }
            // an error
            4 => {
                let sql = format!("select 'step-{step}' as step, 1 / (id - id) from items where id = 1");
                let err = client.simple_query(commenter.inject(&sql, Some(&ctx(step))).as_str()).await;
                assert!(err.is_err());
            }
            // multi-line
            _ => {
                let sql = format!("select 'step-{step}' as step,\n  count(*)\nfrom items\nwhere name like 'item 1%'");
                client.simple_query(commenter.inject(&sql, Some(&ctx(step))).as_str()).await.unwrap();
            }
        }
    }
    client.simple_query("select 'workload-end'").await.unwrap();
    carried
}

pub fn run_workload(pg: &Cluster) -> Vec<u32> {
    pg.create_database("work").unwrap();
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(workload(&pg.url("work")))
}
