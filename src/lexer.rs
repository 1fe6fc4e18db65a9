//! A dialect-aware SQL lexer that only knows what matters for placing a comment safely: strings, quoted
//! identifiers, dollar quotes, comments, whitespace and `;`. Everything else is an opaque `Code` run.
//!
//! PostgreSQL: `'...'` with `''`; `E'...'` with backslash escapes; `U&'...'`, `B'...'`, `X'...'` (standard
//! rules); `$tag$...$tag$`; `"identifiers"` with `""`; nested `/* /* */ */`; `--` line comments.
//! MySQL: `'...'` and `"..."` with backslash escapes and doubled quotes; `` `identifiers` ``; `#` and
//! `-- ` line comments; `/*! */` executable comments and `/*+ */` hints (both significant).
//!
//! The lexer never fails: an unterminated construct is returned as an [`TokenKind::Unterminated`] token
//! that runs to the end of the input.

use memchr::{memchr, memchr2, memmem};

/// The SQL dialect, which decides the quoting and comment rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Dialect {
    /// PostgreSQL (with `standard_conforming_strings=on`, the default since 9.1).
    #[default]
    Postgres,
    /// MySQL / MariaDB.
    MySql,
}

impl std::str::FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" | "pg" => Ok(Dialect::Postgres),
            "mysql" | "mariadb" => Ok(Dialect::MySql),
            other => Err(format!("unknown dialect {other:?} (expected postgres or mysql)")),
        }
    }
}

/// A construct that was opened but never closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Construct {
    /// A quoted string literal.
    String,
    /// A quoted identifier.
    QuotedIdent,
    /// A dollar-quoted string.
    DollarString,
    /// A block comment.
    BlockComment,
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A run of whitespace.
    Space,
    /// A run of other bytes: keywords, identifiers, numbers, operators, parameters.
    Code,
    /// `;`
    Semicolon,
    /// `-- ...` (and MySQL `# ...`) up to, not including, the line end.
    LineComment,
    /// `/* ... */` (nested in PostgreSQL).
    BlockComment,
    /// `/*+ ... */`: an optimizer hint (pg_hint_plan, MySQL), which is significant.
    Hint,
    /// MySQL `/*! ... */` or MariaDB `/*M! ... */`: executed code.
    Executable,
    /// A string literal of any kind.
    String,
    /// A dollar-quoted string.
    DollarString,
    /// A quoted identifier.
    QuotedIdent,
    /// An unterminated construct, running to the end of the input.
    Unterminated(Construct),
}

impl TokenKind {
    /// Whitespace or a plain comment: removing or adding such tokens does not change the statement.
    pub fn is_trivia(self) -> bool {
        matches!(self, TokenKind::Space | TokenKind::LineComment | TokenKind::BlockComment)
    }
}

/// A token: its kind and byte range in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// What the token is.
    pub kind: TokenKind,
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

impl Token {
    /// The token's text.
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        &src[self.start..self.end]
    }
}

const ORD: u8 = 0;
const WS: u8 = 1;
const SPECIAL: u8 = 2;

const fn class_table() -> [u8; 256] {
    let mut t = [ORD; 256];
    t[b' ' as usize] = WS;
    t[b'\t' as usize] = WS;
    t[b'\n' as usize] = WS;
    t[b'\r' as usize] = WS;
    t[0x0b] = WS;
    t[0x0c] = WS;
    let specials = b"'\"`$-/;#";
    let mut i = 0;
    while i < specials.len() {
        t[specials[i] as usize] = SPECIAL;
        i += 1;
    }
    t
}

static CLASS: [u8; 256] = class_table();

/// Literals and comments are mostly short: look at the first bytes directly before paying for a
/// vectorized search's setup.
const SHORT_SCAN: usize = 24;

/// Position of the first `a` in `s[from..]`.
#[inline]
fn find1(s: &[u8], from: usize, a: u8) -> Option<usize> {
    let end = (from + SHORT_SCAN).min(s.len());
    if let Some(p) = s[from..end].iter().position(|&b| b == a) {
        return Some(from + p);
    }
    memchr(a, &s[end..]).map(|p| end + p)
}

