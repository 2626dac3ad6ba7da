//! A hyper reverse proxy: TOML routes that hot-reload, round-robin over discovered
//! endpoints, and an admin API.
//!
//! # Layout
//! - [`config`]: file -> raw structs -> validated [`config::Config`]; file watching.
//! - [`routes`]: the route table (host, longest prefix, methods).
//! - [`discovery`]: endpoint sources, each publishing on a `watch` channel.
//! - [`balance`]: round-robin over an endpoint snapshot.
//! - [`snapshot`]: routes + upstreams, immutable, swapped whole with `arc-swap`.
//! - [`proxy`]: forwarding, header hygiene, upstream client, error responses.
//! - `control`: the loop that rebuilds and swaps snapshots on reloads.
//! - `shared`: state shared by the proxy, the admin API and the control loop.
//! - `server` / `admin`: the proxy and admin listeners.
//! - [`shutdown`]: signal handling for the binary.
//!
//! The library takes bound listeners and a shutdown future, so tests and the `stack`
//! launcher run the real gateway on any port: see [`run`].

mod admin;
pub mod balance;
pub mod config;
mod control;
pub mod discovery;
mod metrics;
pub mod proxy;
pub mod routes;
mod server;
mod shared;
pub mod shutdown;
pub mod snapshot;
mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

pub use config::{Config, ConfigError};
pub use control::ReloadReport;

/// Reload triggers queue here; a burst beyond this collapses into the pending ones.
const TRIGGER_QUEUE: usize = 8;

/// The two bound listeners the gateway serves on.
#[derive(Debug)]
pub struct Listeners {
    /// Proxy traffic (HTTP/1.1 and h2c).
    pub proxy: TcpListener,
    /// The admin API.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config.listen`.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let proxy = TcpListener::bind(config.listen.proxy).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("binding proxy listener {}: {e}", config.listen.proxy),
            )
        })?;
        let admin = TcpListener::bind(config.listen.admin).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("binding admin listener {}: {e}", config.listen.admin),
            )
        })?;
        Ok(Self { proxy, admin })
    }

    /// The bound addresses (useful when binding port 0).
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.proxy.local_addr()?, self.admin.local_addr()?))
    }
}

/// Why the gateway stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin server failed.
    #[error("admin server: {0}")]
    Admin(#[source] std::io::Error),
    /// A proxy worker thread or its runtime could not be started.
    #[error("starting proxy worker threads: {0}")]
    Workers(#[source] std::io::Error),
}

/// Runs the gateway until `shutdown` resolves, then drains in-flight requests for the
/// configured grace period and returns. Client connections are served on the calling
/// runtime.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run_with_workers(listeners, config, 1, shutdown).await
}

/// The runtime every thread that serves client connections runs: single-threaded,
/// so a request, its upstream connection and its timers stay on one thread. Build
/// the runtime that calls [`run`] or [`run_with_workers`] with this: the proxy's
/// order of writes (see `proxy::Handling`) counts on its run queue being first in,
/// first out.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// As [`run`], with client connections served by `workers` threads, each running its
/// own single-threaded runtime (one: on the calling runtime). The calling runtime
/// accepts connections and runs the admin server, reloads and discovery.
pub async fn run_with_workers(
    listeners: Listeners,
    config: Config,
    workers: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let config = Arc::new(config);
    let metrics = metrics::Metrics::new();
    let mut registry = discovery::Registry::new();
    registry.sync(&config);
    let mut builder = snapshot::Builder::new(workers);
    let snapshot = builder.build(config.clone(), &registry, &metrics);
    let shared = Arc::new(shared::Shared::new(snapshot, metrics));

    let (triggers, trigger_rx) = mpsc::channel(TRIGGER_QUEUE);
    let _watch = {
        let tx = triggers.clone();
        // A full queue already holds a pending reload, which will read the newest file.
        match config::watch::spawn(&config.source, move || {
            let _ = tx.try_send(control::Trigger::FileChanged);
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {}: {e}; reload with SIGHUP or POST /admin/reload",
                    config.source.display()
                );
                None
            }
        }
    };
    // Fixed for the listener's life: a reload may raise the header limit up to it only.
    let head_buffer = server::head_buffer(config.server.max_request_headers);
    let sighup = tokio::spawn(forward_sighup(triggers.clone()));
    let control = tokio::spawn(control::run(
        shared.clone(),
        builder,
        registry,
        trigger_rx,
        config.clone(),
        head_buffer,
    ));

    let (admin_stop, admin_stopped) = oneshot::channel::<()>();
    let admin = tokio::spawn(admin::serve(
        listeners.admin,
        shared.clone(),
        triggers,
        async move {
            let _ = admin_stopped.await;
        },
    ));

    shared.ready.store(true, Ordering::SeqCst);
    tracing::info!(proxy = %config.listen.proxy, admin = %config.listen.admin, routes = config.routes.len(), "gateway started");
    let served = server::serve(listeners.proxy, shared, workers, head_buffer, shutdown).await;

    let _ = admin_stop.send(());
    sighup.abort();
    control.abort();
    served.map_err(Error::Workers)?;
    match admin.await {
        Ok(result) => result.map_err(Error::Admin),
        Err(_) => Ok(()),
    }
}

/// SIGHUP asks for a reload, as for nginx and HAProxy.
async fn forward_sighup(triggers: mpsc::Sender<control::Trigger>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP");
            return;
        };
        while hup.recv().await.is_some() {
            let _ = triggers.try_send(control::Trigger::Signal);
        }
    }
    #[cfg(not(unix))]
    drop(triggers);
}
