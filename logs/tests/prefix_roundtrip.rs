//! Every `log_line_prefix` PostgreSQL can express reads back: random prefixes built from all escapes
//! (padded or not, with `%q`) and separators, lines written with them the way the server fills them in,
//! and every field read back from its own place.
//!
//! Free-text values (`%a %u %d %h %i %b`) are drawn without the separator characters: a user named
//! `a@b` under `%u@%d`, or host `[local]` under `%h] `, is ambiguous in the log itself (the unit tests
//! cover how such lines are resolved). 512 cases per run; it passed 30,000 (`PROPTEST_CASES=30000`).

use proptest::prelude::*;
use sqlcommenter_logs::time::parse_timestamp;
use sqlcommenter_logs::{LogRecord, Prefix, Severity, Zones};

#[derive(Debug, Clone)]
struct Field {
    escape: char,
    /// `%-10a` / `%10p`
    pad: Option<i32>,
    value: String,
}

const SEPARATORS: &[&str] = &[" ", "-", ":", "|", "@", ",", "=", " [", "] ", "]: [", "/", "#", "> ", " - "];
// Abbreviations some zone uses all year (a `CEST` in January is refused, rightly).
const ZONES: &[&str] = &["UTC", "GMT", "JST", "EST", "+03", "-0530", "+0545"];

fn free_text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z][a-z0-9_]{0,11}"]
}

fn time(millis: bool) -> impl Strategy<Value = String> {
    (2000u32..2040, 1u32..=12, 1u32..=28, 0u32..24, 0u32..60, 0u32..60, 0u32..1000, prop::sample::select(ZONES))
        .prop_map(move |(y, mo, d, h, mi, s, ms, z)| {
            if millis {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{ms:03} {z}")
            } else {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} {z}")
            }
        })
}

fn field() -> impl Strategy<Value = Field> {
    let value = prop_oneof![
        free_text().prop_map(|v| ('a', v)),
        free_text().prop_map(|v| ('u', v)),
        free_text().prop_map(|v| ('d', v)),
        (1u32..4_000_000).prop_map(|v| ('p', v.to_string())),
        prop_oneof![Just(String::new()), (1u32..99999).prop_map(|v| v.to_string())].prop_map(|v| ('P', v)),
        prop_oneof![Just(String::new()), (0u8..=255, 0u8..=255).prop_map(|(a, b)| format!("10.{a}.{b}.7"))]
            .prop_map(|v| ('h', v)),
        (0u8..=255, 1u16..65535).prop_map(|(a, p)| ('r', format!("192.168.{a}.1({p})"))),
        (0x1000_0000u32..0x7fff_ffff, 1u32..0x3fffff).prop_map(|(a, b)| ('c', format!("{a:x}.{b:x}"))),
        (1u64..1_000_000).prop_map(|v| ('l', v.to_string())),
        time(true).prop_map(|v| ('m', v)),
        time(false).prop_map(|v| ('t', v)),
        time(false).prop_map(|v| ('s', v)),
        (1_000_000_000u64..2_000_000_000, 0u32..1000).prop_map(|(s, ms)| ('n', format!("{s}.{ms:03}"))),
        prop_oneof![Just(String::new()), "[A-Z]{1,8}"].prop_map(|v| ('i', v)),
        "[0-9A-Z]{5}".prop_map(|v| ('e', v)),
        prop_oneof![Just(String::new()), (1u32..64, 1u32..100000).prop_map(|(a, b)| format!("{a}/{b}"))]
            .prop_map(|v| ('v', v)),
        (0u64..10_000_000).prop_map(|v| ('x', v.to_string())),
        any::<i64>().prop_map(|v| ('Q', v.to_string())),
        prop_oneof![Just("client_backend".to_owned()), Just("checkpointer".to_owned()), Just(String::new())]
            .prop_map(|v| ('b', v)),
    ];
    let pad = prop_oneof![6 => Just(None), 1 => (-12i32..=12).prop_filter("width", |w| *w != 0).prop_map(Some)];
    (value, pad).prop_map(|((escape, value), pad)| {
        // Numbers padded either way; free text left-aligned only: right-aligned free text after a space
        // separator and an empty field is ambiguous in the log itself (`%8h %a ` writes ` [local]  ` for
        // host `[local]` and no application, and for no host and application `[local]`).
        let pad = match escape {
            'p' | 'l' => pad,
            'a' | 'u' | 'd' | 'h' | 'i' | 'b' => pad.map(|w: i32| -w.abs()),
            _ => None,
        };
        // An empty value padded to spaces next to space separators is ambiguous too.
        let pad = pad.filter(|_| !value.is_empty());
        Field { escape, pad, value }
    })
}

