//! Interleaved ratio bench: the baseline (`format!` of the query and an already-built comment) and
//! `Commenter::inject` run alternately in rounds, so load changes on a shared machine hit both alike.
//! Prints the median per-round ratio with min and max, plus the lexer's throughput on a 1 MB script.
//! Run with `cargo bench -p sqlcommenter --bench ratio`.

use std::hint::black_box;
use std::time::Instant;

use sqlcommenter::{lexer, Dialect, TraceContext};

#[path = "inputs.rs"]
mod inputs;

fn time<F: FnMut() -> usize>(iters: usize, mut f: F) -> f64 {
    let start = Instant::now();
    let mut sink = 0usize;
    for _ in 0..iters {
        sink = sink.wrapping_add(f());
    }
    black_box(sink);
    start.elapsed().as_secs_f64() / iters as f64
}

fn summary(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let commenter = inputs::commenter();
    let ctx = TraceContext::from_headers(inputs::TP, Some(inputs::TS)).expect("valid context");
    let prebuilt = commenter.comment(Some(&ctx));
    let rounds = 31;
    for (name, sql) in [("150 B query", inputs::query_150()), ("10 KB query", inputs::query_10k())] {
        let iters = (20_000_000 / sql.len()).clamp(1_000, 200_000);
        let mut ratios = Vec::new();
        let mut base_ns = Vec::new();
        let mut inject_ns = Vec::new();
        for _ in 0..rounds {
            let b = time(iters, || format!("{} {}", black_box(&sql), black_box(&prebuilt)).len());
            let i = time(iters, || commenter.inject(black_box(&sql), black_box(Some(&ctx))).into_cow().len());
            ratios.push(i / b);
            base_ns.push(b * 1e9);
            inject_ns.push(i * 1e9);
        }
        let (r, rmin, rmax) = summary(ratios);
        println!(
            "inject {name}: {:.0} ns vs baseline {:.0} ns -> ratio median {r:.2}x (min {rmin:.2}, max {rmax:.2}; target <= 1.5x)",
            summary(inject_ns).0,
            summary(base_ns).0
        );
    }
    let script = inputs::script_1m();
    let mut gbps = Vec::new();
    for _ in 0..rounds {
        let t = time(5, || lexer::shape(black_box(&script), Dialect::Postgres).append_at.unwrap_or(0));
        gbps.push(script.len() as f64 / t / 1e9);
    }
    let (m, lo, hi) = summary(gbps);
    println!("lexer (shape) on a 1 MB script: median {m:.2} GB/s (min {lo:.2}, max {hi:.2}; target >= 1 GB/s)");
    let mut allocs_ok = true;
    let out = commenter.inject(&inputs::query_150(), Some(&ctx)).into_cow().into_owned();
    if out.capacity() != out.len() {
        allocs_ok = false;
    }
    println!("inject allocates exactly once, exact size: {allocs_ok}");
}
