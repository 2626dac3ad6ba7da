//! Round-robin over an endpoint snapshot: one atomic counter, no lock and no
//! allocation per pick. The counter outlives snapshots, so a reload does not restart
//! the rotation.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;

use crate::proxy::client::EndpointPool;

/// One endpoint of an upstream, with counters shown in `/admin/upstreams`.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port` to connect to; also the request URI's authority.
    pub authority: Authority,
    /// Live counters, shared across snapshots.
    pub stats: Arc<EndpointStats>,
    /// Its keep-alive connections, shared across snapshots while the settings hold.
    pub pool: EndpointPool,
}

/// Per-endpoint counters; relaxed atomics, read only for display.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests that failed at the transport (connect, reset, timeout).
    pub failures: AtomicU64,
    /// Requests awaiting a response head right now.
    pub in_flight: AtomicU64,
}

/// Round-robin selection over a fixed endpoint list.
#[derive(Debug)]
pub struct RoundRobin {
    endpoints: Arc<[Endpoint]>,
    next: Arc<AtomicUsize>,
}

impl RoundRobin {
    /// A selector over `endpoints` that continues from `next`.
    pub fn new(endpoints: Arc<[Endpoint]>, next: Arc<AtomicUsize>) -> Self {
        Self { endpoints, next }
    }

    /// The endpoints in order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The next endpoint, or `None` when there are none.
    pub fn pick(&self) -> Option<&Endpoint> {
        self.pick_with(|_| true)
    }

    /// The next endpoint that `accept` agrees to, trying each at most once.
    pub fn pick_with(&self, accept: impl Fn(&Endpoint) -> bool) -> Option<&Endpoint> {
        let len = self.endpoints.len();
        for _ in 0..len {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % len;
            let e = &self.endpoints[i];
            if accept(e) {
                return Some(e);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ConnectionConfig;

    fn rr(n: usize) -> RoundRobin {
        let settings = ConnectionConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_idle_per_endpoint: 1,
            connect_concurrency: 1,
        };
        let eps: Vec<Endpoint> = (0..n)
            .map(|i| {
                let authority: Authority = format!("10.0.0.{i}:80").parse().unwrap();
                Endpoint {
                    pool: EndpointPool::new(authority.clone(), settings, 1),
                    authority,
                    stats: Arc::default(),
                }
            })
            .collect();
        RoundRobin::new(eps.into(), Arc::default())
    }

    #[test]
    fn spreads_evenly() {
        let rr = rr(3);
        let mut hits = [0; 3];
        for _ in 0..300 {
            let e = rr.pick().unwrap();
            let i = rr
                .endpoints()
                .iter()
                .position(|x| std::ptr::eq(x, e))
                .unwrap();
            hits[i] += 1;
        }
        assert_eq!(hits, [100, 100, 100]);
    }

    #[test]
    fn skips_rejected_and_gives_up_after_one_round() {
        let rr = rr(3);
        let bad = rr.endpoints()[1].authority.clone();
        for _ in 0..10 {
            assert_ne!(rr.pick_with(|e| e.authority != bad).unwrap().authority, bad);
        }
        assert!(rr.pick_with(|_| false).is_none());
        assert!(self::rr(0).pick().is_none());
    }
}
