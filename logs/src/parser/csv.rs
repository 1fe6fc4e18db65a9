//! csvlog: one CSV row per entry; quoted fields may span lines. Column sets of PostgreSQL 13 (24 columns),
//! 14–17 (26) and ≤ 12 (23) are accepted.

use super::{push_capped, set_pid, set_severity, ParseStats, RecordParser, Src, MAX_FIELD};
use crate::record::{parse_i64, LogRecord};
use crate::time::{parse_timestamp, TimeError, Zones};

const MAX_COLS: usize = 32;

/// Parser for csvlog files.
#[derive(Debug, Default)]
pub struct CsvParser {
    /// Unescaped bytes of the row so far.
    row: Vec<u8>,
    /// Field boundaries in `row`.
    fields: Vec<(usize, usize)>,
    field_start: usize,
    in_quotes: bool,
    rec: LogRecord,
    stats: ParseStats,
    zones: Zones,
    /// Set once a row grew past the limit; the row is dropped when it ends.
    oversized: bool,
}

impl CsvParser {
    /// A new parser; `zones` resolves time zone abbreviations.
    pub fn new(zones: Zones) -> Self {
        CsvParser { zones, ..Self::default() }
    }

    fn reset_row(&mut self) {
        self.row.clear();
        self.fields.clear();
        self.field_start = 0;
        self.in_quotes = false;
        self.oversized = false;
    }

    /// Scans one physical line; returns true when the row is complete.
    fn scan(&mut self, line: &[u8]) -> bool {
        let mut i = 0;
        if self.in_quotes {
            self.row.push(b'\n');
        }
        loop {
            if self.in_quotes {
                match memchr::memchr(b'"', &line[i..]) {
                    None => {
                        self.row.extend_from_slice(&line[i..]);
                        return false;
                    }
                    Some(off) => {
                        self.row.extend_from_slice(&line[i..i + off]);
                        i += off + 1;
                        if line.get(i) == Some(&b'"') {
                            self.row.push(b'"');
                            i += 1;
                        } else {
                            self.in_quotes = false;
                        }
                    }
                }
            } else {
                match line.get(i) {
                    None => {
                        self.fields.push((self.field_start, self.row.len()));
                        return true;
                    }
                    Some(b'"') => {
                        self.in_quotes = true;
                        i += 1;
                    }
                    Some(_) => {
                        let end = memchr::memchr2(b',', b'"', &line[i..]).map_or(line.len(), |o| i + o);
                        self.row.extend_from_slice(&line[i..end]);
                        i = end;
                        if line.get(i) == Some(&b',') {
                            self.fields.push((self.field_start, self.row.len()));
                            self.field_start = self.row.len();
                            i += 1;
                            if self.fields.len() > MAX_COLS {
                                self.fields.truncate(MAX_COLS);
                            }
                        }
                    }
                }
            }
        }
    }

    fn build(&mut self) -> bool {
        build_record(&self.row, &self.fields, &mut self.rec, &self.zones)
    }

    /// A row on one line with no doubled quotes (the common case): fields are taken straight from the line.
    /// `false` when the line needs the general path.
    fn scan_in_place(&mut self, line: &[u8]) -> bool {
        self.fields.clear();
        let mut i = 0;
        loop {
            if line.get(i) == Some(&b'"') {
                let start = i + 1;
                let Some(off) = memchr::memchr(b'"', &line[start..]) else { return false };
                let end = start + off;
                match line.get(end + 1) {
                    None => {
                        self.fields.push((start, end));
                        return true;
                    }
                    Some(b',') => {
                        self.fields.push((start, end));
                        i = end + 2;
                    }
                    // `""` inside the field, or garbage after the closing quote
                    Some(_) => return false,
                }
            } else {
                let end = memchr::memchr2(b',', b'"', &line[i..]).map_or(line.len(), |o| i + o);
                if line.get(end) == Some(&b'"') {
                    return false;
                }
                self.fields.push((i, end));
                if end == line.len() {
                    return true;
                }
                i = end + 1;
            }
            if self.fields.len() > MAX_COLS {
                return false;
            }
        }
    }
}

