//! The proxy's frame decoder and body readers: never panic on peer input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqlcommenter_proxy::{frame, startup};

fuzz_target!(|data: &[u8]| {
    let _ = frame::header(data);
    let _ = frame::cstr(data);
    let _ = frame::parse_body(data);
    let _ = frame::bind_statement(data);
    let _ = frame::text_body(data);
    for i in 0..3 {
        let _ = frame::data_row_column(data, i);
    }
    let _ = frame::parameter_status(data);
    let _ = frame::sqlstate(data);
    let _ = startup::classify(data);
});
