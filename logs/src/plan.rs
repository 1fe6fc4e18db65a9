//! auto_explain plans as trees of nodes (text or JSON format), for plan spans: node type, relation,
//! estimated and actual rows, loops, and the actual startup/total times when `auto_explain.log_analyze`
//! is on.

use serde_json::Value;

use crate::message::PlanFormat;

/// One plan node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlanNode {
    /// `Seq Scan`, `Hash Join`, `Result`, ...
    pub node_type: String,
    /// The relation scanned, when there is one.
    pub relation: Option<String>,
    /// Estimated rows.
    pub plan_rows: Option<f64>,
    /// Actual rows per loop (`log_analyze`).
    pub rows: Option<f64>,
    /// Loops (`log_analyze`).
    pub loops: Option<f64>,
    /// Time to the first row, ms from the executor's start (`log_analyze` with timing).
    pub startup_ms: Option<f64>,
    /// Time to the last row, ms from the executor's start, per loop.
    pub total_ms: Option<f64>,
    /// Never executed.
    pub never_executed: bool,
    /// Child nodes.
    pub children: Vec<PlanNode>,
}

impl PlanNode {
    /// `Seq Scan on items`, or the node type.
    pub fn label(&self) -> String {
        match &self.relation {
            Some(r) => format!("{} on {r}", self.node_type),
            None => self.node_type.clone(),
        }
    }

    /// Number of nodes in the tree.
    pub fn len(&self) -> usize {
        1 + self.children.iter().map(PlanNode::len).sum::<usize>()
    }

