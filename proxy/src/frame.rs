//! Wire framing: message headers, the few body fields the proxy reads, and the frames it writes itself.
//!
//! Frames the proxy does not rewrite never pass through here as values: the relay copies their bytes.
//! Message type bytes come from pgwire's `messages` module so the names match the protocol docs.

use bytes::{BufMut, BytesMut};
pub use pgwire::messages::copy::{
    MESSAGE_TYPE_BYTE_COPY_BOTH_RESPONSE as COPY_BOTH_RESPONSE, MESSAGE_TYPE_BYTE_COPY_DATA as COPY_DATA,
    MESSAGE_TYPE_BYTE_COPY_DONE as COPY_DONE, MESSAGE_TYPE_BYTE_COPY_FAIL as COPY_FAIL,
    MESSAGE_TYPE_BYTE_COPY_IN_RESPONSE as COPY_IN_RESPONSE, MESSAGE_TYPE_BYTE_COPY_OUT_RESPONSE as COPY_OUT_RESPONSE,
};
pub use pgwire::messages::extendedquery::{
    MESSAGE_TYPE_BYTE_BIND as BIND, MESSAGE_TYPE_BYTE_CLOSE as CLOSE, MESSAGE_TYPE_BYTE_DESCRIBE as DESCRIBE,
    MESSAGE_TYPE_BYTE_EXECUTE as EXECUTE, MESSAGE_TYPE_BYTE_FLUSH as FLUSH, MESSAGE_TYPE_BYTE_PARSE as PARSE,
    MESSAGE_TYPE_BYTE_SYNC as SYNC,
};
pub use pgwire::messages::response::{
    MESSAGE_TYPE_BYTE_COMMAND_COMPLETE as COMMAND_COMPLETE, MESSAGE_TYPE_BYTE_ERROR_RESPONSE as ERROR_RESPONSE,
    MESSAGE_TYPE_BYTE_NOTICE_RESPONSE as NOTICE_RESPONSE, MESSAGE_TYPE_BYTE_NOTIFICATION_RESPONSE as NOTIFICATION,
    MESSAGE_TYPE_BYTE_READY_FOR_QUERY as READY_FOR_QUERY,
};
pub use pgwire::messages::simplequery::MESSAGE_TYPE_BYTE_QUERY as QUERY;
pub use pgwire::messages::startup::{
    MESSAGE_TYPE_BYTE_BACKEND_KEY_DATA as BACKEND_KEY_DATA, MESSAGE_TYPE_BYTE_PARAMETER_STATUS as PARAMETER_STATUS,
};
pub use pgwire::messages::terminate::MESSAGE_TYPE_BYTE_TERMINATE as TERMINATE;

/// FunctionCall (`F`): not modelled by pgwire, relayed like any other frame.
pub const FUNCTION_CALL: u8 = b'F';
/// FunctionCallResponse (`V`).
pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
/// ParseComplete (`1`).
pub const PARSE_COMPLETE: u8 = b'1';
/// BindComplete (`2`).
pub const BIND_COMPLETE: u8 = b'2';
/// CloseComplete (`3`).
pub const CLOSE_COMPLETE: u8 = b'3';
/// ParameterDescription (`t`).
pub const PARAMETER_DESCRIPTION: u8 = b't';
/// RowDescription (`T`).
pub const ROW_DESCRIPTION: u8 = b'T';
/// NoData (`n`).
pub const NO_DATA: u8 = b'n';
/// DataRow (`D`).
pub const DATA_ROW: u8 = b'D';
/// EmptyQueryResponse (`I`).
pub const EMPTY_QUERY: u8 = b'I';
/// PortalSuspended (`s`).
pub const PORTAL_SUSPENDED: u8 = b's';

/// Size of a typed message header: type byte + i32 length.
pub const HEADER_LEN: usize = 5;

/// A typed message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The type byte.
    pub tag: u8,
    /// The whole frame's size in bytes (type byte + length field + body).
    pub frame_len: usize,
}

/// Why a header is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is below 4 (it counts itself).
    #[error("message {tag:?} has an invalid length {len}")]
    BadLength {
        /// The type byte, as a char.
        tag: char,
        /// The length field.
        len: i32,
    },
    /// The server answered something the session's queue of expected replies did not expect.
    #[error(transparent)]
    OutOfSync(#[from] crate::state::OutOfSync),
}

/// Reads the header at the start of `buf`; `Ok(None)` when fewer than 5 bytes are there.
pub fn header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength { tag: buf[0] as char, len });
    }
    // i32 -> usize is lossless for positive values on every supported target.
    Ok(Some(Header { tag: buf[0], frame_len: len as usize + 1 }))
}

/// Splits a NUL-terminated string off the front of `buf`: (string bytes, rest after the NUL).
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..end], &buf[end + 1..]))
}

