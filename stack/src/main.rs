//! `stack`: the gateway (config/gateway.toml) and the five services in one process.
//!
//! Embedded defaults: in-memory stores and ONE shared in-process bus, so the notification service
//! sees every event. With `DATABASE_URL` each service uses its own schema in that database (with
//! its outbox relay); with `AMQP_URL` events go through RabbitMQ. Ctrl-C / SIGTERM stops
//! everything gracefully: servers drain, relays and the consumer stop, the gateway drains.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use saga_orchestrator::services::Endpoints;
use services_common::config::Settings;
use services_common::server::{serve, shutdown_signal, Shutdown};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Longest wait for everything to stop after the signal: above the gateway's default 30 s grace.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

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

async fn bind(name: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {name} on {addr}"))
}

fn spawn_server(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    name: &'static str,
    listener: TcpListener,
    router: axum::Router,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    tasks.spawn(async move {
        tracing::info!(service = name, addr = ?listener.local_addr().ok(), "listening");
        serve(listener, router, stop)
            .await
            .with_context(|| format!("{name} server"))
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    services_common::telemetry::init();
    let args = Args::parse();
    let settings = Settings::from_env();
    // One bus for all: the notification service must see every service's events.
    let bus = services_common::bus::from_settings(&settings);

    let gateway_config = gateway::config::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let gateway_listeners = gateway::Listeners::bind(&gateway_config).await?;
    let order_l = bind("order-service", args.order_listen).await?;
    let payment_l = bind("payment-service", args.payment_listen).await?;
    let inventory_l = bind("inventory-service", args.inventory_listen).await?;
    let notification_l = bind("notification-service", args.notification_listen).await?;
    let saga_l = bind("saga-orchestrator", args.saga_listen).await?;

    // The consumer subscribes first so it sees the other services' first events.
    let notification = notification_service::build(&settings, bus.clone()).await?;
    let order = order_service::build(&settings, bus.clone()).await?;
    let payment = payment_service::build(&settings, bus.clone()).await?;
    let inventory = inventory_service::build(&settings, bus.clone()).await?;
    let endpoints = Endpoints::from_lookup(|k| std::env::var(k).ok());
    let saga = saga_orchestrator::build(&settings, bus.clone(), endpoints).await?;

    let (trigger, shutdown) = Shutdown::new();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    for relay in [order.relay, payment.relay, inventory.relay, saga.relay]
        .into_iter()
        .flatten()
    {
        let stop = shutdown.clone().wait();
        tasks.spawn(async move {
            relay.run(stop).await;
            Ok(())
        });
    }
    let consumer = notification.consumer;
    let stop = shutdown.clone();
    tasks.spawn(async move {
        consumer.run(stop).await;
        Ok(())
    });

    let w = |s: &Shutdown| s.clone().wait();
    spawn_server(
        &mut tasks,
        "order-service",
        order_l,
        order_service::app(order.state),
        w(&shutdown),
    );
    spawn_server(
        &mut tasks,
        "payment-service",
        payment_l,
        payment_service::app(payment.state),
        w(&shutdown),
    );
    spawn_server(
        &mut tasks,
        "inventory-service",
        inventory_l,
        inventory_service::app(inventory.state),
        w(&shutdown),
    );
    spawn_server(
        &mut tasks,
        "notification-service",
        notification_l,
        notification_service::app(notification.state),
        w(&shutdown),
    );
    let orchestrator = saga.state.orchestrator.clone();
    spawn_server(
        &mut tasks,
        "saga-orchestrator",
        saga_l,
        saga_orchestrator::app(saga.state),
        w(&shutdown),
    );
    // Finishing sagas a previous run left in flight is one-off work, not a component.
    tokio::spawn(async move {
        if let Err(e) = orchestrator.resume_all().await {
            tracing::error!(error = %e, "resuming sagas failed");
        }
    });
    let gw_stop = w(&shutdown);
    tasks.spawn(async move {
        gateway::run(gateway_listeners, gateway_config, gw_stop)
            .await
            .context("gateway")
    });
    tracing::info!(
        "stack up: gateway on its [listen] proxy address, services on 8001-8004 and 8010"
    );

    // Run until a signal, or until a component fails (then stop the rest).
    tokio::select! {
        () = shutdown_signal() => {}
        Some(done) = tasks.join_next() => {
            match done {
                Ok(Ok(())) => tracing::warn!("a component stopped early; stopping the stack"),
                Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "a component failed; stopping the stack"),
                Err(e) => tracing::error!(error = %e, "a component panicked; stopping the stack"),
            }
        }
    }
    trigger.fire();
    let drained = tokio::time::timeout(STOP_TIMEOUT, async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!(error = %format!("{e:#}"), "component failed while stopping");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some components did not stop within {STOP_TIMEOUT:?}; exiting anyway");
    }
    Ok(())
}
