//! The one-process stack: the gateway and the five services, sharing one event bus.
//!
//! [`Listeners`] are bound first (so a busy port fails before anything starts); [`run`] builds
//! every service on the configured backends, serves them and the gateway, and stops everything
//! when the shutdown future resolves (or when one component fails).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use saga_orchestrator::services::Endpoints;
use services_common::config::Settings;
use services_common::server::{serve, Shutdown};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Longest wait for everything to stop after shutdown: above the gateway's default 30 s grace.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// How long start-up waits for the services before resuming sagas in flight anyway.
const RESUME_WAIT: Duration = Duration::from_secs(60);

/// Why the stack could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// Binding a service port failed.
    #[error("binding {name} on {addr}: {source}")]
    Bind {
        /// Which service.
        name: &'static str,
        /// Where.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A listener's address could not be read.
    #[error("listener address: {0}")]
    Io(#[from] std::io::Error),
    /// The order service could not start.
    #[error("order-service: {0}")]
    Order(#[from] order_service::StartError),
    /// The payment service could not start.
    #[error("payment-service: {0}")]
    Payment(#[from] payment_service::StartError),
    /// The inventory service could not start.
    #[error("inventory-service: {0}")]
    Inventory(#[from] inventory_service::StartError),
    /// The notification service could not start.
    #[error("notification-service: {0}")]
    Notification(#[from] notification_service::StartError),
    /// The orchestrator could not start.
    #[error("saga-orchestrator: {0}")]
    Saga(#[from] saga_orchestrator::StartError),
    /// A component failed while running.
    #[error("{0}")]
    Component(String),
}

/// Where the five services listen.
#[derive(Debug, Clone, Copy)]
pub struct ServiceAddrs {
    /// order-service.
    pub order: SocketAddr,
    /// payment-service.
    pub payment: SocketAddr,
    /// inventory-service.
    pub inventory: SocketAddr,
    /// notification-service.
    pub notification: SocketAddr,
    /// saga-orchestrator.
    pub saga: SocketAddr,
}

/// The five services' bound listeners.
#[derive(Debug)]
pub struct Listeners {
    order: TcpListener,
    payment: TcpListener,
    inventory: TcpListener,
    notification: TcpListener,
    saga: TcpListener,
}

async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, StackError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StackError::Bind { name, addr, source })
}

impl Listeners {
    /// Binds every service address.
    pub async fn bind(addrs: &ServiceAddrs) -> Result<Self, StackError> {
        Ok(Self {
            order: bind("order-service", addrs.order).await?,
            payment: bind("payment-service", addrs.payment).await?,
            inventory: bind("inventory-service", addrs.inventory).await?,
            notification: bind("notification-service", addrs.notification).await?,
            saga: bind("saga-orchestrator", addrs.saga).await?,
        })
    }

    /// The bound addresses (tests bind port 0 and point the gateway config at these).
    pub fn local_addrs(&self) -> Result<ServiceAddrs, StackError> {
        Ok(ServiceAddrs {
            order: self.order.local_addr()?,
            payment: self.payment.local_addr()?,
            inventory: self.inventory.local_addr()?,
            notification: self.notification.local_addr()?,
            saga: self.saga.local_addr()?,
        })
    }
}

fn spawn_server(
    tasks: &mut JoinSet<Result<(), StackError>>,
    name: &'static str,
    listener: TcpListener,
    router: axum::Router,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    tasks.spawn(async move {
        tracing::info!(service = name, addr = ?listener.local_addr().ok(), "listening");
        serve(listener, router, stop)
            .await
            .map_err(|e| StackError::Component(format!("{name} server: {e}")))
    });
}

/// Runs the stack until `shutdown` resolves or a component fails, then stops everything.
///
/// `lookup` reads settings (the environment in `main`). Without `GATEWAY_URL`, the saga calls
/// this stack's own gateway.
pub async fn run(
    services: Listeners,
    gateway_listeners: gateway::Listeners,
    gateway_config: gateway::Config,
    lookup: impl Fn(&str) -> Option<String>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StackError> {
    let settings = Settings::from_lookup(&lookup);
    // One bus for all: the notification service must see every service's events.
    let bus = services_common::bus::from_settings(&settings);
    let gateway_url = format!(
        "http://127.0.0.1:{}",
        gateway_listeners.proxy.local_addr()?.port()
    );
    let endpoints = Endpoints::from_lookup(|k| match lookup(k) {
        None if k == "GATEWAY_URL" => Some(gateway_url.clone()),
        v => v,
    });

    // The consumer subscribes first so it sees the other services' first events.
    let notification = notification_service::build(&settings, bus.clone()).await?;
    let order = order_service::build(&settings, bus.clone()).await?;
    let payment = payment_service::build(&settings, bus.clone()).await?;
    let inventory = inventory_service::build(&settings, bus.clone()).await?;
    let saga = saga_orchestrator::build(&settings, bus.clone(), endpoints).await?;

    let (trigger, stop) = Shutdown::new();
    let w = |s: &Shutdown| s.clone().wait();
    let mut tasks: JoinSet<Result<(), StackError>> = JoinSet::new();
    for relay in [order.relay, payment.relay, inventory.relay, saga.relay]
        .into_iter()
        .flatten()
    {
        let until = w(&stop);
        tasks.spawn(async move {
            relay.run(until).await;
            Ok(())
        });
    }
    let consumer = notification.consumer;
    let until = stop.clone();
    tasks.spawn(async move {
        consumer.run(until).await;
        Ok(())
    });
    let orchestrator = saga.state.orchestrator.clone();
    spawn_server(
        &mut tasks,
        "order-service",
        services.order,
        order_service::app(order.state),
        w(&stop),
    );
    spawn_server(
        &mut tasks,
        "payment-service",
        services.payment,
        payment_service::app(payment.state),
        w(&stop),
    );
    spawn_server(
        &mut tasks,
        "inventory-service",
        services.inventory,
        inventory_service::app(inventory.state),
        w(&stop),
    );
    spawn_server(
        &mut tasks,
        "notification-service",
        services.notification,
        notification_service::app(notification.state),
        w(&stop),
    );
    spawn_server(
        &mut tasks,
        "saga-orchestrator",
        services.saga,
        saga_orchestrator::app(saga.state),
        w(&stop),
    );
    let gw_stop = w(&stop);
    tasks.spawn(async move {
        gateway::run(gateway_listeners, gateway_config, gw_stop)
            .await
            .map_err(|e| StackError::Component(format!("gateway: {e}")))
    });
    // Finishing sagas a previous run left in flight is one-off work, not a component.
    tokio::spawn(async move {
        if let Err(e) = orchestrator.resume_when_ready(RESUME_WAIT).await {
            tracing::error!(error = %e, "resuming sagas failed");
        }
    });
    tracing::info!(gateway = %gateway_url, "stack up");

    let mut failure = None;
    tokio::select! {
        () = shutdown => {}
        Some(done) = tasks.join_next() => {
            failure = Some(match done {
                Ok(Ok(())) => StackError::Component("a component stopped early".into()),
                Ok(Err(e)) => e,
                Err(e) => StackError::Component(format!("a component panicked: {e}")),
            });
            tracing::error!(error = %failure.as_ref().map(ToString::to_string).unwrap_or_default(), "stopping the stack");
        }
    }
    trigger.fire();
    let drained = tokio::time::timeout(STOP_TIMEOUT, async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!(error = %e, "component failed while stopping");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some components did not stop within {STOP_TIMEOUT:?}");
        tasks.abort_all();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
