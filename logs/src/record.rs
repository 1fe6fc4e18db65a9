//! One log entry, whatever the input format: the primary line plus its DETAIL/STATEMENT/CONTEXT/HINT parts.
//! Buffers are reused between entries (`clear` keeps capacity), so parsing allocates nothing per line in the
//! steady state.

/// The severity (or, in stderr logs, the secondary line label) of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// `DEBUG1`..`DEBUG5`.
    Debug,
    /// `LOG`.
    Log,
    /// `INFO`.
    Info,
    /// `NOTICE`.
    Notice,
    /// `WARNING`.
    Warning,
    /// `ERROR`.
    Error,
    /// `FATAL`.
    Fatal,
    /// `PANIC`.
    Panic,
    /// `DETAIL` (stderr only: a secondary line of the previous entry).
    Detail,
    /// `HINT` (secondary).
    Hint,
    /// `QUERY` (secondary).
    Query,
    /// `CONTEXT` (secondary).
    Context,
    /// `LOCATION` (secondary).
    Location,
    /// `STATEMENT` (secondary).
    Statement,
}

impl Severity {
    /// Parses a severity label (`LOG`, `ERROR`, `DETAIL`, ...).
    pub fn from_label(label: &[u8]) -> Option<Self> {
        Some(match label {
            b"LOG" => Severity::Log,
            b"ERROR" => Severity::Error,
            b"DETAIL" => Severity::Detail,
            b"STATEMENT" => Severity::Statement,
            b"CONTEXT" => Severity::Context,
            b"HINT" => Severity::Hint,
            b"QUERY" => Severity::Query,
            b"LOCATION" => Severity::Location,
            b"WARNING" => Severity::Warning,
            b"NOTICE" => Severity::Notice,
            b"INFO" => Severity::Info,
            b"FATAL" => Severity::Fatal,
            b"PANIC" => Severity::Panic,
            b"DEBUG" | b"DEBUG1" | b"DEBUG2" | b"DEBUG3" | b"DEBUG4" | b"DEBUG5" => Severity::Debug,
            _ => return None,
        })
    }

    /// True for the labels that continue the previous entry in stderr logs.
    pub fn is_secondary(self) -> bool {
        matches!(
            self,
            Severity::Detail
                | Severity::Hint
                | Severity::Query
                | Severity::Context
                | Severity::Location
                | Severity::Statement
        )
    }

    /// The label as PostgreSQL writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "DEBUG",
            Severity::Log => "LOG",
            Severity::Info => "INFO",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Panic => "PANIC",
            Severity::Detail => "DETAIL",
            Severity::Hint => "HINT",
            Severity::Query => "QUERY",
            Severity::Context => "CONTEXT",
            Severity::Location => "LOCATION",
            Severity::Statement => "STATEMENT",
        }
    }
}

/// A complete log entry. Empty strings mean "not logged".
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Log time, microseconds since the epoch.
    pub time_us: Option<i64>,
    /// Backend process id.
    pub pid: Option<u32>,
    /// Session id (`%c`).
    pub session_id: String,
    /// Session line number (`%l`).
    pub line_num: Option<u64>,
    /// Database user.
    pub user: String,
    /// Database name.
    pub database: String,
    /// `application_name` as the server logged it.
    pub application_name: String,
    /// Client host.
    pub remote_host: String,
    /// Backend type (`client backend`, ...).
    pub backend_type: String,
    /// Severity of the primary line.
    pub severity: Severity,
    /// SQLSTATE (`%e`, csvlog/jsonlog).
    pub sql_state: String,
    /// Query id (`%Q`, csvlog/jsonlog `query_id`), 0 when not computed.
    pub query_id: Option<i64>,
    /// Primary message.
    pub message: String,
    /// DETAIL.
    pub detail: String,
    /// HINT.
    pub hint: String,
    /// CONTEXT.
    pub context: String,
    /// The statement (STATEMENT line, csvlog `query`, jsonlog `statement`).
    pub statement: String,
}

impl Default for LogRecord {
    fn default() -> Self {
        LogRecord {
            time_us: None,
            pid: None,
            session_id: String::new(),
            line_num: None,
            user: String::new(),
            database: String::new(),
            application_name: String::new(),
            remote_host: String::new(),
            backend_type: String::new(),
            severity: Severity::Log,
            sql_state: String::new(),
            query_id: None,
            message: String::new(),
            detail: String::new(),
            hint: String::new(),
            context: String::new(),
            statement: String::new(),
        }
    }
}

impl LogRecord {
    /// Empties the record, keeping its buffers.
    pub fn clear(&mut self) {
        self.time_us = None;
        self.pid = None;
        self.session_id.clear();
        self.line_num = None;
        self.user.clear();
        self.database.clear();
        self.application_name.clear();
        self.remote_host.clear();
        self.backend_type.clear();
        self.severity = Severity::Log;
        self.sql_state.clear();
        self.query_id = None;
        self.message.clear();
        self.detail.clear();
        self.hint.clear();
        self.context.clear();
        self.statement.clear();
    }

    /// The field a secondary stderr label fills.
    pub fn secondary_field(&mut self, sev: Severity) -> Option<&mut String> {
        match sev {
            Severity::Detail => Some(&mut self.detail),
            Severity::Hint => Some(&mut self.hint),
            Severity::Context => Some(&mut self.context),
            Severity::Statement => Some(&mut self.statement),
            _ => None,
        }
    }
}

/// Lossy UTF-8 append without allocating for valid input.
pub(crate) fn push_lossy(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

/// Parses ASCII decimal (optionally negative).
pub(crate) fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, d) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        _ => (false, b),
    };
    if d.is_empty() || d.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in d {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
    }
    Some(if neg { -v } else { v })
}
