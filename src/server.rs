//! Assembles a running sidecar: shards, ingest service, gRPC server (with health and reflection),
//! metric exporter and span builder; and takes it down in order on shutdown.
//!
//! Shutdown order, all inside `shutdown_budget`: stop accepting and tell open streams to end
//! (they answer UNAVAILABLE after their last ack) → wait for the server → let the shards drain
//! their queues → final metric export from the shards' final state → flush spans.

use crate::{
    config::Config,
    events::ConnectionsCut,
    export::{
        metrics::{MetricExporter, MetricTransport, SidecarSnapshot},
        resource, traces, ExportError,
    },
    ingest::Ingest,
    pb::{self, ingest_service_server::IngestServiceServer},
    pipeline::{ModelBudget, Pipeline, ShardSettings},
    security::BearerAuth,
    self_metrics::SelfStats,
    state::Registries,
};
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
use std::{future::Future, net::SocketAddr, sync::Arc};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

/// Where telemetry goes. `None` turns a signal off.
pub struct Sinks {
    pub metrics: Option<MetricTransport>,
    pub traces: Option<SdkTracerProvider>,
    pub resource: Resource,
}

impl Sinks {
    /// OTLP sinks as the configuration says.
    pub fn from_config(config: &Config) -> Result<Self, ExportError> {
        let resource = resource::detect();
        let metrics = if config.export.metrics {
            Some(MetricTransport::from_config(&config.export)?)
        } else {
            None
        };
        let traces = if config.export.traces {
            let exporter = traces::otlp_exporter(&config.export)?;
            Some(traces::tracer_provider(exporter, resource.clone()))
        } else {
            None
        };
        Ok(Self {
            metrics,
            traces,
            resource,
        })
    }

