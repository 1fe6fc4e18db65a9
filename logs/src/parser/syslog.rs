//! Logs that went through syslog (`log_destination = syslog`, read from rsyslog/syslog-ng/journald files)
//! and Heroku's logplex (`heroku logs`, drains): a header, then PostgreSQL's own numbering, then the
//! stderr line (prefix included).
//!
//! Headers: RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`), RFC 3164 with or without `<PRI>`
//! (`Mmm dd hh:mm:ss HOST TAG[PID]: MSG`; no year and no zone: the current year and `--timezone` or the
//! system's zone), RFC 3339 timestamps in the traditional layout (rsyslog's high-precision format,
//! `journalctl -o short-iso`), and logplex (`TIMESTAMP app[postgres.PID]: [ATTACHMENT] MSG`).
//!
//! PostgreSQL numbers its syslog messages (`syslog_sequence_numbers`): `[seq] line` for a message sent in
//! one piece, `[seq-chunk] piece` for one split at its newlines and at ~900 bytes (`syslog_split_messages`).
//! Pieces of one message share the pid and `seq`; other processes' lines may come between them. A piece
//! that starts with a TAB (rsyslog writes `#011`) is a continuation line, one that starts with a space is
//! the rest of a line cut at a word boundary, anything else (a DETAIL or STATEMENT line, prefix included)
//! a line of its own. Lines of other programs are counted as foreign and skipped.

use std::collections::HashMap;

use super::stderr::{Envelope, StderrParser};
use super::{ParseStats, RecordParser};
use crate::prefix::Prefix;
use crate::record::LogRecord;
use crate::time::{parse_timestamp, Zones};

/// Which wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// syslog files.
    Syslog,
    /// Heroku logplex.
    Logplex,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Time, when the header has one that can be placed.
    pub time_us: Option<i64>,
    /// The program tag (`postgres`) or logplex source (`app`).
    pub tag: &'a [u8],
    /// The process id field (`1234`, or logplex's `postgres.1234`).
    pub proc_id: &'a [u8],
    /// Offset of the message.
    pub body: usize,
}

fn token(line: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let rest = line.get(i..)?;
    let end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
    (end > 0).then(|| (&rest[..end], (i + end + 1).min(line.len())))
}

const MONTHS: [&[u8]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// `Mmm dd hh:mm:ss` (day space-padded) at the start of `s`, in `zones`' local zone, in the current year
/// (the previous one when that would be more than a day ahead).
fn rfc3164_time(s: &[u8], zones: &Zones) -> Option<i64> {
    let month = MONTHS.iter().position(|m| s.get(..3) == Some(*m))? as i8 + 1;
    let day: i8 = std::str::from_utf8(s.get(4..6)?).ok()?.trim().parse().ok()?;
    let t = std::str::from_utf8(s.get(7..15)?).ok()?;
    let time: jiff::civil::Time = t.parse().ok()?;
    let tz = zones.local();
    let now = jiff::Timestamp::now();
    let year = tz.to_datetime(now).year();
    let at = |y: i16| jiff::civil::Date::new(y, month, day).ok().map(|d| d.to_datetime(time));
    let ts = |dt: jiff::civil::DateTime| tz.to_timestamp(dt).ok();
    let mut t = ts(at(year)?)?;
    if t > now + jiff::SignedDuration::from_hours(24) {
        t = ts(at(year - 1)?)?;
    }
    Some(t.as_microsecond())
}

/// `TAG[PID]:` or `TAG:` → (tag, pid field).
fn tag_pid(tok: &[u8]) -> Option<(&[u8], &[u8])> {
    let t = tok.strip_suffix(b":")?;
    match memchr::memchr(b'[', t) {
        Some(o) => Some((&t[..o], t[o + 1..].strip_suffix(b"]")?)),
        None => Some((t, &[][..])),
    }
}

/// Parses a syslog or logplex header.
pub fn parse_header<'a>(line: &'a [u8], zones: &Zones) -> Option<Header<'a>> {
    let mut i = 0;
    // Octet-counted framing of drains (`83 <40>1 ...`).
    if let Some((n, next)) = token(line, 0) {
        if n.iter().all(u8::is_ascii_digit) && line.get(next) == Some(&b'<') {
            i = next;
        }
    }
    let mut pri = false;
    if line.get(i) == Some(&b'<') {
        let close = memchr::memchr(b'>', &line[i..line.len().min(i + 6)])?;
        i += close + 1;
        pri = true;
    }
    if pri && line.get(i..i + 2) == Some(b"1 ") {
        // RFC 5424
        let (ts, n) = token(line, i + 2)?;
        let (_host, n) = token(line, n)?;
        let (app, n) = token(line, n)?;
        let (procid, n) = token(line, n)?;
        let (_msgid, mut n) = token(line, n)?;
        if line.get(n) == Some(&b'-') {
            n += 1;
        } else {
            while line.get(n) == Some(&b'[') {
                let mut j = n + 1;
                loop {
                    match line.get(j)? {
                        b'\\' => j += 2,
                        b'"' => {
                            j += 1;
                            while *line.get(j)? != b'"' {
                                j += if line[j] == b'\\' { 2 } else { 1 };
                            }
                            j += 1;
                        }
                        b']' => break,
                        _ => j += 1,
                    }
                }
                n = j + 1;
            }
        }
        if line.get(n) == Some(&b' ') {
            n += 1;
        }
        if line.get(n..n + 3) == Some(b"\xEF\xBB\xBF") {
            n += 3;
        }
        let time_us = if ts == b"-" { None } else { parse_timestamp(ts, zones).ok() };
        let dash = |v: &'a [u8]| if v == b"-" { &[][..] } else { v };
        return Some(Header { time_us, tag: dash(app), proc_id: dash(procid), body: n });
    }
    // RFC 3164 time, or an RFC 3339 timestamp token
    let (time_us, n) = if line.get(i).is_some_and(u8::is_ascii_digit) {
        let (ts, n) = token(line, i)?;
        (Some(parse_timestamp(ts, zones).ok()?), n)
    } else {
        let t = line.get(i..i + 16)?;
        if t[15] != b' ' {
            return None;
        }
        (rfc3164_time(t, zones), i + 16)
    };
    // `HOST TAG[PID]:` or `TAG[PID]:` (logplex: `app[postgres.1]:`)
    let (first, next) = token(line, n)?;
    let (tag, procid, body) = match tag_pid(first) {
        Some((t, p)) => (t, p, next),
        None => {
            let (second, next) = token(line, next)?;
            let (t, p) = tag_pid(second)?;
            (t, p, next)
        }
    };
    Some(Header { time_us, tag, proc_id: procid, body })
}

