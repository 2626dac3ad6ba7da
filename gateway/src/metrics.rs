//! Prometheus metrics, served as text on the admin port.
//!
//! The request path never hashes labels: each route holds its own handles, created on
//! first use per (method, status class) and lock-free after that.

use std::sync::{Arc, OnceLock};

use http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of `gateway_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    route: String,
    method: String,
    class: String,
}

/// Labels of `gateway_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabel {
    route: String,
}

/// Labels of `gateway_upstream_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamErrorLabels {
    upstream: String,
    kind: &'static str,
}

/// Labels of `gateway_config_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReloadLabels {
    result: &'static str,
}

/// Labels of `gateway_worker_connections`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WorkerLabel {
    worker: String,
}

/// Outcome of a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReloadResult {
    Success,
    Failure,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to ~8 s in 16 doublings: covers a cache hit to a slow saga.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every metric the gateway exports.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    /// Open client connections on the proxy listener.
    pub(crate) open_connections: Gauge,
    workers: Family<WorkerLabel, Gauge>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let open_connections = Gauge::default();
        let workers = Family::<WorkerLabel, Gauge>::default();
        registry.register(
            "gateway_requests",
            "Requests by route, method and status class",
            requests.clone(),
        );
        registry.register(
            "gateway_request_duration_seconds",
            "Time from request head to response head, by route",
            latency.clone(),
        );
        registry.register(
            "gateway_upstream_errors",
            "Failed upstream exchanges by upstream and kind",
            upstream_errors.clone(),
        );
        registry.register(
            "gateway_config_reloads",
            "Config reloads by result",
            reloads.clone(),
        );
        registry.register(
            "gateway_open_connections",
            "Open client connections on the proxy listener",
            open_connections.clone(),
        );
        registry.register(
            "gateway_worker_connections",
            "Open client connections by worker thread (with more than one worker)",
            workers.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            upstream_errors,
            reloads,
            open_connections,
            workers,
        }
    }

    /// The count of one worker thread's open client connections: the acceptor reads it
    /// to choose a worker, and it is exported as it is.
    pub(crate) fn worker_connections(&self, worker: usize) -> Gauge {
        self.workers
            .get_or_create(&WorkerLabel {
                worker: worker.to_string(),
            })
            .clone()
    }

    /// Handles for one route (`""` for requests that matched none).
    pub(crate) fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            inner: Arc::new(RouteMetricsInner {
                name: route.to_owned(),
                family: self.requests.clone(),
                slots: Default::default(),
                latency: self
                    .latency
                    .get_or_create(&RouteLabel {
                        route: route.to_owned(),
                    })
                    .clone(),
            }),
        }
    }

    pub(crate) fn upstream_error(&self, upstream: &str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                upstream: upstream.to_owned(),
                kind,
            })
            .inc();
    }

    pub(crate) fn reload(&self, result: ReloadResult) {
        let result = match result {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::CONNECT,
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A route's metric handles. Cheap to clone; shared by the snapshots that keep the route.
#[derive(Clone)]
pub(crate) struct RouteMetrics {
    inner: Arc<RouteMetricsInner>,
}

struct RouteMetricsInner {
    name: String,
    family: Family<RequestLabels, Counter>,
    /// One slot per known method (last: any other) and status class.
    slots: [[OnceLock<Counter>; 5]; METHODS.len() + 1],
    latency: Histogram,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.inner.name)
            .finish()
    }
}

impl RouteMetrics {
    /// Counts one request and its latency.
    pub(crate) fn record(&self, method: &Method, status: StatusCode, seconds: f64) {
        let m = METHODS
            .iter()
            .position(|x| x == method)
            .unwrap_or(METHODS.len());
        let c = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.inner.slots[m][c]
            .get_or_init(|| {
                let method = METHODS.get(m).map_or("other", |x| x.as_str());
                self.inner
                    .family
                    .get_or_create(&RequestLabels {
                        route: self.inner.name.clone(),
                        method: method.to_owned(),
                        class: CLASSES[c].to_owned(),
                    })
                    .clone()
            })
            .inc();
        self.inner.latency.observe(seconds);
    }
}
