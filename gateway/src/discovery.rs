//! Discovery: where each upstream's endpoints come from.
//!
//! Every source publishes its current endpoint set on a `watch` channel and pokes a
//! shared [`Notify`] on change; the control loop then rebuilds the snapshot. A new
//! kind of source (Consul, DNS) plugs in here without touching the proxy path.

mod static_list;

use std::collections::HashMap;
use std::sync::Arc;

use http::uri::Authority;
use tokio::sync::{watch, Notify};

use crate::config::{Config, DiscoveryConfig};

/// An immutable endpoint set, shared by every snapshot that uses it.
pub type EndpointSet = Arc<[Authority]>;

/// One running source.
struct Source {
    config: DiscoveryConfig,
    endpoints: watch::Receiver<EndpointSet>,
}

/// The discovery sources for every configured upstream.
pub(crate) struct Registry {
    sources: HashMap<Arc<str>, Source>,
    changed: Arc<Notify>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            sources: HashMap::new(),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Starts sources for new or changed upstreams and drops those no longer configured.
    /// An unchanged source keeps running, so a reload never blanks an endpoint set.
    pub(crate) fn sync(&mut self, config: &Config) {
        self.sources.retain(|name, s| {
            config
                .upstreams
                .get(name)
                .is_some_and(|u| u.discovery == s.config)
        });
        for (name, upstream) in &config.upstreams {
            if self.sources.contains_key(name) {
                continue;
            }
            let endpoints = match &upstream.discovery {
                DiscoveryConfig::Static(list) => static_list::spawn(list),
            };
            self.sources.insert(
                name.clone(),
                Source {
                    config: upstream.discovery.clone(),
                    endpoints,
                },
            );
        }
    }

    /// The current endpoints of an upstream (empty when unknown).
    pub(crate) fn endpoints(&self, upstream: &str) -> EndpointSet {
        self.sources
            .get(upstream)
            .map(|s| s.endpoints.borrow().clone())
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// Resolves when any source published a new set.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}