/// Position of the first `a` or `b` in `s[from..]`.
#[inline]
fn find2(s: &[u8], from: usize, a: u8, b: u8) -> Option<usize> {
    let end = (from + SHORT_SCAN).min(s.len());
    if let Some(p) = s[from..end].iter().position(|&c| c == a || c == b) {
        return Some(from + p);
    }
    memchr2(a, b, &s[end..]).map(|p| end + p)
}

/// Index of the first byte at or after `i` that may start a string, identifier, comment or `;`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn skip_ordinary(s: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};
    // SAFETY: SSE2 is part of the x86_64 baseline, and every load reads 16 bytes that lie within `s`
    // (`i + 16 <= s.len()`), unaligned loads being allowed by `_mm_loadu_si128`.
    unsafe {
        let n = [b'\'', b'"', b'`', b'$', b'-', b'/', b';', b'#'].map(|b| _mm_set1_epi8(b as i8));
        while i + 16 <= s.len() {
            let chunk = _mm_loadu_si128(s.as_ptr().add(i) as *const __m128i);
            let m = _mm_or_si128(
                _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(chunk, n[0]), _mm_cmpeq_epi8(chunk, n[1])),
                    _mm_or_si128(_mm_cmpeq_epi8(chunk, n[2]), _mm_cmpeq_epi8(chunk, n[3])),
                ),
                _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(chunk, n[4]), _mm_cmpeq_epi8(chunk, n[5])),
                    _mm_or_si128(_mm_cmpeq_epi8(chunk, n[6]), _mm_cmpeq_epi8(chunk, n[7])),
                ),
            );
            let mask = _mm_movemask_epi8(m);
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    while i < s.len() && CLASS[s[i] as usize] != SPECIAL {
        i += 1;
    }
    i
}

/// Index of the first byte at or after `i` that may start a string, identifier, comment or `;`.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn skip_ordinary(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && CLASS[s[i] as usize] != SPECIAL {
        i += 1;
    }
    i
}

#[inline]
fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

#[inline]
fn is_tag_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

#[inline]
fn is_tag_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Iterator over the tokens of a SQL text. Tokens cover the input without gaps.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    dialect: Dialect,
}

impl<'a> Lexer<'a> {
    /// Lexes `src` by the rules of `dialect`.
    pub fn new(src: &'a str, dialect: Dialect) -> Self {
        Lexer { src: src.as_bytes(), pos: 0, dialect }
    }

    /// What a special byte at `i` starts, if anything: returns the token end and kind.
    fn special(&self, i: usize) -> Option<(usize, TokenKind)> {
        let s = self.src;
        let b = s[i];
        let next = s.get(i + 1).copied();
        let pg = self.dialect == Dialect::Postgres;
        match b {
            b'\'' => {
                let backslash = !pg || self.escape_prefix(i);
                Some(self.quoted(i, b'\'', backslash, Construct::String, TokenKind::String))
            }
            b'"' if pg => Some(self.quoted(i, b'"', false, Construct::QuotedIdent, TokenKind::QuotedIdent)),
            b'"' => Some(self.quoted(i, b'"', true, Construct::String, TokenKind::String)),
            b'`' if !pg => Some(self.quoted(i, b'`', false, Construct::QuotedIdent, TokenKind::QuotedIdent)),
            b'$' if pg => self.dollar(i),
            b'-' if next == Some(b'-') => {
                if !pg {
                    // MySQL needs whitespace or a control character after "--".
                    match s.get(i + 2) {
                        None => {}
                        Some(&c) if c <= b' ' => {}
                        _ => return None,
                    }
                }
                Some((self.line_end(i), TokenKind::LineComment))
            }
            b'#' if !pg => Some((self.line_end(i), TokenKind::LineComment)),
            b'/' if next == Some(b'*') => Some(self.block_comment(i)),
            _ => None,
        }
    }

    /// Whether the quote at `i` opens a PostgreSQL escape string (`E'...'`).
    fn escape_prefix(&self, i: usize) -> bool {
        i >= 1 && matches!(self.src[i - 1], b'E' | b'e') && (i == 1 || !is_ident_byte(self.src[i - 2]))
    }

