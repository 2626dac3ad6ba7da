//! The snapshot: route table and upstream sets, immutable, swapped whole.
//!
//! Requests load the current snapshot once and keep it to the end, so a reload never
//! changes a request in flight. [`Builder`] keeps what must outlive a snapshot (endpoint
//! connection pools, round-robin counters, endpoint counters, metric handles) and reuses them
//! when a rebuild keeps an upstream or route.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use http::uri::Authority;

use crate::balance::{Endpoint, EndpointStats, RoundRobin};
use crate::config::{Config, ConnectionConfig};
use crate::discovery::Registry;
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::client::EndpointPool;
use crate::routes::{Route, RouteTable};

/// One immutable view of routes and upstreams.
#[derive(Debug)]
pub struct Snapshot {
    /// The config it was built from.
    pub config: Arc<Config>,
    /// Routes by precedence.
    pub routes: RouteTable,
    /// Upstreams by name.
    pub upstreams: HashMap<Arc<str>, Arc<Upstream>>,
    /// Increases with every rebuild (reload or discovery change).
    pub generation: u64,
}

/// An upstream service as requests see it.
#[derive(Debug)]
pub struct Upstream {
    /// The service name.
    pub name: Arc<str>,
    /// Endpoint selection.
    pub balancer: RoundRobin,
    /// Timeouts and pool settings.
    pub connection: ConnectionConfig,
}

/// State kept across snapshots.
pub(crate) struct Builder {
    pools: HashMap<(Arc<str>, Authority), EndpointPool>,
    counters: HashMap<Arc<str>, Arc<AtomicUsize>>,
    stats: HashMap<(Arc<str>, Authority), Arc<EndpointStats>>,
    route_metrics: HashMap<Arc<str>, RouteMetrics>,
    generation: u64,
    /// Proxy worker threads: each endpoint pool keeps idle connections per worker.
    workers: usize,
}

impl Builder {
    /// A builder for a gateway with `workers` proxy worker threads.
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            workers,
            pools: HashMap::new(),
            counters: HashMap::new(),
            stats: HashMap::new(),
            route_metrics: HashMap::new(),
            generation: 0,
        }
    }

    /// Builds a snapshot from a config and the current discovery results.
    pub(crate) fn build(
        &mut self,
        config: Arc<Config>,
        discovery: &Registry,
        metrics: &Metrics,
    ) -> Snapshot {
        self.generation += 1;
        let mut upstreams = HashMap::with_capacity(config.upstreams.len());
        for (name, u) in &config.upstreams {
            let counter = self.counters.entry(name.clone()).or_default().clone();
            let endpoints: Vec<Endpoint> = discovery
                .endpoints(name)
                .iter()
                .map(|authority| {
                    let key = (name.clone(), authority.clone());
                    let pool = match self.pools.get(&key) {
                        Some(p) if p.settings() == &u.connection => p.clone(),
                        _ => EndpointPool::new(authority.clone(), u.connection, self.workers),
                    };
                    self.pools.insert(key.clone(), pool.clone());
                    Endpoint {
                        authority: authority.clone(),
                        stats: self.stats.entry(key).or_default().clone(),
                        pool,
                    }
                })
                .collect();
            upstreams.insert(
                name.clone(),
                Arc::new(Upstream {
                    name: name.clone(),
                    balancer: RoundRobin::new(endpoints.into(), counter),
                    connection: u.connection,
                }),
            );
        }
        // Forget state of upstreams and endpoints no longer configured.
        self.counters.retain(|n, _| upstreams.contains_key(n));
        let live = |(n, a): &(Arc<str>, Authority)| {
            upstreams
                .get(n)
                .is_some_and(|u| u.balancer.endpoints().iter().any(|e| &e.authority == a))
        };
        self.stats.retain(|k, _| live(k));
        self.pools.retain(|k, _| live(k));

        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            // Validation guarantees the upstream exists; skip defensively rather than panic.
            let Some(upstream) = upstreams.get(&r.upstream) else {
                continue;
            };
            let metrics = self
                .route_metrics
                .entry(r.name.clone())
                .or_insert_with(|| metrics.route(&r.name))
                .clone();
            routes.push(Arc::new(Route {
                config: r.clone(),
                upstream: upstream.clone(),
                metrics,
            }));
        }
        self.route_metrics
            .retain(|n, _| config.routes.iter().any(|r| &r.name == n));
        Snapshot {
            config,
            routes: RouteTable::new(routes),
            upstreams,
            generation: self.generation,
        }
    }
}
