//! Metric export over OTLP/gRPC against a fault-injecting OTLP receiver of our own (in the spirit
//! of the OpenTelemetry Collector testbed's mock backend): it answers UNAVAILABLE until told to
//! accept. Checks the gRPC transport, header propagation, that an outage loses no counts
//! (cumulative totals), and that the outage and the recovery are each logged once.

mod common;

use common::{batch, record, value};
use inferscope::{
    config::OtlpProtocol,
    export::metrics::MetricTransport,
    self_metrics::SelfCounter,
    server::{Sidecar, Sinks},
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_server::{MetricsService, MetricsServiceServer},
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

/// Answers UNAVAILABLE while `failing`, otherwise keeps the request.
#[derive(Default)]
struct ReceiverState {
    failing: AtomicBool,
    attempts: AtomicUsize,
    received: Mutex<Vec<(ExportMetricsServiceRequest, Option<String>)>>,
    attempted: Notify,
}

#[derive(Clone, Default)]
struct FaultyReceiver(Arc<ReceiverState>);

impl std::ops::Deref for FaultyReceiver {
    type Target = ReceiverState;
    fn deref(&self) -> &ReceiverState {
        &self.0
    }
}

#[tonic::async_trait]
impl MetricsService for FaultyReceiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.attempts.fetch_add(1, SeqCst);
        self.attempted.notify_waiters();
        if self.failing.load(SeqCst) {
            return Err(Status::unavailable("injected outage"));
        }
        let tenant = request
            .metadata()
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.received
            .lock()
            .unwrap()
            .push((request.into_inner(), tenant));
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl ReceiverState {
    /// Waits until at least `n` export attempts have arrived.
    async fn wait_for_attempts(&self, n: usize) {
        loop {
            let notified = self.attempted.notified();
            if self.attempts.load(SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }
}

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread, so the thread-local log subscriber sees the exporter task's events.
#[tokio::test(flavor = "current_thread")]
async fn grpc_export_survives_an_outage_without_losing_counts_and_logs_it_once() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );

    let receiver = FaultyReceiver::default();
    receiver.failing.store(true, SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let mut config = common::config();
    config.export.endpoint = endpoint;
    config.export.protocol = OtlpProtocol::Grpc;
    config.export.headers = vec![("x-tenant".into(), "acme".into())];
    config.export.metric_interval = Duration::from_millis(50);
    let sinks = Sinks {
        metrics: Some(MetricTransport::from_config(&config.export).unwrap()),
        ..Sinks::none()
    };
    let sidecar = Sidecar::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        config,
        sinks,
    )
    .await
    .unwrap();
    let mut client = inferscope::pb::ingest_service_client::IngestServiceClient::connect(format!(
        "http://{}",
        sidecar.local_addr
    ))
    .await
    .unwrap();

    let records = |n: usize| (0..n).map(|i| record(&i.to_string(), 0.1)).collect();
    client
        .submit_records(batch(1, "m", records(10)))
        .await
        .unwrap();
    // Three failed exports while the backend is down.
    receiver.wait_for_attempts(3).await;
    assert!(sidecar.snapshot().await.self_metrics[SelfCounter::ExportFailures] >= 3);

    receiver.failing.store(false, SeqCst);
    client
        .submit_records(batch(2, "m", records(5)))
        .await
        .unwrap();
    let seen = receiver.attempts.load(SeqCst);
    receiver.wait_for_attempts(seen + 2).await;
    sidecar.stop().await.unwrap();

    let received = receiver.received.lock().unwrap();
    let (last, tenant) = received.last().expect("exports after the outage");
    assert_eq!(tenant.as_deref(), Some("acme"));
    // Cumulative: everything counted during the outage arrives with the first good export.
    assert_eq!(
        value(last, "inferscope.records.received", &[("model.name", "m")]),
        15
    );
    assert!(value(last, "inferscope.export.failures", &[]) >= 3);

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert_eq!(logs.matches("metrics export failed").count(), 1, "{logs}");
    assert_eq!(
        logs.matches("metrics export recovered").count(),
        1,
        "{logs}"
    );
}

/// Runs a sidecar exporting metrics over OTLP/gRPC as `args` configure it, sends one record and
/// stops it (the final export is the one that counts).
async fn export_one_record(args: inferscope::config::ConfigArgs) {
    let resolved = inferscope::config::Config::resolve(args).unwrap();
    let mut config = common::config();
    config.export = inferscope::config::ExportConfig {
        metric_interval: Duration::from_secs(3600),
        ..resolved.export
    };
    let sinks = Sinks {
        metrics: Some(MetricTransport::from_config(&config.export).unwrap()),
        ..Sinks::none()
    };
    let sidecar = Sidecar::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        config,
        sinks,
    )
    .await
    .unwrap();
    let mut client = inferscope::pb::ingest_service_client::IngestServiceClient::connect(format!(
        "http://{}",
        sidecar.local_addr
    ))
    .await
    .unwrap();
    client
        .submit_records(batch(1, "m", vec![record("r", 0.1)]))
        .await
        .unwrap();
    sidecar.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_over_tls_verifies_the_backend_with_the_configured_ca() {
    let dir = common::tls::temp_dir("export-tls");
    let ca = common::tls::TestCa::new(&dir, "backend");
    let server = ca.server();
    let receiver = FaultyReceiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&server.cert_pem, &server.key_pem),
            ))
            .unwrap()
            .add_service(MetricsServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let args = |certificate: Option<std::path::PathBuf>| inferscope::config::ConfigArgs {
        otlp_endpoint: Some(endpoint.clone()),
        otlp_protocol: Some(OtlpProtocol::Grpc),
        otlp_certificate: certificate,
        ..Default::default()
    };

    // Without the CA the backend's certificate is not trusted: nothing arrives.
    export_one_record(args(None)).await;
    assert_eq!(receiver.attempts.load(SeqCst), 0);

    export_one_record(args(Some(ca.cert.clone()))).await;
    let received = receiver.received.lock().unwrap();
    let (last, _) = received.last().expect("an export over TLS");
    assert_eq!(
        value(last, "inferscope.records.received", &[("model.name", "m")]),
        1
    );
    let _ = std::fs::remove_dir_all(dir);
}
