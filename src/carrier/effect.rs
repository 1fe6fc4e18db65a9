//! What a client's own statement does to session settings, read with the core lexer (never substring
//! search: `SET` in a string literal or a comment is not a `SET`).

use std::borrow::Cow;

use super::Scope;
use crate::lexer::{tokenize, Dialect, TokenKind};

/// What one statement does, as far as a carrier cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<'a> {
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END` (the transaction ends; a failed one is rolled back by the server).
    Commit,
    /// `ROLLBACK`, `ABORT`: settings made in the transaction revert.
    Rollback,
    /// `ROLLBACK TO [SAVEPOINT]`: settings made since the savepoint revert.
    RollbackToSavepoint,
    /// `SET [SESSION|LOCAL] var …`, `RESET var`, `SET var TO DEFAULT`, or a `set_config` call with literal
    /// arguments. `value` is `None` for a reset to the default, or when it is not a literal.
    Set {
        /// The setting's name, lowercased.
        variable: Cow<'a, str>,
        /// The new value, when written as a literal; `None` for `RESET`/`DEFAULT`.
        value: Option<Cow<'a, str>>,
        /// `SET LOCAL` / `set_config(…, true)`.
        scope: Scope,
        /// The value is not known (a `set_config` with computed arguments, `FROM CURRENT`).
        computed: bool,
    },
    /// `RESET ALL`, `DISCARD ALL`: every setting returns to its session default.
    ResetAll,
    /// Calls `set_config` on something not written as literals: any setting may have changed.
    UnknownSettings,
    /// A statement PostgreSQL refuses inside a transaction block (`VACUUM`, `CREATE INDEX CONCURRENTLY`,
    /// `CREATE DATABASE`, …): no transaction-scoped carrier may share its transaction.
    NoTransactionBlock,
    /// Anything else.
    Other,
}

/// A word, punctuation byte, or string literal of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom<'a> {
    Word(&'a str),
    Punct(u8),
    Str(Cow<'a, str>),
    Other,
}

impl Atom<'_> {
    fn is(&self, kw: &str) -> bool {
        matches!(self, Atom::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$' || b >= 0x80
}

/// Decodes a PostgreSQL string literal token (`'…'`, `E'…'`); `None` for forms it does not decode.
fn decode_literal(text: &str) -> Option<Cow<'_, str>> {
    let (escape, body) = match text.as_bytes().first()? {
        b'\'' => (false, text),
        b'E' | b'e' => (true, &text[1..]),
        _ => return None,
    };
    let inner = body.strip_prefix('\'')?.strip_suffix('\'')?;
    if !(inner.contains('\'') || escape && inner.contains('\\')) {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                chars.next_if_eq(&'\'');
                out.push('\'');
            }
            '\\' if escape => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                other if other.is_ascii_alphanumeric() => return None,
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    Some(Cow::Owned(out))
}

/// The atoms of `sql`, statement by statement.
fn atomize(sql: &str) -> Vec<Vec<Atom<'_>>> {
    let mut out = vec![Vec::new()];
    for tok in tokenize(sql, Dialect::Postgres) {
        let text = tok.text(sql);
        let atoms = out.last_mut().expect("never empty");
        match tok.kind {
            TokenKind::Space | TokenKind::LineComment | TokenKind::BlockComment | TokenKind::Hint => {}
            TokenKind::Semicolon => out.push(Vec::new()),
            TokenKind::String => {
                // `E'…'`: the lexer leaves the `E` in the code before the quote.
                let escape = tok.start > 0
                    && matches!(atoms.last(), Some(Atom::Word(w)) if w.eq_ignore_ascii_case("e"))
                    && sql.as_bytes()[tok.start - 1].eq_ignore_ascii_case(&b'e');
                let text = if escape {
                    atoms.pop();
                    &sql[tok.start - 1..tok.end]
                } else {
                    text
                };
                atoms.push(decode_literal(text).map_or(Atom::Other, Atom::Str));
            }
            TokenKind::QuotedIdent => atoms.push(Atom::Other),
            TokenKind::Code => {
                let b = text.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    if is_word_byte(b[i]) {
                        let start = i;
                        while i < b.len() && is_word_byte(b[i]) {
                            i += 1;
                        }
                        atoms.push(Atom::Word(&text[start..i]));
                    } else {
                        atoms.push(Atom::Punct(b[i]));
                        i += 1;
                    }
                }
            }
            _ => atoms.push(Atom::Other),
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The words that begin (or, for `set_config`, mark) every statement [`statements`] classifies as
/// anything but [`Effect::Other`], by their first letter.
const fn effect_words(first: u8) -> &'static [&'static [u8]] {
    match first {
        b'a' => &[b"abort", b"alter"],
        b'b' => &[b"begin"],
        b'c' => &[b"commit", b"create", b"cluster"],
        b'd' => &[b"discard", b"drop"],
        b'e' => &[b"end"],
        b'r' => &[b"rollback", b"reset", b"reindex"],
        b's' => &[b"set", b"start", b"set_config"],
        b'v' => &[b"vacuum"],
        _ => &[],
    }
}

/// Bytes of a word for [`may_have_effect`]: ASCII letters, digits, `_`.
static WORD_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    t
};

/// A cheap prefilter for [`statements`], for callers that see every statement (the proxy): `false` means
/// every statement in `sql` is [`Effect::Other`]. What [`statements`] classifies is decided by a
/// statement's first word, or a `set_config` anywhere: so it looks for `set_config` (at each `_`) and
/// reads the first word at the start and after each `;` — a statement that does not start with a letter
/// (a leading comment, a parenthesis) has every word read instead. Case-insensitive, no allocation; a
/// keyword inside a literal or a comment gives `true` (then [`statements`] reads it properly).
pub fn may_have_effect(sql: &[u8]) -> bool {
    // The first word of the statement starting at `start`: whether it begins an effect, or `None` when the
    // statement does not start with a letter.
    let first_word = |start: usize| {
        let s = sql[start..].trim_ascii_start();
        match s.first() {
            None => Some(false),
            Some(b) if b.is_ascii_alphabetic() => {
                let len = s.iter().position(|&b| !WORD_BYTE[b as usize]).unwrap_or(s.len());
                Some(is_effect_word(&s[..len]))
            }
            Some(_) => None,
        }
    };
    let mut read_all = false;
    let mut check = |start: usize| match first_word(start) {
        Some(effect) => effect,
        None => {
            read_all = true;
            false
        }
    };
    if check(0) {
        return true;
    }
    // One pass for both bytes: a `_` may be set_config's, a `;` starts a statement.
    for i in memchr::memchr2_iter(b'_', b';', sql) {
        let hit = if sql[i] == b'_' {
            i >= 3
                && sql[i - 3..i].eq_ignore_ascii_case(b"set")
                && sql.get(i + 1..i + 7).is_some_and(|w| w.eq_ignore_ascii_case(b"config"))
        } else {
            check(i + 1)
        };
        if hit {
            return true;
        }
    }
    read_all && any_effect_word(sql)
}

/// Whether any word of `sql` (runs of ASCII letters, digits and `_`) begins an effect.
fn any_effect_word(sql: &[u8]) -> bool {
    let (mut i, n) = (0, sql.len());
    while i < n {
        if !WORD_BYTE[sql[i] as usize] {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && WORD_BYTE[sql[i] as usize] {
            i += 1;
        }
        if is_effect_word(&sql[start..i]) {
            return true;
        }
    }
    false
}

/// Whether `w` is one of the [`effect_words`], case-insensitively.
fn is_effect_word(w: &[u8]) -> bool {
    let Some(&first) = w.first() else { return false };
    let first = first | 0x20;
    // Most words are ruled out by their first letter and length alone.
    w.len() < 16
        && EFFECT_LENGTHS[first as usize] & (1 << w.len()) != 0
        && effect_words(first).iter().any(|k| w.eq_ignore_ascii_case(k))
}

/// Per first letter (lowercase), a bit for each length of its [`effect_words`].
static EFFECT_LENGTHS: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut c = 0;
    while c < 256 {
        let words = effect_words(c as u8);
        let mut k = 0;
        while k < words.len() {
            t[c] |= 1 << words[k].len();
            k += 1;
        }
        c += 1;
    }
    t
};

/// The effect of every statement in `sql` (a simple Query may hold several), in order.
pub fn statements(sql: &str) -> Vec<Effect<'_>> {
    atomize(sql).iter().map(|atoms| classify(atoms)).collect()
}

/// Whether the server keeps the first statement's text and shows it back — `PREPARE name AS …`
/// (`pg_prepared_statements.statement`) and `DECLARE … CURSOR` (`pg_cursors.statement`): a per-request
/// comment would be frozen into it and shown to the client. Carry context at `EXECUTE`/`FETCH` instead.
pub fn stores_text(sql: &str) -> bool {
    // Only the first two words matter: stop there (the proxy asks this of every statement it comments).
    // Most statements are told apart by their first byte.
    if !matches!(sql.bytes().find(|b| !b.is_ascii_whitespace()), Some(b'p' | b'P' | b'd' | b'D' | b'/' | b'-')) {
        return false;
    }
    let mut words = tokenize(sql, Dialect::Postgres)
        .filter(|t| !matches!(t.kind, TokenKind::Space | TokenKind::LineComment | TokenKind::BlockComment))
        .take_while(|t| t.kind == TokenKind::Code)
        .flat_map(|t| t.text(sql).split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| !w.is_empty());
    match words.next() {
        Some(w) if w.eq_ignore_ascii_case("PREPARE") => {
            !words.next().is_some_and(|x| x.eq_ignore_ascii_case("TRANSACTION"))
        }
        Some(w) => w.eq_ignore_ascii_case("DECLARE"),
        None => false,
    }
}

fn lower(w: &str) -> Cow<'_, str> {
    if w.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(w.to_ascii_lowercase())
    } else {
        Cow::Borrowed(w)
    }
}

fn classify<'a>(a: &[Atom<'a>]) -> Effect<'a> {
    let at = |i: usize, kw: &str| a.get(i).is_some_and(|x| x.is(kw));
    let Some(Atom::Word(first)) = a.first() else { return Effect::Other };
    let first = first.to_ascii_uppercase();
    match first.as_str() {
        "BEGIN" => Effect::Begin,
        "START" if at(1, "TRANSACTION") => Effect::Begin,
        "COMMIT" | "END" if at(1, "PREPARED") => Effect::NoTransactionBlock,
        "COMMIT" | "END" => Effect::Commit,
        "ROLLBACK" | "ABORT" if at(1, "PREPARED") => Effect::NoTransactionBlock,
        "ROLLBACK" | "ABORT" if at(1, "TO") || (at(1, "WORK") || at(1, "TRANSACTION")) && at(2, "TO") => {
            Effect::RollbackToSavepoint
        }
        "ROLLBACK" | "ABORT" => Effect::Rollback,
        "DISCARD" if at(1, "ALL") => Effect::ResetAll,
        "RESET" if at(1, "ALL") => Effect::ResetAll,
        "RESET" => match a.get(1) {
            Some(Atom::Word(v)) => {
                Effect::Set { variable: lower(v), value: None, scope: Scope::Session, computed: false }
            }
            _ => Effect::Other,
        },
        "SET" => classify_set(&a[1..]),
        "VACUUM" | "ALTER" if first == "VACUUM" || at(1, "SYSTEM") => Effect::NoTransactionBlock,
        "CREATE" | "DROP" if at(1, "DATABASE") || at(1, "TABLESPACE") || at(1, "SUBSCRIPTION") => {
            Effect::NoTransactionBlock
        }
        "CREATE" | "DROP" | "REINDEX" if a.iter().take(5).any(|x| x.is("CONCURRENTLY")) => Effect::NoTransactionBlock,
        "REINDEX" if at(1, "DATABASE") || at(1, "SYSTEM") => Effect::NoTransactionBlock,
        "CLUSTER" if a.len() == 1 || a.len() == 2 && at(1, "VERBOSE") => Effect::NoTransactionBlock,
        _ => classify_set_config(a),
    }
}

/// `SET …` after the `SET` keyword.
fn classify_set<'a>(a: &[Atom<'a>]) -> Effect<'a> {
    let (scope, rest) = match a.first() {
        Some(x) if x.is("LOCAL") => (Scope::Transaction, &a[1..]),
        Some(x) if x.is("SESSION") && !a.get(1).is_some_and(|y| y.is("AUTHORIZATION") || y.is("CHARACTERISTICS")) => {
            (Scope::Session, &a[1..])
        }
        _ => (Scope::Session, a),
    };
    let Some(Atom::Word(var)) = rest.first() else { return Effect::Other };
    if ["TRANSACTION", "CONSTRAINTS", "ROLE", "SESSION", "TIME"].iter().any(|k| var.eq_ignore_ascii_case(k)) {
        return Effect::Other;
    }
    let value_at = match rest.get(1) {
        Some(x) if x.is("TO") => 2,
        Some(Atom::Punct(b'=')) => 2,
        Some(x) if x.is("FROM") => {
            return Effect::Set { variable: lower(var), value: None, scope, computed: true };
        }
        _ => return Effect::Other,
    };
    let (value, computed) = match &rest[value_at..] {
        [x] if x.is("DEFAULT") => (None, false),
        [Atom::Str(s)] => (Some(s.clone()), false),
        [Atom::Word(w)] => (Some(Cow::Borrowed(*w)), false),
        _ => (None, true),
    };
    Effect::Set { variable: lower(var), value, scope, computed }
}

/// A statement that calls `set_config`: exactly `SELECT [pg_catalog.]set_config('var', 'value', bool)`
/// gives a known [`Effect::Set`]; one call elsewhere with a literal name changes that setting to a value not
/// known here (`computed`) — asyncpg's `SELECT current_setting('jit'), set_config('jit', 'off', false)`
/// changes `jit`, nothing else; any other call (a computed name, several calls) may change any setting.
fn classify_set_config<'a>(a: &[Atom<'a>]) -> Effect<'a> {
    let is_fn = |x: &Atom| x.is("set_config") || x.is("pg_catalog.set_config");
    let mut calls = a.iter().enumerate().filter(|(_, x)| is_fn(x)).map(|(i, _)| i);
    let Some(at) = calls.next() else { return Effect::Other };
    if calls.next().is_some() {
        return Effect::UnknownSettings;
    }
    let args = &a[at + 1..];
    let [Atom::Punct(b'('), Atom::Str(var), Atom::Punct(b','), value, Atom::Punct(b','), local, ..] = args else {
        return Effect::UnknownSettings;
    };
    let variable = Cow::Owned(var.to_ascii_lowercase());
    let scope = match local {
        Atom::Word(w) if w.eq_ignore_ascii_case("true") => Scope::Transaction,
        // `false`, or not known: the session's value may change.
        _ => Scope::Session,
    };
    let exact = at == 1 && a[0].is("SELECT") && args.len() == 7 && args[6] == Atom::Punct(b')');
    match (value, local) {
        (Atom::Str(v), Atom::Word(w))
            if exact && (w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false")) =>
        {
            Effect::Set { variable, value: Some(v.clone()), scope, computed: false }
        }
        _ => Effect::Set { variable, value: None, scope, computed: true },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The prefilter never hides an effect: words from the grammar and others, in any case.
        #[test]
        fn the_prefilter_never_hides_an_effect(words in proptest::collection::vec(proptest::sample::select(vec![
            "BEGIN", "start", "transaction", "Commit", "end", "prepared", "rollback", "to", "savepoint", "abort",
            "discard", "all", "reset", "set", "local", "session", "application_name", "=", "'x'", ";", "vacuum",
            "alter", "system", "create", "drop", "database", "tablespace", "subscription", "index", "concurrently",
            "reindex", "cluster", "verbose", "select", "pg_catalog.set_config", "(", ")", ",", "true", "from",
            "current", "default", "work", "x", "1", "/* c */", "--c\n", "x$set", "éBEGIN", "a.commit", "offset", "_end", "\t", "'a;b'", "/* /* n */ */", "E'x'",
        ]), 0..8)) {
            let sql = words.join(" ");
            if !may_have_effect(sql.as_bytes()) {
                proptest::prop_assert!(statements(&sql).iter().all(|e| *e == Effect::Other), "{sql}");
            }
        }
    }

    fn one(sql: &str) -> Effect<'_> {
        let mut v = statements(sql);
        assert_eq!(v.len(), 1, "{sql}: {v:?}");
        v.remove(0)
    }

    fn set(var: &str, value: Option<&str>, scope: Scope) -> Effect<'static> {
        Effect::Set {
            variable: Cow::Owned(var.into()),
            value: value.map(|v| Cow::Owned(v.into())),
            scope,
            computed: false,
        }
    }

    #[test]
    fn transaction_control() {
        assert_eq!(one("begin"), Effect::Begin);
        assert_eq!(one("START TRANSACTION ISOLATION LEVEL SERIALIZABLE"), Effect::Begin);
        assert_eq!(one("COMMIT;"), Effect::Commit);
        assert_eq!(one("end"), Effect::Commit);
        assert_eq!(one("rollback"), Effect::Rollback);
        assert_eq!(one("ABORT"), Effect::Rollback);
        assert_eq!(one("ROLLBACK TO SAVEPOINT s1"), Effect::RollbackToSavepoint);
        assert_eq!(one("rollback to s1"), Effect::RollbackToSavepoint);
        assert_eq!(one("ROLLBACK WORK TO s1"), Effect::RollbackToSavepoint);
        assert_eq!(one("ROLLBACK PREPARED 'x'"), Effect::NoTransactionBlock);
    }

    #[test]
    fn settings() {
        assert_eq!(one("SET application_name = 'x'"), set("application_name", Some("x"), Scope::Session));
        assert_eq!(
            one("set LOCAL Application_Name TO E'a''b'"),
            set("application_name", Some("a'b"), Scope::Transaction)
        );
        assert_eq!(
            one("SET SESSION sqlcommenter.traceparent TO DEFAULT"),
            set("sqlcommenter.traceparent", None, Scope::Session)
        );
        assert_eq!(one("RESET application_name"), set("application_name", None, Scope::Session));
        assert_eq!(one("RESET ALL"), Effect::ResetAll);
        assert_eq!(one("DISCARD ALL"), Effect::ResetAll);
        assert_eq!(
            one("SET search_path TO public, x"),
            Effect::Set { variable: "search_path".into(), value: None, scope: Scope::Session, computed: true }
        );
        assert_eq!(one("SET TRANSACTION READ ONLY"), Effect::Other);
        assert_eq!(one("SET SESSION AUTHORIZATION bob"), Effect::Other);
        assert_eq!(one("SET TIME ZONE 'UTC'"), Effect::Other);
        assert_eq!(
            one("SELECT pg_catalog.set_config('application_name', 'x', true)"),
            set("application_name", Some("x"), Scope::Transaction)
        );
        assert_eq!(one("select set_config('a.b', E'v', false)"), set("a.b", Some("v"), Scope::Session));
        assert_eq!(one("SELECT set_config($1, $2, $3)"), Effect::UnknownSettings);
        assert_eq!(
            one("SELECT x, set_config('a.b', y, false) FROM t"),
            Effect::Set { variable: "a.b".into(), value: None, scope: Scope::Session, computed: true }
        );
        // asyncpg's introspection: it changes jit, and only jit.
        assert_eq!(
            one("SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new"),
            Effect::Set { variable: "jit".into(), value: None, scope: Scope::Session, computed: true }
        );
        assert_eq!(one("SELECT set_config('a.b', 'x', true), set_config('c.d', 'y', true)"), Effect::UnknownSettings);
        assert_eq!(one("SELECT set_config(v, 'x', true) FROM t"), Effect::UnknownSettings);
    }

    #[test]
    fn words_in_strings_and_comments_are_not_statements() {
        assert_eq!(one("SELECT 'RESET ALL; SET application_name = 1'"), Effect::Other);
        assert_eq!(one("/* ROLLBACK */ SELECT 1 -- DISCARD ALL"), Effect::Other);
        assert_eq!(one("SELECT 'set_config'"), Effect::Other);
        assert_eq!(
            statements("BEGIN; SET LOCAL application_name TO 'x'; SELECT 1"),
            vec![Effect::Begin, set("application_name", Some("x"), Scope::Transaction), Effect::Other]
        );
    }

    #[test]
    fn texts_the_server_keeps() {
        assert!(stores_text("PREPARE q1 AS SELECT 1"));
        assert!(stores_text("/* x */ declare c cursor for select 1"));
        assert!(!stores_text("PREPARE TRANSACTION 'x'"));
        assert!(!stores_text("EXECUTE q1"));
        assert!(!stores_text("SELECT 'PREPARE q AS'"));
        assert!(!stores_text(""));
    }

    #[test]
    fn statements_outside_transaction_blocks() {
        for sql in [
            "VACUUM t",
            "vacuum",
            "CREATE INDEX CONCURRENTLY i ON t(x)",
            "create unique index concurrently i on t(x)",
            "DROP INDEX CONCURRENTLY i",
            "REINDEX TABLE CONCURRENTLY t",
            "REINDEX DATABASE d",
            "CREATE DATABASE d",
            "DROP DATABASE d",
            "ALTER SYSTEM SET x = 1",
            "CREATE TABLESPACE s LOCATION '/x'",
            "CLUSTER",
            "COMMIT PREPARED 'x'",
        ] {
            assert_eq!(one(sql), Effect::NoTransactionBlock, "{sql}");
        }
        for sql in
            ["CREATE INDEX i ON t(x)", "REINDEX TABLE t", "CLUSTER t USING i", "SELECT 1", "ALTER TABLE t ADD x int"]
        {
            assert_eq!(one(sql), Effect::Other, "{sql}");
        }
    }
}
