//! Log format parsers. Each takes physical lines one at a time (without the newline) and calls `emit` with
//! every complete [`LogRecord`]. A record is complete when the next one starts (stderr: the next prefixed
//! primary line; csvlog: the closing of the row), or on [`RecordParser::finish`].

use crate::prefix::Prefix;
use crate::record::{parse_i64, push_lossy, LogRecord, Severity};
use crate::time::Zones;

pub mod csv;
pub mod envelope;
pub mod json;
pub mod stderr;
pub mod syslog;

/// Longest field kept; longer statements are cut (keeps memory bounded on pathological input).
pub const MAX_FIELD: usize = 1 << 20;

/// Line counters of one parser.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ParseStats {
    /// Physical lines read.
    pub lines: u64,
    /// Complete records produced.
    pub records: u64,
    /// Lines that matched no known shape (skipped).
    pub unknown: u64,
    /// Lines of other programs in a syslog file, other loggers' entries in CloudNativePG output, other
    /// categories of Azure diagnostics (skipped).
    pub foreign: u64,
}

impl ParseStats {
    /// Adds `o` to these counters.
    pub fn add(&mut self, o: ParseStats) {
        self.lines += o.lines;
        self.records += o.records;
        self.unknown += o.unknown;
        self.foreign += o.foreign;
    }
}

/// A streaming parser of one log format.
pub trait RecordParser {
    /// Feeds one physical line.
    fn push_line(&mut self, line: &[u8], emit: &mut dyn FnMut(&LogRecord));
    /// Emits a record still being assembled (end of input, or an idle `--follow`).
    fn finish(&mut self, emit: &mut dyn FnMut(&LogRecord));
    /// The input went idle (`--follow`): emit what is complete. Stderr entries end only when the next one
    /// starts, so the last one is emitted here; a csvlog row still open stays open.
    fn idle(&mut self, emit: &mut dyn FnMut(&LogRecord)) {
        let _ = emit;
    }
    /// Counters so far.
    fn stats(&self) -> ParseStats;
}

/// Where a log comes from, which fixes its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum InputFormat {
    /// stderr with a `log_line_prefix`.
    Stderr,
    /// csvlog.
    #[value(name = "csvlog", alias = "csv")]
    Csv,
    /// jsonlog (PostgreSQL 15+).
    #[value(name = "jsonlog", alias = "json")]
    Json,
    /// `log_destination = syslog`, as written by rsyslog, syslog-ng or journald.
    Syslog,
    /// CloudNativePG's JSON output.
    Cnpg,
    /// Google Cloud SQL's Cloud Logging entries.
    #[value(name = "cloudsql")]
    CloudSql,
    /// Azure Database for PostgreSQL diagnostic logs.
    Azure,
    /// Heroku logplex.
    Logplex,
}

impl InputFormat {
    /// The name `--source` takes.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Stderr => "stderr",
            InputFormat::Csv => "csvlog",
            InputFormat::Json => "jsonlog",
            InputFormat::Syslog => "syslog",
            InputFormat::Cnpg => "cnpg",
            InputFormat::CloudSql => "cloudsql",
            InputFormat::Azure => "azure",
            InputFormat::Logplex => "logplex",
        }
    }

    /// The `log_line_prefix` its lines carry when the user names none: fixed by the service, or
    /// PostgreSQL's default.
    pub fn default_prefix(self) -> &'static str {
        match self {
            InputFormat::CloudSql => CLOUDSQL_PREFIX,
            InputFormat::Azure => AZURE_PREFIX,
            InputFormat::Logplex => LOGPLEX_PREFIX,
            _ => crate::prefix::DEFAULT_PREFIX,
        }
    }

    /// True for the formats read with a `log_line_prefix`.
    pub fn uses_prefix(self) -> bool {
        !matches!(self, InputFormat::Csv | InputFormat::Json | InputFormat::Cnpg)
    }

    /// Builds the parser.
    pub fn parser(self, prefix: &Prefix, zones: &Zones) -> Box<dyn RecordParser> {
        let (p, z) = (prefix.clone(), zones.clone());
        match self {
            InputFormat::Stderr => Box::new(stderr::StderrParser::new(p, z)),
            InputFormat::Csv => Box::new(csv::CsvParser::new(z)),
            InputFormat::Json => Box::new(json::JsonParser::new(z)),
            InputFormat::Syslog => Box::new(syslog::SyslogParser::new(syslog::Flavor::Syslog, p, z)),
            InputFormat::Logplex => Box::new(syslog::SyslogParser::new(syslog::Flavor::Logplex, p, z)),
            InputFormat::Cnpg => Box::new(envelope::EnvelopeParser::new(envelope::Service::Cnpg, p, z)),
            InputFormat::CloudSql => Box::new(envelope::EnvelopeParser::new(envelope::Service::CloudSql, p, z)),
            InputFormat::Azure => Box::new(envelope::EnvelopeParser::new(envelope::Service::Azure, p, z)),
        }
    }
}

/// Cloud SQL's fixed `log_line_prefix`.
pub const CLOUDSQL_PREFIX: &str = "%m [%p]: [%l-1] db=%d,user=%u ";
/// Azure's `log_line_prefix` (fixed on Single Server, the default on Flexible Server).
pub const AZURE_PREFIX: &str = "%t-%c-";
/// Heroku Postgres' `log_line_prefix`.
pub const LOGPLEX_PREFIX: &str = "sql_error_code = %e ";
/// Amazon RDS' and Aurora's fixed `log_line_prefix` (`--source rds`).
pub const RDS_PREFIX: &str = "%t:%r:%u@%d:[%p]:";

