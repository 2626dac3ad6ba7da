//! `inventory-service`: serves the inventory API on `--listen`; backends from DATABASE_URL / AMQP_URL.

use std::net::SocketAddr;

use clap::Parser;
use services_common::config::Settings;
use services_common::server::{serve, shutdown_signal, Shutdown};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "The inventory service")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "INVENTORY_LISTEN", default_value = "0.0.0.0:8003")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    services_common::telemetry::init();
    let args = Args::parse();
    let settings = Settings::from_env();
    let bus = services_common::bus::from_settings(&settings);
    let service = inventory_service::build(&settings, bus).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let (trigger, shutdown) = Shutdown::new();
    if let Some(relay) = service.relay {
        tokio::spawn(relay.run(shutdown.clone().wait()));
    }
    tracing::info!(listen = %args.listen, "inventory-service listening");
    serve(
        listener,
        inventory_service::app(service.state),
        async move {
            shutdown_signal().await;
            trigger.fire();
        },
    )
    .await?;
    Ok(())
}