/// The fields of a Parse body the proxy reads; `rest` is everything after the query (parameter types),
/// copied back unchanged.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseBody<'a> {
    /// Statement name (empty = unnamed).
    pub name: &'a [u8],
    /// Query text bytes (client encoding).
    pub query: &'a [u8],
    /// Parameter type count and OIDs, raw.
    pub rest: &'a [u8],
}

/// Reads a Parse body (without the 5-byte header).
pub fn parse_body(body: &[u8]) -> Option<ParseBody<'_>> {
    let (name, rest) = cstr(body)?;
    let (query, rest) = cstr(rest)?;
    Some(ParseBody { name, query, rest })
}

/// Reads the statement name of a Bind body (without the header). Needs only the first bytes of the body.
pub fn bind_statement(body: &[u8]) -> Option<&[u8]> {
    let (_portal, rest) = cstr(body)?;
    let (stmt, _) = cstr(rest)?;
    Some(stmt)
}

/// Column `i` of a DataRow body (without the header): its value, `None` when it is NULL or the row is
/// shorter or malformed.
pub fn data_row_column(body: &[u8], i: usize) -> Option<&[u8]> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
    if i >= count {
        return None;
    }
    let mut rest = &body[2..];
    for _ in 0..i {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = rest.get(4 + usize::try_from(len).unwrap_or(0)..)?;
    }
    let len = usize::try_from(i32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
    rest.get(4..4 + len)
}

/// Reads a NUL-terminated text body (Query, CommandComplete) without its terminator.
pub fn text_body(body: &[u8]) -> &[u8] {
    match body.iter().position(|&b| b == 0) {
        Some(end) => &body[..end],
        None => body,
    }
}

/// Reads a ParameterStatus body: (name, value).
pub fn parameter_status(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = cstr(body)?;
    let (value, _) = cstr(rest)?;
    Some((name, value))
}

/// The SQLSTATE (`C` field) of an ErrorResponse/NoticeResponse body.
pub fn sqlstate(body: &[u8]) -> Option<&[u8]> {
    error_field(body, b'C')
}

/// A field of an ErrorResponse/NoticeResponse body by its code (`C` SQLSTATE, `V` severity, `P` position…).
pub fn error_field(body: &[u8], field: u8) -> Option<&[u8]> {
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            return None;
        }
        let (value, tail) = cstr(tail)?;
        if code == field {
            return Some(value);
        }
        rest = tail;
    }
    None
}

/// Writes an ErrorResponse/NoticeResponse (`tag`) whose field `field` is replaced by `value`; the other
/// fields keep their order and bytes. `None` when the body is malformed or lacks the field.
pub fn write_with_error_field(out: &mut BytesMut, tag: u8, body: &[u8], field: u8, value: &[u8]) -> Option<()> {
    error_field(body, field)?;
    let mut fields = Vec::with_capacity(body.len() + value.len());
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let (v, tail) = cstr(tail)?;
        fields.push(code);
        fields.extend_from_slice(if code == field { value } else { v });
        fields.push(0);
        rest = tail;
    }
    fields.push(0);
    out.put_u8(tag);
    out.put_i32(i32::try_from(fields.len() + 4).ok()?);
    out.put_slice(&fields);
    Some(())
}

/// Whether an ErrorResponse body is FATAL or PANIC (the server closes the connection after it).
pub fn is_fatal(body: &[u8]) -> bool {
    matches!(error_field(body, b'V').or_else(|| error_field(body, b'S')), Some(b"FATAL" | b"PANIC"))
}

fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    at
}

