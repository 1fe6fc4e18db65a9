//! Lexer and inserter: tokens cover the input without gaps, and an injected query is the original plus
//! exactly one comment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqlcommenter::lexer::{tokenize, TokenKind};
use sqlcommenter::{Commenter, Dialect, Injected};

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    for dialect in [Dialect::Postgres, Dialect::MySql] {
        let mut pos = 0;
        for t in tokenize(sql, dialect) {
            assert_eq!(t.start, pos);
            assert!(t.end > t.start);
            pos = t.end;
        }
        assert_eq!(pos, sql.len());
        let commenter = Commenter::builder().dialect(dialect).tag("route", "/*x*/ 'y'").build().unwrap();
        if let Injected::Commented(out) = commenter.inject(sql, None) {
            let count = |s: &str| tokenize(s, dialect).filter(|t| t.kind == TokenKind::BlockComment).count();
            assert_eq!(count(&out), count(sql) + 1);
            // A query that already holds a sqlcommenter comment keeps the documented "last one wins" rule.
            if sqlcommenter::parse_tags(sql, dialect).is_empty() {
                assert_eq!(sqlcommenter::parse_tags(&out, dialect).get("route").map(String::as_str), Some("/*x*/ 'y'"));
            }
        }
        let _ = sqlcommenter::normalize(sql, dialect);
    }
});
