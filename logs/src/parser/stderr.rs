//! stderr logs: a `log_line_prefix` on every primary and secondary (DETAIL, STATEMENT, ...) line, TAB-led
//! continuation lines for multi-line text (space-led too: some collectors expand the TAB).
//! `log_error_verbosity = verbose` puts the SQLSTATE before the message (`LOG:  00000: duration: ...`).
//! Also the inner parser of the sources that wrap stderr lines (syslog, logplex, Cloud SQL, Azure), which
//! pass what their envelope knows as an [`Envelope`].

use super::{push_capped, ParseStats, RecordParser, Src};
use crate::prefix::Prefix;
use crate::record::{LogRecord, Severity};
use crate::time::Zones;

/// What a wrapper around a stderr line knows besides it (a syslog header, a Cloud Logging entry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Time of the line.
    pub time_us: Option<i64>,
    /// Use `time_us` even when the prefix has a time (the envelope's is more precise).
    pub time_wins: bool,
    /// Backend pid.
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    None,
    Message,
    Secondary(Severity),
}

/// Parser for stderr logs with a given prefix.
#[derive(Debug)]
pub struct StderrParser {
    prefix: Prefix,
    zones: Zones,
    cur: LogRecord,
    scratch: LogRecord,
    has_cur: bool,
    target: Target,
    stats: ParseStats,
}

impl StderrParser {
    /// A parser for lines written with `prefix`; `zones` resolves time zone abbreviations.
    pub fn new(prefix: Prefix, zones: Zones) -> Self {
        StderrParser {
            prefix,
            zones,
            cur: LogRecord::default(),
            scratch: LogRecord::default(),
            has_cur: false,
            target: Target::None,
            stats: ParseStats::default(),
        }
    }

    fn target_field(&mut self) -> Option<&mut String> {
        match self.target {
            Target::None => None,
            Target::Message => Some(&mut self.cur.message),
            Target::Secondary(sev) => self.cur.secondary_field(sev),
        }
    }
}

impl StderrParser {
    /// Feeds one physical line with what its envelope knows.
    pub fn push_enveloped(&mut self, line: &[u8], env: Envelope, emit: &mut dyn FnMut(&LogRecord)) {
        self.stats.lines += 1;
        if line.is_empty() {
            return;
        }
        if let Some(rest) = line.strip_prefix(b"\t") {
            self.continuation(rest);
            return;
        }
        self.scratch.clear();
        let src = Src::new(line);
        let Some((sev, mut at)) = self.prefix.parse_src(&src, line, &mut self.scratch, &self.zones) else {
            if line.starts_with(b" ") {
                self.continuation(line);
            } else {
                self.stats.unknown += 1;
                self.target = Target::None;
            }
            return;
        };
        if env.time_us.is_some() && (env.time_wins || self.scratch.time_us.is_none()) {
            self.scratch.time_us = env.time_us;
        }
        if self.scratch.pid.is_none() {
            self.scratch.pid = env.pid;
        }
        if !sev.is_secondary() {
            // `log_error_verbosity = verbose`: `LOG:  00000: message`
            if line.get(at..at + 7).is_some_and(is_verbose_sqlstate) {
                if self.scratch.sql_state.is_empty() {
                    src.push(&mut self.scratch.sql_state, (at, at + 5));
                }
                at += 7;
            }
        }
        let text = &line[at..];
        if sev.is_secondary() && self.has_cur && (self.scratch.pid.is_none() || self.scratch.pid == self.cur.pid) {
            self.target = Target::Secondary(sev);
            if let Some(f) = self.cur.secondary_field(sev) {
                f.clear();
                push_capped(f, text);
            }
            return;
        }
        if self.has_cur {
            self.stats.records += 1;
            emit(&self.cur);
        }
        std::mem::swap(&mut self.cur, &mut self.scratch);
        self.cur.severity = sev;
        if sev.is_secondary() {
            // A secondary line without its primary: keep what it says.
            if let Some(f) = self.cur.secondary_field(sev) {
                push_capped(f, text);
            }
            self.target = Target::Secondary(sev);
        } else {
            src.push(&mut self.cur.message, (at, line.len()));
            self.target = Target::Message;
        }
        self.has_cur = true;
    }

