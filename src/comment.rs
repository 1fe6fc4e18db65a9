//! Building comments and putting them into SQL: [`Commenter`].
//!
//! A comment is `/*` + pairs + `*/`. Each pair is `key='value'` with key and value percent-encoded (see
//! [`crate::encode`]); pairs are sorted bytewise by their serialized text and joined by `,` without
//! spaces. Static tags are encoded once, when the [`Commenter`] is built; per call only the trace context
//! is formatted, and the commented SQL is written into one allocation of the exact size.

use std::borrow::Cow;

use crate::context::TraceContext;
use crate::encode::{encode_into, encoded_len};
use crate::lexer::{shape, Construct, Dialect};

/// Where the comment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// After the last statement token, before a trailing `;` and trailing whitespace/comments (default;
    /// what the spec and pg_tracing expect).
    #[default]
    Append,
    /// At the very start (survives `track_activity_query_size` truncation in pg_stat_activity). A leading
    /// `/*+ ... */` optimizer hint forces [`Placement::Append`], so the hint keeps working.
    Prepend,
}

impl std::str::FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "append" => Ok(Placement::Append),
            "prepend" => Ok(Placement::Prepend),
            other => Err(format!("unknown placement {other:?} (expected append or prepend)")),
        }
    }
}

/// What to do with a query that already has comments (one carrying a `traceparent` is always left alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingComments {
    /// Add ours anyway (default): ORMs and people leave comments on most queries, and dropping trace
    /// context for them would leave exactly the gaps this tool exists to close.
    #[default]
    Inject,
    /// Leave such queries unchanged, as the sqlcommenter spec's "MUST NOT mutate" reads.
    Skip,
}

/// Why a query came back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Skip {
    /// No tags and no (sampled, if required) context: there is nothing to add.
    #[error("nothing to add")]
    NothingToAdd,
    /// The query has no statement tokens (empty, whitespace or comments only).
    #[error("query is empty")]
    Empty,
    /// The query ends inside an unterminated construct; no position is safe.
    #[error("query has an unterminated {0:?}")]
    Unterminated(Construct),
    /// The query already carries a `traceparent`.
    #[error("query already carries a traceparent")]
    AlreadyHasTraceparent,
    /// The query has comments and [`ExistingComments::Skip`] is configured.
    #[error("query already has a comment")]
    ExistingComment,
    /// A per-call tag has an empty key or a reserved key (`traceparent`, `tracestate`).
    #[error("invalid per-call tag key")]
    InvalidTag,
}

/// The result of [`Commenter::inject`]: the commented SQL, or the original and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injected<'q> {
    /// The SQL with the comment added.
    Commented(String),
    /// The original SQL, unchanged, and why.
    Unchanged(&'q str, Skip),
}

impl<'q> Injected<'q> {
    /// The SQL to send.
    pub fn as_str(&self) -> &str {
        match self {
            Injected::Commented(s) => s,
            Injected::Unchanged(s, _) => s,
        }
    }

    /// The SQL to send, borrowing the original when unchanged.
    pub fn into_cow(self) -> Cow<'q, str> {
        match self {
            Injected::Commented(s) => Cow::Owned(s),
            Injected::Unchanged(s, _) => Cow::Borrowed(s),
        }
    }

    /// Why nothing was added, if so.
    pub fn skipped(&self) -> Option<Skip> {
        match self {
            Injected::Commented(_) => None,
            Injected::Unchanged(_, r) => Some(*r),
        }
    }
}

/// Where a comment goes in one statement ([`Commenter::splice`]): the statement becomes `sql[..at]`,
/// `before`, the comment, `after`, `sql[at..]`. For callers that write the pieces straight into their own
/// buffer (the proxy writes them into the outgoing frame) and reuse one rendered comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Splice {
    /// Byte offset in the statement.
    pub at: usize,
    /// What goes before the comment (a space when appended, except after MySQL's `--`).
    pub before: &'static str,
    /// What goes after it (a space when prepended).
    pub after: &'static str,
}

impl Splice {
    /// The commented statement's pieces, in order.
    pub fn pieces<'a>(&self, sql: &'a str, comment: &'a str) -> [&'a str; 5] {
        [&sql[..self.at], self.before, comment, self.after, &sql[self.at..]]
    }

    /// Bytes the comment adds with its spacing: one run inserted at [`Splice::at`].
    pub fn added(&self, comment: &str) -> usize {
        self.before.len() + comment.len() + self.after.len()
    }
}