    /// No export at all.
    pub fn none() -> Self {
        Self {
            metrics: None,
            traces: None,
            resource: resource::detect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(String),
    #[error("cannot set up TLS from --tls-cert / --tls-key / --tls-client-ca: {0}")]
    Tls(#[source] tonic::transport::Error),
    #[error("cannot use --state-dir {0}: {1}")]
    State(std::path::PathBuf, #[source] std::io::Error),
    #[error("cannot use --label-store {0}: {1}")]
    LabelStore(String, #[source] redis::RedisError),
    #[error("cannot listen on --cloudevents-listen {0}: {1}")]
    CloudEvents(SocketAddr, #[source] std::io::Error),
    #[error(transparent)]
    Capture(#[from] crate::capture::otlp::StartError),
    #[error(transparent)]
    Tap(#[from] crate::tap::TapError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A running sidecar.
pub struct Sidecar {
    pub local_addr: SocketAddr,
    /// Where the OTLP traces receivers listen, when on (`--otlp-receive-grpc`, `-http`).
    pub otlp_grpc_addr: Option<SocketAddr>,
    pub otlp_http_addr: Option<SocketAddr>,
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
    lifecycle: JoinHandle<Result<(), ServeError>>,
    /// Where the Open Inference Protocol tap listens, when on (`--tap-listen`).
    pub tap_addr: Option<SocketAddr>,
    /// Where the tap's REST/JSON side listens, when on (`--tap-http-listen`).
    pub tap_http_addr: Option<SocketAddr>,
    /// Where the KServe payload-logger endpoint listens, when on (`--cloudevents-listen`).
    pub cloudevents_addr: Option<SocketAddr>,
}

/// HTTP/2 flow-control windows: the defaults (64 KiB) make a 300 KiB batch wait for several
/// window updates; measured in BENCHMARKS.md.
const STREAM_WINDOW_BYTES: u32 = 1 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 4 << 20;

/// The gRPC server's transport settings, each with why it is set.
fn server_builder(config: &Config) -> Result<Server, ServeError> {
    let builder = Server::builder()
        // Records are small and latency-sensitive; don't batch them in Nagle's buffer.
        .tcp_nodelay(true)
        // Detect a vanished model server (pod restarts) and free its stream state.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        // Let a client send a whole batch (hundreds of KiB) without waiting for window updates;
        // the connection window bounds what one model server can have buffered here.
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
        // Bound the streams one connection may open; each one may hold `max_inflight` batches.
        .max_concurrent_streams(Some(config.max_inflight_batches.max(64) as u32))
        // Ask every connection to reconnect after an age, and close it a grace later: an idle
        // connection that answers pings, or a silent one that never finished its handshake,
        // does not stay forever (the connection count is bounded in `crate::listener`).
        .max_connection_age(config.max_connection_age)
        .max_connection_age_grace(config.connection_age_grace);
    // TLS wraps every connection, so health and reflection are behind it too.
    match &config.tls {
        Some(tls) => builder
            .tls_config(tls.server_config())
            .map_err(ServeError::Tls),
        None => Ok(builder),
    }
}

/// Warns when ingest is reachable beyond this host in plaintext: records (and a bearer token)
/// would cross the network readable by anyone on the path.
fn warn_if_exposed(addr: SocketAddr, config: &Config) {
    if config.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            listen = %addr,
            token = config.auth_token.is_some(),
            "listening beyond loopback without TLS: records (and any bearer token) cross the \
             network in plaintext; set --tls-cert and --tls-key, or listen on 127.0.0.1"
        );
    }
}

/// What each shard worker is given, from the configuration: the process-wide bounds are split
/// across the shards here.
pub fn shard_settings(config: &Config, registries: &Registries) -> ShardSettings {
    ShardSettings {
        max_models: ModelBudget::new(config.max_models),
        model_idle_expiry: config.model_idle_expiry,
        max_error_types: config.max_error_types,
        sampling: config.sampling,
        quality: crate::quality::QualitySettings {
            max_pending: config.quality.max_pending.div_ceil(config.shards),
            max_early_labels: config.quality.max_early_labels.div_ceil(config.shards),
            shared_store: registries.label_store.is_some(),
            ..config.quality.clone()
        },
        declarations: Some(registries.declarations.clone()),
        drift: config.drift.clone(),
        profiles: registries.profiles.clone(),
        state: registries.state.clone(),
        label_store: registries.label_store.clone(),
        anomaly: config.anomaly.clone(),
        series_interval: config.export.metric_interval,
    }
}

impl Sidecar {
    /// Starts serving on `listener`.
    pub async fn start(
        listener: TcpListener,
        config: Config,
        sinks: Sinks,
    ) -> Result<Self, ServeError> {
        let local_addr = listener.local_addr().map_err(ServeError::Listener)?;
        warn_if_exposed(local_addr, &config);
        let mut builder = server_builder(&config)?;
        let stats = Arc::new(SelfStats::default());
        let shutdown = CancellationToken::new();

        let (span_tx, span_builder) = match sinks.traces.clone() {
            Some(provider) => {
                let (tx, rx) = mpsc::channel(config.span_queue);
                let task = tokio::spawn(traces::run_span_builder(provider, rx));
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        let mut registries = Registries::load(&config, &stats, &shutdown)
            .map_err(|e| ServeError::State(config.state_dir.clone().unwrap_or_default(), e))?;
        if let Some(url) = &config.label_store {
            let store = crate::label_store::LabelStore::start(
                url,
                config.label_store_password.as_ref(),
                config.quality.label_ttl,
                config.label_store_timeout,
                stats.clone(),
            )
            .map_err(|e| ServeError::LabelStore(crate::label_store::redact(url), e))?;
            tracing::info!(redis = %store.redacted, "delayed labels are joined through the shared label store");
            registries.label_store = Some(store);
        }
        let label_store = registries.label_store.clone();
        if let Some(store) = &label_store {
            tokio::spawn(crate::fleet::share_references(
                store.connection_watch(),
                registries.profiles.clone(),
                store.redacted.clone(),
                config.label_store_timeout,
                stats.clone(),
                shutdown.clone(),
            ));
        }
        let pipeline = Arc::new(Pipeline::start(
            config.shards,
            config.shard_queue_batches,
            shard_settings(&config, &registries),
            span_tx,
            stats.clone(),
        ));

        let ingest = Ingest::new(pipeline.clone(), &registries, &config, shutdown.clone());
        // KServe's payload logger in, through the same ingest (off unless configured).
        let kserve = crate::capture::kserve::start(
            &config,
            ingest.clone(),
            registries.declarations.clone(),
            stats.clone(),
            shutdown.clone(),
        )
        .await
        .map_err(|e| ServeError::CloudEvents(config.kserve.listen.unwrap_or(local_addr), e))?;
        let cloudevents_addr = kserve.as_ref().map(|(addr, _)| *addr);
        // Labels from outside the pod (`inferscope labels`), read from the store's Redis stream.
        let label_stream = match &config.label_store {
            Some(url) => Some(
                crate::label_stream::LabelStreamConsumer::start(
                    url,
                    config.label_store_password.as_ref(),
                    ingest.clone(),
                    config.limits.max_batch_records,
                    stats.clone(),
                    shutdown.clone(),
                )
                .map_err(|e| ServeError::LabelStore(crate::label_store::redact(url), e))?,
            ),
            None => None,
        };
        // No-code capture: OTLP traces in, through the same ingest (off unless configured).
        let mut otlp =
            crate::capture::otlp::start(&config, ingest.clone(), stats.clone(), shutdown.clone())
                .await?;
        let (otlp_grpc_addr, otlp_http_addr) = otlp
            .as_ref()
            .map_or((None, None), |r| (r.grpc_addr, r.http_addr));
        // The Open Inference Protocol tap in front of a model server (off unless configured).
        let tap =
            crate::tap::start(&config.tap, ingest.clone(), stats.clone(), shutdown.clone()).await?;
        let tap_addr = tap.as_ref().and_then(|t| t.addr);
        let tap_http_addr = tap.as_ref().and_then(|t| t.http_addr);
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<IngestServiceServer<Ingest>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        let ingest_service = IngestServiceServer::new(ingest)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes);
        // The token guards ingest only: health and reflection stay open for probes.
        let ingest_service = tonic::service::interceptor::InterceptedService::new(
            ingest_service,
            BearerAuth::new(config.auth_token.clone()),
        );

        let server_stop = shutdown.clone();
        let connections = crate::listener::ConnectionSlots::new(config.max_connections);
        let server = tokio::spawn(
            builder
                .add_service(health_service)
                .add_service(reflection)
                .add_service(ingest_service)
                .serve_with_incoming_shutdown(
                    crate::listener::incoming(listener, connections.clone(), stats.clone()),
                    async move { server_stop.cancelled().await },
                ),
        );

        let exporter_stop = CancellationToken::new();
        let exporter = sinks.metrics.map(|transport| {
            let resource = resource::to_proto(&sinks.resource);
            let fleet = label_store.as_ref().map(|store| {
                crate::fleet::Fleet::start(
                    store.connection_watch(),
                    crate::fleet::FleetSettings {
                        instance: resource::instance_id(&resource),
                        interval: config.export.metric_interval,
                        exact_cap: config.quality.exact_auc_pairs,
                        max_classes: config.quality.max_classes,
                        timeout: config.label_store_timeout,
                        redacted: store.redacted.clone(),
                    },
                    stats.clone(),
                )
            });
            let exporter =
                MetricExporter::new(transport, resource, config.export.timeout, stats.clone())
                    .with_fleet(fleet);
            tokio::spawn(exporter.run_periodic(
                pipeline.clone(),
                config.export.metric_interval,
                exporter_stop.clone(),
            ))
        });

        let lifecycle = tokio::spawn({
            let pipeline = pipeline.clone();
            let shutdown = shutdown.clone();
            let budget = config.shutdown_budget;
            let providers = sinks.traces;
            async move {
                shutdown.cancelled().await;
                health
                    .set_not_serving::<IngestServiceServer<Ingest>>()
                    .await;
                let drain = async {
                    // Open streams get half the budget to end (they are told to); a stream whose
                    // client stopped reading acks would hold the rest, so the server is then cut
                    // and the drain and final export keep the other half.
                    let mut server = server;
                    let served = match tokio::time::timeout(budget / 2, &mut server).await {
                        Ok(served) => served.unwrap_or(Ok(())),
                        Err(_) => {
                            let open = connections.open();
                            server.abort();
                            pipeline.stats.emit(&ConnectionsCut {
                                connections: open as u64,
                                after: budget / 2,
                            });
                            Ok(())
                        }
                    };
                    // The CloudEvents endpoint's waiting halves reach the shards before they
                    // drain.
                    if let Some((_, task)) = kserve {
                        let _ = task.await;
                    }
                    // The tap's last calls reach the shards before they drain.
                    if let Some(tap) = tap {
                        let _ = tap.server.await;
                        let _ = tap.recorder.await;
                    }
                    // The label stream's batch in hand reaches the shards before they drain.
                    if let Some(task) = label_stream {
                        let _ = task.await;
                    }
                    // The OTLP receivers' last requests reach the shards before they drain.
                    if let Some(otlp) = &mut otlp {
                        otlp.stopped(budget / 4).await;
                    }
                    let finals = pipeline.drain().await;
                    // The shards' last predictions, written before the process ends.
                    if let Some(store) = &label_store {
                        store.flush(budget / 4).await;
                    }
                    exporter_stop.cancel();
                    if let Some(exporter) = exporter {
                        if let Ok(mut exporter) = exporter.await {
                            let snapshot = SidecarSnapshot::assemble(finals, &pipeline);
                            if exporter.export(&snapshot).await.is_ok() {
                                tracing::info!("final metrics export done");
                            }
                        }
                    }
                    // The received spans still queued, forwarded before the process ends.
                    if let Some(otlp) = &mut otlp {
                        otlp.forwarded(budget / 4).await;
                    }
                    if let Some(task) = span_builder {
                        let _ = task.await;
                    }
                    if let Some(provider) = providers {
                        // The SDK's shutdown blocks until the batch processor (a task on this
                        // runtime) has flushed: run it off the runtime's threads.
                        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
                    }
                    served.map_err(ServeError::from)
                };
                match tokio::time::timeout(budget, drain).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(
                            ?budget,
                            "shutdown budget exhausted; exiting without finishing the drain"
                        );
                        Ok(())
                    }
                }
            }
        });

        Ok(Self {
            local_addr,
            otlp_grpc_addr,
            otlp_http_addr,
            pipeline,
            shutdown,
            lifecycle,
            tap_addr,
            tap_http_addr,
            cloudevents_addr,
        })
    }

    /// The current state, merged across shards. Only looks.
    pub async fn snapshot(&self) -> SidecarSnapshot {
        SidecarSnapshot::collect(&self.pipeline).await
    }

    /// Closes an interval of every model's change detectors now, as the shards' timers do every
    /// metric export interval (tests drive intervals with it).
    #[doc(hidden)]
    pub async fn close_interval(&self) {
        self.pipeline.close_interval().await
    }

    /// Pauses the shards until the guards are dropped (tests of the full-queue behaviour).
    #[doc(hidden)]
    pub async fn hold_shards(&self) -> Vec<tokio::sync::oneshot::Sender<()>> {
        self.pipeline.hold().await
    }

    /// Batches queued across all shards now.
    #[doc(hidden)]
    pub fn snapshot_queue_depth(&self) -> usize {
        self.pipeline.queue_depths().iter().sum()
    }

    /// A token that starts the shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shuts down (if not already started) and waits until everything is drained and exported.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        self.lifecycle.await.unwrap_or(Ok(()))
    }
}

/// Serves until `shutdown` completes, then shuts down in order.
pub async fn run(
    listener: TcpListener,
    config: Config,
    sinks: Sinks,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let sidecar = Sidecar::start(listener, config, sinks).await?;
    tracing::info!(addr = %sidecar.local_addr, "inferscope serving");
    let stop = sidecar.shutdown_token();
    tokio::select! {
        _ = shutdown => tracing::info!("shutdown requested: draining"),
        _ = stop.cancelled() => {}
    }
    sidecar.stop().await
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called, not when
/// the future is first polled: a SIGTERM that arrives while the server is starting (a pod
/// deleted at once, a test stopping it as soon as it answers) is not lost and does not kill the
/// process without its drain.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (mut term, mut interrupt) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).expect("installing a SIGTERM handler"),
            signal(SignalKind::interrupt()).expect("installing a SIGINT handler"),
        )
    };
    async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
