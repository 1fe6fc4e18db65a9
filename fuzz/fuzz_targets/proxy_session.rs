//! The sans-I/O session (protocol state machine): arbitrary client and server byte streams, fed in
//! arbitrary chunks the way the relay feeds them, never panic.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sqlcommenter_proxy::session::{Session, StartupInfo};
use sqlcommenter_proxy::InjectConfig;

fn feed(s: &mut Session, input: &[u8], chunk: usize, client: bool) {
    let mut pending = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        pending.extend_from_slice(piece);
        let mut out = BytesMut::new();
        let used = if client { s.client_bytes(&pending, &mut out, std::time::Instant::now()) } else { s.server_bytes(&pending, &mut out, std::time::Instant::now()) };
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
    feed(&mut s, &rest[..split], chunk, false);
    feed(&mut s, &rest[split..], chunk, true);
    feed(&mut s, rest, chunk, false);
});
