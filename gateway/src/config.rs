//! Configuration: `gateway.toml` -> [`file::FileConfig`] (serde, unknown keys rejected)
//! -> [`validate`] (types, ranges, cross-references) -> [`Config`].
//!
//! Parsing is kept apart from file I/O so every rule is testable on a string. Every
//! error names the file, the line and the key. [`watch`] turns file changes into
//! reload triggers.

mod file;
mod locate;
mod validate;
pub mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::Method;
use ipnet::IpNet;

/// A validated configuration, ready to build a snapshot from.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (reloads read it again).
    pub source: PathBuf,
    /// Where to listen: fixed for the life of the process.
    pub listen: Listen,
    /// Limits and trust settings of the proxy listener.
    pub server: Server,
    /// Log format and access log switch.
    pub log: Log,
    /// Upstream services by name.
    pub upstreams: BTreeMap<Arc<str>, UpstreamConfig>,
    /// Routes in file order (the route table sorts them).
    pub routes: Vec<RouteConfig>,
}

/// Listener addresses; changing them needs a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// The proxy port (HTTP/1.1 and h2c).
    pub proxy: SocketAddr,
    /// The admin API port.
    pub admin: SocketAddr,
}

/// Proxy listener limits and trust.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Time given to in-flight requests after a shutdown signal.
    pub shutdown_grace: Duration,
    /// A client connection with no request in progress for this long is closed: an
    /// idle keep-alive connection, or a client still sending its request head (slow
    /// loris). Applies to connections accepted after a reload.
    pub client_idle_timeout: Duration,
    /// A client that takes no byte of a response for this long, with the gateway's
    /// writes to it blocked, is cut off (nginx's `send_timeout`): it would hold its
    /// connection and the upstream's for as long as it stays connected. Applies to
    /// connections accepted after a reload.
    pub client_send_timeout: Duration,
    /// Largest request body, in bytes, unless a route says otherwise.
    pub max_request_body: u64,
    /// Largest request head (request line and headers), in bytes.
    pub max_request_headers: usize,
    /// Peers whose `X-Forwarded-*` headers are kept and extended.
    pub trusted_proxies: Vec<IpNet>,
    /// Request heads that one turn of a worker sends upstream go out in one io_uring
    /// submission (where the kernel allows io_uring) instead of a write each. Read at
    /// startup.
    pub io_uring: bool,
}

/// How the gateway logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    /// Human-readable lines or JSON objects.
    pub format: LogFormat,
    /// One line per proxied request.
    pub access_log: bool,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `tracing-subscriber`'s default text format.
    Human,
    /// One JSON object per line.
    Json,
}

/// One upstream service: where its endpoints come from and how to connect.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// The service name routes refer to.
    pub name: Arc<str>,
    /// Where the endpoint set comes from.
    pub discovery: DiscoveryConfig,
    /// Connection and timeout settings.
    pub connection: ConnectionConfig,
}

/// The source of an upstream's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryConfig {
    /// A fixed list from the file.
    Static(Vec<Authority>),
}

/// How the gateway talks to an upstream's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Bound on establishing one TCP connection.
    pub connect_timeout: Duration,
    /// Bound on waiting for the response head.
    pub request_timeout: Duration,
    /// Pooled idle connections close after this; keep it below the upstream's own.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint, by each proxy worker thread.
    pub max_idle_per_endpoint: usize,
    /// Connections to one endpoint that each proxy worker thread may be opening at
    /// once. A burst of requests waits for the first of a returned connection or a
    /// free slot, so the pool grows to the concurrency the upstream needs rather than
    /// one connection per request.
    pub connect_concurrency: usize,
}

/// One route: a match and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Unique name, used in metrics and logs.
    pub name: Arc<str>,
    /// Host to match (lowercase, no port); `None` matches any host.
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries (`/order` matches `/order/x`, not `/orders`).
    pub prefix: String,
    /// Methods to match; `None` matches all.
    pub methods: Option<Vec<Method>>,
    /// The upstream service name.
    pub upstream: Arc<str>,
    /// How the matched prefix is rewritten before forwarding.
    pub rewrite: Rewrite,
    /// Largest request body for this route, in bytes.
    pub max_request_body: u64,
}

/// Path rewriting applied to the matched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Forward the path unchanged.
    Keep,
    /// Replace the matched prefix with this path (`/` strips it).
    Prefix(String),
}

/// Defaults for omitted settings; each is documented in the README.
pub(crate) mod defaults {
    use std::time::Duration;

    /// Enough for slow clients to finish, short enough for an orchestrator's patience.
    pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    /// hyper's default header-read timeout. Behind a load balancer that reuses idle
    /// connections, raise it above the balancer's own idle timeout (60 s on many).
    pub(crate) const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    /// nginx's `send_timeout`.
    pub(crate) const CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
    /// 64 MiB: generous for APIs; routes that take uploads raise it.
    pub(crate) const MAX_REQUEST_BODY: u64 = 64 * 1024 * 1024;
    /// 16 KiB: nginx's large_client_header_buffers is 4 x 8 KiB.
    pub(crate) const MAX_REQUEST_HEADERS: usize = 16 * 1024;
    /// A reachable endpoint on a LAN connects in well under a second.
    pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Bound on the wait for a response head.
    pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Below the 60 s keep-alive of common upstream servers, so the gateway closes first
    /// and never writes into a connection the upstream is closing.
    pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
    /// Idle connections kept per endpoint: enough for bursts of 128 concurrent requests.
    pub(crate) const MAX_IDLE_PER_ENDPOINT: usize = 128;
    pub(crate) const CONNECT_CONCURRENCY: usize = 4;
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {error}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error, part of the message (not also a `source`, which would
        /// print it twice in an error chain).
        error: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", Problems { file, problems })]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

/// One problem in a config file, located by line and key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// 1-based line number.
    pub line: usize,
    /// Dotted key path, such as `routes[2].upstream`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

struct Problems<'a> {
    file: &'a Path,
    problems: &'a [Problem],
}

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                p.line,
                p.key,
                p.message
            )?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// The problems, for display in `/admin/config`.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { error: source, .. } => vec![Problem {
                line: 0,
                key: String::new(),
                message: format!("cannot read: {source}"),
            }],
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        file: path.to_path_buf(),
        error,
    })?;
    parse(&text, path)
}

/// Validates config text; `path` is only used to name the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    validate::parse(text, path).map_err(|problems| ConfigError::Invalid {
        file: path.to_path_buf(),
        problems,
    })
}
