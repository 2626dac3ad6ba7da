//! `notification-service`: consumes events and serves `/notifications` on `--listen`.

use std::net::SocketAddr;

use clap::Parser;
use services_common::config::Settings;
use services_common::server::{serve, shutdown_signal, Shutdown};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "The notification service")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "NOTIFICATION_LISTEN", default_value = "0.0.0.0:8004")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    services_common::telemetry::init();
    let args = Args::parse();
    let settings = Settings::from_env();
    let bus = services_common::bus::from_settings(&settings);
    let service = notification_service::build(&settings, bus).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let (trigger, shutdown) = Shutdown::new();
    let consumer = tokio::spawn(service.consumer.run(shutdown));
    tracing::info!(listen = %args.listen, "notification-service listening");
    serve(
        listener,
        notification_service::app(service.state),
        async move {
            shutdown_signal().await;
            trigger.fire();
        },
    )
    .await?;
    consumer.await?;
    Ok(())
}
