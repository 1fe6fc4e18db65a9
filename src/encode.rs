//! Percent-encoding of tag keys and values, and the lenient decoding used when reading comments back.
//!
//! Encoding rule: every byte outside the RFC 3986 *unreserved* set (`A-Z a-z 0-9 - . _ ~`) is written as
//! `%XX` with uppercase hex digits. Space is `%20` (never `+`), `%` is `%25` (never `%%`), and `'`, `*`,
//! `/` are always escaped, so an encoded value can never close the comment or the quoted value.

/// Whether `b` is in the RFC 3986 unreserved set and is written unescaped.
#[inline]
pub const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const fn unreserved_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = is_unreserved(i as u8);
        i += 1;
    }
    t
}

static UNRESERVED: [bool; 256] = unreserved_table();

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

const fn escape_table() -> [u8; 768] {
    let mut t = [0u8; 768];
    let mut i = 0;
    while i < 256 {
        t[3 * i] = b'%';
        t[3 * i + 1] = HEX_UPPER[i >> 4];
        t[3 * i + 2] = HEX_UPPER[i & 0xf];
        i += 1;
    }
    t
}

static ESCAPES: [u8; 768] = escape_table();

/// `%XX` for byte `b`.
#[inline]
fn escape(b: u8) -> &'static str {
    let i = 3 * b as usize;
    // The table holds only ASCII, so every 3-byte window at a multiple of 3 is valid UTF-8.
    std::str::from_utf8(&ESCAPES[i..i + 3]).unwrap_or("%3F")
}

/// Number of bytes `s` takes once percent-encoded.
#[inline]
pub fn encoded_len(s: &str) -> usize {
    s.bytes().map(|b| if is_unreserved(b) { 1 } else { 3 }).sum()
}

/// Appends the percent-encoded form of `s` to `out`.
pub fn encode_into(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !UNRESERVED[b as usize] {
            // A non-empty run is unreserved ASCII, so both ends are char boundaries.
            if start < i {
                out.push_str(&s[start..i]);
            }
            out.push_str(escape(b));
            start = i + 1;
        }
    }
    out.push_str(&s[start..]);
}

/// Returns the percent-encoded form of `s`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(encoded_len(s));
    encode_into(&mut out, s);
    out
}

/// Why a key or value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The decoded bytes are not UTF-8.
    #[error("decoded bytes are not valid UTF-8")]
    NotUtf8,
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes a key or value the way real consumers do: `%XX` in either case, `+` as space, `%%XX` (the
/// doubled `%` that Python/PHP implementations emit for paramstyle reasons) as `%XX`, and `\'` as `'`.
/// A `%` not followed by two hex digits is kept literally.
pub fn decode(s: &str) -> Result<String, DecodeError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let j = if b.get(i + 1) == Some(&b'%') { i + 1 } else { i };
                match (b.get(j + 1).copied().and_then(hex_val), b.get(j + 2).copied().and_then(hex_val)) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i = j + 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'\\' if b.get(i + 1) == Some(&b'\'') => {
                out.push(b'\'');
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_everything_outside_unreserved() {
        assert_eq!(encode("a b"), "a%20b");
        assert_eq!(encode("/orders?id=1"), "%2Forders%3Fid%3D1");
        assert_eq!(encode("it's */"), "it%27s%20%2A%2F");
        assert_eq!(encode("100%"), "100%25");
        assert_eq!(encode("a+b"), "a%2Bb");
        assert_eq!(encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encoded_len("é a"), 10);
    }

    #[test]
    fn decodes_leniently() {
        assert_eq!(decode("a%20b").unwrap(), "a b");
        assert_eq!(decode("a+b").unwrap(), "a b");
        assert_eq!(decode("%2forders").unwrap(), "/orders");
        assert_eq!(decode("k%%3Dv").unwrap(), "k=v");
        assert_eq!(decode("it\\'s").unwrap(), "it's");
        assert_eq!(decode("100%").unwrap(), "100%");
        assert_eq!(decode("%zz").unwrap(), "%zz");
        assert_eq!(decode("%C3%A9").unwrap(), "é");
        assert_eq!(decode("%FF"), Err(DecodeError::NotUtf8));
    }
}
