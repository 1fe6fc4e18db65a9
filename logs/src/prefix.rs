//! `log_line_prefix` matching for stderr logs.
//!
//! The prefix is compiled into literals and fields. Fields with a fixed shape (`%m`, `%p`, `%c`, `%e`, ...)
//! are scanned deterministically; free-text fields (`%a`, `%u`, `%d`, `%i`, `%b`) may contain anything,
//! spaces included, so they are matched by bounded backtracking: shortest candidate first, and a match only
//! counts when the text after the whole prefix starts with a severity label (`LOG:  `, `ERROR:  `, ...).
//! `%q` makes everything after it optional (non-session processes stop the prefix there).

use crate::parser::Src;
use crate::record::{parse_i64, push_lossy, LogRecord, Severity};
use crate::time::{parse_epoch, parse_timestamp, Zones};

/// An error in a `log_line_prefix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// `%` at the end of the prefix.
    #[error("log_line_prefix ends with a lone '%'")]
    TrailingPercent,
    /// More items than the matcher supports.
    #[error("log_line_prefix has too many items (max {0})")]
    TooLong(usize),
}

/// One `%` escape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `%a` application_name.
    App,
    /// `%u` user.
    User,
    /// `%d` database.
    Db,
    /// `%p` pid.
    Pid,
    /// `%P` parallel leader pid.
    LeaderPid,
    /// `%h` remote host.
    Host,
    /// `%r` remote host and port.
    HostPort,
    /// `%c` session id.
    Session,
    /// `%l` session line number.
    LineNum,
    /// `%m` time with milliseconds.
    Millis,
    /// `%t` time.
    Time,
    /// `%n` epoch with milliseconds.
    Epoch,
    /// `%s` session start time.
    SessionStart,
    /// `%i` command tag.
    Tag,
    /// `%e` SQLSTATE.
    SqlState,
    /// `%v` virtual transaction id.
    Vxid,
    /// `%x` transaction id.
    Xid,
    /// `%Q` query id.
    QueryId,
    /// `%b` backend type.
    BackendType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Lit(Vec<u8>),
    Field(Escape, bool),
    Q,
}

const MAX_ITEMS: usize = 48;
/// Longest free-text field tried (NAMEDATALEN and command tags are shorter; padding may add some).
const MAX_FREE: usize = 160;

/// A compiled `log_line_prefix`.
#[derive(Debug, Clone)]
pub struct Prefix {
    items: Vec<Item>,
    source: String,
}

/// The default PostgreSQL 15 prefix.
pub const DEFAULT_PREFIX: &str = "%m [%p] ";

