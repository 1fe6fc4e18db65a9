//! The terminal report: summary, slowest statement groups, and the propagation-gap tables.

use std::fmt::Write;

use crate::parser::ParseStats;
use crate::report::{Aggregate, SortBy, GAP_DIMENSIONS};
use crate::statement::AssembleStats;
use crate::time::format_rfc3339;

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

fn pct(n: u64, d: u64) -> String {
    if d == 0 {
        "-".into()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / d as f64)
    }
}

/// One-line-per-query text, whitespace collapsed, cut to `max` chars.
pub fn one_line(q: &str, max: usize) -> String {
    let s: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > max {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// Summary lines.
pub fn summary(agg: &Aggregate, parse: &ParseStats, asm: &AssembleStats) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} statements ({} carrier statements left out), {} log lines, {} records, {} unknown lines skipped",
        agg.statements, agg.carriers, parse.lines, parse.records, parse.unknown
    );
    if let Some((a, b)) = agg.time_range {
        let _ = writeln!(s, "time range: {} .. {}", format_rfc3339(a), format_rfc3339(b));
    }
    let c = agg.by_source;
    let _ = writeln!(
        s,
        "trace context: comment {}, application_name {}, none {}  (plans attached: {}, unpaired durations: {})",
        pct(c.comment, c.total()),
        pct(c.application_name, c.total()),
        pct(c.none, c.total()),
        asm.plans_attached,
        asm.unpaired_durations
    );
    s
}

/// The slowest-groups table.
pub fn top_table(agg: &Aggregate, sort: SortBy, limit: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\nSlowest statements by {sort:?} ({} groups):", agg.group_count());
    let _ = writeln!(
        s,
        "{:>3}  {:<9} {:>8} {:>10} {:>10} {:>10} {:>12} {:>6}  query",
        "#", "kind", "count", "p50 ms", "p95 ms", "max ms", "total ms", "ctx"
    );
    for (i, g) in agg.top_groups(sort, limit).iter().enumerate() {
        let _ = writeln!(
            s,
            "{:>3}  {:<9} {:>8} {:>10} {:>10} {:>10} {:>12.3} {:>6}  {}",
            i + 1,
            g.kind.as_str(),
            g.count,
            ms(g.p50()),
            ms(g.p95()),
            if g.timed > 0 { format!("{:.3}", g.max_ms) } else { "-".into() },
            g.total_ms,
            pct(g.with_context, g.count),
            if g.tag.is_empty() && agg.group_tag().is_none() {
                one_line(&g.query, 100)
            } else {
                format!("[{}={}] {}", agg.group_tag().unwrap_or(""), g.tag, one_line(&g.query, 90))
            }
        );
        if !g.exemplars.is_empty() {
            let ex: Vec<String> = g.exemplars.iter().map(|(d, t)| format!("{t} ({d:.3} ms)")).collect();
            let _ = writeln!(s, "     exemplar traces: {}", ex.join(", "));
        }
        if g.errors > 0 {
            let _ = writeln!(s, "     errors: {}", g.errors);
        }
    }
    s
}

/// The propagation-gap tables.
pub fn gaps_table(agg: &Aggregate, limit: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\nPropagation gaps (statements without trace context first):");
    for (dim, name) in GAP_DIMENSIONS.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {:<40} {:>9} {:>9} {:>9} {:>9} {:>8}",
            format!("by {name}"),
            "total",
            "comment",
            "app_name",
            "none",
            "with ctx"
        );
        for (v, c) in agg.gaps(dim).into_iter().take(limit) {
            let label = if v.is_empty() { "(empty)".to_owned() } else { one_line(v, 40) };
            let _ = writeln!(
                s,
                "    {:<38} {:>9} {:>9} {:>9} {:>9} {:>8}",
                label,
                c.total(),
                c.comment,
                c.application_name,
                c.none,
                format!("{:.1}%", c.share() * 100.0)
            );
        }
    }
    s
}