    /// A continuation line (its leading TAB removed): appended to the field being written.
    fn continuation(&mut self, rest: &[u8]) {
        if !self.has_cur || self.target == Target::None {
            self.stats.unknown += 1;
            return;
        }
        if let Some(f) = self.target_field() {
            push_capped(f, b"\n");
            push_capped(f, rest);
        }
    }
}

/// `00000: ` / `42P01: ` (five digits or uppercase letters, colon, space).
fn is_verbose_sqlstate(c: &[u8]) -> bool {
    c.len() == 7 && c[..5].iter().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) && &c[5..] == b": "
}

impl RecordParser for StderrParser {
    fn push_line(&mut self, line: &[u8], emit: &mut dyn FnMut(&LogRecord)) {
        self.push_enveloped(line, Envelope::default(), emit);
    }

    fn finish(&mut self, emit: &mut dyn FnMut(&LogRecord)) {
        if self.has_cur {
            self.stats.records += 1;
            emit(&self.cur);
            self.has_cur = false;
            self.target = Target::None;
        }
    }

    fn idle(&mut self, emit: &mut dyn FnMut(&LogRecord)) {
        self.finish(emit);
    }

    fn stats(&self) -> ParseStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(prefix: &str, text: &str) -> (Vec<LogRecord>, ParseStats) {
        let mut p = StderrParser::new(Prefix::new(prefix).unwrap(), Zones::new());
        let mut out = Vec::new();
        for line in text.lines() {
            p.push_line(line.as_bytes(), &mut |r| out.push(r.clone()));
        }
        p.finish(&mut |r| out.push(r.clone()));
        (out, p.stats())
    }

    #[test]
    fn continuation_and_secondary_lines() {
        let log = "2024-05-01 10:00:00.100 UTC [10] LOG:  duration: 2.000 ms  statement: select 1\n\
                   \tfrom t\n\
                   2024-05-01 10:00:00.200 UTC [10] ERROR:  relation \"nope\" does not exist at character 15\n\
                   2024-05-01 10:00:00.200 UTC [10] STATEMENT:  select * from nope\n\
                   \twhere x = 1\n\
                   garbage line\n\
                   2024-05-01 10:00:00.300 UTC [11] LOG:  duration: 1.000 ms  execute s1: select $1\n\
                   2024-05-01 10:00:00.300 UTC [11] DETAIL:  parameters: $1 = '5'\n";
        let (recs, stats) = parse_all("%m [%p] ", log);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].message, "duration: 2.000 ms  statement: select 1\nfrom t");
        assert_eq!(recs[1].severity, Severity::Error);
        assert_eq!(recs[1].statement, "select * from nope\nwhere x = 1");
        assert_eq!(recs[2].detail, "parameters: $1 = '5'");
        assert_eq!(stats.unknown, 1);
        assert_eq!(stats.lines, 8);
    }

    #[test]
    fn verbose_sqlstate_and_space_indented_continuations() {
        let log = "2024-05-01 10:00:00.100 UTC [10] LOG:  00000: duration: 2.000 ms  statement: select 1\n\
                   \x20   from t\n\
                   2024-05-01 10:00:00.100 UTC [10] LOCATION:  exec_simple_query, postgres.c:1297\n\
                   2024-05-01 10:00:00.200 UTC [10] ERROR:  42P01: relation \"nope\" does not exist\n\
                   2024-05-01 10:00:00.200 UTC [10] STATEMENT:  select * from nope\n\
                   \x20 where x = 1\n";
        let (recs, stats) = parse_all("%m [%p] ", log);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].message, "duration: 2.000 ms  statement: select 1\n    from t");
        assert_eq!(recs[0].sql_state, "00000");
        assert_eq!(
            (recs[1].sql_state.as_str(), recs[1].message.as_str()),
            ("42P01", "relation \"nope\" does not exist")
        );
        assert_eq!(recs[1].statement, "select * from nope\n  where x = 1");
        assert_eq!(stats.unknown, 0);
        // and they are statements
        let mut a = crate::statement::Assembler::new();
        let mut out = Vec::new();
        for r in &recs {
            a.push(r, &mut |s| out.push(s.clone()));
        }
        a.finish(&mut |s| out.push(s.clone()));
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].duration_ms, out[0].query.as_str()), (Some(2.0), "select 1\n    from t"));
        let e = out[1].error.as_ref().unwrap();
        assert_eq!((e.message.as_str(), e.sql_state.as_deref()), ("relation \"nope\" does not exist", Some("42P01")));
    }
}
