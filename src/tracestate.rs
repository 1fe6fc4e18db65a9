//! W3C Trace Context `tracestate`: parsed, validated and mutated per the Recommendation.
//!
//! - At most 32 list members; more makes the whole header invalid.
//! - Key: `(lcalpha / DIGIT) 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@")`, which includes the
//!   multi-tenant `tenant@system` form (the grammar of the official test suite).
//! - Value: 1 to 256 printable ASCII characters (0x20-0x7E) except `,` and `=`, not ending in a space.
//! - Empty members and spaces/tabs around members are tolerated; duplicate keys are invalid.
//! - A new or updated member goes to the left; members are dropped from the right to stay within 32
//!   members and 512 characters.

use std::fmt;
use std::str::FromStr;

/// Maximum number of list members.
pub const MAX_MEMBERS: usize = 32;
/// Maximum serialized length this crate propagates.
pub const MAX_LEN: usize = 512;

/// A valid `tracestate` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(String, String)>,
    /// The list serialized and percent-encoded for a comment, kept current by every mutation so that
    /// injecting it per query is a copy.
    encoded: String,
}

/// Why a `tracestate` (or one member) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceStateError {
    /// More than 32 members.
    #[error("tracestate has more than {MAX_MEMBERS} members")]
    TooManyMembers,
    /// A member has no `=`.
    #[error("tracestate member {0:?} has no '='")]
    MissingEquals(String),
    /// A key breaks the key grammar.
    #[error("tracestate key {0:?} is invalid")]
    InvalidKey(String),
    /// A value breaks the value grammar.
    #[error("tracestate value for key {0:?} is invalid")]
    InvalidValue(String),
    /// The same key appears twice.
    #[error("tracestate key {0:?} appears more than once")]
    DuplicateKey(String),
    /// A single member is longer than the 512-character limit by itself.
    #[error("tracestate member {0:?} is longer than {MAX_LEN} characters")]
    MemberTooLong(String),
}

/// Whether `key` matches the tracestate key grammar.
pub fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
        _ => return false,
    }
    b.len() <= 256
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@'))
}

/// Whether `value` matches the tracestate value grammar.
pub fn is_valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.last() != Some(&b' ')
        && b.iter().all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

impl TraceState {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a header value. Invalid input yields an error: the caller must drop the whole header.
    pub fn parse(s: &str) -> Result<Self, TraceStateError> {
        let mut members: Vec<(String, String)> = Vec::new();
        for raw in s.split(',') {
            let m = raw.trim_matches(|c| c == ' ' || c == '\t');
            if m.is_empty() {
                continue;
            }
            let (k, v) = m.split_once('=').ok_or_else(|| TraceStateError::MissingEquals(m.to_string()))?;
            if !is_valid_key(k) {
                return Err(TraceStateError::InvalidKey(k.to_string()));
            }
            if !is_valid_value(v) {
                return Err(TraceStateError::InvalidValue(k.to_string()));
            }
            if members.iter().any(|(ek, _)| ek == k) {
                return Err(TraceStateError::DuplicateKey(k.to_string()));
            }
            members.push((k.to_string(), v.to_string()));
            if members.len() > MAX_MEMBERS {
                return Err(TraceStateError::TooManyMembers);
            }
        }
        let mut ts = TraceState { members, encoded: String::new() };
        ts.fit();
        Ok(ts)
    }

