//! The one pipeline every caller runs (the CLI, `--follow`, the demo, [`crate::parse_file`]): inputs →
//! records (one parser per input, its format named by `--source` or detected from its first lines) →
//! statements (one [`Assembler`]: pairing, plans, errors, trace context) → a sink.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::input::{Input, Read1};
use crate::parser::{detect, InputFormat, ParseStats, RecordParser};
use crate::prefix::Prefix;
use crate::statement::{AssembleStats, Assembler, Statement};
use crate::time::Zones;
use crate::LogsError;

/// How to read the inputs.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The source of every input (`--source`); `None` detects it per input.
    pub source: Option<InputFormat>,
    /// The server's `log_line_prefix` (`--prefix`); `None` takes the source's (see
    /// [`InputFormat::default_prefix`]).
    pub prefix: Option<Prefix>,
    /// Time-zone resolution (`--timezone`).
    pub zones: Zones,
}

impl ReadOptions {
    /// The prefix lines of `format` are read with.
    pub fn prefix_for(&self, format: InputFormat) -> Prefix {
        match &self.prefix {
            Some(p) => p.clone(),
            None => Prefix::new(format.default_prefix()).unwrap_or_else(|_| Prefix::empty()),
        }
    }

    /// The prefix detection tries on lines that may be stderr.
    fn detection_prefix(&self) -> Prefix {
        self.prefix_for(InputFormat::Stderr)
    }
}

/// Totals of a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunStats {
    /// Parser counters, summed over inputs.
    pub parse: ParseStats,
    /// Assembler counters.
    pub assemble: AssembleStats,
    /// Spans exported.
    pub exported: u64,
}

/// What one pass over the inputs did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Some line was read.
    pub progressed: bool,
    /// Every input is at its end (files read once), or has nothing more for now (`--follow`).
    pub exhausted: bool,
}

struct Stream {
    input: Input,
    carry: Vec<u8>,
    parser: Option<Box<dyn RecordParser>>,
    format: Option<InputFormat>,
    done: bool,
}

/// Inputs → records → statements.
pub struct Pipeline {
    opts: ReadOptions,
    streams: Vec<Stream>,
    assembler: Assembler,
    notes: Vec<String>,
    bytes: Arc<AtomicU64>,
}

/// Lines read from one input before the next gets its turn.
const BATCH: usize = 65536;

impl Pipeline {
    /// A pipeline reading with `opts`.
    pub fn new(opts: ReadOptions) -> Self {
        Pipeline { opts, streams: Vec::new(), assembler: Assembler::new(), notes: Vec::new(), bytes: Arc::default() }
    }

    /// Bytes read from disk so far (for progress).
    pub fn byte_counter(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }

    /// Adds an input.
    pub fn add(&mut self, input: Input) {
        self.streams.push(Stream { input, carry: Vec::new(), parser: None, format: None, done: false });
    }

    /// Opens and adds a file (plain or gzip).
    pub fn add_file(&mut self, path: &Path) -> Result<(), LogsError> {
        let input = Input::open(path, self.bytes.clone()).map_err(|e| io_err(path.display(), e))?;
        self.add(input);
        Ok(())
    }

    /// One pass: reads a batch of lines. Files read once are read one after the other; followed files
    /// (`follow`: inputs never end) get a batch each.
    pub fn step(&mut self, follow: bool, sink: &mut dyn FnMut(&Statement)) -> Result<Step, LogsError> {
        let mut step = Step { progressed: false, exhausted: true };
        let mut batches = 0;
        for s in &mut self.streams {
            if s.done {
                continue;
            }
            if !follow && batches > 0 {
                break;
            }
            batches += 1;
            if s.parser.is_none() {
                let format = match self.opts.source {
                    Some(f) => f,
                    None => {
                        let head = s.input.peek_head().map_err(|e| io_err(s.input.name(), e))?;
                        if follow && head.is_empty() {
                            step.exhausted = false;
                            continue; // wait for content to detect the format
                        }
                        let d = detect(&head, &self.opts.detection_prefix(), &self.opts.zones.scratch());
                        if let Some(doubt) = d.doubt {
                            self.notes.push(format!("{}: {doubt}", s.input.name()));
                        }
                        d.format
                    }
                };
                s.parser = Some(format.parser(&self.opts.prefix_for(format), &self.opts.zones));
                s.format = Some(format);
            }
            let Some(p) = s.parser.as_mut() else { continue };
            let asm = &mut self.assembler;
            let (n, state) = s
                .input
                .read_lines(&mut s.carry, BATCH, &mut |line| p.push_line(line, &mut |r| asm.push(r, sink)))
                .map_err(|e| io_err(s.input.name(), e))?;
            step.progressed |= n > 0;
            match state {
                Read1::Line | Read1::Pending => step.exhausted &= follow && state == Read1::Pending,
                Read1::Eof if follow => {}
                Read1::Eof => {
                    p.finish(&mut |r| asm.push(r, sink));
                    s.done = true;
                }
            }
        }
        if !follow && self.streams.iter().any(|s| !s.done) {
            step.exhausted = false;
        }
        Ok(step)
    }

