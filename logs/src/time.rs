//! Timestamps as PostgreSQL writes them (`%m`, `%t`, `%n`, csvlog/jsonlog `log_time`), as microseconds since
//! the Unix epoch.
//!
//! The date and time digits are read by hand (it is the hot path); the time zone is resolved by [`Zones`]:
//! `UTC`/`GMT`/`Z` and numeric offsets (`+03`, `-0530`, `+05:30`) directly, any other abbreviation through
//! the IANA time-zone database (jiff). An abbreviation is accepted when every zone that uses it at that
//! moment agrees on its offset (`CEST`, `EST`, `JST`); `IST` or `CST` mean different offsets in different
//! places and are refused unless `--timezone` names the server's zone. A refused or unknown abbreviation
//! leaves the time empty and is counted and reported, never read as UTC.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp as i64 + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() {
        return None;
    }
    let mut v: u32 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(c - b'0'))?;
    }
    Some(v)
}

/// Why a time zone abbreviation was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// No zone in the time-zone database uses it at that time.
    #[error("unknown time zone abbreviation {0:?}")]
    Unknown(String),
    /// Zones disagree on its offset.
    #[error("time zone abbreviation {abbr:?} is ambiguous ({}); pass --timezone with the server's log_timezone", .candidates.join(", "))]
    Ambiguous {
        /// The abbreviation.
        abbr: String,
        /// `offset (example zone)` for each offset it may mean.
        candidates: Vec<String>,
    },
}

/// A numeric zone (`+03`, `-0530`, `+05:30`) in seconds east of UTC.
fn numeric_offset(tz: &[u8]) -> Option<i32> {
    let (sign, rest) = match tz.first() {
        Some(b'+') => (1, &tz[1..]),
        Some(b'-') => (-1, &tz[1..]),
        _ => return None,
    };
    let (h, m) = match rest.len() {
        2 => (digits(rest)?, 0),
        4 => (digits(&rest[..2])?, digits(&rest[2..])?),
        5 if rest[2] == b':' => (digits(&rest[..2])?, digits(&rest[3..])?),
        _ => return None,
    };
    (h <= 15 && m < 60).then(|| sign * (h as i32 * 3600 + m as i32 * 60))
}

#[derive(Debug, Default)]
struct ZoneState {
    /// Abbreviation → offset in seconds, or why not.
    cache: HashMap<Vec<u8>, Result<i32, ZoneError>>,
    /// Abbreviations refused, with how many timestamps used them.
    refused: BTreeMap<String, (ZoneError, u64)>,
}

/// Resolves time zone abbreviations (shared by the parsers of one run; cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Zones {
    /// The server's `log_timezone`, when given (`--timezone`): resolves abbreviations first and is the zone
    /// of timestamps written without one (RFC 3164 syslog headers).
    configured: Option<TimeZone>,
    state: Arc<Mutex<ZoneState>>,
}

impl Zones {
    /// Resolution through the whole time-zone database only.
    pub fn new() -> Self {
        Self::default()
    }

    /// With the server's zone (an IANA name such as `Europe/Dublin`).
    pub fn with_zone(name: &str) -> Result<Self, jiff::Error> {
        Ok(Zones { configured: Some(TimeZone::get(name)?), state: Arc::default() })
    }

    /// The same zones with counters of their own (for format detection, whose lines are read again).
    pub fn scratch(&self) -> Self {
        Zones { configured: self.configured.clone(), state: Arc::default() }
    }

    /// The zone of timestamps written without one: `--timezone`, else the system's.
    pub fn local(&self) -> TimeZone {
        self.configured.clone().unwrap_or_else(TimeZone::system)
    }