/// Fills `rec` from a csvlog row; false when the row is not a csvlog entry.
fn build_record(row: &[u8], fields: &[(usize, usize)], rec: &mut LogRecord, zones: &Zones) -> bool {
    {
        let n = fields.len();
        if !(23..=MAX_COLS).contains(&n) {
            return false;
        }
        let f = |k: usize| -> &[u8] {
            let (s, e) = fields[k];
            &row[s..e]
        };
        let src = Src::new(row);
        rec.clear();
        rec.time_us = match parse_timestamp(f(0), zones) {
            Ok(t) => Some(t),
            // counted by `zones`; the row is still an entry
            Err(TimeError::Zone(_)) => None,
            Err(TimeError::Malformed) => return false,
        };
        if !set_severity(rec, f(11)) {
            return false;
        }
        src.push(&mut rec.user, fields[1]);
        src.push(&mut rec.database, fields[2]);
        set_pid(rec, f(3));
        let from = f(4);
        let host = match memchr::memrchr(b':', from) {
            Some(p) => &from[..p],
            None => from,
        };
        push_capped(&mut rec.remote_host, host);
        src.push(&mut rec.session_id, fields[5]);
        rec.line_num = parse_i64(f(6)).and_then(|v| u64::try_from(v).ok());
        src.push(&mut rec.sql_state, fields[12]);
        src.push(&mut rec.message, fields[13]);
        src.push(&mut rec.detail, fields[14]);
        src.push(&mut rec.hint, fields[15]);
        src.push(&mut rec.context, fields[18]);
        src.push(&mut rec.statement, fields[19]);
        src.push(&mut rec.application_name, fields[22]);
        if n >= 24 {
            src.push(&mut rec.backend_type, fields[23]);
        }
        if n >= 26 {
            rec.query_id = parse_i64(f(25));
        }
        true
    }
}

impl RecordParser for CsvParser {
    fn push_line(&mut self, line: &[u8], emit: &mut dyn FnMut(&LogRecord)) {
        self.stats.lines += 1;
        if !self.in_quotes && self.row.is_empty() && self.fields.is_empty() {
            if line.is_empty() {
                return;
            }
            if self.scan_in_place(line) {
                if build_record(line, &self.fields, &mut self.rec, &self.zones) {
                    self.stats.records += 1;
                    emit(&self.rec);
                } else {
                    self.stats.unknown += 1;
                }
                self.fields.clear();
                return;
            }
            self.fields.clear();
        }
        if self.scan(line) {
            if !self.oversized && self.build() {
                self.stats.records += 1;
                emit(&self.rec);
            } else {
                self.stats.unknown += 1;
            }
            self.reset_row();
        } else if self.row.len() > 4 * MAX_FIELD {
            // An unbalanced quote: drop what we have and resynchronise on the next line.
            self.stats.unknown += 1;
            self.reset_row();
            self.oversized = false;
        }
    }

    fn finish(&mut self, _emit: &mut dyn FnMut(&LogRecord)) {
        if !self.row.is_empty() || !self.fields.is_empty() {
            self.stats.unknown += 1;
            self.reset_row();
        }
    }

    fn stats(&self) -> ParseStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Severity;

    #[test]
    fn multi_line_quoted_fields_and_column_sets() {
        let pg15 = "2024-05-01 10:00:00.123 UTC,\"bob\",\"shop\",42,\"127.0.0.1:5555\",6631f0a0.2a,3,\"SELECT\",2024-05-01 09:59:00 UTC,3/4,0,LOG,00000,\"duration: 1.5 ms  statement: select \"\"a\"\"\nfrom t\",,,,,,,,,\"my app\",\"client backend\",,-77\n";
        let pg13 = "2024-05-01 10:00:00.123 UTC,\"bob\",\"shop\",42,\"[local]\",6631f0a0.2a,4,\"SELECT\",2024-05-01 09:59:00 UTC,3/4,0,ERROR,42P01,\"relation \"\"x\"\" does not exist\",,,,,,\"select * from x\",15,,\"psql\",\"client backend\"\n";
        let mut p = CsvParser::new(Zones::new());
        let mut out = Vec::new();
        for line in pg15.lines().chain(pg13.lines()).chain(["not,a,csvlog,row"]) {
            p.push_line(line.as_bytes(), &mut |r| out.push(r.clone()));
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].message, "duration: 1.5 ms  statement: select \"a\"\nfrom t");
        assert_eq!(out[0].application_name, "my app");
        assert_eq!(out[0].query_id, Some(-77));
        assert_eq!(out[0].pid, Some(42));
        assert_eq!(out[0].remote_host, "127.0.0.1");
        assert_eq!(out[1].severity, Severity::Error);
        assert_eq!(out[1].statement, "select * from x");
        assert_eq!(out[1].sql_state, "42P01");
        assert_eq!(p.stats().unknown, 1);
    }
}
