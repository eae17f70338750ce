//! Metric and span export against OTLP receivers of our own (tests/common/otlp.rs): TLS over
//! gRPC and HTTP verified with the configured CA, and exact totals through a backend that is
//! absent at start, frozen, and failing twice, with no ack ever waiting for the backend.

mod common;

use common::{
    batch,
    otlp::{https_receiver, FaultyReceiver},
    record, value,
};
use inferscope::{config::OtlpProtocol, self_metrics::SelfCounter, server::Sinks};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
use std::{sync::atomic::Ordering::SeqCst, time::Duration};

/// Runs a sidecar exporting metrics over OTLP/gRPC as `args` configure it, sends one record and
/// stops it (the final export is the one that counts).
async fn export_one_record(args: inferscope::config::ConfigArgs) {
    let resolved = inferscope::config::Config::resolve(args).unwrap();
    let mut config = common::config();
    config.export = inferscope::config::ExportConfig {
        metric_interval: Duration::from_secs(3600),
        ..resolved.export
    };
    let (sidecar, mut client) = common::otlp::start_exporting_metrics(config).await;
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
        value(
            last,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")]
        ),
        1
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The last `inferscope.records.received` total the receiver got for model `m`, if any.
fn last_total(receiver: &FaultyReceiver) -> Option<i64> {
    let received = receiver.received.lock().unwrap();
    received.last().map(|(r, _)| {
        value(
            r,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")],
        )
    })
}

async fn wait_for_total(receiver: &FaultyReceiver, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while last_total(receiver) != Some(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend has {:?}, not {want}",
            last_total(receiver)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_totals_through_an_absent_a_frozen_and_a_twice_failing_backend() {
    // The backend's port, with nothing listening on it yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = common::config();
    config.export.endpoint = format!("http://127.0.0.1:{port}");
    config.export.protocol = OtlpProtocol::Grpc;
    config.export.metric_interval = Duration::from_millis(50);
    config.export.timeout = Duration::from_millis(200);
    let (sidecar, mut client) = common::otlp::start_exporting_metrics(config).await;
    let mut acked = 0;
    let mut sequence = 0;
    // Sends `n` records; the ack must come at once whatever the backend does.
    let mut send = async |n: usize| {
        sequence += 1;
        let records = (0..n)
            .map(|i| record(&format!("{sequence}-{i}"), 0.1))
            .collect();
        let ack = tokio::time::timeout(
            Duration::from_secs(2),
            client.submit_records(batch(sequence, "m", records)),
        )
        .await
        .expect("no ack stall while the backend is away")
        .unwrap()
        .into_inner();
        acked += i64::from(ack.accepted);
    };
    let failures = async || sidecar.snapshot().await.self_metrics[SelfCounter::ExportFailures];

    // Absent at start: nothing listens.
    send(10).await;
    while failures().await < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let receiver = FaultyReceiver::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    wait_for_total(&receiver, 10).await;

    // Frozen: requests are taken and never answered; each export times out.
    receiver.frozen.store(true, SeqCst);
    let before = failures().await;
    send(5).await;
    while failures().await < before + 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.frozen.store(false, SeqCst);
    wait_for_total(&receiver, 15).await;

    // Failing twice, with records sent during each outage.
    for n in [7, 3] {
        receiver.failing.store(true, SeqCst);
        let before = failures().await;
        send(n).await;
        while failures().await < before + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        receiver.failing.store(false, SeqCst);
    }
    sidecar.stop().await.unwrap();
    assert_eq!(acked, 25);
    assert_eq!(
        last_total(&receiver),
        Some(acked),
        "the final export has every acked record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_export_of_metrics_and_spans_over_tls_verifies_the_backend_with_the_configured_ca() {
    let dir = common::tls::temp_dir("export-https");
    let ca = common::tls::TestCa::new(&dir, "backend");
    let (endpoint, posted) = https_receiver(&ca.server()).await;
    for trusted in [false, true] {
        let args = inferscope::config::ConfigArgs {
            otlp_endpoint: Some(endpoint.clone()),
            otlp_protocol: Some(OtlpProtocol::HttpProtobuf),
            otlp_certificate: trusted.then(|| ca.cert.clone()),
            ..Default::default()
        };
        let mut config = inferscope::config::Config::resolve(args).unwrap();
        config.export.metric_interval = Duration::from_secs(3600);
        config.sampling.ratio = 1.0;
        let sinks = Sinks::from_config(&config).unwrap();
        let (sidecar, mut client) = common::otlp::start_with(config, sinks).await;
        client
            .submit_records(batch(1, "m", vec![record("r", 0.1)]))
            .await
            .unwrap();
        sidecar.stop().await.unwrap();
        let paths: Vec<String> = posted
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect();
        if trusted {
            assert!(paths.contains(&"/v1/metrics".to_owned()), "{paths:?}");
            assert!(paths.contains(&"/v1/traces".to_owned()), "{paths:?}");
            assert!(posted.lock().unwrap().iter().all(|(_, bytes)| *bytes > 0));
        } else {
            // The platform's roots do not know the test CA: nothing is sent.
            assert!(paths.is_empty(), "{paths:?}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