    /// End of a `Code` run that continues at `j`.
    fn code_run(&self, mut j: usize) -> usize {
        let s = self.src;
        loop {
            while j < s.len() && CLASS[s[j] as usize] == ORD {
                j += 1;
            }
            if j < s.len() && CLASS[s[j] as usize] == SPECIAL && s[j] != b';' && self.special(j).is_none() {
                j += 1;
                continue;
            }
            return j;
        }
    }

    fn line_end(&self, i: usize) -> usize {
        let found = if self.dialect == Dialect::Postgres {
            find2(self.src, i, b'\n', b'\r')
        } else {
            find1(self.src, i, b'\n')
        };
        found.unwrap_or(self.src.len())
    }

    fn quoted(&self, i: usize, q: u8, backslash: bool, construct: Construct, kind: TokenKind) -> (usize, TokenKind) {
        let s = self.src;
        let mut j = i + 1;
        loop {
            let found = if backslash { find2(s, j, q, b'\\') } else { find1(s, j, q) };
            match found {
                None => return (s.len(), TokenKind::Unterminated(construct)),
                Some(k) => {
                    if s[k] == b'\\' {
                        j = k + 2;
                        if j > s.len() {
                            return (s.len(), TokenKind::Unterminated(construct));
                        }
                    } else if s.get(k + 1) == Some(&q) {
                        j = k + 2;
                    } else {
                        return (k + 1, kind);
                    }
                }
            }
        }
    }

    fn dollar(&self, i: usize) -> Option<(usize, TokenKind)> {
        let s = self.src;
        if i > 0 && is_ident_byte(s[i - 1]) {
            return None;
        }
        let mut j = i + 1;
        if j < s.len() && s[j] != b'$' {
            if !is_tag_start(s[j]) {
                return None;
            }
            while j < s.len() && is_tag_byte(s[j]) {
                j += 1;
            }
        }
        if s.get(j) != Some(&b'$') {
            return None;
        }
        let tag = &s[i..=j];
        // Tags are short: find each `$` and compare, rather than building a substring searcher.
        let mut k = j + 1;
        while let Some(at) = find1(s, k, b'$') {
            if s[at..].starts_with(tag) {
                return Some((at + tag.len(), TokenKind::DollarString));
            }
            k = at + 1;
        }
        Some((s.len(), TokenKind::Unterminated(Construct::DollarString)))
    }

    fn block_comment(&self, i: usize) -> (usize, TokenKind) {
        let s = self.src;
        let kind = match (s.get(i + 2), s.get(i + 3)) {
            (Some(b'+'), _) => TokenKind::Hint,
            (Some(b'!'), _) if self.dialect == Dialect::MySql => TokenKind::Executable,
            (Some(b'M'), Some(b'!')) if self.dialect == Dialect::MySql => TokenKind::Executable,
            _ => TokenKind::BlockComment,
        };
        let nested = self.dialect == Dialect::Postgres;
        let mut depth = 1usize;
        let mut j = i + 2;
        loop {
            let found = if nested { find2(s, j, b'*', b'/') } else { find1(s, j, b'*') };
            let Some(k) = found else {
                return (s.len(), TokenKind::Unterminated(Construct::BlockComment));
            };
            if s[k] == b'*' && s.get(k + 1) == Some(&b'/') {
                depth -= 1;
                j = k + 2;
                if depth == 0 {
                    return (j, kind);
                }
            } else if s[k] == b'/' && s.get(k + 1) == Some(&b'*') {
                depth += 1;
                j = k + 2;
            } else {
                j = k + 1;
            }
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let s = self.src;
        let start = self.pos;
        if start >= s.len() {
            return None;
        }
        let b = s[start];
        let (end, kind) = match CLASS[b as usize] {
            WS => {
                let mut j = start + 1;
                while j < s.len() && CLASS[s[j] as usize] == WS {
                    j += 1;
                }
                (j, TokenKind::Space)
            }
            SPECIAL if b == b';' => (start + 1, TokenKind::Semicolon),
            SPECIAL => match self.special(start) {
                Some(found) => found,
                None => (self.code_run(start + 1), TokenKind::Code),
            },
            _ => (self.code_run(start + 1), TokenKind::Code),
        };
        self.pos = end;
        Some(Token { kind, start, end })
    }
}

/// Lexes `src` into tokens.
pub fn tokenize(src: &str, dialect: Dialect) -> Lexer<'_> {
    Lexer::new(src, dialect)
}

