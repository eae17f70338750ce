//! The `inferscope` command: `serve` runs the sidecar, `demo` runs it with a synthetic model
//! server and a live terminal summary.

use anyhow::Context;
use clap::{Parser, Subcommand};
use inferscope::{
    config::{Config, ConfigArgs, LogFormat},
    demo,
    server::{self, Sinks},
};
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "inferscope",
    version,
    about = "A gRPC sidecar that turns ML inference records into OpenTelemetry metrics and traces",
    long_about = "inferscope runs next to a model server. The model server streams inference \
records to it over gRPC (see proto/inferscope/v1); inferscope exports operational and LLM metrics \
and traces over OTLP, configured by the standard OTEL_* environment variables.\n\n\
Logging: set INFERSCOPE_LOG (e.g. `debug`, or `info,inferscope=debug`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Run the sidecar with a built-in synthetic model server (a classifier, a regressor and an
    /// LLM) and print a live summary. Exports over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT (or
    /// --otlp-endpoint) is set.
    Demo {
        #[command(flatten)]
        config: ConfigArgs,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
        /// Records per second per synthetic model.
        #[arg(long, default_value_t = 200)]
        rate: u32,
    },
    /// Build a reference profile (the baseline drift is measured against) from a CSV file with
    /// a header row or a JSON Lines file of reference (training) data, and print a summary.
    Profile(ProfileArgs),
    /// Ask a running sidecar whether it is serving (gRPC health check); exit 0 if it is, 1 if
    /// not. For container health checks and Kubernetes exec probes: the sidecar listens on
    /// loopback, which kubelet's own gRPC probes cannot reach.
    Health(HealthArgs),
    /// Send delayed labels (ground truth) from CSV or JSON Lines files to the fleet's label
    /// stream in Redis, from where the sidecars of --label-store join them with their
    /// predictions: for labels produced where no sidecar can be reached (a nightly job, a
    /// labelling tool). Exit codes: 0 every row sent; 3 some rows rejected (reported with their
    /// file and line; the others were sent); 4 the store cannot be reached or failed; 1 other
    /// errors (a file that cannot be read); 2 bad arguments.
    Labels(LabelsArgs),
}

/// How a command reaches a running sidecar. With TLS on ingest it connects over TLS (and with
/// mTLS presents a client certificate).
#[derive(clap::Args)]
struct ConnectArgs {
    /// Address of the sidecar [default: the --listen default, 127.0.0.1:7717].
    #[arg(long, env = "INFERSCOPE_LISTEN")]
    addr: Option<std::net::SocketAddr>,
    /// PEM CA bundle that verifies the sidecar's certificate: connect over TLS.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// Name the sidecar's certificate is checked against [default: localhost].
    #[arg(long, default_value = "localhost")]
    tls_domain: String,
    /// PEM client certificate to present (mTLS), with --tls-client-key.
    #[arg(long, requires = "tls_client_key")]
    tls_client_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-client-cert.
    #[arg(long, requires = "tls_client_cert")]
    tls_client_key: Option<std::path::PathBuf>,
}

impl ConnectArgs {
    fn addr(&self) -> std::net::SocketAddr {
        self.addr.unwrap_or_else(|| {
            inferscope::config::DEFAULT_LISTEN
                .parse()
                .expect("valid default")
        })
    }

    fn endpoint(&self) -> anyhow::Result<tonic::transport::Endpoint> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let addr = self.addr();
        Ok(match &self.tls_ca {
            None => Endpoint::from_shared(format!("http://{addr}"))?,
            Some(ca) => {
                let mut tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read(ca)?))
                    .domain_name(self.tls_domain.clone());
                if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?
            }
        })
    }
}

/// `inferscope health` arguments. Health is not behind the bearer token.
#[derive(clap::Args)]
struct HealthArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Service to ask about; empty asks about the server as a whole.
    #[arg(long, default_value = "inferscope.v1.IngestService")]
    service: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
}

/// `inferscope profile` arguments.
#[derive(clap::Args)]
struct ProfileArgs {
    /// The reference data: `.csv` or `.jsonl`.
    #[arg(
        required_unless_present = "from_sidecar",
        conflicts_with = "from_sidecar"
    )]
    input: Option<std::path::PathBuf>,
    /// Instead of building from data, export the reference profile a running sidecar uses now
    /// for --model and --version (a live capture included), to keep it or to load it elsewhere
    /// with --profiles-dir. Reaches the sidecar at --addr, with --tls-* and the token of
    /// INFERSCOPE_AUTH_TOKEN_FILE.
    #[arg(long)]
    from_sidecar: bool,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Model name the profile is for.
    #[arg(long)]
    model: String,
    /// Model version the profile is for.
    #[arg(long)]
    version: String,
    /// Where to write the profile [default: <model>@<version>.profile.json].
    #[arg(long, short)]
    output: Option<std::path::PathBuf>,
    /// Columns to treat as categorical even when their values are numbers.
    #[arg(long, value_delimiter = ',')]
    categorical: Vec<String>,
    /// Columns to leave out (ids, labels, timestamps).
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
    /// The column holding the model's prediction, profiled as the prediction.
    #[arg(long)]
    prediction_column: Option<String>,
    /// Coarse quantile bins per numeric feature (PSI, Jensen–Shannon).
    #[arg(long, default_value_t = inferscope::drift::profile::DEFAULT_BINS)]
    bins: usize,
    /// Categories kept per categorical feature.
    #[arg(long, default_value_t = inferscope::drift::profile::DEFAULT_TOP_K)]
    top_k: usize,
    /// Reference values kept per numeric feature for exact tests on small windows.
    #[arg(long, default_value_t = inferscope::drift::profile::DEFAULT_SAMPLE)]
    sample: usize,
}

