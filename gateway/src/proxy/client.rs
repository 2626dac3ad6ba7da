//! The pooled HTTP/1.1 client for one upstream: keep-alive with an idle timeout below
//! the upstream's, TCP_NODELAY, and a connect timeout. The request timeout is applied
//! by the proxy around each exchange.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::LimitedBody;
use crate::config::ConnectionConfig;

/// TCP keepalive probes detect a silently dead upstream host on long idle connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// A cheap-to-clone pooled client (the pool is shared by clones).
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    inner: Client<HttpConnector, LimitedBody>,
    settings: ConnectionConfig,
}

impl UpstreamClient {
    /// A client with its own connection pool.
    pub fn new(settings: ConnectionConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_keepalive(Some(TCP_KEEPALIVE));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_max_idle_per_host(settings.max_idle_per_endpoint)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Self { inner, settings }
    }

    /// The settings it was built with; a change needs a new pool.
    pub fn settings(&self) -> &ConnectionConfig {
        &self.settings
    }

    /// Sends one request and resolves at the response head.
    pub(crate) fn request(
        &self,
        req: http::Request<LimitedBody>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        self.inner.request(req)
    }
}
