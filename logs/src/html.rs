//! `--html FILE`: one self-contained page (no scripts, no external resources): summary, inline SVG charts
//! of duration over time and of the top queries, the top-queries table with exemplar trace links, and the
//! propagation-gap tables.

use std::fmt::Write;

use crate::parser::ParseStats;
use crate::report::{fmt_ms, fmt_pct, Aggregate, SortBy, TopRow, GAP_DIMENSIONS};
use crate::statement::AssembleStats;
use crate::text::one_line;
use crate::time::format_rfc3339;

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// A trace link from a template with `{trace_id}`.
pub fn trace_link(template: Option<&str>, trace_id: &str) -> String {
    match template {
        Some(t) => {
            format!("<a class=\"trace\" href=\"{}\">{}</a>", esc(&t.replace("{trace_id}", trace_id)), esc(trace_id))
        }
        None => format!("<code class=\"trace\">{}</code>", esc(trace_id)),
    }
}

fn time_chart(agg: &Aggregate) -> String {
    let (series, width_us) = agg.series();
    let (w, h, pad) = (900.0, 260.0, 50.0);
    let mut s = format!(
        "<svg id=\"chart-time\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"duration over time\"><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>"
    );
    let points: Vec<_> = series.iter().filter(|p| p.count > 0).collect();
    if points.is_empty() {
        s.push_str("<text x=\"20\" y=\"40\">no timed statements</text></svg>");
        return s;
    }
    let t0 = series.first().map_or(0, |p| p.start_us);
    let t1 = series.last().map_or(0, |p| p.start_us) + width_us;
    let ymax = points.iter().map(|p| p.max_ms).fold(0.0f64, f64::max).max(0.001);
    let x = |t: i64| pad + (t - t0) as f64 / (t1 - t0).max(1) as f64 * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / ymax * (h - 2.0 * pad);
    let _ = write!(
        s,
        "<line x1=\"{pad}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#333\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{0}\" stroke=\"#333\"/>",
        h - pad,
        w - pad
    );
    let _ = write!(s, "<text x=\"4\" y=\"{}\" font-size=\"11\">{ymax:.1} ms</text>", pad + 4.0);
    let _ = write!(s, "<text x=\"4\" y=\"{}\" font-size=\"11\">0</text>", h - pad);
    let _ = write!(s, "<text x=\"{pad}\" y=\"{}\" font-size=\"11\">{}</text>", h - pad + 18.0, format_rfc3339(t0));
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
        w - pad,
        h - pad + 18.0,
        format_rfc3339(t1)
    );
    let mut max_line = String::new();
    let mut avg_line = String::new();
    let mut dots = String::new();
    for p in &points {
        let cx = x(p.start_us + width_us / 2);
        let avg = p.total_ms / p.count as f64;
        let _ = write!(max_line, "{cx:.1},{:.1} ", y(p.max_ms));
        let _ = write!(avg_line, "{cx:.1},{:.1} ", y(avg));
        let _ = write!(
            dots,
            "<circle class=\"point\" cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#d9534f\"><title>{}: {} statements, max {:.3} ms, avg {avg:.3} ms</title></circle>",
            y(p.max_ms),
            format_rfc3339(p.start_us),
            p.count,
            p.max_ms
        );
    }
    s.push_str(&dots);
    let _ = write!(
        s,
        "<polyline class=\"series-max\" fill=\"none\" stroke=\"#d9534f\" stroke-width=\"1.5\" points=\"{max_line}\"/>\
         <polyline class=\"series-avg\" fill=\"none\" stroke=\"#0275d8\" stroke-width=\"1.5\" points=\"{avg_line}\"/>"
    );
    let _ = write!(
        s,
        "<text x=\"{0}\" y=\"20\" font-size=\"12\" fill=\"#d9534f\" text-anchor=\"end\">max</text>\
         <text x=\"{0}\" y=\"36\" font-size=\"12\" fill=\"#0275d8\" text-anchor=\"end\">average</text></svg>",
        w - pad
    );
    s
}

