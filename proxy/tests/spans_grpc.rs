//! Proxy spans over OTLP/gRPC: an in-test tonic `TraceService` receives what the proxy exports; the server
//! log says which span the statement ran under. (Its own test binary: the `OTEL_*` variables are per process.)

mod common;
mod otlp;

use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use otlp::attr_str;
use sqlcommenter::{carrier, TraceParent};
use sqlcommenter_proxy::telemetry::{OtlpProtocol, TelemetryConfig};

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// A tonic OTLP/gRPC receiver on 127.0.0.1:0 (its own runtime thread).
fn receiver() -> &'static (String, Received) {
    static R: OnceLock<(String, Received)> = OnceLock::new();
    R.get_or_init(|| {
        let got: Received = Arc::default();
        let sink = got.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(Collector(sink)))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                    .await
                    .unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        (format!("http://{addr}"), got)
    })
}

/// Spans whose `db.query.text` contains `marker`, waiting up to 5 s for at least `min`.
fn spans_with(marker: &str, min: usize) -> Vec<Span> {
    otlp::spans_with(&receiver().1, marker, min)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_reaches_a_tonic_receiver_and_the_server_log_points_at_the_span() {
    let (endpoint, _) = receiver();
    std::env::set_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint);
    // Chosen by the standard variable (the config leaves the protocol unset).
    std::env::set_var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc");
    std::env::set_var("OTEL_SERVICE_NAME", "proxy-under-test-grpc");
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let proxy = proxy_with(|c| c.telemetry = Some(TelemetryConfig::default())).await;
    let tp: TraceParent = "00-5cf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
    let c = connect(proxy.local_addr().port(), &carrier::encode_application_name("grpcapp", &tp)).await;
    c.simple_query("SELECT g FROM generate_series(1, 2) g /*marker_span_grpc*/").await.unwrap();
    drop(c);
    proxy.shutdown().await;

    let spans = spans_with("marker_span_grpc", 1);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let s = &spans[0];
    assert_eq!(s.trace_id, tp.trace_id().to_vec());
    assert_eq!(s.parent_span_id, tp.parent_id().to_vec(), "child of the client's span");
    assert_eq!(s.name, "SELECT postgres");
    assert_eq!(attr_str(s, "db.system.name"), "postgresql");
    assert_eq!(attr_str(s, "db.operation.name"), "SELECT");
    let service = receiver().1.lock().unwrap().iter().flat_map(|r| r.resource_spans.clone()).find_map(|rs| {
        rs.resource?.attributes.into_iter().find(|kv| kv.key == "service.name").and_then(|kv| kv.value?.value)
    });
    assert_eq!(service, Some(Value::StringValue("proxy-under-test-grpc".into())));

    let lines = log_lines("marker_span_grpc", 1);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let at = lines[0].find("traceparent='").unwrap() + "traceparent='".len();
    let logged = TraceParent::parse(&lines[0][at..at + 55]).unwrap();
    assert_eq!(logged.trace_id(), tp.trace_id());
    assert_eq!(logged.parent_id().to_vec(), s.span_id, "server log points at the proxy span");
}

#[test]
fn protocol_names() {
    assert_eq!("grpc".parse::<OtlpProtocol>().unwrap(), OtlpProtocol::Grpc);
    assert_eq!(" http/protobuf".parse::<OtlpProtocol>().unwrap(), OtlpProtocol::HttpProtobuf);
    assert!("http/json".parse::<OtlpProtocol>().is_err());
}
