//! The statement-related messages PostgreSQL writes (English server messages).
//!
//! - `duration: 1.234 ms  statement: SQL` (simple protocol, `log_min_duration_statement`)
//! - `duration: 1.234 ms  parse|bind|execute NAME: SQL` (extended protocol; NAME is `<unnamed>`, `s1`,
//!   `s1/portal` or `fetch from s1/portal` for execute)
//! - `statement: SQL` and `execute NAME: SQL` (`log_statement`), later paired with a bare `duration: X ms`
//!   (`log_duration`)
//! - `duration: 1.234 ms  plan:\nQuery Text: ...` (auto_explain, text or JSON)

/// The protocol step a statement line describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Simple query protocol with its duration (`duration: ... statement:`).
    Simple,
    /// Extended protocol Parse.
    Parse,
    /// Extended protocol Bind.
    Bind,
    /// Extended protocol Execute.
    Execute,
    /// A statement known from `log_statement`, an error report or an auto_explain plan alone.
    Statement,
}

impl Kind {
    /// The lowercase name used in outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Simple => "simple",
            Kind::Parse => "parse",
            Kind::Bind => "bind",
            Kind::Execute => "execute",
            Kind::Statement => "statement",
        }
    }
}

/// What a statement line carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Body<'a> {
    /// No text (a bare `duration:` line).
    Bare,
    /// A statement: kind, prepared statement name (`""` when none), SQL text.
    Sql(Kind, &'a str, &'a str),
    /// An auto_explain plan (everything after `plan:` and its newline).
    Plan(&'a str),
}

/// A classified message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Message<'a> {
    /// Starts with `duration: X ms`.
    Timed(f64, Body<'a>),
    /// A `log_statement` line.
    Untimed(Body<'a>),
    /// Anything else.
    Other,
}

fn parse_duration(msg: &str) -> Option<(f64, &str)> {
    let rest = msg.strip_prefix("duration: ")?;
    let sp = memchr::memchr(b' ', rest.as_bytes())?;
    let ms: f64 = rest[..sp].parse().ok()?;
    let after = rest[sp..].strip_prefix(" ms")?;
    (ms.is_finite() && ms >= 0.0).then_some((ms, after))
}

fn proto_body(text: &str) -> Option<Body<'_>> {
    if let Some(sql) = text.strip_prefix("statement: ") {
        return Some(Body::Sql(Kind::Simple, "", sql));
    }
    let (kind, rest) = if let Some(r) = text.strip_prefix("execute ") {
        (Kind::Execute, r)
    } else if let Some(r) = text.strip_prefix("bind ") {
        (Kind::Bind, r)
    } else if let Some(r) = text.strip_prefix("parse ") {
        (Kind::Parse, r)
    } else {
        return None;
    };
    let colon = memchr::memmem::find(rest.as_bytes(), b": ")?;
    let mut name = &rest[..colon];
    name = name.strip_prefix("fetch from ").unwrap_or(name);
    if let Some(slash) = memchr::memchr(b'/', name.as_bytes()) {
        name = &name[..slash];
    }
    if name == "<unnamed>" {
        name = "";
    }
    Some(Body::Sql(kind, name, &rest[colon + 2..]))
}

/// Classifies a LOG message.
pub fn classify(msg: &str) -> Message<'_> {
    if let Some((ms, rest)) = parse_duration(msg) {
        if rest.is_empty() {
            return Message::Timed(ms, Body::Bare);
        }
        let Some(text) = rest.strip_prefix("  ") else { return Message::Other };
        if let Some(plan) = text.strip_prefix("plan:") {
            return Message::Timed(ms, Body::Plan(plan.strip_prefix('\n').unwrap_or(plan)));
        }
        return match proto_body(text) {
            Some(b) => Message::Timed(ms, b),
            None => Message::Other,
        };
    }
    match proto_body(msg) {
        Some(Body::Sql(Kind::Simple, name, sql)) => Message::Untimed(Body::Sql(Kind::Statement, name, sql)),
        Some(b) => Message::Untimed(b),
        None => Message::Other,
    }
}