    /// Reads every input to its end and finishes.
    pub fn run(&mut self, sink: &mut dyn FnMut(&Statement)) -> Result<(), LogsError> {
        while !self.step(false, sink)?.exhausted {}
        self.finish(sink);
        Ok(())
    }

    /// The inputs went quiet (`--follow`): emits the entries and plans that only the next line would end.
    pub fn idle(&mut self, sink: &mut dyn FnMut(&Statement)) {
        let asm = &mut self.assembler;
        for p in self.streams.iter_mut().filter_map(|s| s.parser.as_mut()) {
            p.idle(&mut |r| asm.push(r, sink));
        }
        asm.flush_plans(sink);
    }

    /// Ends every input and emits everything still pending.
    pub fn finish(&mut self, sink: &mut dyn FnMut(&Statement)) {
        let asm = &mut self.assembler;
        for s in &mut self.streams {
            if let (Some(p), false) = (s.parser.as_mut(), s.done) {
                p.finish(&mut |r| asm.push(r, sink));
                s.done = true;
            }
        }
        asm.finish(sink);
    }

    /// Counters so far.
    pub fn stats(&self) -> RunStats {
        let mut parse = ParseStats::default();
        for p in self.streams.iter().filter_map(|s| s.parser.as_ref()) {
            parse.add(p.stats());
        }
        RunStats { parse, assemble: self.assembler.stats(), exported: 0 }
    }

    /// The formats the inputs are read as (those decided so far).
    pub fn formats(&self) -> Vec<InputFormat> {
        self.streams.iter().filter_map(|s| s.format).collect()
    }

    /// What detection was unsure of, one line per input.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The warnings of the run: detection doubts, most lines unreadable, refused time zones.
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self.notes.iter().map(|n| format!("note: {n}")).collect();
        let formats = self.formats();
        let prefix = formats.first().map(|f| self.opts.prefix_for(*f)).unwrap_or_else(|| self.opts.detection_prefix());
        w.extend(unreadable_warning(&formats, &self.stats().parse, &prefix));
        for (e, n) in self.opts.zones.refused() {
            w.push(format!("warning: {e} ({n} timestamps left empty)"));
        }
        w
    }
}

fn io_err(name: impl std::fmt::Display, source: std::io::Error) -> LogsError {
    LogsError::Io { path: name.to_string(), source }
}

/// The warning when most lines were not understood, with advice that fits the formats read.
pub fn unreadable_warning(formats: &[InputFormat], parse: &ParseStats, prefix: &Prefix) -> Option<String> {
    if parse.lines == 0 || parse.unknown * 2 <= parse.lines {
        return None;
    }
    let head = format!("warning: {} of {} lines were not understood", parse.unknown, parse.lines);
    let with_prefix = formats.iter().any(|f| f.uses_prefix());
    let advice = if formats.contains(&InputFormat::Json) {
        "they are not PostgreSQL jsonlog entries (one JSON object per line with timestamp and error_severity); \
         check the file, or name its source with --source"
            .to_owned()
    } else if with_prefix {
        format!(
            "pass the server's log_line_prefix with --prefix (now {:?}), or name the source with --source",
            prefix.source()
        )
    } else {
        "check the file, or name its source with --source".to_owned()
    };
    Some(format!("{head}: {advice}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_zones_are_warned_once_per_timestamp() {
        let log = "2024-07-01 12:00:00.000 IST [1] LOG:  duration: 1.0 ms  statement: select 1\n\
                   2024-07-01 12:00:01.000 IST [1] LOG:  duration: 2.0 ms  statement: select 2\n";
        let mut pipe = Pipeline::new(ReadOptions::default());
        pipe.add(Input::from_reader("-", Box::new(std::io::Cursor::new(log.as_bytes().to_vec()))));
        let mut out = Vec::new();
        pipe.run(&mut |s| out.push(s.clone())).unwrap();
        assert_eq!(out.len(), 2, "statements kept, their times empty");
        assert!(out.iter().all(|s| s.time_us.is_none()));
        let w = pipe.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("\"IST\" is ambiguous") && w[0].contains("(2 timestamps left empty)"), "{w:?}");
    }

    #[test]
    fn unreadable_advice_fits_the_format() {
        let stats = ParseStats { lines: 10, records: 1, unknown: 9, foreign: 0 };
        let prefix = Prefix::new(crate::prefix::DEFAULT_PREFIX).unwrap();
        let json = unreadable_warning(&[InputFormat::Json], &stats, &prefix).unwrap();
        assert!(!json.contains("--prefix") && json.contains("jsonlog"), "{json}");
        let stderr = unreadable_warning(&[InputFormat::Stderr], &stats, &prefix).unwrap();
        assert!(stderr.contains("--prefix"), "{stderr}");
        let cnpg = unreadable_warning(&[InputFormat::Cnpg], &stats, &prefix).unwrap();
        assert!(!cnpg.contains("--prefix"), "{cnpg}");
        let fine = ParseStats { lines: 10, records: 9, unknown: 1, foreign: 0 };
        assert!(unreadable_warning(&[InputFormat::Json], &fine, &prefix).is_none());
    }
}