    /// Always false (a tree has its root).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses the plan auto_explain logged (everything after `plan:`).
pub fn parse(plan: &str, format: PlanFormat) -> Option<PlanNode> {
    match format {
        PlanFormat::Json => {
            let v: Value = serde_json::from_str(plan.trim()).ok()?;
            Some(json_node(v.get("Plan")?))
        }
        PlanFormat::Text => text_tree(plan),
    }
}

fn json_node(v: &Value) -> PlanNode {
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    PlanNode {
        node_type: v.get("Node Type").and_then(Value::as_str).unwrap_or("?").to_owned(),
        relation: v.get("Relation Name").and_then(Value::as_str).map(str::to_owned),
        plan_rows: f("Plan Rows"),
        rows: f("Actual Rows"),
        loops: f("Actual Loops"),
        startup_ms: f("Actual Startup Time"),
        total_ms: f("Actual Total Time"),
        never_executed: f("Actual Loops") == Some(0.0),
        children: v.get("Plans").and_then(Value::as_array).map_or_else(Vec::new, |a| a.iter().map(json_node).collect()),
    }
}

/// `key=value` inside a parenthesised group of a node line.
fn number_after(s: &str, key: &str) -> Option<f64> {
    let i = s.find(key)? + key.len();
    let rest = &s[i..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn text_node(line: &str) -> PlanNode {
    let body = line.trim_start().trim_start_matches("->").trim_start();
    let name_end = body.find("  (").unwrap_or(body.len());
    let name = &body[..name_end];
    let (node_type, relation) = match name.split_once(" on ") {
        Some((t, r)) => (t, Some(r.split_whitespace().next().unwrap_or(r).to_owned())),
        None => (name, None),
    };
    let cost = body.find("(cost=").map(|i| &body[i..]).unwrap_or("");
    let actual = body.find("(actual").map(|i| &body[i..]);
    let (startup_ms, total_ms) = match actual.and_then(|a| a.find("time=").map(|i| &a[i + 5..])) {
        Some(t) => {
            let (a, b) = t.split_once("..").unwrap_or((t, ""));
            (a.parse().ok(), number_after(&format!("x={b}"), "x="))
        }
        None => (None, None),
    };
    PlanNode {
        node_type: node_type.to_owned(),
        relation,
        plan_rows: number_after(cost, "rows="),
        rows: actual.and_then(|a| number_after(a, "rows=")),
        loops: actual.and_then(|a| number_after(a, "loops=")),
        startup_ms,
        total_ms,
        never_executed: body.contains("(never executed)"),
        children: Vec::new(),
    }
}

fn is_node_line(line: &str) -> bool {
    line.contains("  (cost=") || line.contains("  (actual") || line.contains("(never executed)")
}

/// Text plans: the first node line, then `->` lines nested by their indentation.
fn text_tree(plan: &str) -> Option<PlanNode> {
    let mut lines = plan.lines().skip_while(|l| !is_node_line(l));
    let root = text_node(lines.next()?);
    // (indentation of the `->`, path of child indexes from the root)
    let mut stack: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new())];
    let mut root = root;
    for line in lines {
        let Some(arrow) = line.find("->  ") else { continue };
        if !line[..arrow].trim().is_empty() || !is_node_line(line) {
            continue;
        }
        while stack.len() > 1 && stack.last().is_some_and(|(ind, _)| *ind >= arrow) {
            stack.pop();
        }
        let parent_path = stack.last().map(|(_, p)| p.clone()).unwrap_or_default();
        let mut parent = &mut root;
        for &i in &parent_path {
            parent = &mut parent.children[i];
        }
        parent.children.push(text_node(line));
        let mut path = parent_path;
        path.push(parent.children.len() - 1);
        stack.push((arrow, path));
    }
    Some(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_plans() {
        let text = "Query Text: select * from a join b on a.id = b.id where a.x = 1\n\
                    Hash Join  (cost=1.10..2.20 rows=5 width=8) (actual time=0.050..0.900 rows=4 loops=1)\n  \
                    Hash Cond: (a.id = b.id)\n  \
                    ->  Seq Scan on a  (cost=0.00..1.05 rows=5 width=4) (actual time=0.010..0.020 rows=5 loops=1)\n        \
                    Filter: (x = 1)\n  \
                    ->  Hash  (cost=1.05..1.05 rows=5 width=4) (actual time=0.030..0.031 rows=5 loops=1)\n        \
                    ->  Seq Scan on b  (cost=0.00..1.05 rows=5 width=4) (never executed)";
        let root = parse(text, PlanFormat::Text).unwrap();
        assert_eq!(root.label(), "Hash Join");
        assert_eq!(
            (root.startup_ms, root.total_ms, root.rows, root.loops),
            (Some(0.05), Some(0.9), Some(4.0), Some(1.0))
        );
        assert_eq!(root.children.len(), 2);
        assert_eq!(root.children[0].label(), "Seq Scan on a");
        assert_eq!(root.children[1].children[0].label(), "Seq Scan on b");
        assert!(root.children[1].children[0].never_executed);
        assert_eq!(root.len(), 4);
        let json = r#"{"Query Text": "select 1", "Plan": {"Node Type": "Nested Loop", "Plan Rows": 3, "Actual Startup Time": 0.1, "Actual Total Time": 2.5, "Actual Rows": 3, "Actual Loops": 1,
            "Plans": [{"Node Type": "Index Scan", "Relation Name": "items", "Actual Loops": 3, "Actual Rows": 1}]}}"#;
        let root = parse(json, PlanFormat::Json).unwrap();
        assert_eq!((root.node_type.as_str(), root.total_ms, root.plan_rows), ("Nested Loop", Some(2.5), Some(3.0)));
        assert_eq!((root.children[0].label(), root.children[0].loops), ("Index Scan on items".to_owned(), Some(3.0)));
        // without log_analyze: estimates only
        let est = parse("Query Text: select 1\nResult  (cost=0.00..0.01 rows=1 width=4)", PlanFormat::Text).unwrap();
        assert_eq!((est.plan_rows, est.rows, est.total_ms), (Some(1.0), None, None));
        assert!(parse("Query Text: select 1", PlanFormat::Text).is_none());
    }
}
