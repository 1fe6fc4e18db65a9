//! Trace context of a statement: its sqlcommenter comment first, else an `application_name` carrier
//! (`sqlcommenter::carrier`, the format the drivers and the proxy write). Also recognises the carrier
//! statements themselves (`set_config('application_name', ...)`, `SET application_name = '<carrier>'`,
//! the reserved `__sqlc*` statement names), which reports leave out.

use std::sync::LazyLock;

use memchr::memmem;
use sqlcommenter::parse::parse_body;
use sqlcommenter::{carrier, parse_tags, Dialect, Tags, TraceContext};

/// Where a statement's trace context came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The statement's sqlcommenter comment.
    Comment,
    /// An `application_name` carrier.
    ApplicationName,
    /// No context.
    None,
}

impl Source {
    /// Lowercase name used in outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Comment => "comment",
            Source::ApplicationName => "application_name",
            Source::None => "none",
        }
    }
}

static OPEN: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"/*"));
static OPEN_REV: LazyLock<memmem::FinderRev<'static>> = LazyLock::new(|| memmem::FinderRev::new(b"/*"));
static CLOSE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"*/"));
static CARRIER_WORDS: LazyLock<[memmem::Finder<'static>; 6]> = LazyLock::new(|| {
    [
        memmem::Finder::new(b"set_config"),
        memmem::Finder::new(b"SET_CONFIG"),
        memmem::Finder::new(b"application_name"),
        memmem::Finder::new(b"APPLICATION_NAME"),
        memmem::Finder::new(b"sqlcommenter."),
        memmem::Finder::new(b"pg_tracing.trace_context"),
    ]
});

/// Reserved prepared-statement name prefix of carrier statements.
pub const CARRIER_STATEMENT_PREFIX: &str = "__sqlc";

/// A located sqlcommenter comment: its tags and its byte range in the SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundComment {
    /// Decoded tags (traceparent and tracestate included).
    pub tags: Tags,
    /// Byte range of `/* ... */`.
    pub range: (usize, usize),
}

/// Finds the sqlcommenter comment: fast paths for a trailing or leading comment (the placements the
/// commenter writes), then the core lexer-based parser for anything else.
pub fn find_comment(sql: &str) -> Option<FoundComment> {
    let b = sql.as_bytes();
    let first = OPEN.find(b)?;
    let trimmed = sql.trim_end_matches(|c: char| c.is_ascii_whitespace() || c == ';');
    if trimmed.ends_with("*/") && trimmed.len() >= 4 {
        let end = trimmed.len();
        if let Some(start) = OPEN_REV.rfind(&b[..end - 2]) {
            if let Some(tags) = parse_body(&sql[start + 2..end - 2]) {
                return Some(FoundComment { tags, range: (start, end) });
            }
        }
    }
    if sql[..first].trim_ascii().is_empty() {
        if let Some(close) = CLOSE.find(&b[first + 2..]) {
            let end = first + 2 + close;
            if let Some(tags) = parse_body(&sql[first + 2..end]) {
                return Some(FoundComment { tags, range: (first, end + 2) });
            }
        }
    }
    let tags = parse_tags(sql, Dialect::Postgres);
    if tags.is_empty() {
        return None;
    }
    Some(FoundComment { tags, range: (0, 0) })
}

/// The result of correlating one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correlation {
    /// The trace context, if any.
    pub context: Option<TraceContext>,
    /// Where it came from.
    pub source: Source,
    /// Comment tags other than `traceparent`/`tracestate`.
    pub tags: Tags,
    /// Byte range of the sqlcommenter comment in the query, when located.
    pub comment_range: Option<(usize, usize)>,
}

/// Correlates a statement from its text and the `application_name` it ran under.
pub fn correlate(query: &str, application_name: &str) -> Correlation {
    let mut out = Correlation { context: None, source: Source::None, tags: Tags::new(), comment_range: None };
    if let Some(found) = find_comment(query) {
        out.comment_range = (found.range != (0, 0)).then_some(found.range);
        let mut tags = found.tags;
        let tp = tags.remove("traceparent");
        let ts = tags.remove("tracestate");
        if let Some(tp) = tp {
            if let Ok(ctx) = TraceContext::from_headers_lenient_state(&tp, ts.as_deref()) {
                out.context = Some(ctx);
                out.source = Source::Comment;
            }
        }
        out.tags = tags;
    }
    if out.context.is_none() {
        if let Some((_, tp)) = carrier::decode_application_name(application_name) {
            out.context = Some(TraceContext::new(tp));
            out.source = Source::ApplicationName;
        }
    }
    out
}

