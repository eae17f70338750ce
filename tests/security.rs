//! Ingest security against a real sidecar on 127.0.0.1:0: TLS (a client that trusts the CA
//! connects, a plaintext client does not), mutual TLS (no client certificate or one from another
//! CA is refused, one signed by the client CA accepted), and the bearer token (missing or wrong:
//! UNAUTHENTICATED; right: accepted; health open without it). Certificates are made by rcgen.

mod common;

use common::{batch, record, tls::TestCa};
use inferscope::{
    config::{Config, ConfigArgs},
    pb::ingest_service_client::IngestServiceClient,
};
use std::{net::SocketAddr, path::Path};
use tonic::{
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Code,
};

/// The test configuration of `common::config` with the security settings of `args`, resolved as
/// at start-up (so the files are read and checked the same way).
fn config_with(args: ConfigArgs) -> Config {
    let resolved = Config::resolve(args).unwrap();
    Config {
        tls: resolved.tls,
        auth_token: resolved.auth_token,
        ..common::config()
    }
}

/// A client that verifies the sidecar with `ca`, presenting `identity` if given.
async fn tls_client(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<&common::tls::Leaf>,
) -> Result<IngestServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(IngestServiceClient::new(channel))
}

/// Whether one record batch is accepted over `client` (connection errors count as refused).
async fn submits(
    client: Result<IngestServiceClient<Channel>, tonic::transport::Error>,
) -> Result<u32, String> {
    let mut client = client.map_err(|e| format!("connect: {e:?}"))?;
    let ack = client
        .submit_records(batch(1, "m", vec![record("r", 0.1)]))
        .await
        .map_err(|s| format!("{s:?}"))?;
    Ok(ack.into_inner().accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_accepts_a_client_that_trusts_the_ca_and_refuses_plaintext() {
    let dir = common::tls::temp_dir("tls");
    let ca = TestCa::new(&dir, "server");
    let server = ca.server();
    let s = common::start(config_with(ConfigArgs {
        tls_cert: Some(server.cert.clone()),
        tls_key: Some(server.key.clone()),
        ..Default::default()
    }))
    .await;
    let addr = s.sidecar.local_addr;

    assert_eq!(submits(tls_client(addr, &ca.cert, None).await).await, Ok(1));

    let plain = IngestServiceClient::connect(format!("http://{addr}")).await;
    assert!(submits(plain).await.is_err(), "plaintext must be refused");

    // A client that trusts another CA does not accept the sidecar's certificate.
    let other = TestCa::new(&dir, "other");
    assert!(submits(tls_client(addr, &other.cert, None).await)
        .await
        .is_err());

    let (metrics, _) = s.stop().await;
    assert_eq!(
        common::value(
            &metrics,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")]
        ),
        1
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let dir = common::tls::temp_dir("mtls");
    let server_ca = TestCa::new(&dir, "server");
    let server = server_ca.server();
    let client_ca = TestCa::new(&dir, "clients");
    let client = client_ca.leaf("model-server", &["model-server"]);
    let stranger = TestCa::new(&dir, "stranger").leaf("stranger", &["stranger"]);
    let s = common::start(config_with(ConfigArgs {
        tls_cert: Some(server.cert.clone()),
        tls_key: Some(server.key.clone()),
        tls_client_ca: Some(client_ca.cert.clone()),
        ..Default::default()
    }))
    .await;
    let addr = s.sidecar.local_addr;

    let without = submits(tls_client(addr, &server_ca.cert, None).await).await;
    assert!(without.is_err(), "no client certificate: {without:?}");
    let foreign = submits(tls_client(addr, &server_ca.cert, Some(&stranger)).await).await;
    assert!(foreign.is_err(), "certificate of another CA: {foreign:?}");
    let signed = submits(tls_client(addr, &server_ca.cert, Some(&client)).await).await;
    assert_eq!(signed, Ok(1));

    let (metrics, _) = s.stop().await;
    assert_eq!(
        common::value(
            &metrics,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")]
        ),
        1
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_token_is_required_on_ingest_but_not_on_health() {
    let dir = common::tls::temp_dir("token");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-0123456789\n").unwrap();
    let s = common::start(config_with(ConfigArgs {
        auth_token_file: Some(token_file),
        ..Default::default()
    }))
    .await;
    let mut client = s.client().await;

    let with = |token: Option<&str>| {
        let mut request = tonic::Request::new(batch(1, "m", vec![record("r", 0.1)]));
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", token.parse().unwrap());
        }
        request
    };
    for refused in [None, Some("Bearer wrong"), Some("Basic s3cret-0123456789")] {
        let status = client.submit_records(with(refused)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{refused:?}");
        assert!(!status.message().contains("s3cret"), "{status:?}");
    }
    // Streams are behind the same check.
    let status = client
        .stream_records(tokio_stream::iter(vec![batch(2, "m", vec![])]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let ack = client
        .submit_records(with(Some("Bearer s3cret-0123456789")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 1);

    // Health stays open: probes carry no token.
    let channel = Endpoint::from_shared(format!("http://{}", s.sidecar.local_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "inferscope.v1.IngestService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let (metrics, _) = s.stop().await;
    assert_eq!(
        common::value(
            &metrics,
            "inferscope.records.received",
            &[("inferscope.model.name", "m")]
        ),
        1
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn security_files_that_cannot_be_read_fail_at_start_naming_the_setting() {
    let dir = common::tls::temp_dir("badfiles");
    let missing = dir.join("missing.pem");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let ca = TestCa::new(&dir, "server");
    let server = ca.server();
    let cases = [
        (
            ConfigArgs {
                tls_cert: Some(missing.clone()),
                tls_key: Some(server.key.clone()),
                ..Default::default()
            },
            "--tls-cert",
        ),
        (
            ConfigArgs {
                tls_cert: Some(server.cert.clone()),
                tls_key: Some(not_pem.clone()),
                ..Default::default()
            },
            "--tls-key",
        ),
        (
            ConfigArgs {
                tls_cert: Some(server.cert.clone()),
                ..Default::default()
            },
            "--tls-key",
        ),
        (
            ConfigArgs {
                tls_client_ca: Some(ca.cert.clone()),
                ..Default::default()
            },
            "--tls-client-ca",
        ),
        (
            ConfigArgs {
                auth_token_file: Some(missing.clone()),
                ..Default::default()
            },
            "--auth-token-file",
        ),
        (
            ConfigArgs {
                otlp_certificate: Some(missing.clone()),
                ..Default::default()
            },
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ),
    ];
    for (args, setting) in cases {
        let message = Config::resolve(args).unwrap_err().to_string();
        assert!(message.contains(setting), "{message} should name {setting}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
