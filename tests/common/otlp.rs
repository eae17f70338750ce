//! OTLP receivers of our own for export tests: a gRPC metrics receiver that can fail, freeze or
//! take requests on command (in the spirit of the OpenTelemetry Collector testbed's mock
//! backend), and an OTLP/HTTP receiver over TLS.

use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_server::MetricsService, ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
};
use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
    Arc, Mutex,
};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

/// Answers UNAVAILABLE while `failing`, otherwise keeps the request.
#[derive(Default)]
pub struct ReceiverState {
    pub failing: AtomicBool,
    /// Takes requests and never answers them.
    pub frozen: AtomicBool,
    pub attempts: AtomicUsize,
    pub received: Mutex<Vec<(ExportMetricsServiceRequest, Option<String>)>>,
    pub attempted: Notify,
}

#[derive(Clone, Default)]
pub struct FaultyReceiver(pub Arc<ReceiverState>);

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
        if self.frozen.load(SeqCst) {
            std::future::pending::<()>().await;
        }
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
    pub async fn wait_for_attempts(&self, n: usize) {
        loop {
            let notified = self.attempted.notified();
            if self.attempts.load(SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }
}

/// Requests (path, body bytes) an HTTPS OTLP receiver took.
pub type Posted = Arc<Mutex<Vec<(String, usize)>>>;

/// A minimal OTLP/HTTP receiver over TLS (HTTP/1.1, keep-alive): answers every request 200 with
/// an empty protobuf body, which is every OTLP export response with nothing rejected. Written by
/// hand: a test needs only the request line, Content-Length and the body.
pub async fn https_receiver(server: &super::tls::Leaf) -> (String, Posted) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio_rustls::rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    };
    let certs = CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let posted = Posted::default();
    let kept = posted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let posted = kept.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return; // a client that does not trust us
                };
                let mut stream = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        stream.read_line(&mut header).await.unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    posted.lock().unwrap().push((path, length));
                    stream
                        .get_mut()
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                        )
                        .await
                        .unwrap();
                }
            });
        }
    });
    (endpoint, posted)
}

/// A sidecar exporting its metrics (only) as `config.export` says, and a client of it.
pub async fn start_exporting_metrics(
    config: inferscope::config::Config,
) -> (inferscope::server::Sidecar, super::TestClient) {
    let sinks = inferscope::server::Sinks {
        metrics: Some(
            inferscope::export::metrics::MetricTransport::from_config(&config.export).unwrap(),
        ),
        ..inferscope::server::Sinks::none()
    };
    start_with(config, sinks).await
}

/// A sidecar with these sinks, and a client of it.
pub async fn start_with(
    config: inferscope::config::Config,
    sinks: inferscope::server::Sinks,
) -> (inferscope::server::Sidecar, super::TestClient) {
    let sidecar = inferscope::server::Sidecar::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        config,
        sinks,
    )
    .await
    .unwrap();
    let client = super::TestClient::connect(format!("http://{}", sidecar.local_addr))
        .await
        .unwrap();
    (sidecar, client)
}