/// What format detection concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// The format to read with.
    pub format: InputFormat,
    /// When the first lines did not make it certain: what was tried, for the user.
    pub doubt: Option<String>,
}

/// Guesses the format from the first lines (up to a few): JSON objects (jsonlog, CloudNativePG, Cloud
/// Logging, Azure records, told apart by their keys), csvlog rows, syslog and logplex headers, or stderr
/// lines that `prefix` reads. Anything else is read as stderr, with `doubt` saying what was tried.
pub fn detect(head: &[u8], prefix: &Prefix, zones: &Zones) -> Detection {
    let certain = |format| Detection { format, doubt: None };
    let lines: Vec<&[u8]> =
        head.split(|&c| c == b'\n').map(|l| l.trim_ascii()).filter(|l| !l.is_empty()).take(8).collect();
    let Some(first) = lines.first() else { return certain(InputFormat::Stderr) };
    if first.starts_with(b"{") || first.starts_with(b"[") {
        let mut stream = envelope::ObjectStream::default();
        let mut found = None;
        for l in head.split(|&c| c == b'\n') {
            stream.push_line(l, &mut |o| {
                if found.is_none() {
                    found = serde_json::from_slice::<serde_json::Value>(o).ok();
                }
            });
            if found.is_some() {
                break;
            }
        }
        let keyed = found.as_ref().and_then(|v| {
            let has = |k: &str| v.get(k).is_some();
            let record = v.get("records").and_then(|r| r.get(0)).unwrap_or(v);
            Some(if has("logger") && (has("record") || has("msg")) {
                InputFormat::Cnpg
            } else if has("textPayload") || (has("logName") && has("resource")) {
                InputFormat::CloudSql
            } else if record.get("category").is_some() && record.get("properties").is_some() {
                InputFormat::Azure
            } else if has("error_severity") || has("timestamp") && has("message") {
                InputFormat::Json
            } else {
                return None;
            })
        });
        return match keyed {
            Some(f) => certain(f),
            None => Detection {
                format: InputFormat::Json,
                doubt: Some(
                    "JSON, but not jsonlog, CloudNativePG, Cloud Logging or Azure records: reading as jsonlog".into(),
                ),
            },
        };
    }
    if let Some(comma) = memchr::memchr(b',', first) {
        let ts = crate::time::parse_timestamp(&first[..comma], zones);
        if comma >= 19 && ts != Err(crate::time::TimeError::Malformed) {
            return certain(InputFormat::Csv);
        }
    }
    let mut rec = LogRecord::default();
    let stderr = lines.iter().filter(|l| prefix.parse_line(l, &mut rec, zones).is_some()).count();
    if stderr > 0 && stderr * 2 >= lines.len() {
        return certain(InputFormat::Stderr);
    }
    let headers: Vec<_> = lines.iter().filter_map(|l| syslog::parse_header(l, zones)).collect();
    if headers.len() * 2 >= lines.len() && !headers.is_empty() {
        let logplex = headers.iter().any(|h| h.tag == b"app" && h.proc_id.starts_with(b"postgres."));
        return certain(if logplex { InputFormat::Logplex } else { InputFormat::Syslog });
    }
    Detection {
        format: InputFormat::Stderr,
        doubt: Some(format!(
            "the first lines are not jsonlog, csvlog, syslog, logplex or managed-service JSON, and --prefix {:?} \
             does not read them: reading as stderr (name the source with --source, the server's \
             log_line_prefix with --prefix)",
            prefix.source()
        )),
    }
}

/// Guesses the format from the first non-empty line (see [`detect`]).
pub fn detect_format(first_line: &[u8]) -> InputFormat {
    match Prefix::new(crate::prefix::DEFAULT_PREFIX) {
        Ok(p) => detect(first_line, &p, &Zones::new()).format,
        Err(_) => InputFormat::Stderr,
    }
}

pub(crate) fn push_capped(out: &mut String, bytes: &[u8]) {
    if out.len() < MAX_FIELD {
        let room = MAX_FIELD - out.len();
        push_lossy(out, &bytes[..bytes.len().min(room)]);
    }
}

/// A line validated as UTF-8 once, so fields cut out of it at ASCII delimiters need no re-validation.
pub(crate) struct Src<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> Src<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Src { bytes, text: std::str::from_utf8(bytes).ok() }
    }

    /// Appends `bytes[range]` to `out` (lossy when the line is not UTF-8), within [`MAX_FIELD`].
    pub(crate) fn push(&self, out: &mut String, (s, e): (usize, usize)) {
        if out.len() >= MAX_FIELD {
            return;
        }
        let e = e.min(s + (MAX_FIELD - out.len()));
        match self.text.and_then(|t| t.get(s..e)) {
            Some(t) => out.push_str(t),
            None => push_lossy(out, &self.bytes[s..e]),
        }
    }
}

pub(crate) fn set_severity(rec: &mut LogRecord, label: &[u8]) -> bool {
    match Severity::from_label(label) {
        Some(s) => {
            rec.severity = s;
            true
        }
        None => false,
    }
}

pub(crate) fn set_pid(rec: &mut LogRecord, v: &[u8]) {
    rec.pid = parse_i64(v).and_then(|p| u32::try_from(p).ok());
}