impl Prefix {
    /// Compiles a `log_line_prefix` (PostgreSQL's escapes; unknown escapes print nothing, as in the server).
    pub fn new(prefix: &str) -> Result<Self, PrefixError> {
        let b = prefix.as_bytes();
        let mut items: Vec<Item> = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'%' {
                lit.push(b[i]);
                i += 1;
                continue;
            }
            i += 1;
            let mut padded = false;
            if b.get(i) == Some(&b'-') {
                padded = true;
                i += 1;
            }
            while i < b.len() && b[i].is_ascii_digit() {
                padded = true;
                i += 1;
            }
            let Some(&c) = b.get(i) else { return Err(PrefixError::TrailingPercent) };
            i += 1;
            let esc = match c {
                b'%' => {
                    lit.push(b'%');
                    continue;
                }
                b'q' => None,
                b'a' => Some(Escape::App),
                b'u' => Some(Escape::User),
                b'd' => Some(Escape::Db),
                b'p' => Some(Escape::Pid),
                b'P' => Some(Escape::LeaderPid),
                b'h' => Some(Escape::Host),
                b'r' => Some(Escape::HostPort),
                b'c' => Some(Escape::Session),
                b'l' => Some(Escape::LineNum),
                b'm' => Some(Escape::Millis),
                b't' => Some(Escape::Time),
                b'n' => Some(Escape::Epoch),
                b's' => Some(Escape::SessionStart),
                b'i' => Some(Escape::Tag),
                b'e' => Some(Escape::SqlState),
                b'v' => Some(Escape::Vxid),
                b'x' => Some(Escape::Xid),
                b'Q' => Some(Escape::QueryId),
                b'b' => Some(Escape::BackendType),
                _ => continue,
            };
            if !lit.is_empty() {
                items.push(Item::Lit(std::mem::take(&mut lit)));
            }
            items.push(match esc {
                Some(e) => Item::Field(e, padded),
                None => Item::Q,
            });
        }
        if !lit.is_empty() {
            items.push(Item::Lit(lit));
        }
        if items.len() > MAX_ITEMS {
            return Err(PrefixError::TooLong(MAX_ITEMS));
        }
        Ok(Prefix { items, source: prefix.to_owned() })
    }

    /// The empty prefix: lines start with their severity.
    pub fn empty() -> Self {
        Prefix { items: Vec::new(), source: String::new() }
    }

    /// The prefix as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Matches `line` (without its newline). On success fills the prefix fields of `rec` (which the caller has
    /// cleared) and returns the severity and the offset where the message text starts.
    pub fn parse_line(&self, line: &[u8], rec: &mut LogRecord, zones: &Zones) -> Option<(Severity, usize)> {
        self.parse_src(&Src::new(line), line, rec, zones)
    }

    /// [`Prefix::parse_line`] on a line already checked for UTF-8.
    pub(crate) fn parse_src(
        &self,
        src: &Src<'_>,
        line: &[u8],
        rec: &mut LogRecord,
        zones: &Zones,
    ) -> Option<(Severity, usize)> {
        let mut caps = [(0u32, 0u32); MAX_ITEMS];
        let (end_items, msg_pos) = self.match_from(0, line, 0, &mut caps)?;
        let (sev, msg_start) = severity_at(line, msg_pos)?;
        for (idx, item) in self.items[..end_items].iter().enumerate() {
            if let Item::Field(esc, _) = item {
                let (mut s, mut e) = (caps[idx].0 as usize, caps[idx].1 as usize);
                while s < e && line[s] == b' ' {
                    s += 1;
                }
                while e > s && line[e - 1] == b' ' {
                    e -= 1;
                }
                fill(rec, *esc, &line[s..e], src, (s, e), zones);
            }
        }
        Some((sev, msg_start))
    }

    /// Backtracking matcher: returns (number of items matched, position after the prefix).
    fn match_from(
        &self,
        idx: usize,
        line: &[u8],
        pos: usize,
        caps: &mut [(u32, u32); MAX_ITEMS],
    ) -> Option<(usize, usize)> {
        let Some(item) = self.items.get(idx) else {
            return severity_at(line, pos).map(|_| (idx, pos));
        };
        match item {
            Item::Lit(l) => {
                if line[pos..].starts_with(l) {
                    self.match_from(idx + 1, line, pos + l.len(), caps)
                } else {
                    None
                }
            }
            Item::Q => {
                if let Some(r) = self.match_from(idx + 1, line, pos, caps) {
                    return Some(r);
                }
                severity_at(line, pos).map(|_| (idx, pos))
            }
            Item::Field(esc, padded) => {
                let mut start = pos;
                // A padded number is right-aligned (`%10p`): skip the spaces before it. Free text keeps
                // them in its capture, which is trimmed.
                if *padded && !is_free(*esc) {
                    while start < line.len() && line[start] == b' ' {
                        start += 1;
                    }
                }
                if is_free(*esc) {
                    let max = (start + MAX_FREE).min(line.len());
                    let next_lit = match self.items.get(idx + 1) {
                        Some(Item::Lit(l)) => Some(l[0]),
                        _ => None,
                    };
                    let mut end = start;
                    loop {
                        let candidate = match next_lit {
                            Some(c) => memchr::memchr(c, &line[end..max]).map(|off| end + off),
                            None => Some(end),
                        };
                        let e = candidate?;
                        caps[idx] = (start as u32, e as u32);
                        if let Some(r) = self.match_from(idx + 1, line, e, caps) {
                            return Some(r);
                        }
                        if e >= max {
                            return None;
                        }
                        end = e + 1;
                    }
                } else {
                    let mut ends = [0usize; MAX_CANDIDATES];
                    let n = scan_fixed(*esc, line, start, &mut ends);
                    for &end in &ends[..n] {
                        caps[idx] = (start as u32, end as u32);
                        // Left-aligned (`%-10p`): the padding spaces, all of them first, then fewer (the
                        // separator may start with a space too).
                        let mut e = end;
                        if *padded {
                            while e < line.len() && line[e] == b' ' {
                                e += 1;
                            }
                        }
                        loop {
                            if let Some(r) = self.match_from(idx + 1, line, e, caps) {
                                return Some(r);
                            }
                            if e == end {
                                break;
                            }
                            e -= 1;
                        }
                    }
                    None
                }
            }
        }
    }
}