    /// Offset in seconds east of UTC of `tz` (as `%Z` prints it) at civil time `dt`.
    pub fn offset(&self, tz: &[u8], dt: DateTime) -> Result<i32, ZoneError> {
        match tz {
            b"" | b"UTC" | b"GMT" | b"Z" | b"UCT" | b"Etc/UTC" => return Ok(0),
            _ => {}
        }
        if let Some(o) = numeric_offset(tz) {
            return Ok(o);
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let r = match st.cache.get(tz) {
            Some(r) => r.clone(),
            None => {
                let r = self.resolve(&String::from_utf8_lossy(tz), dt);
                st.cache.insert(tz.to_vec(), r.clone());
                r
            }
        };
        if let Err(e) = &r {
            let entry = st.refused.entry(String::from_utf8_lossy(tz).into_owned()).or_insert((e.clone(), 0));
            entry.1 += 1;
        }
        r
    }

    fn resolve(&self, abbr: &str, dt: DateTime) -> Result<i32, ZoneError> {
        if let Some(tz) = &self.configured {
            if let Some(o) = zone_offset_for(tz, abbr, dt) {
                return Ok(o.seconds());
            }
        }
        let db = jiff::tz::db();
        // offset → up to three zones using the abbreviation then (region/city names first)
        let mut found: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        let mut names: Vec<String> = db.available().map(|n| n.as_str().to_owned()).collect();
        names.sort_by_key(|n| (!n.contains('/') || n.starts_with("Etc/") || n.starts_with("SystemV/"), n.clone()));
        for name in names {
            let Ok(tz) = db.get(&name) else { continue };
            if let Some(o) = zone_offset_for(&tz, abbr, dt) {
                let zones = found.entry(o.seconds()).or_default();
                if zones.len() < 3 {
                    zones.push(name);
                }
            }
        }
        match found.len() {
            0 => Err(ZoneError::Unknown(abbr.to_owned())),
            1 => Ok(*found.keys().next().unwrap_or(&0)),
            _ => Err(ZoneError::Ambiguous {
                abbr: abbr.to_owned(),
                candidates: found
                    .iter()
                    .map(|(o, z)| format!("{} in {}", Offset::from_seconds(*o).unwrap_or(Offset::UTC), z.join(", ")))
                    .collect(),
            }),
        }
    }

    /// Abbreviations that were refused, with their reason and how many timestamps carried them.
    pub fn refused(&self) -> Vec<(ZoneError, u64)> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.refused.values().cloned().collect()
    }
}

/// The offset `tz` uses at civil time `dt` under the abbreviation `abbr`, if it does.
fn zone_offset_for(tz: &TimeZone, abbr: &str, dt: DateTime) -> Option<Offset> {
    let candidates = match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => [Some(offset), None],
        AmbiguousOffset::Gap { before, after } | AmbiguousOffset::Fold { before, after } => [Some(before), Some(after)],
    };
    candidates.into_iter().flatten().find(|o| {
        o.to_timestamp(dt).is_ok_and(|ts| {
            let info = tz.to_offset_info(ts);
            info.offset() == *o && info.abbreviation() == abbr
        })
    })
}

/// Why a timestamp was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeError {
    /// Not `YYYY-MM-DD HH:MM:SS[.fff] [ZONE]`.
    Malformed,
    /// The zone could not be resolved.
    Zone(ZoneError),
}

/// Parses `YYYY-MM-DD HH:MM:SS[.fff] [ZONE]` (what `%m`/`%t`, csvlog and jsonlog write; also the `T`
/// separator) into microseconds since the epoch.
pub fn parse_timestamp(s: &[u8], zones: &Zones) -> Result<i64, TimeError> {
    if s.len() < 19 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b' ' | b'T') || s[13] != b':' || s[16] != b':' {
        return Err(TimeError::Malformed);
    }
    let num = |r: std::ops::Range<usize>| digits(&s[r]).ok_or(TimeError::Malformed);
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(TimeError::Malformed);
    }
    let mut i = 19;
    let mut micros: i64 = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() || frac.len() > 9 {
            return Err(TimeError::Malformed);
        }
        let frac = &frac[..frac.len().min(6)];
        micros = i64::from(digits(frac).ok_or(TimeError::Malformed)?) * 10i64.pow(6 - frac.len() as u32);
    }
    let tz = if s.get(i) == Some(&b' ') { &s[i + 1..] } else { &s[i..] };
    if tz.contains(&b' ') {
        return Err(TimeError::Malformed);
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let local = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(se);
    let offset = match tz {
        b"" | b"UTC" | b"GMT" | b"Z" => 0,
        _ => {
            let dt = DateTime::new(y as i16, mo as i8, d as i8, h as i8, mi as i8, se.min(59) as i8, 0)
                .map_err(|_| TimeError::Malformed)?;
            zones.offset(tz, dt).map_err(TimeError::Zone)?
        }
    };
    Ok((local - i64::from(offset)) * 1_000_000 + micros)
}

/// Parses `%n`: seconds since the epoch with milliseconds (`1700000000.123`).
pub fn parse_epoch(s: &[u8]) -> Option<i64> {
    let dot = memchr::memchr(b'.', s).unwrap_or(s.len());
    let secs = i64::from(digits(&s[..dot])?);
    let frac = if dot < s.len() { &s[dot + 1..] } else { &[][..] };
    let micros = if frac.is_empty() {
        0
    } else if frac.len() <= 6 {
        i64::from(digits(frac)?) * 10i64.pow(6 - frac.len() as u32)
    } else {
        return None;
    };
    Some(secs * 1_000_000 + micros)
}

