//! The `main` every service binary shares: `--listen` from clap, telemetry, settings, bus, bind,
//! and serving until Ctrl-C/SIGTERM with the service's background tasks beside the server.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use clap::{Arg, Command};

use crate::bus::EventBus;
use crate::config::Settings;
use crate::outbox::Relay;
use crate::server::{serve, shutdown_signal, Shutdown};

/// A background task started once the listener is bound; it gets the shared shutdown signal.
type Task = Box<dyn FnOnce(Shutdown) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A built service ready to serve: its router and the tasks that run beside the server.
pub struct Serve {
    router: Router,
    detached: Vec<Task>,
    awaited: Vec<Task>,
}

impl Serve {
    /// Serves `router` with no background tasks.
    pub fn new(router: Router) -> Self {
        Self {
            router,
            detached: Vec::new(),
            awaited: Vec::new(),
        }
    }

    /// Runs the outbox relay (when there is one) until shutdown.
    pub fn relay(self, relay: Option<Relay>) -> Self {
        match relay {
            Some(relay) => self.spawn(|shutdown| relay.run(shutdown.wait())),
            None => self,
        }
    }

    /// Spawns `task` once bound; the process does not wait for it at exit.
    pub fn spawn<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.detached.push(Box::new(move |s| Box::pin(task(s))));
        self
    }

    /// Spawns `task` once bound; after the server drains, the process waits for it to finish.
    pub fn spawn_awaited<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.awaited.push(Box::new(move |s| Box::pin(task(s))));
        self
    }
}

/// Names a binary and its `--listen` option: the env variable and default address.
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// The binary's name, used in the `listening` log line and `--help`.
    pub name: &'static str,
    /// The one-line description for `--help`.
    pub about: &'static str,
    /// The environment variable that sets `--listen` (e.g. `ORDER_LISTEN`).
    pub listen_env: &'static str,
    /// The default `--listen` address.
    pub default_listen: &'static str,
}

impl Binary {
    /// Parses `--listen` (flag, then env variable, then default) from the process arguments.
    pub fn listen_addr(&self) -> SocketAddr {
        let matches = Command::new(self.name)
            .about(self.about)
            .arg(
                Arg::new("listen")
                    .long("listen")
                    .value_name("LISTEN")
                    .env(self.listen_env)
                    .default_value(self.default_listen)
                    .value_parser(clap::value_parser!(SocketAddr))
                    .help("Address to listen on."),
            )
            .get_matches();
        match matches.get_one::<SocketAddr>("listen") {
            Some(addr) => *addr,
            None => clap::Error::raw(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--listen is required",
            )
            .exit(),
        }
    }

    /// The whole binary: telemetry, args, settings, bus, `start`, bind, then serve until
    /// Ctrl-C/SIGTERM, after which awaited tasks are joined.
    pub async fn main<F, Fut>(self, start: F) -> anyhow::Result<()>
    where
        F: FnOnce(Settings, Arc<dyn EventBus>) -> Fut,
        Fut: Future<Output = anyhow::Result<Serve>>,
    {
        crate::telemetry::init();
        let listen = self.listen_addr();
        let settings = Settings::from_env();
        let bus = crate::bus::from_settings(&settings);
        let service = start(settings, bus).await?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let (trigger, shutdown) = Shutdown::new();
        for task in service.detached {
            tokio::spawn(task(shutdown.clone()));
        }
        let awaited: Vec<_> = service
            .awaited
            .into_iter()
            .map(|task| tokio::spawn(task(shutdown.clone())))
            .collect();
        tracing::info!(listen = %listen, "{} listening", self.name);
        serve(listener, service.router, async move {
            shutdown_signal().await;
            trigger.fire();
        })
        .await?;
        for task in awaited {
            task.await?;
        }
        Ok(())
    }
}