/// (prefix items: `Ok(field)` or `Err(separator)`, position of `%q` among the items).
fn prefix_spec() -> impl Strategy<Value = (Vec<Field>, Vec<&'static str>, Option<usize>, &'static str)> {
    (1usize..7).prop_flat_map(|n| {
        (
            prop::collection::vec(field(), n),
            prop::collection::vec(prop::sample::select(SEPARATORS), n),
            prop::option::of(0..n),
            prop::sample::select(&["", "[", "<"][..]),
        )
    })
}

fn escape_text(f: &Field) -> String {
    match f.pad {
        Some(w) => format!("%{w}{}", f.escape),
        None => format!("%{}", f.escape),
    }
}

fn rendered(f: &Field) -> String {
    match f.pad {
        Some(w) if w < 0 => format!("{:<width$}", f.value, width = w.unsigned_abs() as usize),
        Some(w) => format!("{:>width$}", f.value, width = w as usize),
        None => f.value.clone(),
    }
}

fn check(rec: &LogRecord, fields: &[Field]) -> Result<(), TestCaseError> {
    let last = |c: char| fields.iter().rev().find(|f| f.escape == c).map(|f| f.value.as_str());
    if let Some(v) = last('a') {
        prop_assert_eq!(rec.application_name.as_str(), v);
    }
    if let Some(v) = last('u') {
        prop_assert_eq!(rec.user.as_str(), v);
    }
    if let Some(v) = last('d') {
        prop_assert_eq!(rec.database.as_str(), v);
    }
    if let Some(v) = last('p') {
        prop_assert_eq!(rec.pid, v.parse().ok());
    }
    if let Some(v) = last('c') {
        prop_assert_eq!(rec.session_id.as_str(), v);
    }
    if let Some(v) = last('l') {
        prop_assert_eq!(rec.line_num, v.parse().ok());
    }
    if let Some(v) = last('e') {
        prop_assert_eq!(rec.sql_state.as_str(), v);
    }
    if let Some(v) = last('Q') {
        prop_assert_eq!(rec.query_id, v.parse().ok());
    }
    // the last of %h / %r sets the host
    if let Some(f) = fields.iter().rev().find(|f| matches!(f.escape, 'h' | 'r')) {
        let host = if f.escape == 'r' { f.value.split('(').next().unwrap_or("") } else { f.value.as_str() };
        prop_assert_eq!(rec.remote_host.as_str(), host);
    }
    if let Some(f) = fields.iter().rev().find(|f| matches!(f.escape, 'm' | 't' | 'n')) {
        let want = if f.escape == 'n' {
            sqlcommenter_logs::time::parse_epoch(f.value.as_bytes())
        } else {
            parse_timestamp(f.value.as_bytes(), &Zones::new()).ok()
        };
        prop_assert!(want.is_some());
        prop_assert_eq!(rec.time_us, want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_prefixes_read_back((mut fields, seps, q, lead) in prefix_spec()) {
        // One record has one value per escape, however often the prefix repeats it (`%h` and `%r` share
        // the host); a repeated escape is padded like its first occurrence's value allows.
        let host = fields.iter().find(|f| f.escape == 'h').map(|f| f.value.clone());
        for i in 0..fields.len() {
            if let Some(first) = fields[..i].iter().find(|f| f.escape == fields[i].escape) {
                fields[i].value = first.value.clone();
                if fields[i].value.is_empty() {
                    fields[i].pad = None;
                }
            }
            if let (Some(h), 'r') = (&host, fields[i].escape) {
                fields[i].value = if h.is_empty() { h.clone() } else { format!("{h}(5432)") };
            }
        }
        let mut prefix = lead.to_owned();
        let mut line = lead.to_owned();
        let mut session_line = String::new();
        for (i, (f, sep)) in fields.iter().zip(&seps).enumerate() {
            if q == Some(i) {
                prefix.push_str("%q");
                session_line = line.clone();
            }
            prefix.push_str(&escape_text(f));
            prefix.push_str(sep);
            line.push_str(&rendered(f));
            line.push_str(sep);
        }
        let message = "duration: 1.500 ms  statement: select 1";
        let p = Prefix::new(&prefix).unwrap();
        let zones = Zones::new();
        let mut rec = LogRecord::default();
        let full = format!("{line}LOG:  {message}");
        let (sev, at) = p.parse_line(full.as_bytes(), &mut rec, &zones)
            .ok_or_else(|| TestCaseError::fail(format!("{prefix:?} does not read {full:?}")))?;
        prop_assert_eq!(sev, Severity::Log);
        prop_assert_eq!(&full[at..], message);
        check(&rec, &fields)?;
        // A background process stops at %q.
        if let Some(qi) = q {
            let bg = format!("{session_line}LOG:  checkpoint starting: time");
            let mut rec = LogRecord::default();
            let (_, at) = p.parse_line(bg.as_bytes(), &mut rec, &zones)
                .ok_or_else(|| TestCaseError::fail(format!("{prefix:?} does not read {bg:?}")))?;
            prop_assert_eq!(&bg[at..], "checkpoint starting: time");
            check(&rec, &fields[..qi])?;
        }
    }
}
