//! Metric export over OTLP/gRPC through an outage: counts are cumulative so nothing is lost,
//! and the outage and the recovery are each logged once. Alone in its test binary: its log
//! capture is a thread-local subscriber, and other tests hitting the same log callsites from
//! other threads would leave them cached as uninteresting.

mod common;

use common::{batch, otlp::FaultyReceiver, record, value};
use inferscope::{config::OtlpProtocol, self_metrics::SelfCounter};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
use std::{
    io::Write,
    sync::{atomic::Ordering::SeqCst, Arc, Mutex},
    time::Duration,
};

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
    let (sidecar, mut client) = common::otlp::start_exporting_metrics(config).await;

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
        value(
            last,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")]
        ),
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
