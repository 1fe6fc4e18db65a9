//! Query normalization for grouping and for span attributes without literals: comments removed, string
//! and numeric literals replaced by `?`, whitespace collapsed. Parameters (`$1`) and identifiers stay.

use crate::lexer::{Dialect, Lexer, TokenKind};

fn push_space(out: &mut String) {
    if !out.is_empty() && !out.ends_with(' ') {
        out.push(' ');
    }
}

/// Normalizes `sql` (see the module docs).
pub fn normalize(sql: &str, dialect: Dialect) -> String {
    let mut out = String::with_capacity(sql.len().min(4096));
    for tok in Lexer::new(sql, dialect) {
        match tok.kind {
            TokenKind::Space => push_space(&mut out),
            TokenKind::LineComment | TokenKind::BlockComment | TokenKind::Hint => push_space(&mut out),
            TokenKind::String | TokenKind::DollarString | TokenKind::Unterminated(_) => {
                // `E'..'`, `B'..'`, `X'..'`, `U&'..'` prefixes belong to the literal.
                let trimmed = out.trim_end_matches(['E', 'e', 'B', 'b', 'X', 'x', 'N', 'n']).len();
                let prefix_is_word = out[..trimmed].ends_with(|c: char| c.is_alphanumeric() || c == '_');
                if !prefix_is_word && trimmed < out.len() && trimmed + 1 == out.len() {
                    out.truncate(trimmed);
                } else if out.ends_with("U&") || out.ends_with("u&") {
                    out.truncate(out.len() - 2);
                }
                out.push('?');
            }
            TokenKind::Code => normalize_code(tok.text(sql), &mut out),
            TokenKind::Semicolon | TokenKind::QuotedIdent | TokenKind::Executable => out.push_str(tok.text(sql)),
        }
    }
    while out.ends_with(' ') || out.ends_with(';') {
        out.pop();
    }
    out
}

fn normalize_code(code: &str, out: &mut String) {
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let prev_ident = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$')
            || (i == 0 && out.ends_with(|ch: char| ch.is_alphanumeric() || ch == '_' || ch == '$'));
        if c.is_ascii_digit() && !prev_ident {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.' || b[j] == b'_') {
                j += 1;
            }
            out.push('?');
            i = j;
        } else {
            let start = i;
            i += 1;
            while i < b.len() && !b[i].is_ascii_digit() {
                i += 1;
            }
            // Digits inside identifiers (t1, col_2) are kept.
            while i < b.len()
                && b[i].is_ascii_digit()
                && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$')
            {
                i += 1;
                while i < b.len() && !b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.push_str(&code[start..i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_literals_and_comments() {
        let d = Dialect::Postgres;
        assert_eq!(
            normalize("SELECT * FROM t1 WHERE id = 42 AND name = 'bob' /*traceparent='x'*/;", d),
            "SELECT * FROM t1 WHERE id = ? AND name = ?"
        );
        assert_eq!(normalize("select  $1,\n E'a\\'b', $$x$$, 1.5e3 -- c", d), "select $1, ?, ?, ?");
        assert_eq!(
            normalize("select col_2 from \"T 1\" where x in (1,2)", d),
            "select col_2 from \"T 1\" where x in (?,?)"
        );
        assert_eq!(normalize("select e'x', be", d), "select ?, be");
    }
}
