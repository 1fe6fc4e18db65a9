//! Which trace contexts a wrapper carries: the sampled flag, and a ratio decided by the trace id (as
//! OpenTelemetry's `TraceIdRatioBased` sampler does, on the low 64 bits) so that every query of a trace,
//! in every service, gets the same decision.

use crate::traceparent::TraceParent;

/// A sample ratio outside `0.0..=1.0` (or not a number).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("sample ratio {0} is outside 0.0..=1.0")]
pub struct RatioError(pub f64);

/// The carry decision for a trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    sampled_only: bool,
    /// `None`: every trace; else trace ids whose low 64 bits are below it.
    threshold: Option<u64>,
}

impl Default for Sampling {
    /// Sampled contexts only, all of them.
    fn default() -> Self {
        Sampling { sampled_only: true, threshold: None }
    }
}

impl Sampling {
    /// Carry only sampled contexts (if `sampled_only`), and of those the share `ratio` of traces.
    pub fn new(sampled_only: bool, ratio: f64) -> Result<Self, RatioError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(RatioError(ratio));
        }
        let threshold = if ratio >= 1.0 { None } else { Some((ratio * 18_446_744_073_709_551_616.0) as u64) };
        Ok(Sampling { sampled_only, threshold })
    }

    /// Whether a statement under `tp` carries it.
    pub fn carries(&self, tp: &TraceParent) -> bool {
        if self.sampled_only && !tp.is_sampled() {
            return false;
        }
        match self.threshold {
            None => true,
            Some(t) => {
                let id = tp.trace_id();
                let mut low = [0u8; 8];
                low.copy_from_slice(&id[8..]);
                u64::from_be_bytes(low) < t
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(low: u64, flags: u8) -> TraceParent {
        let mut id = [1u8; 16];
        id[8..].copy_from_slice(&low.to_be_bytes());
        TraceParent::new(id, [2; 8], flags).unwrap()
    }

    #[test]
    fn ratio_is_decided_by_the_trace_id() {
        let half = Sampling::new(false, 0.5).unwrap();
        assert!(half.carries(&tp(0, 1)));
        assert!(half.carries(&tp(u64::MAX / 2 - 1, 1)));
        assert!(!half.carries(&tp(u64::MAX / 2 + 2, 1)));
        assert!(Sampling::new(false, 1.0).unwrap().carries(&tp(u64::MAX, 0)));
        assert!(!Sampling::new(false, 0.0).unwrap().carries(&tp(0, 1)));
        assert!(!Sampling::default().carries(&tp(0, 0)));
        assert_eq!(Sampling::new(true, 1.5), Err(RatioError(1.5)));
        assert!(Sampling::new(true, f64::NAN).is_err());
    }
}