/// Microseconds since the epoch of a [`jiff::Timestamp`].
pub fn micros(ts: jiff::Timestamp) -> i64 {
    ts.as_microsecond()
}

/// Formats microseconds since the epoch as RFC 3339 UTC with milliseconds (`2024-01-02T03:04:05.678Z`).
pub fn format_rfc3339(us: i64) -> String {
    let mut out = String::with_capacity(24);
    write_rfc3339(us, &mut out);
    out
}

/// Appends the RFC 3339 form of `us` to `out`.
pub fn write_rfc3339(us: i64, out: &mut String) {
    use std::fmt::Write;
    let secs = us.div_euclid(1_000_000);
    let ms = us.rem_euclid(1_000_000) / 1000;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let _ = write!(out, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, sod / 60 % 60, sod % 60);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Result<i64, TimeError> {
        parse_timestamp(s.as_bytes(), &Zones::new())
    }

    #[test]
    fn timestamps() {
        let t = ts("2024-02-29 13:14:15.123 UTC").unwrap();
        assert_eq!(format_rfc3339(t), "2024-02-29T13:14:15.123Z");
        assert_eq!(ts("2024-02-29 15:14:15.123 +02").unwrap(), t);
        assert_eq!(ts("2024-02-29 18:44:15.123 +05:30").unwrap(), t);
        assert_eq!(ts("2024-02-29 08:44:15.123 -0430").unwrap(), t);
        assert_eq!(ts("2024-02-29T13:14:15.123456Z").unwrap(), t + 456);
        assert_eq!(ts("2024-02-29 13:14:15 UTC").unwrap(), t - 123_000);
        assert_eq!(parse_epoch(b"1709212455.123").unwrap(), t);
        assert_eq!(ts("2024-13-29 13:14:15 UTC"), Err(TimeError::Malformed));
        assert_eq!(ts("not a time at all!!"), Err(TimeError::Malformed));
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn abbreviations_through_the_time_zone_database() {
        let utc = ts("2024-07-01 12:00:00 UTC").unwrap();
        // Unambiguous abbreviations, summer and winter.
        assert_eq!(ts("2024-07-01 14:00:00 CEST").unwrap(), utc);
        assert_eq!(ts("2024-07-01 08:00:00 EDT").unwrap(), utc);
        assert_eq!(ts("2024-07-01 21:00:00 JST").unwrap(), utc);
        assert_eq!(ts("2024-01-01 13:00:00 CET").unwrap(), ts("2024-01-01 12:00:00 UTC").unwrap());
        // Ambiguous ones are refused and say why; unknown ones too.
        let zones = Zones::new();
        for abbr in ["IST", "CST"] {
            match parse_timestamp(format!("2024-07-01 12:00:00 {abbr}").as_bytes(), &zones) {
                Err(TimeError::Zone(ZoneError::Ambiguous { candidates, .. })) => {
                    assert!(candidates.len() >= 2, "{abbr}: {candidates:?}")
                }
                other => panic!("{abbr}: {other:?}"),
            }
        }
        let e = parse_timestamp(b"2024-07-01 12:00:00 XYZT", &zones).unwrap_err();
        assert_eq!(e, TimeError::Zone(ZoneError::Unknown("XYZT".into())));
        let _ = parse_timestamp(b"2024-07-01 12:00:01 IST", &zones);
        let refused = zones.refused();
        assert_eq!(refused.len(), 3);
        assert!(refused
            .iter()
            .any(|(e, n)| matches!(e, ZoneError::Ambiguous { abbr, .. } if abbr == "IST") && *n == 2));
        assert!(refused[0].0.to_string().contains("--timezone"), "{}", refused[0].0);
        // With the server's zone, IST is Irish Standard Time in Dublin's summer and India's in Kolkata.
        let dublin = Zones::with_zone("Europe/Dublin").unwrap();
        assert_eq!(parse_timestamp(b"2024-07-01 13:00:00 IST", &dublin).unwrap(), utc);
        let kolkata = Zones::with_zone("Asia/Kolkata").unwrap();
        assert_eq!(parse_timestamp(b"2024-07-01 17:30:00 IST", &kolkata).unwrap(), utc);
        let chicago = Zones::with_zone("America/Chicago").unwrap();
        assert_eq!(
            parse_timestamp(b"2024-01-01 06:00:00 CST", &chicago).unwrap(),
            ts("2024-01-01 12:00:00 UTC").unwrap()
        );
    }
}
