//! One trace as a tree: the application's spans (from the in-memory exporter) with the database statements
//! the server logged under each span (from the log correlation), with their server-side durations.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_sdk::trace::SpanData;
use sqlcommenter_logs::{Kind, Statement};

enum Item<'a> {
    Span(&'a SpanData),
    Stmt(&'a Statement),
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Item<'_> {
    fn start_us(&self) -> i64 {
        match self {
            Item::Span(s) => micros(s.start_time),
            Item::Stmt(st) => st.time_us.unwrap_or(0) - (st.duration_ms.unwrap_or(0.0) * 1000.0) as i64,
        }
    }
}

/// Renders `trace_id` as a tree. Parse/Bind steps and carrier statements are left out.
pub(crate) fn render(trace_id: &str, spans: &[SpanData], statements: &[Statement], url_template: &str) -> String {
    let spans: Vec<&SpanData> = spans.iter().filter(|s| s.span_context.trace_id().to_string() == trace_id).collect();
    let ids: HashSet<String> = spans.iter().map(|s| s.span_context.span_id().to_string()).collect();
    let mut children: HashMap<String, Vec<Item<'_>>> = HashMap::new();
    for s in &spans {
        let parent = s.parent_span_id.to_string();
        let key = if ids.contains(&parent) { parent } else { String::new() };
        children.entry(key).or_default().push(Item::Span(s));
    }
    let mut db_count = 0usize;
    let mut db_ms = 0.0;
    for st in statements {
        if st.carrier || matches!(st.kind, Kind::Parse | Kind::Bind) || st.trace_id().as_deref() != Some(trace_id) {
            continue;
        }
        db_count += 1;
        db_ms += st.duration_ms.unwrap_or(0.0);
        let parent = st.context.as_ref().map(|c| c.traceparent.parent_id_hex()).unwrap_or_default();
        let key = if ids.contains(&parent) { parent } else { String::new() };
        children.entry(key).or_default().push(Item::Stmt(st));
    }
    for items in children.values_mut() {
        items.sort_by_key(Item::start_us);
    }

    let mut s = String::new();
    let _ = writeln!(
        s,
        "One trace, as the application's spans with the statements PostgreSQL logged under each (server-side time):"
    );
    let _ = writeln!(s, "trace {trace_id}   {}", url_template.replace("{trace_id}", trace_id));
    write_items(&mut s, &children, "", "");
    let _ = writeln!(s, "{db_count} statements, {db_ms:.3} ms database time in this trace");
    s
}

fn write_items(s: &mut String, children: &HashMap<String, Vec<Item<'_>>>, key: &str, indent: &str) {
    let Some(items) = children.get(key) else { return };
    for (i, item) in items.iter().enumerate() {
        let last = i + 1 == items.len();
        let (branch, next) = if indent.is_empty() && key.is_empty() {
            ("", String::new())
        } else if last {
            ("└─ ", format!("{indent}   "))
        } else {
            ("├─ ", format!("{indent}│  "))
        };
        match item {
            Item::Span(span) => {
                let ms = span.end_time.duration_since(span.start_time).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                let _ = writeln!(s, "{indent}{branch}{}  [span, {ms:.3} ms]", span.name);
                write_items(s, children, &span.span_context.span_id().to_string(), &next);
            }
            Item::Stmt(st) => {
                let (before, after) = st.query_without_comment();
                let text = sqlcommenter_logs::text::one_line(&format!("{}{}", before.trim_end(), after), 70);
                let step = match st.kind {
                    Kind::Execute if st.name.is_empty() => "execute <unnamed>".to_owned(),
                    Kind::Execute => format!("execute {}", st.name),
                    other => other.as_str().to_owned(),
                };
                let plan = if st.plan.is_empty() { "" } else { "  + auto_explain plan" };
                let _ = writeln!(
                    s,
                    "{indent}{branch}db {:>9} ms  {step}: {text}  (via {}){plan}",
                    st.duration_ms.map_or("?".into(), |d| format!("{d:.3}")),
                    st.source.as_str(),
                );
            }
        }
    }
}
