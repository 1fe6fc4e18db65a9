//! Comment, traceparent, tracestate and carrier parsers: never panic; what parses re-serializes to
//! something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqlcommenter::{carrier, parse, Dialect, TraceParent, TraceState};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = parse::parse_tags(s, Dialect::Postgres);
    let _ = parse::parse_body(s);
    if let Ok(tp) = TraceParent::parse(s) {
        assert_eq!(TraceParent::parse(&tp.to_string()), Ok(tp));
    }
    if let Ok(ts) = TraceState::parse(s) {
        assert_eq!(TraceState::parse(&ts.to_string()), Ok(ts));
    }
    if let Some((name, tp)) = carrier::decode_application_name(s) {
        assert_eq!(carrier::decode_application_name(&carrier::encode_application_name(name, &tp)).map(|x| x.1), Some(tp));
    }
    let _ = carrier::decode_pg_tracing(s);
});