/// True for the carrier statements drivers and the proxy send to set or reset the session's trace context:
/// the reserved `__sqlc*` statement names (the proxy's `__sqlc_tc`), and what
/// [`sqlcommenter::carrier::is_carrier_statement`] recognises — except the parameterized `set_config`
/// whose logged parameters (`DETAIL:  parameters: $1 = 'work_mem', ...`) name another setting.
pub fn is_carrier_statement(name: &str, query: &str, parameters: &str) -> bool {
    if name.starts_with(CARRIER_STATEMENT_PREFIX) {
        return true;
    }
    // Most statements name no carrier setting: skip the lexer for them.
    let head = &query.as_bytes()[..query.len().min(512)];
    if !CARRIER_WORDS.iter().any(|f| f.find(head).is_some()) || !carrier::is_carrier_statement(query) {
        return false;
    }
    match logged_param(parameters, "$1") {
        Some(setting) if query.contains("$1") => {
            setting == carrier::DEFAULT_GUC
                || setting == carrier::PG_TRACING_GUC
                || setting.starts_with("sqlcommenter.")
                || (setting == "application_name"
                    && logged_param(parameters, "$2").is_some_and(|v| carrier::decode_application_name(v).is_some()))
        }
        _ => true,
    }
}

/// The value of `$n` in a logged `parameters:` detail (`$1 = 'a', $2 = 'b'`).
fn logged_param<'a>(parameters: &'a str, n: &str) -> Option<&'a str> {
    let at = parameters.find(&format!("{n} = '"))? + n.len() + 4;
    let rest = &parameters[at..];
    Some(&rest[..rest.find('\'')?])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn comment_then_application_name() {
        let c = correlate(&format!("select 1 /*route='%2Fa',traceparent='{TP}'*/;"), "svc");
        assert_eq!(c.source, Source::Comment);
        assert_eq!(c.context.unwrap().traceparent.to_string(), TP);
        assert_eq!(c.tags.get("route").map(String::as_str), Some("/a"));
        assert!(!c.tags.contains_key("traceparent"));
        let c = correlate("select 1", &format!("svc@{TP}"));
        assert_eq!(c.source, Source::ApplicationName);
        let c = correlate("select 1 /* plain note */", "svc");
        assert_eq!(c.source, Source::None);
        // leading comment and a comment inside the statement
        assert_eq!(correlate(&format!("/*traceparent='{TP}'*/ select 1"), "").source, Source::Comment);
        let mid = format!("select /*traceparent='{TP}'*/ 1 /* x */");
        assert_eq!(correlate(&mid, "").source, Source::Comment);
        // a malformed traceparent in the comment falls back to the carrier
        let c = correlate("select 1 /*traceparent='00-bad'*/", &format!("svc@{TP}"));
        assert_eq!(c.source, Source::ApplicationName);
    }

    #[test]
    fn carrier_statements() {
        // the proxy's reserved statement
        assert!(is_carrier_statement("__sqlc_tc", "SELECT pg_catalog.set_config($1, $2, false)", ""));
        assert!(is_carrier_statement("", "SELECT pg_catalog.set_config($1, $2, $3)", ""));
        // the proxy's carrier, which also returns pg_backend_pid(), as logged with its parameters
        let logged = format!("$1 = 'application_name', $2 = '{TP}', $3 = 'true'");
        assert!(is_carrier_statement("", carrier::SET_CONFIG_PID_SQL, &logged));
        // the drivers' statement: the setting's name is $1
        let params = format!("$1 = 'application_name', $2 = 'svc@{TP}'");
        assert!(is_carrier_statement("s3", "SELECT set_config($1, $2, false)", &params));
        assert!(is_carrier_statement("s3", "SELECT set_config($1, $2, false)", ""));
        assert!(!is_carrier_statement("s3", "SELECT set_config($1, $2, false)", "$1 = 'work_mem', $2 = '64MB'"));
        assert!(!is_carrier_statement("s3", "SELECT set_config($1, $2, false)", "$1 = 'application_name', $2 = 'web'"));
        // the application's own name back: not a carrier (it runs under the carrier it replaces)
        assert!(!is_carrier_statement("", "RESET application_name", ""));
        assert!(is_carrier_statement("", &format!("SET application_name = 'svc@{TP}'"), ""));
        assert!(is_carrier_statement("", &format!("set sqlcommenter.traceparent = '{TP}'"), ""));
        assert!(!is_carrier_statement("", "SET application_name = 'svc'", ""));
        assert!(!is_carrier_statement("", "RESET work_mem", ""));
        assert!(!is_carrier_statement("s1", "select application_name from pg_stat_activity", ""));
        assert!(!is_carrier_statement("", "select 1", ""));
    }
}
