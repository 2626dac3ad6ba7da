//! `saga-orchestrator`: serves `/saga/*` on `--listen`, resumes sagas left in flight at start.

use std::net::SocketAddr;

use clap::Parser;
use saga_orchestrator::services::Endpoints;
use services_common::config::Settings;
use services_common::server::{serve, shutdown_signal, Shutdown};

/// How long start-up waits for the services before resuming sagas in flight anyway.
const RESUME_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "The saga orchestrator")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SAGA_LISTEN", default_value = "0.0.0.0:8010")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    services_common::telemetry::init();
    let args = Args::parse();
    let settings = Settings::from_env();
    let bus = services_common::bus::from_settings(&settings);
    let endpoints = Endpoints::from_lookup(|k| std::env::var(k).ok());
    tracing::info!(?endpoints, "calling services at");
    let service = saga_orchestrator::build(&settings, bus, endpoints).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let (trigger, shutdown) = Shutdown::new();
    if let Some(relay) = service.relay {
        tokio::spawn(relay.run(shutdown.clone().wait()));
    }
    let orchestrator = service.state.orchestrator.clone();
    tokio::spawn(async move {
        if let Err(e) = orchestrator.resume_when_ready(RESUME_WAIT).await {
            tracing::error!(error = %e, "resuming sagas failed");
        }
    });
    tracing::info!(listen = %args.listen, "saga-orchestrator listening");
    serve(
        listener,
        saga_orchestrator::app(service.state),
        async move {
            shutdown_signal().await;
            trigger.fire();
        },
    )
    .await?;
    Ok(())
}