/// `inferscope labels` arguments.
#[derive(clap::Args)]
struct LabelsArgs {
    /// Label files: `.csv` (with a header row) or `.jsonl` (one object a line); `-` reads JSON
    /// Lines from standard input. Columns: request_id; model and version (unless --model and
    /// --version); one of class, class_index or value; optionally time_unix_nano or time
    /// (RFC 3339).
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
    /// The fleet's Redis, as given to the sidecars' --label-store (`redis://host:6379/0`,
    /// `rediss://…`).
    #[arg(
        long,
        env = "INFERSCOPE_LABEL_STORE",
        required_unless_present = "dry_run"
    )]
    store: Option<String>,
    /// File holding the store's password (a mounted Secret), used instead of a password in the
    /// URL, as the sidecars' --label-store-password-file.
    #[arg(long, env = "INFERSCOPE_LABEL_STORE_PASSWORD_FILE")]
    password_file: Option<std::path::PathBuf>,
    /// Model of the rows that name none.
    #[arg(long)]
    model: Option<String>,
    /// Model version of the rows that name none.
    #[arg(long)]
    version: Option<String>,
    /// Format of every file [default: from each file's extension; standard input: jsonl].
    #[arg(long, value_enum)]
    format: Option<inferscope::label_import::Format>,
    /// Entries the stream keeps at most, approximately (XADD MAXLEN ~): the oldest are trimmed,
    /// read or not.
    #[arg(long, default_value_t = inferscope::label_stream::DEFAULT_MAX_LEN)]
    max_len: u64,
    /// Check every row and report, send nothing (no Redis needed).
    #[arg(long)]
    dry_run: bool,
}

