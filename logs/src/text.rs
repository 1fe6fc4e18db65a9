//! The terminal report: summary, slowest statement groups, and the propagation-gap tables.

use std::fmt::Write;

use crate::parser::ParseStats;
use crate::report::{fmt_ms as ms, fmt_pct as pct, Aggregate, SortBy, GAP_DIMENSIONS};
use crate::statement::AssembleStats;
use crate::time::format_rfc3339;

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
    let m = agg.summary(parse, asm);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} statements ({} carrier statements left out), {} log lines, {} records, {} unknown lines skipped{}",
        m.statements,
        m.carriers,
        m.lines,
        m.records,
        m.unknown,
        if m.foreign > 0 { format!(", {} lines of other programs", m.foreign) } else { String::new() }
    );
    if let Some((a, b)) = m.time_range {
        let _ = writeln!(s, "time range: {} .. {}", format_rfc3339(a), format_rfc3339(b));
    }
    let c = m.by_source;
    let _ = writeln!(
        s,
        "trace context: comment {}, application_name {}, none {}  (plans attached: {}, unpaired durations: {})",
        pct(c.comment, c.total()),
        pct(c.application_name, c.total()),
        pct(c.none, c.total()),
        m.plans_attached,
        m.unpaired_durations
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
    for r in agg.top_rows(sort, limit) {
        let _ = writeln!(
            s,
            "{:>3}  {:<9} {:>8} {:>10} {:>10} {:>10} {:>12} {:>6}  {}",
            r.rank,
            r.kind.as_str(),
            r.count,
            ms(r.p50),
            ms(r.p95),
            ms(r.max),
            ms(r.total),
            pct(r.with_context, r.count),
            match &r.tag {
                None => one_line(&r.query, 100),
                Some((k, v)) => format!("[{k}={v}] {}", one_line(&r.query, 90)),
            }
        );
        if !r.exemplars.is_empty() {
            let ex: Vec<String> = r.exemplars.iter().map(|(d, t)| format!("{t} ({d:.3} ms)")).collect();
            let _ = writeln!(s, "     exemplar traces: {}", ex.join(", "));
        }
        if r.errors > 0 {
            let _ = writeln!(s, "     errors: {}", r.errors);
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
                pct(c.comment + c.application_name, c.total())
            );
        }
    }
    s
}