/// `[seq] ` / `[seq-chunk] ` at the start of `s`: (seq, chunk, rest).
fn numbering(s: &[u8]) -> Option<(u64, Option<u32>, &[u8])> {
    let inner = s.strip_prefix(b"[")?;
    let close = memchr::memchr(b']', &inner[..inner.len().min(24)])?;
    let rest = inner[close + 1..].strip_prefix(b" ").unwrap_or(&inner[close + 1..]);
    let num = &inner[..close];
    let parse = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    match memchr::memchr(b'-', num) {
        Some(d) => Some((parse(&num[..d])?, Some(u32::try_from(parse(&num[d + 1..])?).ok()?), rest)),
        None => Some((parse(num)?, None, rest)),
    }
}

/// Decodes rsyslog's `#ooo` escapes of control characters (`#011` TAB, `#012` newline).
fn unescape_controls(s: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while let Some(o) = memchr::memchr(b'#', &s[i..]) {
        let p = i + o;
        out.extend_from_slice(&s[i..p]);
        let oct = s.get(p + 1..p + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct.map(|d| (d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0')) {
            Some(v) if v < 32 => {
                out.push(v);
                i = p + 4;
            }
            _ => {
                out.push(b'#');
                i = p + 1;
            }
        }
    }
    out.extend_from_slice(&s[i..]);
}

/// PostgreSQL's `syslog_ident` (`postgres` by default; `postgresql`, or either with a `-suffix` per
/// cluster), not `postgres_exporter` and the like.
fn is_postgres_ident(tag: &[u8]) -> bool {
    [&b"postgres"[..], b"postgresql"]
        .iter()
        .any(|id| tag.strip_prefix(*id).is_some_and(|rest| rest.is_empty() || rest.starts_with(b"-")))
}

/// A message being reassembled from its pieces.
#[derive(Debug, Default)]
struct Pending {
    seq: u64,
    lines: Vec<Vec<u8>>,
    env: Envelope,
}

/// Most processes with a message in pieces; beyond it all are passed on.
const MAX_PENDING: usize = 4096;

/// Parser for syslog and logplex files.
#[derive(Debug)]
pub struct SyslogParser {
    flavor: Flavor,
    inner: StderrParser,
    zones: Zones,
    pending: HashMap<u32, Pending>,
    buf: Vec<u8>,
    stats: ParseStats,
}

impl SyslogParser {
    /// A parser for `flavor`, whose lines carry `prefix`.
    pub fn new(flavor: Flavor, prefix: Prefix, zones: Zones) -> Self {
        SyslogParser {
            flavor,
            inner: StderrParser::new(prefix, zones.clone()),
            zones,
            pending: HashMap::new(),
            buf: Vec::new(),
            stats: ParseStats::default(),
        }
    }

    fn ours<'a>(&self, h: &Header<'a>) -> Option<Option<u32>> {
        let pid = |p: &[u8]| std::str::from_utf8(p).ok()?.parse::<u32>().ok();
        match self.flavor {
            Flavor::Syslog => is_postgres_ident(h.tag).then(|| pid(h.proc_id)),
            Flavor::Logplex => {
                let p = h.proc_id.strip_prefix(b"postgres.")?;
                (h.tag == b"app").then(|| pid(p))
            }
        }
    }

    fn flush(&mut self, pid: u32, emit: &mut dyn FnMut(&LogRecord)) {
        if let Some(p) = self.pending.remove(&pid) {
            for l in &p.lines {
                self.inner.push_enveloped(l, p.env, emit);
            }
        }
    }

    fn flush_all(&mut self, emit: &mut dyn FnMut(&LogRecord)) {
        let mut all: Vec<u32> = self.pending.keys().copied().collect();
        all.sort_unstable();
        for pid in all {
            self.flush(pid, emit);
        }
    }

    fn direct(&mut self, text: &[u8], env: Envelope, emit: &mut dyn FnMut(&LogRecord)) {
        for l in text.split(|&c| c == b'\n') {
            self.inner.push_enveloped(l, env, emit);
        }
    }
}

impl RecordParser for SyslogParser {
    fn push_line(&mut self, line: &[u8], emit: &mut dyn FnMut(&LogRecord)) {
        self.stats.lines += 1;
        if line.trim_ascii().is_empty() {
            return;
        }
        let Some(h) = parse_header(line, &self.zones) else {
            self.stats.unknown += 1;
            return;
        };
        let Some(pid) = self.ours(&h) else {
            self.stats.foreign += 1;
            return;
        };
        let mut body = &line[h.body..];
        if self.flavor == Flavor::Logplex {
            // `[DATABASE] ` / `[HEROKU_POSTGRESQL_RED] `: the attachment, before PostgreSQL's numbering.
            if let Some(inner) = body.strip_prefix(b"[") {
                if let Some(c) = memchr::memchr(b']', inner) {
                    if !inner[..c].first().is_some_and(u8::is_ascii_digit) {
                        body = inner[c + 1..].strip_prefix(b" ").unwrap_or(&inner[c + 1..]);
                    }
                }
            }
        }
        let env = Envelope { time_us: h.time_us, time_wins: false, pid };
        let key = pid.unwrap_or(0);
        let mut text = std::mem::take(&mut self.buf);
        let numbered = numbering(body);
        let piece = numbered.map_or(body, |(_, _, rest)| rest);
        if self.flavor == Flavor::Syslog {
            unescape_controls(piece, &mut text);
        } else {
            text.clear();
            text.extend_from_slice(piece);
        }
        match numbered {
            Some((seq, Some(chunk), _)) if chunk > 1 => match self.pending.get_mut(&key) {
                Some(p) if p.seq == seq => {
                    if text.first() == Some(&b' ') {
                        if let Some(last) = p.lines.last_mut() {
                            last.extend_from_slice(&text);
                        }
                    } else {
                        p.lines.extend(text.split(|&c| c == b'\n').map(<[u8]>::to_vec));
                    }
                }
                _ => self.direct(&text, env, emit),
            },
            Some((seq, Some(_), _)) => {
                self.flush(key, emit);
                if self.pending.len() >= MAX_PENDING {
                    self.flush_all(emit);
                }
                let lines = text.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
                self.pending.insert(key, Pending { seq, lines, env });
            }
            _ => {
                self.flush(key, emit);
                self.direct(&text, env, emit);
            }
        }
        self.buf = text;
    }

    fn finish(&mut self, emit: &mut dyn FnMut(&LogRecord)) {
        self.flush_all(emit);
        self.inner.finish(emit);
    }

    fn idle(&mut self, emit: &mut dyn FnMut(&LogRecord)) {
        self.flush_all(emit);
        self.inner.idle(emit);
    }

    fn stats(&self) -> ParseStats {
        let inner = self.inner.stats();
        ParseStats {
            lines: self.stats.lines,
            records: inner.records,
            unknown: self.stats.unknown + inner.unknown,
            foreign: self.stats.foreign,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let z = Zones::new();
        let l = b"<134>1 2024-05-01T10:00:00.123456Z db1 postgres 4242 - - [3-1] x";
        let h = parse_header(l, &z).unwrap();
        assert_eq!((h.tag, h.proc_id, &l[h.body..]), (&b"postgres"[..], &b"4242"[..], &b"[3-1] x"[..]));
        assert_eq!(crate::time::format_rfc3339(h.time_us.unwrap()), "2024-05-01T10:00:00.123Z");
        let l =
            b"<134>1 2024-05-01T12:00:00+02:00 db1 postgres 4242 ID47 [ex@1 a=\"b]\\\"\"][x@2 c=\"d\"] \xEF\xBB\xBFmsg";
        let h = parse_header(l, &z).unwrap();
        assert_eq!(&l[h.body..], b"msg");
        assert_eq!(crate::time::format_rfc3339(h.time_us.unwrap()), "2024-05-01T10:00:00.000Z");
        let l = b"Nov  3 14:39:10 db1 postgres[77]: [5-1] x";
        let h = parse_header(l, &z).unwrap();
        assert_eq!((h.tag, h.proc_id, &l[h.body..]), (&b"postgres"[..], &b"77"[..], &b"[5-1] x"[..]));
        assert!(h.time_us.is_some());
        let l = b"<30>Nov 13 14:39:10 db1 sshd[9]: hello";
        assert_eq!(parse_header(l, &z).unwrap().tag, b"sshd");
        let l = b"2024-05-01T10:00:00.123456+00:00 app[postgres.1234]: [DATABASE] [9-1] x";
        let h = parse_header(l, &z).unwrap();
        assert_eq!((h.tag, h.proc_id), (&b"app"[..], &b"postgres.1234"[..]));
        let l = b"2024-05-01T10:00:00+0000 db1 postgres[8]: x";
        assert_eq!(parse_header(l, &z).unwrap().proc_id, b"8");
        assert!(parse_header(b"random words here", &z).is_none());
        assert!(is_postgres_ident(b"postgres") && is_postgres_ident(b"postgresql-15-main"));
        assert!(!is_postgres_ident(b"postgres_exporter") && !is_postgres_ident(b"sshd"));
        assert_eq!(numbering(b"[12-3] abc"), Some((12, Some(3), &b"abc"[..])));
        assert_eq!(numbering(b"[12] abc"), Some((12, None, &b"abc"[..])));
        let mut out = Vec::new();
        unescape_controls(b"#011from t #1 #0123", &mut out);
        assert_eq!(out, b"\tfrom t #1 \n3");
    }

    #[test]
    fn pieces_interleaved_with_other_processes() {
        // PostgreSQL cuts a long line at a space: the next piece starts with it.
        let (a, b) = ("select 'aaaaaaaa'", " as x");
        let log = format!(
            "Nov  3 14:39:10 h postgres[1]: [1-1] [1] LOG:  duration: 1.000 ms  statement: {a}\n\
             Nov  3 14:39:10 h postgres[2]: [1-1] [2] LOG:  duration: 2.000 ms  statement: select 2\n\
             Nov  3 14:39:10 h postgres[2]: [1-2] #011from t\n\
             Nov  3 14:39:10 h sshd[3]: session opened\n\
             Nov  3 14:39:10 h postgres[1]: [1-2] {b}\n\
             Nov  3 14:39:10 h postgres[1]: [1-3] [1] DETAIL:  parameters: $1 = 'x'\n\
             Nov  3 14:39:10 h postgres[1]: [2] [1] LOG:  duration: 3.000 ms  statement: select 3\n"
        );
        let mut p = SyslogParser::new(Flavor::Syslog, Prefix::new("[%p] ").unwrap(), Zones::new());
        let mut out = Vec::new();
        for l in log.lines() {
            p.push_line(l.as_bytes(), &mut |r| out.push(r.clone()));
        }
        p.finish(&mut |r| out.push(r.clone()));
        let mut msgs: Vec<(Option<u32>, String, String)> =
            out.iter().map(|r| (r.pid, r.message.clone(), r.detail.clone())).collect();
        msgs.sort();
        assert_eq!(
            msgs,
            [
                (Some(1), format!("duration: 1.000 ms  statement: {a}{b}"), "parameters: $1 = 'x'".into()),
                (Some(1), "duration: 3.000 ms  statement: select 3".into(), String::new()),
                (Some(2), "duration: 2.000 ms  statement: select 2\nfrom t".into(), String::new()),
            ]
        );
        let st = p.stats();
        assert_eq!((st.lines, st.records, st.unknown, st.foreign), (7, 3, 0, 1));
    }
}