/// A bad [`Commenter`] configuration, reported when it is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A tag key is empty.
    #[error("tag key is empty")]
    EmptyKey,
    /// A static tag uses a key the trace context owns.
    #[error("tag key {0:?} is reserved for the trace context")]
    ReservedKey(String),
    /// The same static tag key was given twice.
    #[error("tag key {0:?} is given twice")]
    DuplicateKey(String),
}

const TRACEPARENT_KEY: &str = "traceparent";
const TRACESTATE_KEY: &str = "tracestate";

fn is_reserved(key: &str) -> bool {
    key == TRACEPARENT_KEY || key == TRACESTATE_KEY
}

/// Serializes one pair (`key='value'`, both percent-encoded).
pub fn serialize_pair(out: &mut String, key: &str, value: &str) {
    encode_into(out, key);
    out.push_str("='");
    encode_into(out, value);
    out.push('\'');
}

fn pair_len(key: &str, value: &str) -> usize {
    encoded_len(key) + encoded_len(value) + 3
}

/// Serializes any set of tags into a complete comment (`/*...*/`), or `""` for an empty set.
pub fn serialize<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<String> = tags
        .into_iter()
        .map(|(k, v)| {
            let mut s = String::with_capacity(pair_len(k, v));
            serialize_pair(&mut s, k, v);
            s
        })
        .collect();
    if pairs.is_empty() {
        return String::new();
    }
    pairs.sort_unstable();
    format!("/*{}*/", pairs.join(","))
}

/// Configures a [`Commenter`].
#[derive(Debug, Clone, Default)]
pub struct CommenterBuilder {
    dialect: Dialect,
    placement: Placement,
    existing: ExistingComments,
    sampled_only: bool,
    tags: Vec<(String, String)>,
}

impl CommenterBuilder {
    /// The SQL dialect (default PostgreSQL).
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Append (default) or prepend.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Policy for queries with other comments (default: inject).
    pub fn existing_comments(mut self, policy: ExistingComments) -> Self {
        self.existing = policy;
        self
    }

    /// Only carry trace context of sampled spans (default: false; static tags are added either way).
    pub fn sampled_only(mut self, yes: bool) -> Self {
        self.sampled_only = yes;
        self
    }

    /// Adds a static tag (application, db_driver, framework, route, controller, action, or any key).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// Validates the configuration and encodes the static tags once.
    pub fn build(self) -> Result<Commenter, ConfigError> {
        let mut seen: Vec<&str> = Vec::new();
        for (k, _) in &self.tags {
            if k.is_empty() {
                return Err(ConfigError::EmptyKey);
            }
            if is_reserved(k) {
                return Err(ConfigError::ReservedKey(k.clone()));
            }
            if seen.contains(&k.as_str()) {
                return Err(ConfigError::DuplicateKey(k.clone()));
            }
            seen.push(k);
        }
        let mut pairs: Vec<String> = self
            .tags
            .iter()
            .map(|(k, v)| {
                let mut s = String::new();
                serialize_pair(&mut s, k, v);
                s
            })
            .collect();
        pairs.sort_unstable();
        // Keys differ, so a static pair's order relative to `traceparent='...` and `tracestate='...`
        // is decided before either value starts: the groups can be fixed now.
        let tp_probe = "traceparent='";
        let ts_probe = "tracestate='";
        let join = |v: Vec<&String>| v.into_iter().map(String::as_str).collect::<Vec<_>>().join(",");
        let before_tp = join(pairs.iter().filter(|p| p.as_str() < tp_probe).collect());
        let between = join(pairs.iter().filter(|p| p.as_str() > tp_probe && p.as_str() < ts_probe).collect());
        let after_ts = join(pairs.iter().filter(|p| p.as_str() > ts_probe).collect());
        let all_static = pairs.join(",");
        Ok(Commenter {
            dialect: self.dialect,
            placement: self.placement,
            existing: self.existing,
            sampled_only: self.sampled_only,
            static_pairs: pairs,
            before_tp,
            between,
            after_ts,
            all_static,
        })
    }
}

/// Adds sqlcommenter comments to SQL. Cheap to clone; build once and reuse.
#[derive(Debug, Clone)]
pub struct Commenter {
    dialect: Dialect,
    placement: Placement,
    existing: ExistingComments,
    sampled_only: bool,
    static_pairs: Vec<String>,
    before_tp: String,
    between: String,
    after_ts: String,
    all_static: String,
}

