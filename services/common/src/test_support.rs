//! Helpers shared by the service test suites: a real server on port 0, a JSON client, a fresh
//! PostgreSQL schema per test, and unique RabbitMQ names.
//!
//! PostgreSQL/RabbitMQ tests run when `DATABASE_URL`/`AMQP_URL` are set and FAIL (panic) when the
//! server is unreachable; when unset they are skipped with a printed note.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::{Method, StatusCode};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::bus::{EventBus, InProcessBus, Subscription};
use crate::events::Event;
use crate::http_client::JsonClient;
use crate::outbox::Relay;
use crate::server::{Shutdown, ShutdownTrigger};

/// A server running in-process on 127.0.0.1:0; dropping it shuts the server down.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    client: JsonClient,
    _shutdown: oneshot::Sender<()>,
}

impl TestServer {
    /// Binds 127.0.0.1:0 and serves `router` until the handle is dropped.
    pub async fn spawn(router: Router) -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind 127.0.0.1:0: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("local_addr: {e}"),
        };
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = crate::server::serve(listener, router, shutdown).await {
                tracing::error!(error = %e, "test server failed");
            }
        });
        Self {
            addr,
            base_url: format!("http://{addr}"),
            client: JsonClient::new(Duration::from_secs(2), Duration::from_secs(20)),
            _shutdown: tx,
        }
    }

    /// Sends a request to `path` and returns status and JSON body; panics on transport errors.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value) {
        let url = format!("{}{}", self.base_url, path);
        match self.client.send(method, &url, body.as_ref(), headers).await {
            Ok(r) => (r.status, r.body),
            Err(e) => panic!("{url}: {e}"),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, serde_json::Value) {
        self.call(Method::GET, path, None, &[]).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    /// Sends raw bytes with a content type (for malformed-body tests).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        use http_body_util::{BodyExt, Full};
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<bytes::Bytes>>();
        let req = match http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base_url, path))
            .header("content-type", content_type)
            .body(Full::new(bytes::Bytes::from(body.to_owned())))
        {
            Ok(r) => r,
            Err(e) => panic!("request: {e}"),
        };
        let resp = match client.request(req).await {
            Ok(r) => r,
            Err(e) => panic!("request: {e}"),
        };
        let status = resp.status();
        let bytes = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => panic!("body: {e}"),
        };
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        (status, value)
    }
}

/// A service under test on an in-process bus: its server, a subscription to every event it
/// publishes, and on PostgreSQL its fresh schema and running outbox relay.
pub struct TestApp {
    /// The running server (also reachable through `Deref`).
    pub server: TestServer,
    /// Sees every event published on the bus.
    pub events: Box<dyn Subscription>,
    /// The fresh schema (PostgreSQL only).
    pub db: Option<TestDb>,
    _stop: ShutdownTrigger,
}

impl std::ops::Deref for TestApp {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl TestApp {
    /// Spawns a service on `backend`, or `None` when that backend is not configured (PostgreSQL
    /// without `DATABASE_URL`). `start` gets the bus and, on PostgreSQL, a pool on a fresh schema,
    /// and returns the router and the outbox relay to run until the app is dropped.
    pub async fn spawn<F, Fut>(backend: Backend, start: F) -> Option<Self>
    where
        F: FnOnce(Arc<dyn EventBus>, Option<PgPool>) -> Fut,
        Fut: std::future::Future<Output = (Router, Option<Relay>)>,
    {
        let bus = InProcessBus::new();
        let events = match bus.subscribe("test", &["#"]).await {
            Ok(s) => s,
            Err(e) => panic!("subscribe: {e}"),
        };
        let (stop, shutdown) = Shutdown::new();
        let db = match backend {
            Backend::Memory => None,
            Backend::Postgres => Some(test_db().await?),
        };
        let (router, relay) = start(Arc::new(bus), db.as_ref().map(|d| d.pool.clone())).await;
        if let Some(relay) = relay {
            tokio::spawn(relay.run(shutdown.wait()));
        }
        let server = TestServer::spawn(router).await;
        Some(Self {
            server,
            events,
            db,
            _stop: stop,
        })
    }

    /// Waits (bounded) for the next event on the bus.
    pub async fn next_event(&mut self) -> Event {
        match tokio::time::timeout(Duration::from_secs(10), self.events.next()).await {
            Ok(Some(Ok(d))) => d.event,
            Ok(Some(Err(e))) => panic!("bus error: {e}"),
            Ok(None) => panic!("bus closed"),
            Err(_) => panic!("no event within 10s"),
        }
    }

    /// Drops the app's schema, if any.
    pub async fn cleanup(self) {
        if let Some(db) = self.db {
            db.cleanup().await;
        }
    }
}

/// A unique lowercase name with a prefix: schemas, queues, exchanges per test.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A fresh schema on the test database; drop it with [`TestDb::cleanup`].
pub struct TestDb {
    /// A pool whose search_path is the fresh schema.
    pub pool: PgPool,
    /// The schema name (`t_<uuid>`).
    pub schema: String,
    /// The database URL it came from.
    pub url: String,
}

impl TestDb {
    /// Drops the schema (best effort: a leftover schema only costs disk).
    pub async fn cleanup(self) {
        self.pool.close().await;
        if let Err(e) = crate::pg::drop_schema(&self.url, &self.schema).await {
            eprintln!("note: could not drop test schema {}: {e}", self.schema);
        }
    }
}

/// A fresh schema on `DATABASE_URL`, or `None` (with a note) when the variable is unset.
///
/// Panics when the variable is set but the server is unreachable: such tests must fail, not skip.
pub async fn test_db() -> Option<TestDb> {
    let Some(url) = crate::config::non_empty(std::env::var("DATABASE_URL").ok()) else {
        eprintln!("note: DATABASE_URL unset, skipping the PostgreSQL variant of this test");
        return None;
    };
    let schema = unique_name("t");
    match crate::pg::connect(&url, &schema, 20).await {
        Ok(pool) => Some(TestDb { pool, schema, url }),
        Err(e) => panic!("DATABASE_URL is set but PostgreSQL is unusable: {e}"),
    }
}

/// `AMQP_URL`, or `None` (with a note) when unset.
pub fn amqp_url() -> Option<String> {
    let url = crate::config::non_empty(std::env::var("AMQP_URL").ok());
    if url.is_none() {
        eprintln!("note: AMQP_URL unset, skipping the RabbitMQ variant of this test");
    }
    url
}

/// Polls `check` every 20 ms until it returns `Some`, panicking after `limit`: for eventually
/// consistent effects (an event relayed and consumed) that offer nothing to await directly.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Which storage implementation a shared test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-memory store.
    Memory,
    /// PostgreSQL on `DATABASE_URL`, in a fresh schema.
    Postgres,
}

/// Generates `memory::<name>` and `postgres::<name>` tests calling `async fn <name>(Backend)`
/// from the enclosing module, so one suite covers both storage implementations.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::test_support::Backend::Memory).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::test_support::Backend::Postgres).await
                }
            )*
        }
    };
}
