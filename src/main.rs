//! The `inferscope` command: `serve` runs the sidecar, `demo` runs it with a synthetic model
//! server and a live terminal summary.

use anyhow::Context;
use clap::{Parser, Subcommand};
use inferscope::{
    config::{Config, ConfigArgs},
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
}

fn init_logging() {
    // The SDK's own export errors are reported once by inferscope instead of at every batch.
    let default = "info,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,h2=off,hyper=off,tower=off";
    let filter = tracing_subscriber::EnvFilter::try_from_env("INFERSCOPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    match Cli::parse().command {
        Command::Serve { config } => serve(config).await,
        Command::Demo {
            config,
            duration,
            rate,
        } => {
            let exporting = config.otlp_endpoint.is_some();
            let mut config = Config::resolve(config)?;
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
    }
}

async fn serve(args: ConfigArgs) -> anyhow::Result<()> {
    let config = Config::resolve(args)?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (--listen / INFERSCOPE_LISTEN)",
            config.listen
        )
    })?;
    let sinks = Sinks::from_config(&config)?;
    tracing::info!(
        listen = %config.listen,
        otlp = %config.export.endpoint,
        protocol = ?config.export.protocol,
        shards = config.shards,
        "starting inferscope {}",
        env!("CARGO_PKG_VERSION")
    );
    if !config.export.endpoint_configured {
        tracing::info!(
            "OTEL_EXPORTER_OTLP_ENDPOINT is not set: exporting to the local default {}",
            config.export.endpoint
        );
    }
    server::run(listener, config, sinks, server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