fn is_free(esc: Escape) -> bool {
    matches!(
        esc,
        Escape::App | Escape::User | Escape::Db | Escape::Tag | Escape::BackendType | Escape::Host | Escape::HostPort
    )
}

fn scan_digits(line: &[u8], mut i: usize, allow_neg: bool) -> usize {
    if allow_neg && line.get(i) == Some(&b'-') && line.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    while i < line.len() && line[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// Most ends a fixed-shape field can have (a time: with its zone, a shorter numeric zone, without zone).
const MAX_CANDIDATES: usize = 3;

/// Scans a fixed-shape field starting at `i`: writes the possible ends into `ends`, longest first, and
/// returns how many there are (0 when the shape does not match).
fn scan_fixed(esc: Escape, line: &[u8], i: usize, ends: &mut [usize; MAX_CANDIDATES]) -> usize {
    let one = |ends: &mut [usize; MAX_CANDIDATES], e: Option<usize>| match e {
        Some(e) => {
            ends[0] = e;
            1
        }
        None => 0,
    };
    match esc {
        Escape::Millis | Escape::Time | Escape::SessionStart => time_ends(line, i, ends),
        // `backend/local` or nothing (processes without a virtual transaction)
        Escape::Vxid => {
            let a = scan_digits(line, i, true);
            let mut n = 0;
            if a > i && line.get(a) == Some(&b'/') {
                ends[n] = scan_digits(line, a + 1, true);
                n += 1;
            }
            ends[n] = i;
            n + 1
        }
        _ => one(ends, scan_fixed_one(esc, line, i)),
    }
}

/// The ends of `YYYY-MM-DD HH:MM:SS[.fff][ ZONE]` at `i`. `%Z` prints a zone as letters (`UTC`, `CEST`) or
/// a sign and 2 or 4 digits (`+03`, `-0530`), so a zone never runs into a following `-` or digit separator.
fn time_ends(line: &[u8], i: usize, ends: &mut [usize; MAX_CANDIDATES]) -> usize {
    let Some(s) = line.get(i..i + 19) else { return 0 };
    if s[4] != b'-' || s[7] != b'-' || s[10] != b' ' || s[13] != b':' || s[16] != b':' {
        return 0;
    }
    let mut e = i + 19;
    if line.get(e) == Some(&b'.') {
        e = scan_digits(line, e + 1, false);
    }
    let mut n = 0;
    if line.get(e) == Some(&b' ') {
        let z = e + 1;
        match line.get(z) {
            Some(b'+' | b'-') => {
                let d = scan_digits(line, z + 1, false) - (z + 1);
                if d >= 4 {
                    ends[n] = z + 5;
                    n += 1;
                }
                if d >= 2 {
                    ends[n] = z + 3;
                    n += 1;
                }
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let mut j = z;
                while j < line.len() && line[j].is_ascii_alphabetic() {
                    j += 1;
                }
                ends[n] = j;
                n += 1;
            }
            _ => {}
        }
    }
    ends[n] = e;
    n + 1
}

/// Scans a single-shape fixed field starting at `i`; `None` when the shape does not match.
fn scan_fixed_one(esc: Escape, line: &[u8], i: usize) -> Option<usize> {
    match esc {
        Escape::Pid | Escape::LineNum => {
            let e = scan_digits(line, i, false);
            (e > i).then_some(e)
        }
        Escape::LeaderPid | Escape::Xid => Some(scan_digits(line, i, false)),
        Escape::QueryId => Some(scan_digits(line, i, true)),
        Escape::Session => {
            let hex = |mut j: usize| {
                while j < line.len() && line[j].is_ascii_hexdigit() {
                    j += 1;
                }
                j
            };
            let a = hex(i);
            if a == i || line.get(a) != Some(&b'.') {
                return None;
            }
            let b = hex(a + 1);
            (b > a + 1).then_some(b)
        }
        Escape::Epoch => {
            let e = scan_digits(line, i, false);
            if e == i {
                return None;
            }
            if line.get(e) == Some(&b'.') {
                Some(scan_digits(line, e + 1, false))
            } else {
                Some(e)
            }
        }
        Escape::SqlState => {
            let e = i + 5;
            let s = line.get(i..e)?;
            s.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()).then_some(e)
        }
        Escape::Vxid
        | Escape::Millis
        | Escape::Time
        | Escape::SessionStart
        | Escape::App
        | Escape::User
        | Escape::Db
        | Escape::Tag
        | Escape::BackendType
        | Escape::Host
        | Escape::HostPort => None,
    }
}

/// If a severity label (`LOG:  `) starts at `pos`, the severity and the offset of the message.
pub fn severity_at(line: &[u8], pos: usize) -> Option<(Severity, usize)> {
    let rest = line.get(pos..)?;
    let colon = rest.iter().take(10).position(|&c| c == b':')?;
    let sev = Severity::from_label(&rest[..colon])?;
    let after = &rest[colon + 1..];
    if after.starts_with(b"  ") {
        Some((sev, pos + colon + 3))
    } else if after.is_empty() {
        Some((sev, pos + colon + 1))
    } else {
        None
    }
}

fn fill(rec: &mut LogRecord, esc: Escape, v: &[u8], src: &Src<'_>, range: (usize, usize), zones: &Zones) {
    // A prefix may repeat an escape: the last one is kept.
    let set = |out: &mut String| {
        out.clear();
        src.push(out, range);
    };
    match esc {
        Escape::App => set(&mut rec.application_name),
        Escape::User => set(&mut rec.user),
        Escape::Db => set(&mut rec.database),
        Escape::Pid => rec.pid = parse_i64(v).and_then(|p| u32::try_from(p).ok()),
        Escape::Host => set(&mut rec.remote_host),
        Escape::HostPort => {
            let host = match memchr::memchr(b'(', v) {
                Some(p) if v.ends_with(b")") => &v[..p],
                _ => v,
            };
            rec.remote_host.clear();
            push_lossy(&mut rec.remote_host, host);
        }
        Escape::Session => set(&mut rec.session_id),
        Escape::LineNum => rec.line_num = parse_i64(v).and_then(|n| u64::try_from(n).ok()),
        Escape::Millis | Escape::Time => rec.time_us = parse_timestamp(v, zones).ok(),
        Escape::Epoch => rec.time_us = parse_epoch(v),
        Escape::SqlState => set(&mut rec.sql_state),
        Escape::QueryId => rec.query_id = parse_i64(v),
        Escape::BackendType => set(&mut rec.backend_type),
        Escape::LeaderPid | Escape::SessionStart | Escape::Tag | Escape::Vxid | Escape::Xid => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(prefix: &str, line: &str) -> Option<(LogRecord, Severity, String)> {
        let p = Prefix::new(prefix).unwrap();
        let mut rec = LogRecord::default();
        let (sev, at) = p.parse_line(line.as_bytes(), &mut rec, &Zones::new())?;
        Some((rec, sev, line[at..].to_owned()))
    }

    #[test]
    fn default_prefix() {
        let (r, sev, msg) = parse("%m [%p] ", "2024-05-01 10:00:00.123 UTC [4242] LOG:  duration: 1.5 ms").unwrap();
        assert_eq!(sev, Severity::Log);
        assert_eq!(r.pid, Some(4242));
        assert_eq!(msg, "duration: 1.5 ms");
        assert_eq!(crate::time::format_rfc3339(r.time_us.unwrap()), "2024-05-01T10:00:00.123Z");
    }

    #[test]
    fn app_with_spaces_and_at_signs() {
        let prefix = "%m [%p] %q%u@%d %a ";
        let line = "2024-05-01 10:00:00.123 UTC [7] bob@shop my app@00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 ERROR:  boom";
        let (r, sev, msg) = parse(prefix, line).unwrap();
        assert_eq!(sev, Severity::Error);
        assert_eq!(r.user, "bob");
        assert_eq!(r.database, "shop");
        assert_eq!(r.application_name, "my app@00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert_eq!(msg, "boom");
        // a user name containing '@' is resolved by backtracking too
        let (r, _, _) = parse(prefix, "2024-05-01 10:00:00.123 UTC [7] a@b@shop  LOG:  x").unwrap();
        assert_eq!((r.user.as_str(), r.database.as_str(), r.application_name.as_str()), ("a", "b@shop", ""));
    }

    #[test]
    fn q_stops_for_background_processes() {
        let prefix = "%m [%p] %q%u@%d %a ";
        let (r, sev, msg) = parse(prefix, "2024-05-01 10:00:00.123 UTC [9] LOG:  checkpoint starting: time").unwrap();
        assert_eq!((sev, r.pid, msg.as_str()), (Severity::Log, Some(9), "checkpoint starting: time"));
        assert!(r.user.is_empty());
    }

    #[test]
    fn empty_session_fields_without_q_and_odd_zones() {
        // without %q, background processes print empty user/database
        let (r, sev, msg) =
            parse("%m [%p] %u@%d ", "2024-05-01 10:00:00.123 -03 [9] @ LOG:  checkpoint complete").unwrap();
        assert_eq!((sev, r.pid, msg.as_str()), (Severity::Log, Some(9), "checkpoint complete"));
        assert_eq!(crate::time::format_rfc3339(r.time_us.unwrap()), "2024-05-01T13:00:00.123Z");
        // a database name with spaces and an application name that looks like a prefix
        let (r, _, msg) = parse("%m [%p] %u@%d %a ", "2024-05-01 10:00:00.123 UTC [9] u@my db [1] x LOG:  hi").unwrap();
        assert_eq!((r.database.as_str(), r.application_name.as_str(), msg.as_str()), ("my", "db [1] x", "hi"));
        // FATAL before authentication: [unknown] user
        let (r, sev, _) =
            parse("%m [%p] %q%u@%d ", "2024-05-01 10:00:00.123 UTC [9] [unknown]@[unknown] FATAL:  x").unwrap();
        assert_eq!((sev, r.user.as_str()), (Severity::Fatal, "[unknown]"));
    }

    #[test]
    fn many_escapes() {
        let prefix = "%t:%r:%u@%d:[%p]:%c:%l:%e:%v:%x:%Q:%i:%b:%n:%% ";
        let line = "2024-05-01 10:00:00 CEST:127.0.0.1(5432):u@db:[12]:6631f0a0.3a2:17:42P01:3/17:0:-123456789:SELECT:client backend:1714550400.500:% STATEMENT:  select";
        let (r, sev, msg) = parse(prefix, line).unwrap();
        assert_eq!(sev, Severity::Statement);
        assert_eq!(r.remote_host, "127.0.0.1");
        assert_eq!(r.session_id, "6631f0a0.3a2");
        assert_eq!(r.line_num, Some(17));
        assert_eq!(r.sql_state, "42P01");
        assert_eq!(r.query_id, Some(-123_456_789));
        assert_eq!(r.backend_type, "client backend");
        assert_eq!(r.time_us, Some(1_714_550_400_500_000)); // %n came last and wins
        assert_eq!(msg, "select");
        let (r, _, _) = parse("%h:%p:", "::1:55:LOG:  x").unwrap();
        assert_eq!((r.remote_host.as_str(), r.pid), ("::1", Some(55)));
    }

    #[test]
    fn padding_and_empty_fields() {
        let (r, _, msg) = parse("%-10a|%5p|", "psql      |   42|LOG:  hi").unwrap();
        assert_eq!((r.application_name.as_str(), r.pid, msg.as_str()), ("psql", Some(42), "hi"));
        let (r, _, _) = parse("[%a] ", "[] LOG:  x").unwrap();
        assert!(r.application_name.is_empty());
        // epoch prefix and no separator after the pid
        let (r, _, _) = parse("%n %p", "1714550400.123 77LOG:  x").unwrap();
        assert_eq!(r.pid, Some(77));
    }

    #[test]
    fn time_followed_by_a_dash() {
        // Azure Single Server's fixed prefix.
        let (r, sev, msg) =
            parse("%t-%c-", "2019-05-24 17:19:22 UTC-5ce8e95a.30a8-LOG:  duration: 1.5 ms  statement: select 1")
                .unwrap();
        assert_eq!(
            (sev, r.session_id.as_str(), msg.as_str()),
            (Severity::Log, "5ce8e95a.30a8", "duration: 1.5 ms  statement: select 1")
        );
        assert_eq!(crate::time::format_rfc3339(r.time_us.unwrap()), "2019-05-24T17:19:22.000Z");
        let (r, _, _) = parse("%m-%p ", "2024-05-01 10:00:00.123 UTC-4242 LOG:  x").unwrap();
        assert_eq!(r.pid, Some(4242));
        // numeric zones, 2 and 4 digits, followed by `-`
        let (r, _, _) = parse("%m-%p ", "2024-05-01 13:00:00.123 +03-4242 LOG:  x").unwrap();
        assert_eq!(
            (r.pid, crate::time::format_rfc3339(r.time_us.unwrap()).as_str()),
            (Some(4242), "2024-05-01T10:00:00.123Z")
        );
        let (r, _, _) = parse("%m-%p ", "2024-05-01 04:30:00.123 -0530-4242 LOG:  x").unwrap();
        assert_eq!(
            (r.pid, crate::time::format_rfc3339(r.time_us.unwrap()).as_str()),
            (Some(4242), "2024-05-01T10:00:00.123Z")
        );
        let prefix = "%p-%s-%c-%l-%h-%u-%d-%m ";
        let line =
            "4242-2024-05-01 09:00:00 UTC-6631f0a0.1092-3-10.0.0.1-bob-shop-2024-05-01 12:00:00.123 CEST LOG:  hi";
        let (r, _, msg) = parse(prefix, line).unwrap();
        assert_eq!(r.pid, Some(4242));
        assert_eq!(r.session_id, "6631f0a0.1092");
        assert_eq!(r.line_num, Some(3));
        assert_eq!((r.remote_host.as_str(), r.user.as_str(), r.database.as_str()), ("10.0.0.1", "bob", "shop"));
        assert_eq!(crate::time::format_rfc3339(r.time_us.unwrap()), "2024-05-01T10:00:00.123Z");
        assert_eq!(msg, "hi");
    }

    #[test]
    fn refused_zones_leave_the_time_empty() {
        let p = Prefix::new("%m [%p] ").unwrap();
        let zones = Zones::new();
        let mut rec = LogRecord::default();
        assert!(p.parse_line(b"2024-05-01 10:00:00.123 IST [1] LOG:  x", &mut rec, &zones).is_some());
        assert_eq!((rec.time_us, rec.pid), (None, Some(1)));
        assert_eq!(zones.refused().len(), 1);
    }

    #[test]
    fn non_matching_lines() {
        for line in [
            "",
            "\tcontinuation",
            "2024-05-01 10:00:00.123 UTC [x] LOG:  bad pid",
            "2024-05-01 10:00:00.123 UTC [1] NOTALEVEL:  x",
            "2024-05-01 10:00:00.123 UTC [1] LOG:no double space",
            "random text from a shell script",
        ] {
            assert!(parse("%m [%p] ", line).is_none(), "{line}");
        }
        assert!(matches!(Prefix::new("abc%"), Err(PrefixError::TrailingPercent)));
        // unknown escapes print nothing
        assert!(parse("%m %z[%p] ", "2024-05-01 10:00:00.123 UTC [1] LOG:  x").is_some());
    }
}
