//! The carrier values: how a traceparent is written into each target variable, and read back.
//!
//! - `application_name` (reaches `log_line_prefix` `%a`, csvlog/jsonlog and `pg_stat_activity`): by default
//!   the bare 55-character W3C traceparent, the form the OpenTelemetry Collector's postgresql receiver and
//!   OpenTelemetry's own instrumentations (Npgsql, instrumentation-pg) write and read; optionally
//!   ([`AppNameFormat::Named`]) the client's own name cut to fit, `@`, then the traceparent (≤ 63 bytes).
//!   Readers accept both.
//! - A custom GUC (default `sqlcommenter.traceparent`): the bare traceparent.
//! - `pg_tracing.trace_context`: `traceparent='<traceparent>'`, the format pg_tracing reads.

use crate::traceparent::{TraceParent, TRACEPARENT_LEN};

/// PostgreSQL's limit for `application_name` (NAMEDATALEN - 1).
pub const APPLICATION_NAME_MAX: usize = 63;

/// Separator between the client's name and the traceparent in `application_name`.
pub const APPLICATION_NAME_SEPARATOR: char = '@';

/// The default custom GUC carrier.
pub const DEFAULT_GUC: &str = "sqlcommenter.traceparent";

/// pg_tracing's GUC.
pub const PG_TRACING_GUC: &str = "pg_tracing.trace_context";

/// Whether `name` is a custom setting name a carrier may write: two or more dot-separated parts, each
/// `[a-z_][a-z0-9_]*` (what PostgreSQL accepts for placeholder settings, without quoting).
pub fn is_valid_guc_name(name: &str) -> bool {
    let part = |p: &str| {
        let mut bytes = p.bytes();
        matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    name.contains('.') && name.split('.').all(part)
}

/// How `application_name` carries a traceparent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum AppNameFormat {
    /// The bare W3C traceparent (what OpenTelemetry's tools read): the client's name is replaced while a
    /// context is carried.
    #[default]
    Bare,
    /// `name@traceparent`: keeps up to 7 bytes of the client's name, read by this project's tools only.
    Named,
}

/// The longest prefix of `s` that fits in `max` bytes and ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The `application_name` value that carries `tp` while keeping as much of `client_name` as fits.
/// PostgreSQL replaces non-ASCII bytes in `application_name` with `?`, so the name is kept to printable
/// ASCII here.
pub fn encode_application_name(client_name: &str, tp: &TraceParent) -> String {
    let name = strip_carrier(client_name);
    let name: String = name.chars().map(|c| if (' '..='~').contains(&c) { c } else { '?' }).collect();
    let name = truncate(&name, APPLICATION_NAME_MAX - TRACEPARENT_LEN - 1);
    let mut out = String::with_capacity(APPLICATION_NAME_MAX);
    if !name.is_empty() {
        out.push_str(name);
        out.push(APPLICATION_NAME_SEPARATOR);
    }
    tp.write_to(&mut out);
    out
}

/// Reads an `application_name` carrier in either form ([`AppNameFormat`]): the client's name part (empty
/// for the bare form) and the traceparent, or `None` when the value does not end in a valid traceparent
/// in carrier form.
pub fn decode_application_name(value: &str) -> Option<(&str, TraceParent)> {
    if value.len() < TRACEPARENT_LEN || !value.is_char_boundary(value.len() - TRACEPARENT_LEN) {
        return None;
    }
    let split = value.len() - TRACEPARENT_LEN;
    let (head, tp) = value.split_at(split);
    let name = if head.is_empty() { "" } else { head.strip_suffix(APPLICATION_NAME_SEPARATOR)? };
    // Exact form only: no surrounding whitespace, version 00.
    if !tp.starts_with("00-") {
        return None;
    }
    TraceParent::parse(tp).ok().map(|tp| (name, tp))
}

/// `client_name` without a carrier suffix (so a name is never wrapped twice).
pub fn strip_carrier(client_name: &str) -> &str {
    match decode_application_name(client_name) {
        Some((name, _)) => name,
        None => client_name,
    }
}

/// The value pg_tracing reads from `pg_tracing.trace_context`.
pub fn encode_pg_tracing(tp: &TraceParent) -> String {
    format!("traceparent='{tp}'")
}

/// Reads a `pg_tracing.trace_context` value.
pub fn decode_pg_tracing(value: &str) -> Option<TraceParent> {
    let inner = value.trim().strip_prefix("traceparent='")?.strip_suffix('\'')?;
    TraceParent::parse(inner).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn application_name_round_trip() {
        let tp = TraceParent::parse(TP).unwrap();
        let v = encode_application_name("checkout-service", &tp);
        assert!(v.len() <= APPLICATION_NAME_MAX);
        assert_eq!(v, format!("checkou@{TP}"));
        assert_eq!(decode_application_name(&v), Some(("checkou", tp)));
        assert_eq!(encode_application_name("", &tp), TP);
        assert_eq!(decode_application_name(TP), Some(("", tp)));
        // re-encoding an already-carrying name keeps one carrier
        assert_eq!(encode_application_name(&v, &tp), v);
        assert_eq!(encode_application_name("é", &tp), format!("?@{TP}"));
        assert_eq!(decode_application_name("psql"), None);
        assert_eq!(decode_application_name(&format!("x{TP}")), None);
        assert_eq!(decode_application_name(&TP.replace("-01", "-0x")), None);
    }

    #[test]
    fn guc_names() {
        assert!(is_valid_guc_name(DEFAULT_GUC));
        assert!(is_valid_guc_name("pg_tracing.trace_context"));
        assert!(is_valid_guc_name("a.b.c_1"));
        for bad in ["", "plain", "a.", ".b", "a.1b", "A.b", "a.b;drop", "a b.c", "a.b'"] {
            assert!(!is_valid_guc_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn pg_tracing_round_trip() {
        let tp = TraceParent::parse(TP).unwrap();
        let v = encode_pg_tracing(&tp);
        assert_eq!(v, format!("traceparent='{TP}'"));
        assert_eq!(decode_pg_tracing(&v), Some(tp));
        assert_eq!(decode_pg_tracing("traceparent='00-1'"), None);
    }
}
