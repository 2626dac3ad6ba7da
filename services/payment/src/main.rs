//! `payment-service`: serves the payment API on `--listen`; backends from DATABASE_URL / AMQP_URL.

use std::net::SocketAddr;

use clap::Parser;
use services_common::config::Settings;
use services_common::server::{serve, shutdown_signal, Shutdown};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "The payment service")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "PAYMENT_LISTEN", default_value = "0.0.0.0:8002")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    services_common::telemetry::init();
    let args = Args::parse();
    let settings = Settings::from_env();
    let bus = services_common::bus::from_settings(&settings);
    let service = payment_service::build(&settings, bus).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let (trigger, shutdown) = Shutdown::new();
    if let Some(relay) = service.relay {
        tokio::spawn(relay.run(shutdown.clone().wait()));
    }
    tracing::info!(listen = %args.listen, "payment-service listening");
    serve(listener, payment_service::app(service.state), async move {
        shutdown_signal().await;
        trigger.fire();
    })
    .await?;
    Ok(())
}
