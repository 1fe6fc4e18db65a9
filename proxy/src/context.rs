//! Where a statement's trace context comes from, and fresh root contexts.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use sqlcommenter::{TraceContext, TraceParent};

/// A small per-connection pseudo-random generator (SplitMix64) for trace and span ids. Ids need to be
/// unique, not secret; it is seeded from the process's random hasher keys and the connection's counter.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    state: u64,
}

impl IdGenerator {
    /// A generator seeded from std's per-process random keys and `salt`.
    pub fn new(salt: u64) -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(salt);
        IdGenerator { state: h.finish() }
    }

    /// A generator with a fixed seed (tests).
    pub fn seeded(seed: u64) -> Self {
        IdGenerator { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A new root context (random trace id and parent id), sampled with probability `ratio`.
    pub fn root(&mut self, ratio: f64) -> TraceContext {
        loop {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&self.next_u64().to_be_bytes());
            trace_id[8..].copy_from_slice(&self.next_u64().to_be_bytes());
            let parent = self.next_u64().to_be_bytes();
            let sampled = ratio >= 1.0 || (ratio > 0.0 && self.next_f64() < ratio);
            // All-zero ids are invalid; draw again in that (astronomically rare) case.
            if let Ok(tp) = TraceParent::new(trace_id, parent, u8::from(sampled)) {
                return TraceContext::new(tp);
            }
        }
    }
}

/// Reads a traceparent from a startup `options` value: `-c NAME=VALUE` or `--NAME=VALUE` for `guc`.
pub fn guc_from_options(options: &str, guc: &str) -> Option<TraceParent> {
    let mut words = options.split_ascii_whitespace();
    let mut found = None;
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next()
        } else if let Some(s) = w.strip_prefix("-c") {
            Some(s)
        } else {
            w.strip_prefix("--")
        };
        if let Some((name, value)) = setting.and_then(|s| s.split_once('=')) {
            if name.eq_ignore_ascii_case(guc) {
                found = TraceParent::parse(value).ok();
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn session_context_from_startup_options() {
        let g = "sqlcommenter.traceparent";
        assert_eq!(guc_from_options(&format!("-c {g}={TP}"), g), Some(TP.parse().unwrap()));
        assert_eq!(guc_from_options(&format!("--{g}={TP} -c work_mem=1MB"), g), Some(TP.parse().unwrap()));
        assert_eq!(guc_from_options("-c work_mem=1MB", g), None);
    }

    #[test]
    fn roots_are_valid_and_sampled_by_ratio() {
        let mut g = IdGenerator::seeded(7);
        let a = g.root(1.0);
        let b = g.root(1.0);
        assert_ne!(a.traceparent.trace_id(), b.traceparent.trace_id());
        assert!(a.is_sampled());
        assert!(!g.root(0.0).is_sampled());
        let sampled = (0..2000).filter(|_| g.root(0.25).is_sampled()).count();
        assert!((350..650).contains(&sampled), "{sampled}");
    }
}