fn top_chart(agg: &Aggregate) -> String {
    let groups = agg.top_groups(SortBy::Total, 10);
    let (w, bar, gap, label_w) = (900.0, 18.0, 6.0, 420.0);
    let h = 20.0 + groups.len() as f64 * (bar + gap);
    let mut s = format!(
        "<svg id=\"chart-top\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"top queries by total time\"><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>"
    );
    let max = groups.iter().map(|g| g.total_ms).fold(0.0f64, f64::max).max(0.001);
    let groups: Vec<_> = groups.into_iter().filter(|g| g.timed > 0).collect();
    for (i, g) in groups.iter().enumerate() {
        let y = 10.0 + i as f64 * (bar + gap);
        let bw = g.total_ms / max * (w - label_w - 90.0);
        let _ = write!(
            s,
            "<text x=\"4\" y=\"{:.1}\" font-size=\"11\"><title>{}</title>{}</text>\
             <rect class=\"bar\" x=\"{label_w}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bar}\" fill=\"#5cb85c\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{:.1} ms</text>",
            y + 13.0,
            esc(&g.query),
            esc(&one_line(&g.query, 60)),
            label_w + bw + 4.0,
            y + 13.0,
            g.total_ms
        );
    }
    s.push_str("</svg>");
    s
}

/// The slowest-statements table (the same rows and cells as the terminal's).
pub fn top_table(rows: &[TopRow], trace_url: Option<&str>) -> String {
    let mut s = String::from(
        "<table id=\"top-queries\"><thead><tr><th>#</th><th>kind</th><th>count</th><th>p50 ms</th><th>p95 ms</th>\
         <th>max ms</th><th>total ms</th><th>with context</th><th>query</th><th>exemplar traces</th></tr></thead><tbody>",
    );
    for r in rows {
        let ex: Vec<String> =
            r.exemplars.iter().map(|(d, t)| format!("{} ({d:.3} ms)", trace_link(trace_url, t))).collect();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"q\">{}</td><td class=\"q\">{}</td></tr>",
            r.rank,
            r.kind.as_str(),
            r.count,
            fmt_ms(r.p50),
            fmt_ms(r.p95),
            fmt_ms(r.max),
            fmt_ms(r.total),
            fmt_pct(r.with_context, r.count),
            match &r.tag {
                Some((k, v)) => format!("<b>{}={}</b> {}", esc(k), esc(v), esc(&r.query)),
                None => esc(&r.query),
            },
            ex.join("<br>")
        );
    }
    s.push_str("</tbody></table>");
    s
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
    let mut s = String::new();
    s.push_str(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sqlcommenter logs report</title>\
         <style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 24px}\
         td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}td.q{text-align:left;font-family:monospace;max-width:700px}\
         th{background:#f3f3f3}h2{margin-top:32px}.none{color:#b00}</style></head><body>",
    );
    s.push_str("<h1>PostgreSQL statements and traces</h1>");
    let m = agg.summary(parse, asm);
    let c = m.by_source;
    let _ = write!(
        s,
        "<section id=\"summary\"><p><span id=\"statement-count\">{}</span> statements \
         ({} carrier statements left out), {} log lines, {} unknown lines skipped{}.</p>\
         <p>Trace context: <span id=\"ctx-comment\">{}</span> from comments, <span id=\"ctx-app\">{}</span> from \
         application_name, <span id=\"ctx-none\">{}</span> without. auto_explain plans attached: {}.</p>",
        m.statements,
        m.carriers,
        m.lines,
        m.unknown,
        if m.foreign > 0 { format!(", {} lines of other programs", m.foreign) } else { String::new() },
        c.comment,
        c.application_name,
        c.none,
        m.plans_attached
    );
    if let Some((a, b)) = m.time_range {
        let _ = write!(s, "<p>From {} to {}.</p>", format_rfc3339(a), format_rfc3339(b));
    }
    s.push_str("</section>");
    s.push_str("<h2>Duration over time</h2>");
    s.push_str(&time_chart(agg));
    s.push_str("<h2>Top queries by total time</h2>");
    s.push_str(&top_chart(agg));
    let _ = write!(s, "<h2>Slowest statements (by {sort:?})</h2>");
    s.push_str(&top_table(&agg.top_rows(sort, limit), trace_url));
    s.push_str("<h2>Propagation gaps</h2><section id=\"gaps\">");
    for (dim, name) in GAP_DIMENSIONS.iter().enumerate() {
        let _ = write!(
            s,
            "<h3>By {name}</h3><table class=\"gap\" data-dimension=\"{name}\"><thead><tr><th>{name}</th><th>total</th><th>comment</th><th>application_name</th><th>none</th><th>with context</th></tr></thead><tbody>"
        );
        for (v, c) in agg.gaps(dim).into_iter().take(limit) {
            let label = if v.is_empty() { "(empty)" } else { v };
            let _ = write!(
                s,
                "<tr><td class=\"q\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"none\">{}</td><td>{}</td></tr>",
                esc(label),
                c.total(),
                c.comment,
                c.application_name,
                c.none,
                fmt_pct(c.comment + c.application_name, c.total())
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section><footer><p>Generated by sqlcommenter logs.</p></footer></body></html>\n");
    s
}
