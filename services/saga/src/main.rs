//! `saga-orchestrator`: serves `/saga/*` on `--listen`, resumes sagas left in flight at start.

use saga_orchestrator::services::Endpoints;
use services_common::run::{Binary, Serve};

/// How long start-up waits for the services before resuming sagas in flight anyway.
const RESUME_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = Binary {
        name: "saga-orchestrator",
        about: "The saga orchestrator",
        listen_env: "SAGA_LISTEN",
        default_listen: "0.0.0.0:8010",
    };
    binary
        .main(|settings, bus| async move {
            let endpoints = Endpoints::from_lookup(|k| std::env::var(k).ok());
            tracing::info!(?endpoints, "calling services at");
            let service = saga_orchestrator::build(&settings, bus, endpoints).await?;
            let orchestrator = service.state.orchestrator.clone();
            Ok(Serve::new(saga_orchestrator::app(service.state))
                .relay(service.relay)
                .spawn(|_| async move {
                    if let Err(e) = orchestrator.resume_when_ready(RESUME_WAIT).await {
                        tracing::error!(error = %e, "resuming sagas failed");
                    }
                }))
        })
        .await
}
