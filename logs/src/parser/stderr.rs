//! stderr logs: a `log_line_prefix` on every primary and secondary (DETAIL, STATEMENT, ...) line, TAB-led
//! continuation lines for multi-line text.

use super::{push_capped, ParseStats, RecordParser, Src};
use crate::prefix::Prefix;
use crate::record::{LogRecord, Severity};

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
    cur: LogRecord,
    scratch: LogRecord,
    has_cur: bool,
    target: Target,
    stats: ParseStats,
}

impl StderrParser {
    /// A parser for lines written with `prefix`.
    pub fn new(prefix: Prefix) -> Self {
        StderrParser {
            prefix,
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

impl RecordParser for StderrParser {
    fn push_line(&mut self, line: &[u8], emit: &mut dyn FnMut(&LogRecord)) {
        self.stats.lines += 1;
        if line.is_empty() {
            return;
        }
        if let Some(rest) = line.strip_prefix(b"\t") {
            if !self.has_cur || self.target == Target::None {
                self.stats.unknown += 1;
                return;
            }
            if let Some(f) = self.target_field() {
                push_capped(f, b"\n");
                push_capped(f, rest);
            }
            return;
        }
        self.scratch.clear();
        let src = Src::new(line);
        let Some((sev, at)) = self.prefix.parse_src(&src, line, &mut self.scratch) else {
            self.stats.unknown += 1;
            self.target = Target::None;
            return;
        };
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
        let mut p = StderrParser::new(Prefix::new(prefix).unwrap());
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
}
