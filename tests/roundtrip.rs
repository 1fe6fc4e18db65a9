//! Property tests: for arbitrary tags and a corpus of tricky queries, the injected SQL lexes as the
//! original tokens plus exactly one comment, and the tags parse back unchanged.

mod corpus;

use std::collections::BTreeMap;

use proptest::prelude::*;
use sqlcommenter::lexer::{tokenize, TokenKind};
use sqlcommenter::{parse_tags, Commenter, Dialect, Injected, Placement, Skip, TraceContext, TraceParent, TraceState};

fn significant(sql: &str, d: Dialect) -> Vec<(TokenKind, String)> {
    tokenize(sql, d).filter(|t| t.kind != TokenKind::Space).map(|t| (t.kind, t.text(sql).to_string())).collect()
}

/// Keys and values made of anything, weighted towards what breaks naive injectors.
fn nasty_string() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("'".to_string()),
        Just("*/".to_string()),
        Just("/*".to_string()),
        Just("--".to_string()),
        Just(";".to_string()),
        Just("%".to_string()),
        Just("%%".to_string()),
        Just("+".to_string()),
        Just("\\'".to_string()),
        Just("\n".to_string()),
        Just(" ".to_string()),
        Just(",".to_string()),
        Just("=".to_string()),
        Just("$$".to_string()),
        any::<char>().prop_map(String::from),
        "[a-zA-Z0-9_.~-]{1,8}",
    ];
    prop::collection::vec(pieces, 0..8).prop_map(|v| v.concat())
}

fn tags() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        nasty_string()
            .prop_filter("non-empty, not reserved", |k| !k.is_empty() && k != "traceparent" && k != "tracestate"),
        nasty_string(),
        1..6,
    )
}

fn context() -> impl Strategy<Value = Option<TraceContext>> {
    let tp = (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())
        .prop_filter_map("non-zero ids", |(t, p, f)| TraceParent::new(t, p, f).ok());
    let ts = prop::option::of(prop::collection::vec(("[a-z][a-z0-9_@*/-]{0,10}", "[!-+\\--<>-~]{1,12}"), 1..4));
    prop::option::of((tp, ts).prop_map(|(tp, ts)| {
        let tracestate = ts.and_then(|members| {
            let mut state = TraceState::new();
            for (k, v) in members.iter().rev() {
                state.insert(k, v).ok()?;
            }
            Some(state)
        });
        TraceContext { traceparent: tp, tracestate }
    }))
}

fn all_queries() -> impl Strategy<Value = &'static str> {
    let all: Vec<&'static str> = corpus::STATEMENTS.iter().chain(corpus::SCRIPTS).copied().collect();
    prop::sample::select(all)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn injected_sql_is_the_original_plus_one_comment(
        query in all_queries(),
        tags in tags(),
        ctx in context(),
        prepend in any::<bool>(),
    ) {
        let mut b = Commenter::builder().placement(if prepend { Placement::Prepend } else { Placement::Append });
        for (k, v) in &tags {
            b = b.tag(k.clone(), v.clone());
        }
        let commenter = b.build().unwrap();
        let out = commenter.inject(query, ctx.as_ref());
        let Injected::Commented(sql) = out else { panic!("not injected: {out:?}") };

        // Tokens: the original's plus exactly one block comment.
        let before = significant(query, Dialect::Postgres);
        let mut after = significant(&sql, Dialect::Postgres);
        let comment = commenter.comment(ctx.as_ref());
        let pos = after.iter().position(|t| t == &(TokenKind::BlockComment, comment.clone()));
        prop_assert!(pos.is_some(), "comment token not found in {sql:?}");
        after.remove(pos.unwrap());
        prop_assert_eq!(&before, &after);

        // Tags parse back to exactly what went in.
        let mut want = tags.clone();
        if let Some(ctx) = &ctx {
            want.insert("traceparent".into(), ctx.traceparent.to_string());
            if let Some(ts) = &ctx.tracestate {
                want.insert("tracestate".into(), ts.to_string());
            }
        }
        prop_assert_eq!(parse_tags(&sql, Dialect::Postgres), want);
        // The original text is intact around the comment.
        let without = sql.replacen(&format!(" {comment}"), "", 1).replacen(&format!("{comment} "), "", 1);
        prop_assert_eq!(without, query);
    }

    #[test]
    fn mysql_round_trip(tags in tags(), ctx in context()) {
        let mut b = Commenter::builder().dialect(Dialect::MySql);
        for (k, v) in &tags {
            b = b.tag(k.clone(), v.clone());
        }
        let commenter = b.build().unwrap();
        for query in ["SELECT 'a\\'b' # c", "SELECT `x``y` FROM t -- c\n", "SELECT \"a\"\"b\" /*! STRAIGHT_JOIN */"] {
            let sql = commenter.inject(query, ctx.as_ref()).into_cow().into_owned();
            let before = significant(query, Dialect::MySql);
            let mut after = significant(&sql, Dialect::MySql);
            let comment = commenter.comment(ctx.as_ref());
            let pos = after.iter().position(|t| t == &(TokenKind::BlockComment, comment.clone()));
            prop_assert!(pos.is_some(), "comment token not found in {sql:?}");
            after.remove(pos.unwrap());
            prop_assert_eq!(before, after);
            let got = parse_tags(&sql, Dialect::MySql);
            for (k, v) in &tags {
                prop_assert_eq!(got.get(k), Some(v));
            }
        }
    }

    #[test]
    fn lexer_never_panics_and_covers_input(s in ".{0,200}", mysql in any::<bool>()) {
        let d = if mysql { Dialect::MySql } else { Dialect::Postgres };
        let mut pos = 0;
        for t in tokenize(&s, d) {
            prop_assert_eq!(t.start, pos);
            prop_assert!(t.end > t.start);
            pos = t.end;
        }
        prop_assert_eq!(pos, s.len());
        let _ = parse_tags(&s, d);
        let _ = sqlcommenter::normalize(&s, d);
        let _ = Commenter::builder().tag("a", "b").build().unwrap().inject(&s, None);
    }

    #[test]
    fn traceparent_parser_never_panics(s in ".{0,80}") {
        if let Ok(tp) = TraceParent::parse(&s) {
            // Whatever parses re-emits as a valid version-00 value.
            prop_assert_eq!(TraceParent::parse(&tp.to_string()), Ok(tp));
        }
        let _ = TraceState::parse(&s);
    }
}

#[test]
fn unsafe_inputs_come_back_unchanged() {
    let c = Commenter::builder().tag("a", "b").build().unwrap();
    for q in corpus::UNSAFE {
        let out = c.inject(q, None);
        assert!(matches!(out.skipped(), Some(Skip::Unterminated(_))), "{q:?}: {out:?}");
        assert_eq!(out.as_str(), *q);
    }
}
