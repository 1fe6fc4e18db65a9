//! Criterion benches for the comment engine. Each group holds a baseline beside the measured operation:
//! `format!` of the query and an already-built comment, which is the least any injector must do.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sqlcommenter::{lexer, parse_tags, Dialect, TraceContext};

#[path = "inputs.rs"]
mod inputs;
use inputs::{commenter, query_10k, query_150, script_1m, TP, TS};

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
