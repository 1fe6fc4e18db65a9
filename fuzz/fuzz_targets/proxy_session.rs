//! The sans-I/O session (protocol state machine): arbitrary client and server byte streams, fed in
//! arbitrary chunks the way the relay feeds them, never panic; spans on or off (the first byte's top
//! bit), the events drained as the relay drains them.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sqlcommenter_proxy::session::{Session, StartupInfo};
use sqlcommenter_proxy::InjectConfig;

fn feed(s: &mut Session, input: &[u8], chunk: usize, client: bool, t0: Instant) {
    let mut pending = Vec::new();
    for (i, piece) in input.chunks(chunk.max(1)).enumerate() {
        pending.extend_from_slice(piece);
        let mut out = BytesMut::new();
        let now = t0 + Duration::from_micros(i as u64);
        let used =
            if client { s.client_bytes(&pending, &mut out, now) } else { s.server_bytes(&pending, &mut out, now) };
        s.events().for_each(drop);
        match used {
            Ok(n) => {
                pending.drain(..n.min(pending.len()));
            }
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let chunk = usize::from(first % 64) + 1;
    let split = rest.len() / 2;
    // Roots and the application tag on, so every injection path (comments, the inline carrier) runs.
    let cfg = InjectConfig { root_contexts: true, application_tag: true, ..InjectConfig::default() };
    let mut s = Session::new(Arc::new(cfg), &StartupInfo::default(), 0);
    if first & 0x80 != 0 {
        s = s.with_spans("db");
    }
    let t0 = Instant::now();
    feed(&mut s, &rest[..split], chunk, false, t0);
    feed(&mut s, &rest[split..], chunk, true, t0);
    feed(&mut s, rest, chunk, false, t0);
});
