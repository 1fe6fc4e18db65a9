//! Reading the spans an in-test OTLP receiver (HTTP or gRPC) collected.
#![allow(dead_code)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

/// An attribute's value.
pub fn attr(span: &Span, key: &str) -> Option<Value> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()?.value)
}

/// A string attribute (panics with the span when absent or of another type).
pub fn attr_str(span: &Span, key: &str) -> String {
    match attr(span, key) {
        Some(Value::StringValue(s)) => s,
        other => panic!("{key}: {other:?} in {span:#?}"),
    }
}

/// An integer attribute (panics with the span when absent or of another type).
pub fn attr_int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::IntValue(i)) => i,
        other => panic!("{key}: {other:?} in {span:#?}"),
    }
}

/// Received spans whose `db.query.text` contains `marker`, waiting up to 5 s for at least `min`.
pub fn spans_with(received: &Mutex<Vec<ExportTraceServiceRequest>>, marker: &str, min: usize) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let spans: Vec<Span> = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter())
            .filter(|s| matches!(attr(s, "db.query.text"), Some(Value::StringValue(t)) if t.contains(marker)))
            .cloned()
            .collect();
        if spans.len() >= min || Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