/// Logs to stdout: text, coloured only on a terminal (under Kubernetes stdout is a pipe and
/// colour codes would end up in the log store), or one JSON object a line.
fn init_logging(format: LogFormat) {
    // The SDK's own export errors are reported once by inferscope instead of at every batch.
    let default = "info,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,h2=off,hyper=off,tower=off";
    let filter = tracing_subscriber::EnvFilter::try_from_env("INFERSCOPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A health probe prints one line and no logs; `serve` and `demo` set logging up once their
    // configuration (which has the log format) is resolved.
    match cli.command {
        Command::Health(args) => {
            // One line for the probe's log, whatever RUST_BACKTRACE says.
            if let Err(e) = health(args).await {
                eprintln!("{e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Serve { config } => serve(config).await,
        Command::Labels(args) => {
            use inferscope::label_import::{self, ImportOptions};
            let options = ImportOptions {
                files: args.files,
                store: args.store,
                password_file: args.password_file,
                model: args.model,
                version: args.version,
                format: args.format,
                max_len: args.max_len,
                dry_run: args.dry_run,
            };
            // The summary on stdout; rejected rows, progress and errors on stderr, in one line
            // each whatever RUST_BACKTRACE says.
            match label_import::run(options).await {
                Ok(summary) => {
                    print!("{summary}");
                    std::process::exit(summary.exit_code())
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(e.exit_code())
                }
            }
        }
        Command::Demo {
            config,
            duration,
            rate,
        } => {
            let exporting = config.otlp_endpoint.is_some()
                || config.otlp_metrics_endpoint.is_some()
                || config.otlp_traces_endpoint.is_some();
            let mut config = config;
            // A one-minute window by default, so that a short demo shows quality moving.
            if config.windows.is_none() {
                config.windows = Some("1m,5m".into());
            }
            // Series points every 5 s, so the change detectors have something to watch within a
            // minute (with the export off, the sidecar closes them on the same cadence).
            if config.metric_export_interval.is_none() {
                config.metric_export_interval = Some(demo::INTERVAL.as_millis() as u64);
            }
            let mut config = Config::resolve(config)?;
            init_logging(config.log_format);
            demo::shorten_warmups(&mut config);
            let sinks = if exporting {
                Sinks::from_config(&config)?
            } else {
                config.export.metrics = false;
                config.export.traces = false;
                Sinks::none()
            };
            let duration = duration.map(Duration::from_secs_f64);
            Ok(demo::run(config, sinks, exporting, duration, rate).await?)
        }
        Command::Profile(args) => {
            // Errors in one line, whatever RUST_BACKTRACE says: they are about the input.
            let done = if args.from_sidecar {
                export_profile(args).await
            } else {
                profile_command(args)
            };
            if let Err(e) = done {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// `inferscope profile`.
fn profile_command(args: ProfileArgs) -> anyhow::Result<()> {
    let ProfileArgs {
        input,
        from_sidecar: _,
        connect: _,
        model,
        version,
        output,
        categorical,
        ignore,
        prediction_column,
        bins,
        top_k,
        sample,
    } = args;
    use inferscope::drift::{build, profile::ProfileSettings};
    let input = input.context("give the reference data file")?;
    anyhow::ensure!(bins >= 2, "--bins must be at least 2");
    let output = output.unwrap_or_else(|| format!("{model}@{version}.profile.json").into());
    let options = build::BuildOptions {
        input: input.clone(),
        model,
        version,
        categorical,
        ignore,
        prediction: prediction_column,
        settings: ProfileSettings {
            bins,
            top_k,
            sample,
            ..ProfileSettings::default()
        },
    };
    let bar = indicatif::ProgressBar::new(build::input_size(&input));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("profiling");
    let profile = build::build_profile(&options, &mut |bytes| bar.set_position(bytes))?;
    bar.finish_and_clear();
    let json = serde_json::to_string_pretty(&profile)?;
    std::fs::write(&output, json + "\n")
        .with_context(|| format!("cannot write {}", output.display()))?;
    print!("{}", build::summary(&profile));
    println!("wrote {}", output.display());
    Ok(())
}

/// `inferscope profile --from-sidecar`: the profile a running sidecar uses now, written as a
/// profile file.
async fn export_profile(args: ProfileArgs) -> anyhow::Result<()> {
    use inferscope::pb::{ingest_service_client::IngestServiceClient, ExportReferenceRequest};
    let ProfileArgs {
        connect,
        model,
        version,
        output,
        ..
    } = args;
    let addr = connect.addr();
    let channel = connect
        .endpoint()?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to the sidecar at {addr}"))?;
    let token = inferscope::security::AuthToken::read(
        std::env::var_os("INFERSCOPE_AUTH_TOKEN_FILE").map(Into::into),
    )?;
    let mut request = tonic::Request::new(ExportReferenceRequest {
        model: model.clone(),
        version: version.clone(),
    });
    if let Some(token) = &token {
        request
            .metadata_mut()
            .insert("authorization", token.header());
    }
    let reply = IngestServiceClient::new(channel)
        .export_reference(request)
        .await
        .map_err(|status| anyhow::anyhow!("{addr}: {}", status.message()))?
        .into_inner();
    let profile: inferscope::drift::profile::Profile = serde_json::from_str(&reply.profile_json)
        .context("the sidecar sent a profile this version cannot read")?;
    let output = output.unwrap_or_else(|| format!("{model}@{version}.profile.json").into());
    std::fs::write(&output, reply.profile_json + "\n")
        .with_context(|| format!("cannot write {}", output.display()))?;
    print!("{}", inferscope::drift::build::summary(&profile));
    println!("wrote {} (source {})", output.display(), profile.source);
    Ok(())
}

async fn health(args: HealthArgs) -> anyhow::Result<()> {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let HealthArgs {
        connect,
        service,
        timeout,
    } = args;
    let addr = connect.addr();
    let timeout = Duration::try_from_secs_f64(timeout).context("--timeout")?;
    let endpoint = connect.endpoint()?;
    let check = async {
        let channel = endpoint.connect_timeout(timeout).connect().await?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.clone(),
            })
            .await?;
        anyhow::Ok(reply.into_inner().status())
    };
    let status = tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {addr} within {timeout:?}"))?
        .with_context(|| format!("health check of {addr}"))?;
    if status != ServingStatus::Serving {
        anyhow::bail!("{addr} answers {status:?} for {service:?}");
    }
    println!("{addr}: SERVING");
    Ok(())
}

async fn serve(args: ConfigArgs) -> anyhow::Result<()> {
    let config = Config::resolve(args)?;
    init_logging(config.log_format);
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (--listen / INFERSCOPE_LISTEN)",
            config.listen
        )
    })?;
    let sinks = Sinks::from_config(&config)?;
    use inferscope::config::Signal;
    tracing::info!(
        listen = %config.listen,
        tls = config.tls.is_some(),
        mtls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        token = config.auth_token.is_some(),
        metrics = %config.export.signal_endpoint(Signal::Metrics),
        traces = %config.export.signal_endpoint(Signal::Traces),
        protocol = ?config.export.protocol,
        shards = config.shards,
        "starting inferscope {}",
        env!("CARGO_PKG_VERSION")
    );
    let signal_endpoints =
        config.export.metrics_endpoint.is_some() || config.export.traces_endpoint.is_some();
    let exporting = config.export.metrics || config.export.traces;
    if exporting && !config.export.endpoint_configured && !signal_endpoints {
        tracing::info!(
            "OTEL_EXPORTER_OTLP_ENDPOINT is not set: exporting to the local default {}",
            config.export.endpoint
        );
    }
    server::run(listener, config, sinks, server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