    /// Adds or updates a member: it moves to the left, and members are dropped from the right to fit.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), TraceStateError> {
        if !is_valid_key(key) {
            return Err(TraceStateError::InvalidKey(key.to_string()));
        }
        if !is_valid_value(value) {
            return Err(TraceStateError::InvalidValue(key.to_string()));
        }
        if key.len() + 1 + value.len() > MAX_LEN {
            return Err(TraceStateError::MemberTooLong(key.to_string()));
        }
        self.members.retain(|(k, _)| k != key);
        self.members.insert(0, (key.to_string(), value.to_string()));
        self.fit();
        Ok(())
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The members, leftmost first.
    pub fn members(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the list has no members (an empty tracestate is not propagated).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn serialized_len(&self) -> usize {
        self.members.iter().map(|(k, v)| k.len() + 1 + v.len()).sum::<usize>() + self.members.len().saturating_sub(1)
    }

    fn fit(&mut self) {
        self.members.truncate(MAX_MEMBERS);
        while self.serialized_len() > MAX_LEN {
            self.members.pop();
        }
        self.encoded.clear();
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                self.encoded.push_str("%2C");
            }
            crate::encode::encode_into(&mut self.encoded, k);
            self.encoded.push_str("%3D");
            crate::encode::encode_into(&mut self.encoded, v);
        }
    }

    /// The list as it appears in a comment: serialized, then percent-encoded once.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl FromStr for TraceState {
    type Err = TraceStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_headers() {
        let cases: &[(&str, &str)] = &[
            ("foo=1", "foo=1"),
            ("foo=1,bar=2", "foo=1,bar=2"),
            (" foo=1 , \tbar=2\t", "foo=1,bar=2"),
            ("foo=1,,bar=2,", "foo=1,bar=2"),
            ("foo@bar=1", "foo@bar=1"),
            ("foo@@bar=1", "foo@@bar=1"),
            ("0foo=1", "0foo=1"),
            ("foo_-*/bar=1", "foo_-*/bar=1"),
            ("foo= bar", "foo= bar"),
            ("foo=a!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~", "foo=a!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~"),
            ("", ""),
        ];
        for (input, want) in cases {
            let ts = TraceState::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(ts.to_string(), *want, "{input:?}");
        }
    }

    #[test]
    fn invalid_headers() {
        let cases: &[&str] = &[
            "FOO=1",
            "foo.bar=1",
            "@foo=1",
            "_foo=1",
            "foo",
            "foo=",
            "foo=1 =2",
            "foo=a,b",
            "foo=\u{7f}",
            "foo=é",
            "foo=1,foo=2",
            " =1",
            "foo =1",
        ];
        for input in cases {
            assert!(TraceState::parse(input).is_err(), "{input:?} should be invalid");
        }
        let long_key = format!("{}=1", "a".repeat(257));
        assert!(TraceState::parse(&long_key).is_err());
        let ok_key = format!("{}=1", "a".repeat(256));
        assert!(TraceState::parse(&ok_key).is_ok());
        let long_val = format!("a={}", "v".repeat(257));
        assert!(TraceState::parse(&long_val).is_err());
    }

    #[test]
    fn member_limit() {
        let list = |n: usize| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        assert_eq!(TraceState::parse(&list(32)).unwrap().len(), 32);
        assert_eq!(TraceState::parse(&list(33)), Err(TraceStateError::TooManyMembers));
    }

    #[test]
    fn insert_goes_left_and_drops_right() {
        let mut ts = TraceState::parse("a=1,b=2,c=3").unwrap();
        ts.insert("b", "9").unwrap();
        assert_eq!(ts.to_string(), "b=9,a=1,c=3");
        let mut full = TraceState::parse(&(0..32).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",")).unwrap();
        full.insert("new", "x").unwrap();
        assert_eq!(full.len(), 32);
        assert_eq!(full.members().next(), Some(("new", "x")));
        assert_eq!(full.get("k31"), None);
        // 512-character limit: members dropped from the right
        let mut big = TraceState::new();
        for i in 0..4 {
            big.insert(&format!("k{i}"), &"v".repeat(200)).unwrap();
        }
        assert!(big.to_string().len() <= MAX_LEN);
        assert_eq!(big.members().next().map(|(k, _)| k), Some("k3"));
        assert_eq!(big.len(), 2);
        assert!(ts.insert("BAD", "1").is_err());
        assert!(ts.insert("ok", "a,b").is_err());
    }
}
