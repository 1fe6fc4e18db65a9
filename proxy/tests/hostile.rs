//! Random and truncated input never panics the sans-I/O layers, and relayed bytes stay intact.

use std::sync::Arc;

use bytes::BytesMut;
use proptest::prelude::*;
use sqlcommenter_proxy::session::{Session, StartupInfo};
use sqlcommenter_proxy::InjectConfig;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn ready_session() -> Session {
    let mut s = Session::new(Arc::new(InjectConfig::default()), &StartupInfo::default(), 0);
    let mut out = BytesMut::new();
    s.server_bytes(&msg(b'Z', b"I"), &mut out, std::time::Instant::now()).unwrap();
    s
}

/// Feeds `input` in chunks of `chunk` bytes the way the relay does (keeping unconsumed bytes).
fn feed(s: &mut Session, input: &[u8], chunk: usize, client: bool) -> Result<Vec<u8>, ()> {
    let mut pending = Vec::new();
    let mut relayed = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        pending.extend_from_slice(piece);
        let mut out = BytesMut::new();
        let used = if client {
            s.client_bytes(&pending, &mut out, std::time::Instant::now())
        } else {
            s.server_bytes(&pending, &mut out, std::time::Instant::now())
        };
        let used = used.map_err(|_| ())?;
        pending.drain(..used);
        relayed.extend_from_slice(&out);
    }
    Ok(relayed)
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), chunk in 1usize..300) {
        let mut s = ready_session();
        let _ = feed(&mut s, &bytes, chunk, true);
        let mut s = ready_session();
        let _ = feed(&mut s, &bytes, chunk, false);
    }

    #[test]
    fn well_framed_random_messages_never_panic(
        msgs in proptest::collection::vec((prop::sample::select(b"QPBEDCSHFdcfXpZSCEN123tTnIsGHWAKv".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..64)), 0..40),
        chunk in 1usize..200,
    ) {
        let bytes: Vec<u8> = msgs.iter().flat_map(|(t, b)| msg(*t, b)).collect();
        let mut s = ready_session();
        let _ = feed(&mut s, &bytes, chunk, true);
        let _ = feed(&mut s, &bytes, chunk, false);
    }

    #[test]
    fn untouched_server_traffic_is_relayed_exactly(
        rows in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..50),
        chunk in 1usize..500,
    ) {
        // DataRows, CommandComplete and ReadyForQuery for a client query: relayed byte for byte.
        let mut s = ready_session();
        feed(&mut s, &msg(b'Q', b"select x\0"), 64, true).unwrap();
        let mut bytes: Vec<u8> = rows.iter().flat_map(|r| msg(b'D', r)).collect();
        bytes.extend(msg(b'C', b"SELECT 1\0"));
        bytes.extend(msg(b'Z', b"I"));
        prop_assert_eq!(feed(&mut s, &bytes, chunk, false).unwrap(), bytes);
    }
}