/// The statements of a multi-statement text (a simple Query may hold several), split at `;` outside
/// strings, identifiers and comments, each trimmed of surrounding whitespace and comments; empty ones (only
/// trivia), which the server skips, are left out. The lexer knows no grammar: a `BEGIN ATOMIC … END`
/// body with `;` inside is split too.
pub fn split_statements(src: &str, dialect: Dialect) -> Vec<&str> {
    let mut out = Vec::new();
    let mut span: Option<(usize, usize)> = None;
    for t in tokenize(src, dialect) {
        match t.kind {
            TokenKind::Semicolon => {
                if let Some((a, b)) = span.take() {
                    out.push(&src[a..b]);
                }
            }
            k if k.is_trivia() => {}
            _ => span = Some((span.map_or(t.start, |(a, _)| a), t.end)),
        }
    }
    if let Some((a, b)) = span {
        out.push(&src[a..b]);
    }
    out
}

/// What the inserter needs to know about a query, gathered in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    /// End of the last significant token (not whitespace, comment or `;`): where an appended comment goes.
    pub append_at: Option<usize>,
    /// The first non-whitespace token is an optimizer hint `/*+ ... */`.
    pub leading_hint: bool,
    /// The query contains a plain block or line comment.
    pub has_comment: bool,
    /// A block comment contains `traceparent=`.
    pub has_traceparent: bool,
    /// The construct left open at the end of the input, if any.
    pub unterminated: Option<Construct>,
}

static TRACEPARENT_FINDER: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"traceparent"));

