//! The trace context carried in a comment, and where it comes from (`opentelemetry`, `tracing`).

use crate::traceparent::TraceParent;
use crate::tracestate::TraceState;

/// A valid W3C trace context: a traceparent and an optional (valid, non-empty) tracestate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The `traceparent`.
    pub traceparent: TraceParent,
    /// The `tracestate`, if any.
    pub tracestate: Option<TraceState>,
}

impl TraceContext {
    /// A context with only a traceparent.
    pub fn new(traceparent: TraceParent) -> Self {
        TraceContext { traceparent, tracestate: None }
    }

    /// Parses header values. An invalid traceparent is an error; an invalid tracestate is an error too
    /// (callers that want W3C's "drop only the tracestate" behaviour use [`TraceContext::from_headers_lenient_state`]).
    pub fn from_headers(traceparent: &str, tracestate: Option<&str>) -> Result<Self, crate::Error> {
        let traceparent = TraceParent::parse(traceparent)?;
        let tracestate = match tracestate {
            Some(ts) => Some(TraceState::parse(ts)?).filter(|ts| !ts.is_empty()),
            None => None,
        };
        Ok(TraceContext { traceparent, tracestate })
    }

    /// Parses header values the way a W3C participant must: an invalid traceparent is an error, an invalid
    /// tracestate is dropped while the traceparent is kept.
    pub fn from_headers_lenient_state(traceparent: &str, tracestate: Option<&str>) -> Result<Self, crate::Error> {
        let traceparent = TraceParent::parse(traceparent)?;
        let tracestate = tracestate.and_then(|ts| TraceState::parse(ts).ok()).filter(|ts| !ts.is_empty());
        Ok(TraceContext { traceparent, tracestate })
    }

    /// Whether the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.traceparent.is_sampled()
    }
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    impl TraceContext {
        /// The context of the span in an `opentelemetry::Context`; `None` when it holds no valid span
        /// context. An invalid tracestate is dropped (the traceparent is kept).
        pub fn from_otel(cx: &opentelemetry::Context) -> Option<Self> {
            let span = cx.span();
            let sc = span.span_context();
            if !sc.is_valid() {
                return None;
            }
            let traceparent =
                TraceParent::new(sc.trace_id().to_bytes(), sc.span_id().to_bytes(), sc.trace_flags().to_u8()).ok()?;
            let header = sc.trace_state().header();
            let tracestate =
                if header.is_empty() { None } else { TraceState::parse(&header).ok().filter(|ts| !ts.is_empty()) };
            Some(TraceContext { traceparent, tracestate })
        }

        /// The context of the current `opentelemetry::Context`.
        pub fn current_otel() -> Option<Self> {
            Self::from_otel(&opentelemetry::Context::current())
        }
    }
}

#[cfg(feature = "tracing")]
mod tracing_span {
    use super::*;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    impl TraceContext {
        /// The context of a `tracing` span (through tracing-opentelemetry); `None` when the span is
        /// disabled or has no OpenTelemetry context.
        pub fn from_span(span: &tracing::Span) -> Option<Self> {
            if span.is_disabled() {
                return None;
            }
            Self::from_otel(&span.context())
        }

        /// The context of the current `tracing` span.
        pub fn current_span() -> Option<Self> {
            Self::from_span(&tracing::Span::current())
        }
    }
}

/// Where a caller's trace context comes from, resolved at each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextSource {
    /// No automatic source: only explicitly passed contexts are used.
    #[default]
    None,
    /// The current `opentelemetry::Context` (feature `opentelemetry`).
    #[cfg(feature = "opentelemetry")]
    OpenTelemetry,
    /// The current `tracing` span through tracing-opentelemetry (feature `tracing`), falling back to the
    /// current `opentelemetry::Context`.
    #[cfg(feature = "tracing")]
    Tracing,
}

impl ContextSource {
    /// The context this source provides right now.
    pub fn current(self) -> Option<TraceContext> {
        match self {
            ContextSource::None => None,
            #[cfg(feature = "opentelemetry")]
            ContextSource::OpenTelemetry => TraceContext::current_otel(),
            #[cfg(feature = "tracing")]
            ContextSource::Tracing => TraceContext::current_span().or_else(TraceContext::current_otel),
        }
    }
}