impl Default for Commenter {
    fn default() -> Self {
        Commenter::builder().build().unwrap_or_else(|_| unreachable!("an empty configuration is valid"))
    }
}

impl Commenter {
    /// A builder with the defaults: PostgreSQL, append, inject next to other comments, all contexts.
    pub fn builder() -> CommenterBuilder {
        CommenterBuilder::default()
    }

    /// The dialect this commenter lexes.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The static tags' serialized pairs, sorted.
    pub fn static_pairs(&self) -> &[String] {
        &self.static_pairs
    }

    /// Whether the context would be carried (respecting `sampled_only`).
    pub fn carries(&self, ctx: &TraceContext) -> bool {
        !self.sampled_only || ctx.is_sampled()
    }

    fn effective<'c>(&self, ctx: Option<&'c TraceContext>) -> Option<&'c TraceContext> {
        ctx.filter(|c| self.carries(c))
    }

    /// The comment alone (`/*...*/`), or `""` when there is nothing to add.
    pub fn comment(&self, ctx: Option<&TraceContext>) -> String {
        let ctx = self.effective(ctx);
        let len = self.body_len(ctx);
        if len == 0 {
            return String::new();
        }
        let mut out = String::with_capacity(len + 4);
        out.push_str("/*");
        self.write_body(&mut out, ctx);
        out.push_str("*/");
        out
    }

    fn body_len(&self, ctx: Option<&TraceContext>) -> usize {
        let Some(ctx) = ctx else { return self.all_static.len() };
        let mut parts = [self.before_tp.len(), 13 + 55 + 1, self.between.len(), 0, self.after_ts.len()];
        if let Some(ts) = &ctx.tracestate {
            parts[3] = 12 + ts.encoded().len() + 1;
        }
        let n = parts.iter().filter(|&&l| l > 0).count();
        parts.iter().sum::<usize>() + n.saturating_sub(1)
    }

    fn write_body(&self, out: &mut String, ctx: Option<&TraceContext>) {
        let Some(ctx) = ctx else {
            out.push_str(&self.all_static);
            return;
        };
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !first {
                out.push(',');
            }
            first = false;
        };
        if !self.before_tp.is_empty() {
            sep(out);
            out.push_str(&self.before_tp);
        }
        sep(out);
        out.push_str("traceparent='");
        ctx.traceparent.write_to(out);
        out.push('\'');
        if !self.between.is_empty() {
            sep(out);
            out.push_str(&self.between);
        }
        if let Some(ts) = &ctx.tracestate {
            sep(out);
            out.push_str("tracestate='");
            out.push_str(ts.encoded());
            out.push('\'');
        }
        if !self.after_ts.is_empty() {
            sep(out);
            out.push_str(&self.after_ts);
        }
    }

    /// Where the comment would go in `sql`, or why it cannot go anywhere. Returns the byte offset and
    /// whether it is prepended.
    pub fn position(&self, sql: &str) -> Result<(usize, bool), Skip> {
        let shape = shape(sql, self.dialect);
        if let Some(c) = shape.unterminated {
            return Err(Skip::Unterminated(c));
        }
        let Some(append_at) = shape.append_at else { return Err(Skip::Empty) };
        if shape.has_traceparent {
            return Err(Skip::AlreadyHasTraceparent);
        }
        if shape.has_comment && self.existing == ExistingComments::Skip {
            return Err(Skip::ExistingComment);
        }
        if self.placement == Placement::Prepend && !shape.leading_hint {
            Ok((0, true))
        } else {
            Ok((append_at, false))
        }
    }

    /// What goes between the statement and an appended comment: a space, except after MySQL's `--`,
    /// which a space would turn into a line comment swallowing ours.
    fn lead(&self, before: &str) -> &'static str {
        if self.dialect == Dialect::MySql && before.ends_with("--") {
            ""
        } else {
            " "
        }
    }

    /// Where a comment goes in `sql`, with its spacing, or why it cannot go anywhere.
    pub fn splice(&self, sql: &str) -> Result<Splice, Skip> {
        let (at, prepend) = self.position(sql)?;
        Ok(if prepend {
            Splice { at, before: "", after: " " }
        } else {
            Splice { at, before: self.lead(&sql[..at]), after: "" }
        })
    }

    /// Adds the static tags and `ctx` to `sql`.
    pub fn inject<'q>(&self, sql: &'q str, ctx: Option<&TraceContext>) -> Injected<'q> {
        let ctx = self.effective(ctx);
        let body = self.body_len(ctx);
        if body == 0 {
            return Injected::Unchanged(sql, Skip::NothingToAdd);
        }
        let s = match self.splice(sql) {
            Ok(s) => s,
            Err(reason) => return Injected::Unchanged(sql, reason),
        };
        let mut out = String::with_capacity(sql.len() + body + 5);
        out.push_str(&sql[..s.at]);
        out.push_str(s.before);
        out.push_str("/*");
        self.write_body(&mut out, ctx);
        out.push_str("*/");
        out.push_str(s.after);
        out.push_str(&sql[s.at..]);
        debug_assert!(out.len() <= sql.len() + body + 5);
        Injected::Commented(out)
    }

    /// Like [`Commenter::inject`], with extra per-call tags (e.g. a route taken from the current span).
    /// Slower than `inject` (the pairs are sorted per call).
    pub fn inject_with<'q>(&self, sql: &'q str, ctx: Option<&TraceContext>, extra: &[(&str, &str)]) -> Injected<'q> {
        if extra.is_empty() {
            return self.inject(sql, ctx);
        }
        if extra.iter().any(|(k, _)| k.is_empty() || is_reserved(k)) {
            return Injected::Unchanged(sql, Skip::InvalidTag);
        }
        let s = match self.splice(sql) {
            Ok(s) => s,
            Err(reason) => return Injected::Unchanged(sql, reason),
        };
        let ctx = self.effective(ctx);
        let mut pairs: Vec<String> = self.static_pairs.clone();
        for (k, v) in extra {
            let mut s = String::with_capacity(pair_len(k, v));
            serialize_pair(&mut s, k, v);
            pairs.push(s);
        }
        if let Some(ctx) = ctx {
            pairs.push(format!("traceparent='{}'", ctx.traceparent));
            if let Some(ts) = &ctx.tracestate {
                pairs.push(format!("tracestate='{}'", ts.encoded()));
            }
        }
        pairs.sort_unstable();
        let body = pairs.join(",");
        Injected::Commented(s.pieces(sql, &format!("/*{body}*/")).concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traceparent::TraceParent;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn ctx() -> TraceContext {
        TraceContext::from_headers(TP, Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")).unwrap()
    }

    #[test]
    fn spec_example() {
        let c = Commenter::builder()
            .tag("action", "run+this & that")
            .tag("controller", "index")
            .tag("framework", "spring")
            .build()
            .unwrap();
        let out = c.inject("SELECT * FROM FOO", Some(&ctx()));
        assert_eq!(
            out.as_str(),
            "SELECT * FROM FOO /*action='run%2Bthis%20%26%20that',controller='index',framework='spring',\
             traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',\
             tracestate='congo%3Dt61rcWkgMzE%2Crojo%3D00f067aa0ba902b7'*/"
        );
    }

    #[test]
    fn sorting_around_trace_keys() {
        let c = Commenter::builder()
            .tag("trace", "a")
            .tag("tracez", "b")
            .tag("traceq", "c")
            .tag("route", "/r")
            .build()
            .unwrap();
        let got = c.inject("select 1", Some(&ctx()));
        let body = got.as_str().trim_start_matches("select 1 /*").trim_end_matches("*/");
        let mut parts: Vec<&str> = body.split(',').collect();
        let before = parts.clone();
        parts.sort();
        assert_eq!(before, parts);
        assert_eq!(before.len(), 6);
        assert_eq!(c.comment(None), "/*route='%2Fr',trace='a',traceq='c',tracez='b'*/");
    }

    #[test]
    fn placement_rules() {
        let c = Commenter::builder().tag("a", "b").build().unwrap();
        assert_eq!(c.inject("select 1;", None).as_str(), "select 1 /*a='b'*/;");
        assert_eq!(c.inject("select 1 ; -- x\n", None).as_str(), "select 1 /*a='b'*/ ; -- x\n");
        assert_eq!(c.inject("select 1; select 2;;", None).as_str(), "select 1; select 2 /*a='b'*/;;");
        assert_eq!(c.inject("select '--'", None).as_str(), "select '--' /*a='b'*/");
        assert_eq!(c.inject("  ", None), Injected::Unchanged("  ", Skip::Empty));
        assert_eq!(
            c.inject("select 'x", None),
            Injected::Unchanged("select 'x", Skip::Unterminated(Construct::String))
        );
        let p = Commenter::builder().tag("a", "b").placement(Placement::Prepend).build().unwrap();
        assert_eq!(p.inject("select 1", None).as_str(), "/*a='b'*/ select 1");
        assert_eq!(
            p.inject("/*+ SeqScan(t) */ select * from t", None).as_str(),
            "/*+ SeqScan(t) */ select * from t /*a='b'*/"
        );
        let tp = TraceContext::new(TraceParent::parse(TP).unwrap());
        let commented = c.inject("select 1", Some(&tp)).as_str().to_string();
        assert_eq!(
            c.inject(&commented, Some(&tp)),
            Injected::Unchanged(commented.as_str(), Skip::AlreadyHasTraceparent)
        );
        let strict = Commenter::builder().tag("a", "b").existing_comments(ExistingComments::Skip).build().unwrap();
        assert_eq!(strict.inject("select /* x */ 1", None).skipped(), Some(Skip::ExistingComment));
        assert_eq!(Commenter::default().inject("select 1", None).skipped(), Some(Skip::NothingToAdd));
        // MySQL: "--" followed by a space starts a comment, so none is inserted after a trailing "--".
        let my = Commenter::builder().dialect(Dialect::MySql).tag("a", "b").build().unwrap();
        assert_eq!(my.inject("SELECT 1--#x", None).as_str(), "SELECT 1--/*a='b'*/#x");
        assert_eq!(my.inject_with("SELECT 1--#", None, &[("c", "d")]).as_str(), "SELECT 1--/*a='b',c='d'*/#");
        assert_eq!(my.inject("SELECT 1--", None).as_str(), "SELECT 1 /*a='b'*/--");
    }

    #[test]
    fn splice_pieces_are_the_injected_text() {
        let ctx = ctx();
        let c = Commenter::builder().tag("route", "/é 'x'").build().unwrap();
        let p = Commenter::builder().tag("a", "b").placement(Placement::Prepend).build().unwrap();
        let my = Commenter::builder().dialect(Dialect::MySql).tag("a", "b").build().unwrap();
        for (commenter, sql) in [
            (&c, "select 1"),
            (&c, "select 'é' ; -- x\n"),
            (&p, "select 1"),
            (&p, "/*+ SeqScan(t) */ select * from t"),
            (&my, "SELECT 1--#x"),
        ] {
            let comment = commenter.comment(Some(&ctx));
            assert!(comment.is_ascii(), "tags and context are percent-encoded: {comment}");
            let s = commenter.splice(sql).unwrap();
            let joined = s.pieces(sql, &comment).concat();
            assert_eq!(joined, commenter.inject(sql, Some(&ctx)).as_str());
            assert_eq!(joined.len(), sql.len() + s.added(&comment));
            assert_eq!(&joined[s.at..s.at + s.added(&comment)], [s.before, comment.as_str(), s.after].concat());
        }
        assert_eq!(c.splice("select 'x"), Err(Skip::Unterminated(Construct::String)));
        assert_eq!(c.splice(&c.inject("select 1", Some(&ctx)).into_cow()), Err(Skip::AlreadyHasTraceparent));
    }

    #[test]
    fn sampling() {
        let c = Commenter::builder().sampled_only(true).build().unwrap();
        let unsampled = TraceContext::new(TraceParent::parse(TP).unwrap().with_sampled(false));
        assert_eq!(c.inject("select 1", Some(&unsampled)).skipped(), Some(Skip::NothingToAdd));
        assert!(c.inject("select 1", Some(&ctx())).skipped().is_none());
    }

    #[test]
    fn config_errors() {
        assert_eq!(Commenter::builder().tag("", "x").build().err(), Some(ConfigError::EmptyKey));
        assert!(matches!(Commenter::builder().tag("traceparent", "x").build(), Err(ConfigError::ReservedKey(_))));
        assert!(matches!(Commenter::builder().tag("a", "x").tag("a", "y").build(), Err(ConfigError::DuplicateKey(_))));
    }

    #[test]
    fn inject_with_extra_tags() {
        let c = Commenter::builder().tag("application", "shop").build().unwrap();
        let out =
            c.inject_with("select 1", Some(&TraceContext::new(TraceParent::parse(TP).unwrap())), &[("route", "/o")]);
        assert_eq!(out.as_str(), format!("select 1 /*application='shop',route='%2Fo',traceparent='{TP}'*/"));
        assert_eq!(c.inject_with("select 1", None, &[("tracestate", "x")]).skipped(), Some(Skip::InvalidTag));
    }
}
