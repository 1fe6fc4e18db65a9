//! OpenTelemetry tracing for the demo's applications: an in-memory exporter (so the demo knows every span
//! it produced) and, with `OTEL_EXPORTER_OTLP_ENDPOINT`, OTLP/HTTP as well.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::DemoError;

/// Service name of the demo's spans (unless `OTEL_SERVICE_NAME` is set).
pub(crate) const SERVICE_NAME: &str = "sqlcommenter-demo";

/// Whether OTLP export is configured.
pub(crate) fn otlp_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// The tracer provider and its in-memory exporter.
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
    memory: InMemorySpanExporter,
}

impl Telemetry {
    /// Builds the provider. Call outside async code (the OTLP exporter's HTTP client is blocking).
    pub fn init() -> Result<Self, DemoError> {
        let memory = InMemorySpanExporter::default();
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        let mut builder =
            SdkTracerProvider::builder().with_simple_exporter(memory.clone()).with_resource(resource.build());
        if otlp_configured() {
            let otlp = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|e| DemoError::Telemetry(format!("OTLP exporter: {e}")))?;
            builder = builder.with_batch_exporter(otlp);
        }
        Ok(Telemetry { provider: builder.build(), memory })
    }

    /// Makes this thread's `tracing` spans OpenTelemetry spans (only the demo's own spans: drivers' and
    /// the proxy's internal spans and events stay out).
    pub fn set_default(&self) -> tracing::subscriber::DefaultGuard {
        let layer = tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("sqlcommenter-demo"))
            .with_filter(Targets::new().with_target("sqlcommenter_demo", tracing::Level::TRACE));
        tracing::subscriber::set_default(tracing_subscriber::registry().with(layer))
    }

    /// Flushes and shuts down the provider; returns every span the in-memory exporter received.
    pub fn finish(self) -> Result<Vec<SpanData>, DemoError> {
        self.provider.force_flush().map_err(|e| DemoError::Telemetry(format!("flush: {e}")))?;
        let spans = self.memory.get_finished_spans().map_err(|e| DemoError::Telemetry(e.to_string()))?;
        self.provider.shutdown().map_err(|e| DemoError::Telemetry(format!("shutdown: {e}")))?;
        Ok(spans)
    }
}
