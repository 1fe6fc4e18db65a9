//! Reading sqlcommenter tags back out of SQL.
//!
//! Lenient like real consumers: `+` for space, `\'` inside values, lowercase hex escapes, `%%XX`, and
//! spaces around `=` and `,`. Strict about structure: the comment must be terminated and made only of
//! `key='value'` pairs; anything else yields no tags rather than garbage.

use std::collections::BTreeMap;

use crate::context::TraceContext;
use crate::encode::decode;
use crate::lexer::{Dialect, Lexer, TokenKind};

/// Tags found in a comment, by decoded key.
pub type Tags = BTreeMap<String, String>;

/// Parses the body of one comment (without `/*` and `*/`) as sqlcommenter pairs.
pub fn parse_body(body: &str) -> Option<Tags> {
    let b = body.as_bytes();
    let mut tags = Tags::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        let key_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'\'' | b',') {
            i += 1;
        }
        let key_end = i;
        if key_end == key_start {
            return None;
        }
        skip_ws(&mut i);
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        if b.get(i) != Some(&b'\'') {
            return None;
        }
        i += 1;
        let val_start = i;
        loop {
            match b.get(i) {
                None => return None,
                Some(b'\\') if b.get(i + 1) == Some(&b'\'') => i += 2,
                Some(b'\'') => break,
                Some(_) => i += 1,
            }
        }
        let val_end = i;
        i += 1;
        let key = decode(&body[key_start..key_end]).ok()?;
        let value = decode(&body[val_start..val_end]).ok()?;
        tags.insert(key, value);
        skip_ws(&mut i);
        match b.get(i) {
            None => return Some(tags),
            Some(b',') => i += 1,
            Some(_) => return None,
        }
    }
}

/// Finds the sqlcommenter comment in `sql` and returns its tags (empty when there is none). When several
/// block comments parse, the last one with a `traceparent` wins, else the last one (appending is the
/// default placement, and a comment added next to an existing tag-only comment carries the context).
pub fn parse_tags(sql: &str, dialect: Dialect) -> Tags {
    let mut last = None;
    let mut last_with_context = None;
    for tok in Lexer::new(sql, dialect) {
        if tok.kind == TokenKind::BlockComment {
            let text = tok.text(sql);
            if let Some(tags) = parse_body(&text[2..text.len() - 2]) {
                if tags.contains_key("traceparent") {
                    last_with_context = Some(tags);
                } else {
                    last = Some(tags);
                }
            }
        }
    }
    last_with_context.or(last).unwrap_or_default()
}

/// The trace context in `sql`'s comment: `None` when there is no traceparent or it is invalid (an invalid
/// tracestate is dropped and the traceparent kept, as W3C requires).
pub fn parse_context(sql: &str, dialect: Dialect) -> Option<TraceContext> {
    let tags = parse_tags(sql, dialect);
    let tp = tags.get("traceparent")?;
    TraceContext::from_headers_lenient_state(tp, tags.get("tracestate").map(String::as_str)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_values() {
        let sql = "select 1 /* a = 'x+y' , b='it\\'s',c='%2fp%2Fq',d='k%%3Dv' */";
        let tags = parse_tags(sql, Dialect::Postgres);
        assert_eq!(tags.get("a").map(String::as_str), Some("x y"));
        assert_eq!(tags.get("b").map(String::as_str), Some("it's"));
        assert_eq!(tags.get("c").map(String::as_str), Some("/p/q"));
        assert_eq!(tags.get("d").map(String::as_str), Some("k=v"));
    }

    #[test]
    fn strict_structure() {
        for sql in [
            "select 1 /*a='x'",
            "select 1 /*a=x*/",
            "select 1 /*a='x' b='y'*/",
            "select 1 /*a='x',*/",
            "select 1 /* just a note */",
            "select 1 /*='x'*/",
            "select 1 /*a='x*/",
            "select 1 -- a='x'",
        ] {
            assert!(parse_tags(sql, Dialect::Postgres).is_empty(), "{sql}");
        }
    }

    #[test]
    fn picks_the_sqlcommenter_comment() {
        let sql = "/* note */ select '/*a=''x''*/' /*route='%2Fo'*/ /* trailing */";
        let tags = parse_tags(sql, Dialect::Postgres);
        assert_eq!(tags.len(), 1);
        assert_eq!(tags["route"], "/o");
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let ctx =
            parse_context(&format!("select 1 /*traceparent='{tp}',tracestate='bad%20key%3D1'*/"), Dialect::Postgres)
                .unwrap();
        assert_eq!(ctx.traceparent.to_string(), tp);
        assert!(ctx.tracestate.is_none());
        assert!(parse_context("select 1 /*traceparent='00-00'*/", Dialect::Postgres).is_none());
    }
}
