//! `--html FILE`: one self-contained page (no scripts, no external resources), templated with maud (which
//! escapes every value): the summary, a timeline of statements per second with p50/p95/max duration, the
//! top queries by total time, the slowest-statements table (the same [`TopRow`]s as the terminal), a
//! waterfall per slowest trace (its statements on a time axis, auto_explain plan nodes below each), and
//! the propagation-gap tables. Everything comes from bounded aggregates, whatever the log's size.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::parser::ParseStats;
use crate::report::{fmt_ms, fmt_pct, Aggregate, SortBy, TimeBin, TopRow, TraceRows, GAP_DIMENSIONS};
use crate::statement::AssembleStats;
use crate::text::one_line;
use crate::time::format_rfc3339;

/// Bins of the timeline chart.
const TIME_BINS: usize = 120;
/// Traces drawn as waterfalls.
const WATERFALLS: usize = 5;

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    html! { (s) }.into_string()
}

/// The trace link from a template with `{trace_id}`.
fn trace_link(template: Option<&str>, trace_id: &str) -> Markup {
    html! {
        @match template {
            Some(t) => a.trace href=(t.replace("{trace_id}", trace_id)) { (trace_id) },
            None => code.trace { (trace_id) },
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222}\
table{border-collapse:collapse;margin:8px 0 24px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}\
td.q{text-align:left;font-family:monospace;max-width:700px}th{background:#f3f3f3}h2{margin-top:32px}.none{color:#b00}\
svg text{font-size:11px;fill:#333}.waterfall{margin:12px 0 28px}.legend span{margin-right:16px}";

fn axis_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// A line of the timeline: CSS class, colour, value of a bin.
type Series = (&'static str, &'static str, fn(&TimeBin) -> Option<f64>);

/// Statements per second as bars (left axis) and p50/p95/max duration as lines with points (right axis).
fn time_chart(bins: &[TimeBin]) -> Markup {
    let (w, h, left, right, top, bottom) = (960.0, 300.0, 60.0, 70.0, 20.0, 40.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let rate = |b: &TimeBin| b.count as f64 / (b.width_us.max(1) as f64 / 1e6);
    let max_rate = bins.iter().map(rate).fold(0.0, f64::max).max(1e-9);
    let max_ms = bins.iter().filter_map(|b| b.max).fold(0.0, f64::max).max(0.001);
    let n = bins.len().max(1) as f64;
    let bw = pw / n;
    let x = |i: usize| left + i as f64 * bw + bw / 2.0;
    let y_ms = |v: f64| top + ph - v / max_ms * ph;
    // One polyline per run of bins with statements: no line is drawn across an empty stretch.
    let runs = |f: fn(&TimeBin) -> Option<f64>| -> Vec<String> {
        let mut out: Vec<Vec<String>> = vec![Vec::new()];
        for (i, b) in bins.iter().enumerate() {
            match f(b) {
                Some(v) => out.last_mut().into_iter().for_each(|r| r.push(format!("{:.1},{:.1}", x(i), y_ms(v)))),
                None if out.last().is_some_and(|r| !r.is_empty()) => out.push(Vec::new()),
                None => {}
            }
        }
        out.into_iter().filter(|r| r.len() > 1).map(|r| r.join(" ")).collect()
    };
    let series: [Series; 3] = [
        ("series-p50", "#5bc0de", |b| b.p50),
        ("series-p95", "#0275d8", |b| b.p95),
        ("series-max", "#d9534f", |b| b.max),
    ];
    let (t0, t1) = match (bins.first(), bins.last()) {
        (Some(a), Some(b)) => (a.start_us, b.start_us + b.width_us),
        _ => (0, 0),
    };
    html! {
        svg #chart-time xmlns="http://www.w3.org/2000/svg" width=(w) height=(h) role="img"
            aria-label="statements per second and duration percentiles over time" {
            rect width="100%" height="100%" fill="#fff" {}
            @if bins.is_empty() {
                text x="20" y="40" { "no timed statements" }
            } @else {
                @for (i, b) in bins.iter().enumerate() {
                    @let r = rate(b);
                    @let bh = r / max_rate * ph;
                    rect.rate x=(format!("{:.1}", left + i as f64 * bw + 0.5)) y=(format!("{:.1}", top + ph - bh))
                        width=(format!("{:.1}", (bw - 1.0).max(0.5))) height=(format!("{bh:.1}")) fill="#c8e6c9" {
                        title { (format_rfc3339(b.start_us)) ": " (b.count) " statements (" (format!("{r:.1}")) "/s), p50 "
                            (fmt_ms(b.p50)) " ms, p95 " (fmt_ms(b.p95)) " ms, max " (fmt_ms(b.max)) " ms" }
                    }
                }
                @for (class, color, f) in series {
                    @for points in runs(f) {
                        polyline class=(class) fill="none" stroke=(color) stroke-width="1.5" points=(points) {}
                    }
                    @for (i, b) in bins.iter().enumerate() {
                        @if let Some(v) = f(b) {
                            circle class=(format!("dot {class}")) cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y_ms(v)))
                                r="1.8" fill=(color) {}
                        }
                    }
                }
                @for (i, b) in bins.iter().enumerate() {
                    @if let Some(m) = b.max {
                        circle.point cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y_ms(m))) r="2.5" fill="#d9534f" {
                            title { (format_rfc3339(b.start_us)) ": max " (fmt_ms(Some(m))) " ms" }
                        }
                    }
                }
                line x1=(left) y1=(top + ph) x2=(left + pw) y2=(top + ph) stroke="#333" {}
                line x1=(left) y1=(top) x2=(left) y2=(top + ph) stroke="#333" {}
                line x1=(left + pw) y1=(top) x2=(left + pw) y2=(top + ph) stroke="#333" {}
                text x="4" y=(top + 4.0) { (format!("{max_rate:.1}/s")) }
                text x="4" y=(top + ph) { "0/s" }
                text x=(left + pw + 4.0) y=(top + 4.0) { (axis_ms(max_ms)) }
                text x=(left + pw + 4.0) y=(top + ph / 2.0) { (axis_ms(max_ms / 2.0)) }
                text x=(left + pw + 4.0) y=(top + ph) { "0 ms" }
                text x=(left) y=(h - 18.0) { (format_rfc3339(t0)) }
                text x=(left + pw) y=(h - 18.0) text-anchor="end" { (format_rfc3339(t1)) }
                text x=(left + pw / 2.0) y=(h - 18.0) text-anchor="middle" {
                    (format!("{} bins of {:.3} s", bins.len(), bins[0].width_us as f64 / 1e6))
                }
            }
        }
        p.legend {
            span style="color:#5a9e5d" { "■ statements per second (left axis)" }
            @for (class, color, _) in series {
                span style=(format!("color:{color}")) { "— " (class.trim_start_matches("series-")) " duration (right axis)" }
            }
        }
    }
}

fn top_chart(agg: &Aggregate) -> Markup {
    let groups: Vec<_> = agg.top_groups(SortBy::Total, 10).into_iter().filter(|g| g.timed > 0).collect();
    let (w, bar, gap, label_w) = (960.0, 18.0, 6.0, 420.0);
    let h = 20.0 + groups.len() as f64 * (bar + gap);
    let max = groups.iter().map(|g| g.total_ms).fold(0.0f64, f64::max).max(0.001);
    html! {
        svg #chart-top xmlns="http://www.w3.org/2000/svg" width=(w) height=(h) role="img" aria-label="top queries by total time" {
            rect width="100%" height="100%" fill="#fff" {}
            @for (i, g) in groups.iter().enumerate() {
                @let y = 10.0 + i as f64 * (bar + gap);
                @let bw = g.total_ms / max * (w - label_w - 90.0);
                text x="4" y=(format!("{:.1}", y + 13.0)) { title { (g.query) } (one_line(&g.query, 60)) }
                rect.bar x=(label_w) y=(format!("{y:.1}")) width=(format!("{bw:.1}")) height=(bar) fill="#5cb85c" {}
                text x=(format!("{:.1}", label_w + bw + 4.0)) y=(format!("{:.1}", y + 13.0)) { (format!("{:.1} ms", g.total_ms)) }
            }
        }
    }
}