fn finish(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

/// Writes a Query frame whose text is `parts` in order (a statement and its comment: no copy joins them).
pub fn write_query(out: &mut BytesMut, parts: &[&str]) {
    let at = begin(out, QUERY);
    put_parts(out, parts);
    finish(out, at);
}

/// Writes a Parse frame whose text is `parts` in order, with `rest` (parameter types) copied as received.
pub fn write_parse(out: &mut BytesMut, name: &[u8], parts: &[&str], rest: &[u8]) {
    let at = begin(out, PARSE);
    put_cstr(out, name);
    put_parts(out, parts);
    out.put_slice(rest);
    finish(out, at);
}

/// `parts` as one C string.
fn put_parts(out: &mut BytesMut, parts: &[&str]) {
    out.reserve(parts.iter().map(|p| p.len()).sum::<usize>() + 1);
    for p in parts {
        out.put_slice(p.as_bytes());
    }
    out.put_u8(0);
}

/// Writes a Parse frame without parameter types.
pub fn write_parse_untyped(out: &mut BytesMut, name: &[u8], sql: &str) {
    write_parse(out, name, &[sql], &0i16.to_be_bytes());
}

/// Writes a Bind of `stmt` into `portal` with text parameters and default result formats.
pub fn write_bind_text(out: &mut BytesMut, portal: &[u8], stmt: &[u8], params: &[&[u8]]) {
    let at = begin(out, BIND);
    put_cstr(out, portal);
    put_cstr(out, stmt);
    out.put_i16(0);
    out.put_i16(params.len() as i16);
    for p in params {
        out.put_i32(p.len() as i32);
        out.put_slice(p);
    }
    out.put_i16(0);
    finish(out, at);
}

/// Writes an Execute of `portal` without a row limit.
pub fn write_execute(out: &mut BytesMut, portal: &[u8]) {
    let at = begin(out, EXECUTE);
    put_cstr(out, portal);
    out.put_i32(0);
    finish(out, at);
}

/// Writes a Close of a portal (`P`) or statement (`S`).
pub fn write_close(out: &mut BytesMut, kind: u8, name: &[u8]) {
    let at = begin(out, CLOSE);
    out.put_u8(kind);
    put_cstr(out, name);
    finish(out, at);
}

/// Writes a Sync frame.
pub fn write_sync(out: &mut BytesMut) {
    out.put_slice(&[SYNC, 0, 0, 0, 4]);
}

/// Writes a ParameterStatus frame.
pub fn write_parameter_status(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    let at = begin(out, PARAMETER_STATUS);
    put_cstr(out, name);
    put_cstr(out, value);
    finish(out, at);
}

/// Writes an ErrorResponse with severity, SQLSTATE and message (the proxy's own errors to a client).
pub fn write_error(out: &mut BytesMut, severity: &str, code: &str, message: &str) {
    let at = begin(out, ERROR_RESPONSE);
    for (field, value) in [(b'S', severity), (b'V', severity), (b'C', code), (b'M', message)] {
        out.put_u8(field);
        put_cstr(out, value.replace('\0', " ").as_bytes());
    }
    out.put_u8(0);
    finish(out, at);
}

/// ASCII case-insensitive substring search.
pub fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_row_columns() {
        // ('00-…', NULL, '42')
        let row = [&2u16.to_be_bytes()[..], &3i32.to_be_bytes(), b"abc", &(-1i32).to_be_bytes(), b""].concat();
        let row3 = [&3u16.to_be_bytes()[..], &row[2..], &2i32.to_be_bytes(), b"42"].concat();
        assert_eq!(data_row_column(&row3, 0), Some(&b"abc"[..]));
        assert_eq!(data_row_column(&row3, 1), None, "NULL");
        assert_eq!(data_row_column(&row3, 2), Some(&b"42"[..]));
        assert_eq!(data_row_column(&row3, 3), None, "no such column");
        assert_eq!(data_row_column(&row, 1), None);
        for cut in 0..row3.len() {
            assert_ne!(data_row_column(&row3[..cut], 2), Some(&b"42"[..]), "a truncated row: {cut}");
        }
        let lying = [&1u16.to_be_bytes()[..], &i32::MAX.to_be_bytes(), b"x"].concat();
        assert_eq!(data_row_column(&lying, 0), None, "a length past the end");
    }

    #[test]
    fn header_and_fields() {
        assert_eq!(header(b"Z\0\0\0").unwrap(), None);
        assert_eq!(header(b"Z\0\0\0\x05I").unwrap(), Some(Header { tag: b'Z', frame_len: 6 }));
        assert!(header(b"Z\0\0\0\x03").is_err());
        assert!(header(b"Z\xff\xff\xff\xff").is_err());
        let p = parse_body(b"s1\0select 1\0\0\x01\0\0\0\x17").unwrap();
        assert_eq!((p.name, p.query, p.rest), (&b"s1"[..], &b"select 1"[..], &b"\0\x01\0\0\0\x17"[..]));
        assert_eq!(parse_body(b"s1\0select"), None);
        assert_eq!(bind_statement(b"\0stmt\0\0\0"), Some(&b"stmt"[..]));
        assert_eq!(bind_statement(b"\0st"), None);
        assert_eq!(sqlstate(b"SERROR\0C26000\0Mnope\0\0"), Some(&b"26000"[..]));
        assert_eq!(sqlstate(b"SERROR\0\0"), None);
        assert_eq!(find_ci(b"SET Sqlcommenter.TraceParent = 'x'", b"sqlcommenter.traceparent"), Some(4));
    }

    #[test]
    fn written_frames_have_correct_lengths() {
        let mut out = BytesMut::new();
        write_bind_text(&mut out, b"p", b"s", &[b"ab", b"c"]);
        let h = header(&out).unwrap().unwrap();
        assert_eq!(h.frame_len, out.len());
        assert_eq!(bind_statement(&out[5..]), Some(&b"s"[..]));
        let mut out = BytesMut::new();
        write_error(&mut out, "FATAL", "08006", "x");
        assert_eq!(header(&out).unwrap().unwrap().frame_len, out.len());
        assert_eq!(sqlstate(&out[5..]), Some(&b"08006"[..]));
    }
}
