//! csvlog: one CSV row per entry; quoted fields may span lines. Column sets of PostgreSQL 13 (24 columns),
//! 14–17 (26) and ≤ 12 (23) are accepted. Rows are cut by csv-core (quotes, doubled quotes, newlines
//! inside fields); the physical lines are fed to it with their newline.

use csv_core::{ReadRecordResult, Reader};

use super::{push_capped, set_pid, set_severity, ParseStats, RecordParser, Src, MAX_FIELD};
use crate::record::{parse_i64, LogRecord};
use crate::time::{parse_timestamp, TimeError, Zones};

const MAX_COLS: usize = 32;
/// A row longer than this (an unbalanced quote) is dropped.
const MAX_ROW: usize = 4 * MAX_FIELD;

/// Parser for csvlog files.
#[derive(Debug)]
pub struct CsvParser {
    reader: Reader,
    /// Unescaped bytes of the row so far.
    out: Vec<u8>,
    /// Field end positions in `out`.
    ends: Vec<usize>,
    nout: usize,
    nend: usize,
    fields: Vec<(usize, usize)>,
    /// Bytes of the current row were read (it is open).
    in_row: bool,
    /// The row has more columns than csvlog: it is dropped when it ends.
    oversized: bool,
    /// The rest of the current line is skipped (after dropping an oversized row).
    resync: bool,
    rec: LogRecord,
    stats: ParseStats,
    zones: Zones,
}

impl CsvParser {
    /// A new parser; `zones` resolves time zone abbreviations.
    pub fn new(zones: Zones) -> Self {
        CsvParser {
            reader: Reader::new(),
            out: vec![0; 64 * 1024],
            ends: vec![0; MAX_COLS + 1],
            nout: 0,
            nend: 0,
            fields: Vec::with_capacity(MAX_COLS + 1),
            in_row: false,
            oversized: false,
            resync: false,
            rec: LogRecord::default(),
            stats: ParseStats::default(),
            zones,
        }
    }

    fn feed(&mut self, mut input: &[u8], emit: &mut dyn FnMut(&LogRecord)) {
        loop {
            let (res, nin, nout, nend) =
                self.reader.read_record(input, &mut self.out[self.nout..], &mut self.ends[self.nend..]);
            input = &input[nin..];
            self.nout += nout;
            self.nend += nend;
            self.in_row |= nin > 0;
            match res {
                ReadRecordResult::InputEmpty | ReadRecordResult::End => return,
                ReadRecordResult::OutputFull if self.out.len() >= MAX_ROW => {
                    // An unbalanced quote (or a monstrous row): drop it, start afresh at the next line.
                    self.stats.unknown += 1;
                    self.reader.reset();
                    (self.nout, self.nend, self.in_row, self.oversized) = (0, 0, false, false);
                    self.resync = true;
                    return;
                }
                ReadRecordResult::OutputFull => self.out.resize(self.out.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => {
                    // More columns than csvlog has: not a csvlog row; keep counting ends.
                    self.oversized = true;
                    self.nend = 0;
                }
                ReadRecordResult::Record => self.row_done(emit),
            }
        }
    }

    fn row_done(&mut self, emit: &mut dyn FnMut(&LogRecord)) {
        self.fields.clear();
        let mut start = 0;
        for &e in &self.ends[..self.nend] {
            self.fields.push((start, e));
            start = e;
        }
        if !self.oversized && build_record(&self.out[..self.nout], &self.fields, &mut self.rec, &self.zones) {
            self.stats.records += 1;
            emit(&self.rec);
        } else {
            self.stats.unknown += 1;
        }
        self.nout = 0;
        self.nend = 0;
        self.in_row = false;
        self.oversized = false;
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
        if line.is_empty() && !self.in_row {
            return;
        }
        self.resync = false;
        self.feed(line, emit);
        if !self.resync {
            self.feed(b"\n", emit);
        }
    }

    fn finish(&mut self, _emit: &mut dyn FnMut(&LogRecord)) {
        if self.in_row {
            self.stats.unknown += 1;
            self.reader.reset();
            self.nout = 0;
            self.nend = 0;
            self.in_row = false;
            self.oversized = false;
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

    #[test]
    fn an_unbalanced_quote_is_dropped_and_reading_goes_on() {
        let good = "2024-05-01 10:00:00.123 UTC,\"bob\",\"shop\",42,\"[local]\",6631f0a0.2a,4,\"SELECT\",2024-05-01 09:59:00 UTC,3/4,0,LOG,00000,\"duration: 1.0 ms  statement: select 1\",,,,,,,,,\"psql\",\"client backend\"";
        let mut p = CsvParser::new(Zones::new());
        let mut n = 0;
        p.push_line(b"2024-05-01 10:00:00.123 UTC,\"never closed", &mut |_| n += 1);
        let filler = "x".repeat(64 * 1024);
        for _ in 0..(MAX_ROW / filler.len() + 2) {
            p.push_line(filler.as_bytes(), &mut |_| n += 1);
        }
        p.push_line(good.as_bytes(), &mut |_| n += 1);
        p.finish(&mut |_| n += 1);
        assert_eq!(n, 1, "the row after the broken one is read");
        assert!(p.stats().unknown >= 1);
    }
}
