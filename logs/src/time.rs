//! Timestamps as PostgreSQL writes them (`%m`, `%t`, `%n`, csvlog/jsonlog `log_time`), as microseconds since
//! the Unix epoch.

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

/// Offset in seconds east of UTC of a zone abbreviation as `%Z` prints it: `UTC`, `GMT`, `Z`, numeric
/// (`+03`, `-0530`, `+05:30`) and a few common abbreviations. Unknown abbreviations count as UTC.
pub fn zone_offset(tz: &[u8]) -> i64 {
    match tz {
        b"" | b"UTC" | b"GMT" | b"Z" | b"UCT" | b"WET" => return 0,
        b"CET" | b"BST" | b"WEST" | b"IST" => return 3600,
        b"CEST" | b"EET" | b"SAST" => return 7200,
        b"EEST" | b"MSK" => return 3 * 3600,
        b"EST" => return -5 * 3600,
        b"EDT" | b"CST" => return if tz == b"EDT" { -4 * 3600 } else { -6 * 3600 },
        b"CDT" => return -5 * 3600,
        b"MST" => return -7 * 3600,
        b"MDT" => return -6 * 3600,
        b"PST" => return -8 * 3600,
        b"PDT" => return -7 * 3600,
        b"JST" | b"KST" => return 9 * 3600,
        b"AEST" => return 10 * 3600,
        b"AEDT" => return 11 * 3600,
        _ => {}
    }
    let (sign, rest) = match tz.first() {
        Some(b'+') => (1, &tz[1..]),
        Some(b'-') => (-1, &tz[1..]),
        _ => return 0,
    };
    let (h, m) = match rest.len() {
        2 => (digits(rest), Some(0)),
        4 => (digits(&rest[..2]), digits(&rest[2..])),
        5 if rest[2] == b':' => (digits(&rest[..2]), digits(&rest[3..])),
        _ => (None, None),
    };
    match (h, m) {
        (Some(h), Some(m)) => sign * (i64::from(h) * 3600 + i64::from(m) * 60),
        _ => 0,
    }
}

/// Parses `YYYY-MM-DD HH:MM:SS[.fff] [ZONE]` (what `%m`/`%t`, csvlog and jsonlog write) into microseconds
/// since the epoch.
pub fn parse_timestamp(s: &[u8]) -> Option<i64> {
    if s.len() < 19 || s[4] != b'-' || s[7] != b'-' || s[10] != b' ' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let y = digits(&s[0..4])?;
    let mo = digits(&s[5..7])?;
    let d = digits(&s[8..10])?;
    let h = digits(&s[11..13])?;
    let mi = digits(&s[14..16])?;
    let se = digits(&s[17..19])?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
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
        if frac.is_empty() || frac.len() > 6 {
            return None;
        }
        micros = i64::from(digits(frac)?) * 10i64.pow(6 - frac.len() as u32);
    }
    let tz = if s.get(i) == Some(&b' ') { &s[i + 1..] } else { &s[i..] };
    if tz.contains(&b' ') {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(se) - zone_offset(tz);
    Some(secs * 1_000_000 + micros)
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

    #[test]
    fn timestamps() {
        let t = parse_timestamp(b"2024-02-29 13:14:15.123 UTC").unwrap();
        assert_eq!(format_rfc3339(t), "2024-02-29T13:14:15.123Z");
        let t2 = parse_timestamp(b"2024-02-29 15:14:15.123 +02").unwrap();
        assert_eq!(t, t2);
        let t3 = parse_timestamp(b"2024-02-29 18:44:15.123 +05:30").unwrap();
        assert_eq!(t, t3);
        assert_eq!(parse_timestamp(b"2024-02-29 13:14:15 UTC").unwrap(), t - 123_000);
        assert_eq!(parse_epoch(b"1709212455.123").unwrap(), t);
        assert!(parse_timestamp(b"2024-13-29 13:14:15 UTC").is_none());
        assert!(parse_timestamp(b"not a time at all!!").is_none());
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
