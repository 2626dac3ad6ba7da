//! `stack`: the gateway (config/gateway.toml) and the five services in one process.
//!
//! Embedded defaults: in-memory stores and ONE shared in-process bus, so the notification service
//! sees every event. With `DATABASE_URL` each service uses its own schema in that database (with
//! its outbox relay); with `AMQP_URL` events go through RabbitMQ. Ctrl-C / SIGTERM stops
//! everything gracefully: servers drain, relays and the consumer stop, the gateway drains.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use services_common::server::shutdown_signal;
use stack::{Listeners, ServiceAddrs};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Gateway + order, payment, inventory, notification services + saga orchestrator")]
struct Args {
    /// Gateway configuration file.
    #[arg(long, env = "GATEWAY_CONFIG", default_value = "config/gateway.toml")]
    config: PathBuf,
    /// Order service address (the gateway config points at it).
    #[arg(long, env = "ORDER_LISTEN", default_value = "127.0.0.1:8001")]
    order_listen: SocketAddr,
    /// Payment service address.
    #[arg(long, env = "PAYMENT_LISTEN", default_value = "127.0.0.1:8002")]
    payment_listen: SocketAddr,
    /// Inventory service address.
    #[arg(long, env = "INVENTORY_LISTEN", default_value = "127.0.0.1:8003")]
    inventory_listen: SocketAddr,
    /// Notification service address.
    #[arg(long, env = "NOTIFICATION_LISTEN", default_value = "127.0.0.1:8004")]
    notification_listen: SocketAddr,
    /// Saga orchestrator address.
    #[arg(long, env = "SAGA_LISTEN", default_value = "127.0.0.1:8010")]
    saga_listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    services_common::telemetry::init();
    let args = Args::parse();
    let gateway_config = gateway::config::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let gateway_listeners = gateway::Listeners::bind(&gateway_config).await?;
    let services = Listeners::bind(&ServiceAddrs {
        order: args.order_listen,
        payment: args.payment_listen,
        inventory: args.inventory_listen,
        notification: args.notification_listen,
        saga: args.saga_listen,
    })
    .await?;
    stack::run(
        services,
        gateway_listeners,
        gateway_config,
        |k| std::env::var(k).ok(),
        shutdown_signal(),
    )
    .await?;
    Ok(())
}
