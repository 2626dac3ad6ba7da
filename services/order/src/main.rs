//! `order-service`: serves the order API on `--listen`; backends from DATABASE_URL / AMQP_URL.

use std::net::SocketAddr;

use clap::Parser;
use services_common::config::Settings;
use services_common::server::{serve, shutdown_signal, Shutdown};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "The order service")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ORDER_LISTEN", default_value = "0.0.0.0:8001")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    services_common::telemetry::init();
    let args = Args::parse();
    let settings = Settings::from_env();
    let bus = services_common::bus::from_settings(&settings);
    let service = order_service::build(&settings, bus).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let (trigger, shutdown) = Shutdown::new();
    if let Some(relay) = service.relay {
        tokio::spawn(relay.run(shutdown.clone().wait()));
    }
    tracing::info!(listen = %args.listen, "order-service listening");
    serve(listener, order_service::app(service.state), async move {
        shutdown_signal().await;
        trigger.fire();
    })
    .await?;
    Ok(())
}