/// Scans `src` once and describes where a comment can go. This is the inserter's hot path: it skips runs
/// of ordinary bytes and whitespace in one tight loop and only looks closer at bytes that may start a
/// string, identifier, comment or `;`.
pub fn shape(src: &str, dialect: Dialect) -> Shape {
    let lexer = Lexer::new(src, dialect);
    let s = src.as_bytes();
    let n = s.len();
    let mut shape = Shape::default();
    let mut seen_non_space = false;
    let mut i = 0;
    while i < n {
        // A run of bytes that start nothing: code and whitespace.
        let run_start = i;
        i = skip_ordinary(s, i);
        if i > run_start {
            let mut last = i;
            while last > run_start && CLASS[s[last - 1] as usize] == WS {
                last -= 1;
            }
            if last > run_start {
                shape.append_at = Some(last);
                seen_non_space = true;
            }
            if i >= n {
                break;
            }
        }
        if s[i] == b';' {
            seen_non_space = true;
            i += 1;
            continue;
        }
        let Some((end, kind)) = lexer.special(i) else {
            // A special byte that starts nothing here (`-`, `/`, `$`...): ordinary code.
            shape.append_at = Some(i + 1);
            seen_non_space = true;
            i += 1;
            continue;
        };
        match kind {
            TokenKind::LineComment => shape.has_comment = true,
            TokenKind::BlockComment => {
                shape.has_comment = true;
                if TRACEPARENT_FINDER.find(&s[i..end]).is_some() {
                    shape.has_traceparent = true;
                }
            }
            TokenKind::Unterminated(c) => shape.unterminated = Some(c),
            TokenKind::Hint => {
                if !seen_non_space {
                    shape.leading_hint = true;
                }
                shape.append_at = Some(end);
            }
            _ => shape.append_at = Some(end),
        }
        seen_non_space = true;
        i = end;
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str, d: Dialect) -> Vec<(TokenKind, &str)> {
        tokenize(src, d).map(|t| (t.kind, t.text(src))).collect()
    }

    #[test]
    fn statements_are_split_outside_literals_and_comments() {
        let d = Dialect::Postgres;
        assert_eq!(
            split_statements(" select ';' ; /* a; */ ;; insert into t values ($$x;y$$) -- z;\n", d),
            vec!["select ';'", "insert into t values ($$x;y$$)"]
        );
        assert_eq!(split_statements("select 1", d), vec!["select 1"]);
        assert!(split_statements(" ; -- only\n", d).is_empty());
    }

    #[test]
    fn postgres_constructs() {
        use TokenKind::*;
        let d = Dialect::Postgres;
        assert_eq!(
            kinds("select 'a''b', E'x\\'y', $$a;b$$, $f$ ' $f$ from \"t\"\"x\";", d),
            vec![
                (Code, "select"),
                (Space, " "),
                (String, "'a''b'"),
                (Code, ","),
                (Space, " "),
                (Code, "E"),
                (String, "'x\\'y'"),
                (Code, ","),
                (Space, " "),
                (DollarString, "$$a;b$$"),
                (Code, ","),
                (Space, " "),
                (DollarString, "$f$ ' $f$"),
                (Space, " "),
                (Code, "from"),
                (Space, " "),
                (QuotedIdent, "\"t\"\"x\""),
                (Semicolon, ";"),
            ]
        );
        assert_eq!(
            kinds("/* a /* b */ c */ x -- y\n/*+ hint */", d),
            vec![
                (BlockComment, "/* a /* b */ c */"),
                (Space, " "),
                (Code, "x"),
                (Space, " "),
                (LineComment, "-- y"),
                (Space, "\n"),
                (Hint, "/*+ hint */"),
            ]
        );
        // standard strings: backslash is literal
        assert_eq!(kinds("'a\\'", d), vec![(String, "'a\\'")]);
        // parameters and identifiers with $ are code, not dollar quotes
        assert_eq!(kinds("a$b$ $1 - 2 / 3", d)[0], (Code, "a$b$"));
        assert_eq!(kinds("$1-$2", d), vec![(Code, "$1-$2")]);
        assert_eq!(kinds("U&'d\\0061t'", d), vec![(Code, "U&"), (String, "'d\\0061t'")]);
        assert_eq!(kinds("'abc", d), vec![(Unterminated(Construct::String), "'abc")]);
        assert_eq!(kinds("$x$ abc", d), vec![(Unterminated(Construct::DollarString), "$x$ abc")]);
        assert_eq!(kinds("/* /* */", d), vec![(Unterminated(Construct::BlockComment), "/* /* */")]);
        assert_eq!(kinds("e'\\\\'x'", d)[1], (String, "'\\\\'"));
        assert_eq!(kinds("1-2", d), vec![(Code, "1-2")]);
    }

    #[test]
    fn mysql_constructs() {
        use TokenKind::*;
        let d = Dialect::MySql;
        assert_eq!(
            kinds("select 'a\\'b', \"c\"\"d\", `e``f` # x\n", d),
            vec![
                (Code, "select"),
                (Space, " "),
                (String, "'a\\'b'"),
                (Code, ","),
                (Space, " "),
                (String, "\"c\"\"d\""),
                (Code, ","),
                (Space, " "),
                (QuotedIdent, "`e``f`"),
                (Space, " "),
                (LineComment, "# x"),
                (Space, "\n"),
            ]
        );
        assert_eq!(kinds("1--2", d), vec![(Code, "1--2")]);
        assert_eq!(kinds("1-- 2", d), vec![(Code, "1"), (LineComment, "-- 2")]);
        assert_eq!(kinds("/*! STRAIGHT_JOIN */", d), vec![(Executable, "/*! STRAIGHT_JOIN */")]);
        // MySQL comments do not nest
        assert_eq!(kinds("/* /* */ x", d)[0], (BlockComment, "/* /* */"));
        assert_eq!(kinds("$$x", d), vec![(Code, "$$x")]);
    }

    #[test]
    fn shape_of_queries() {
        let d = Dialect::Postgres;
        let s = shape("select 1; -- done\n", d);
        assert_eq!(s.append_at, Some(8));
        assert!(s.has_comment);
        let s = shape("/*+ SeqScan(t) */ select * from t", d);
        assert!(s.leading_hint);
        let s = shape("select 1 /*traceparent='x'*/", d);
        assert!(s.has_traceparent);
        assert_eq!(shape("select 'x", d).unterminated, Some(Construct::String));
        assert_eq!(shape("  -- only a comment", d).append_at, None);
    }
}