/// The plan format of an auto_explain entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFormat {
    /// `auto_explain.log_format = text`.
    Text,
    /// `auto_explain.log_format = json`.
    Json,
}

impl PlanFormat {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanFormat::Text => "text",
            PlanFormat::Json => "json",
        }
    }
}

#[derive(serde::Deserialize)]
struct JsonPlan {
    #[serde(rename = "Query Text")]
    query_text: String,
}

/// The "Query Text" of an auto_explain plan and the plan's format. Text plans end their query text at the
/// first line that looks like a plan node (`... (cost=` / `(actual` / `(never executed)`), or after its
/// first line when none does.
pub fn plan_query_text(plan: &str) -> Option<(String, PlanFormat)> {
    let t = plan.trim_start();
    if t.starts_with('{') {
        let p: JsonPlan = serde_json::from_str(t).ok()?;
        return Some((p.query_text, PlanFormat::Json));
    }
    let body = t.strip_prefix("Query Text: ")?;
    let mut end = memchr::memchr(b'\n', body.as_bytes()).unwrap_or(body.len());
    let mut pos = end;
    while pos < body.len() {
        let next = memchr::memchr(b'\n', &body.as_bytes()[pos + 1..]).map_or(body.len(), |o| pos + 1 + o);
        let line = &body[pos + 1..next];
        if line.contains("  (cost=") || line.contains("  (actual") || line.contains("(never executed)") {
            end = pos;
            break;
        }
        pos = next;
    }
    Some((body[..end].to_owned(), PlanFormat::Text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(
            classify("duration: 0.574 ms  statement: select 1"),
            Message::Timed(0.574, Body::Sql(Kind::Simple, "", "select 1"))
        );
        assert_eq!(
            classify("duration: 1.000 ms  execute fetch from s1/c1: select $1"),
            Message::Timed(1.0, Body::Sql(Kind::Execute, "s1", "select $1"))
        );
        assert_eq!(
            classify("duration: 2 ms  bind <unnamed>: select 1"),
            Message::Timed(2.0, Body::Sql(Kind::Bind, "", "select 1"))
        );
        assert_eq!(
            classify("duration: 2 ms  parse __sqlc_tc: select set_config($1)"),
            Message::Timed(2.0, Body::Sql(Kind::Parse, "__sqlc_tc", "select set_config($1)"))
        );
        assert_eq!(classify("duration: 3.5 ms"), Message::Timed(3.5, Body::Bare));
        assert_eq!(classify("statement: begin"), Message::Untimed(Body::Sql(Kind::Statement, "", "begin")));
        assert_eq!(classify("execute s2: select 2"), Message::Untimed(Body::Sql(Kind::Execute, "s2", "select 2")));
        assert_eq!(classify("duration: 1 ms  plan:\nQuery Text: x"), Message::Timed(1.0, Body::Plan("Query Text: x")));
        for other in ["connection authorized: user=x", "duration: x ms", "duration: 1 ms  weird", "statement:x"] {
            assert_eq!(classify(other), Message::Other, "{other}");
        }
    }

    #[test]
    fn plan_texts() {
        let text = "Query Text: select *\n  from t /*a='b'*/\nSeq Scan on t  (cost=0.00..1.00 rows=1 width=4)";
        assert_eq!(plan_query_text(text).unwrap(), ("select *\n  from t /*a='b'*/".to_owned(), PlanFormat::Text));
        let json = "{\n  \"Query Text\": \"select 1 /*x='y'*/\",\n  \"Plan\": {\"Node Type\": \"Result\"}\n}";
        assert_eq!(plan_query_text(json).unwrap(), ("select 1 /*x='y'*/".to_owned(), PlanFormat::Json));
        assert_eq!(plan_query_text("Query Text: select 1").unwrap().0, "select 1");
        assert!(plan_query_text("nonsense").is_none());
    }
}