/// One trace's statements on a time axis; each statement's plan nodes in the rows below it.
fn waterfall(t: &TraceRows, trace_url: Option<&str>) -> Markup {
    let t0 = t.steps.iter().map(|s| s.start_us).min().unwrap_or(0);
    let t1 = t.steps.iter().map(|s| s.start_us + (s.duration_ms * 1000.0) as i64).max().unwrap_or(t0).max(t0 + 1);
    let rows: usize = t.steps.iter().map(|s| 1 + s.plan.len()).sum();
    let (w, label_w, row_h) = (960.0, 420.0, 18.0);
    let pw = w - label_w - 80.0;
    let h = 24.0 + rows as f64 * row_h;
    let x = |us: i64| label_w + (us - t0) as f64 / (t1 - t0) as f64 * pw;
    // The top of each statement's row and of its plan nodes' rows.
    let mut next = (0..).map(|row| 20.0 + row as f64 * row_h);
    let layout: Vec<(f64, Vec<f64>)> = t
        .steps
        .iter()
        .map(|s| (next.next().unwrap_or(0.0), s.plan.iter().filter_map(|_| next.next()).collect()))
        .collect();
    html! {
        div.waterfall data-trace-id=(t.trace_id) {
            h3 { "trace " (trace_link(trace_url, &t.trace_id)) ": " (t.steps.len())
                (if t.steps.len() == 1 { " statement, " } else { " statements, " })
                (format!("{:.3}", t.db_ms)) " ms in the database over " (format!("{:.3}", (t1 - t0) as f64 / 1000.0)) " ms" }
            svg xmlns="http://www.w3.org/2000/svg" width=(w) height=(h) role="img" aria-label="trace waterfall" {
                rect width="100%" height="100%" fill="#fff" {}
                text x=(label_w) y="12" { "+0 ms" }
                text x=(label_w + pw) y="12" text-anchor="end" { (format!("+{:.3} ms", (t1 - t0) as f64 / 1000.0)) }
                @for (s, (y, plan_ys)) in t.steps.iter().zip(&layout) {
                    @let y = *y;
                    @let (sx, sw) = (x(s.start_us), ((s.duration_ms * 1000.0) / (t1 - t0) as f64 * pw).max(1.0));
                    g.step {
                        text x="4" y=(format!("{:.1}", y + 12.0)) { title { (s.query) } (s.kind.as_str()) " " (one_line(&s.query, 56)) }
                        rect x=(format!("{sx:.1}")) y=(format!("{y:.1}")) width=(format!("{sw:.1}")) height=(row_h - 4.0)
                            fill=(if s.error { "#d9534f" } else { "#0275d8" }) {
                            title { (fmt_ms(Some(s.duration_ms))) " ms, parent span " (s.parent_span) }
                        }
                        text x=(format!("{:.1}", sx + sw + 4.0)) y=(format!("{:.1}", y + 12.0)) { (fmt_ms(Some(s.duration_ms))) " ms" }
                    }
                    @let step_end = sx + sw;
                    @for ((depth, label, node_ms), y) in s.plan.iter().zip(plan_ys) {
                        @let y = *y;
                        @let nw = node_ms.map_or(sw, |m| (m * 1000.0 / (t1 - t0) as f64 * pw).clamp(1.0, sw));
                        g.plan-node {
                            text x=(format!("{:.1}", 16.0 + *depth as f64 * 10.0)) y=(format!("{:.1}", y + 11.0)) { "↳ " (label) }
                            rect x=(format!("{:.1}", step_end - nw)) y=(format!("{:.1}", y + 3.0)) width=(format!("{nw:.1}"))
                                height=(row_h - 8.0) fill="#f0ad4e" {
                                title { (label) ": " (fmt_ms(*node_ms)) " ms" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The slowest-statements table (the same rows and cells as the terminal's).
pub fn top_table(rows: &[TopRow], trace_url: Option<&str>) -> String {
    html! {
        table #top-queries {
            thead { tr { th { "#" } th { "kind" } th { "count" } th { "p50 ms" } th { "p95 ms" } th { "max ms" }
                th { "total ms" } th { "with context" } th { "query" } th { "exemplar traces" } } }
            tbody {
                @for r in rows {
                    tr {
                        td { (r.rank) } td { (r.kind.as_str()) } td { (r.count) } td { (fmt_ms(r.p50)) } td { (fmt_ms(r.p95)) }
                        td { (fmt_ms(r.max)) } td { (fmt_ms(r.total)) } td { (fmt_pct(r.with_context, r.count)) }
                        td.q {
                            @if let Some((k, v)) = &r.tag { b { (k) "=" (v) } " " }
                            (r.query)
                        }
                        td.q {
                            @for (i, (d, t)) in r.exemplars.iter().enumerate() {
                                @if i > 0 { br; }
                                (trace_link(trace_url, t)) (format!(" ({d:.3} ms)"))
                            }
                        }
                    }
                }
            }
        }
    }
    .into_string()
}

/// Renders the whole page.
pub fn render(
    agg: &Aggregate,
    parse: &ParseStats,
    asm: &AssembleStats,
    trace_url: Option<&str>,
    sort: SortBy,
    limit: usize,
) -> String {
    let m = agg.summary(parse, asm);
    let c = m.by_source;
    let traces = agg.slowest_traces(WATERFALLS);
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "sqlcommenter logs report" } style { (PreEscaped(STYLE)) } }
            body {
                h1 { "PostgreSQL statements and traces" }
                section #summary {
                    p { span #statement-count { (m.statements) } " statements (" (m.carriers) " carrier statements left out), "
                        (m.lines) " log lines, " (m.unknown) " unknown lines skipped"
                        @if m.foreign > 0 { ", " (m.foreign) " lines of other programs" } "." }
                    p { "Trace context: " span #ctx-comment { (c.comment) } " from comments, " span #ctx-app { (c.application_name) }
                        " from application_name, " span #ctx-none { (c.none) } " without. auto_explain plans attached: "
                        (m.plans_attached) "." }
                    @if let Some((a, b)) = m.time_range { p { "From " (format_rfc3339(a)) " to " (format_rfc3339(b)) "." } }
                }
                h2 { "Statements per second and duration over time" }
                (time_chart(&agg.timeline(TIME_BINS)))
                h2 { "Top queries by total time" }
                (top_chart(agg))
                h2 { "Slowest statements (by " (format!("{sort:?}")) ")" }
                (PreEscaped(top_table(&agg.top_rows(sort, limit), trace_url)))
                h2 { "Slowest traces" }
                section #waterfalls {
                    @if traces.is_empty() { p { "No statement with trace context." } }
                    @for t in &traces { (waterfall(t, trace_url)) }
                }
                h2 { "Propagation gaps" }
                section #gaps {
                    @for (dim, name) in GAP_DIMENSIONS.iter().enumerate() {
                        h3 { "By " (name) }
                        table.gap data-dimension=(name) {
                            thead { tr { th { (name) } th { "total" } th { "comment" } th { "application_name" } th { "none" } th { "with context" } } }
                            tbody {
                                @for (v, c) in agg.gaps(dim).into_iter().take(limit) {
                                    tr {
                                        td.q { (if v.is_empty() { "(empty)" } else { v }) }
                                        td { (c.total()) } td { (c.comment) } td { (c.application_name) } td.none { (c.none) }
                                        td { (fmt_pct(c.comment + c.application_name, c.total())) }
                                    }
                                }
                            }
                        }
                    }
                }
                footer { p { "Generated by sqlcommenter logs." } }
            }
        }
    }
    .into_string()
}
