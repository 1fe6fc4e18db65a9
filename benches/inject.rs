//! Criterion benches for the comment engine. Each group holds a baseline beside the measured operation:
//! `format!` of the query and an already-built comment, which is the least any injector must do.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sqlcommenter::{lexer, parse_tags, Commenter, Dialect, TraceContext};

const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TS: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

fn commenter() -> Commenter {
    Commenter::builder()
        .tag("application", "checkout")
        .tag("db_driver", "sqlx:0.9.0")
        .tag("route", "/api/orders/{id}")
        .tag("action", "get_order")
        .build()
        .expect("valid configuration")
}

fn query_150() -> String {
    let q = "SELECT o.id, o.status, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id \
             WHERE o.id = $1 AND o.tenant = 'acme' ORDER BY 1;";
    assert!((140..=160).contains(&q.len()), "{}", q.len());
    q.to_string()
}

fn query_10k() -> String {
    let mut q = String::from("SELECT id FROM orders WHERE id IN (");
    let mut i = 0;
    while q.len() < 10_000 {
        q.push_str(&format!("{i}, 'v{i}''x', "));
        i += 1;
    }
    q.push_str("0) /* big list */;");
    q
}

/// A 1 MB multi-statement script with strings, dollar quotes, comments and identifiers.
fn script_1m() -> String {
    let block = "-- migration step\nCREATE TABLE IF NOT EXISTS \"Orders\" (id bigint PRIMARY KEY, note text DEFAULT 'it''s');\n\
                 INSERT INTO \"Orders\" VALUES (1, E'a\\'b'), (2, $$x;y$$);\n/* block /* nested */ comment */\n\
                 CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END $body$ LANGUAGE plpgsql;\n\
                 UPDATE \"Orders\" SET note = 'done' WHERE id = 2; SELECT count(*) FROM \"Orders\" WHERE note <> '';\n";
    let mut s = String::with_capacity(1 << 20);
    while s.len() < (1 << 20) {
        s.push_str(block);
    }
    s
}

fn bench_inject(c: &mut Criterion) {
    let commenter = commenter();
    let ctx = TraceContext::from_headers(TP, Some(TS)).expect("valid context");
    let prebuilt = commenter.comment(Some(&ctx));
    for (name, sql) in [("150B", query_150()), ("10KB", query_10k())] {
        let mut g = c.benchmark_group(format!("inject_{name}"));
        g.throughput(Throughput::Bytes(sql.len() as u64));
        g.bench_function("baseline_format", |b| b.iter(|| format!("{} {}", black_box(&sql), black_box(&prebuilt))));
        g.bench_function("inject", |b| {
            b.iter(|| commenter.inject(black_box(&sql), black_box(Some(&ctx))).into_cow().into_owned())
        });
        g.finish();
    }
}

fn bench_lexer(c: &mut Criterion) {
    let script = script_1m();
    let mut g = c.benchmark_group("lexer_1MB");
    g.throughput(Throughput::Bytes(script.len() as u64));
    g.bench_function("shape", |b| b.iter(|| lexer::shape(black_box(&script), Dialect::Postgres)));
    g.bench_function("tokens", |b| b.iter(|| lexer::tokenize(black_box(&script), Dialect::Postgres).count()));
    g.bench_function(BenchmarkId::new("inject", "1MB"), |b| {
        let commenter = commenter();
        let ctx = TraceContext::from_headers(TP, None).expect("valid context");
        b.iter(|| commenter.inject(black_box(&script), Some(&ctx)).skipped())
    });
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let commenter = commenter();
    let ctx = TraceContext::from_headers(TP, Some(TS)).expect("valid context");
    let sql = commenter.inject(&query_150(), Some(&ctx)).into_cow().into_owned();
    let mut g = c.benchmark_group("parse_back");
    g.throughput(Throughput::Bytes(sql.len() as u64));
    g.bench_function("parse_tags", |b| b.iter(|| parse_tags(black_box(&sql), Dialect::Postgres)));
    g.bench_function("parse_context", |b| b.iter(|| sqlcommenter::parse_context(black_box(&sql), Dialect::Postgres)));
    g.finish();
}

criterion_group!(benches, bench_inject, bench_lexer, bench_parse);
criterion_main!(benches);
