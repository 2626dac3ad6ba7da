//! The real gateway, in process, on port 0, with its config file in a temp dir.

use std::net::SocketAddr;
use std::path::PathBuf;

use http::Method;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::Client;

/// A running gateway; shut it down with [`TestGateway::shutdown`] or let it drop.
pub struct TestGateway {
    /// The proxy address.
    pub addr: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
    /// The config file it watches.
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), gateway::Error>>>,
}

/// The `[listen]` section every test config gets (real ports are bound separately).
const LISTEN: &str = "[listen]\nproxy = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n";

impl TestGateway {
    /// Starts a gateway with `body` (the config without `[listen]`) whose client
    /// connections are served by two worker threads, as on a machine with two cores;
    /// `GATEWAY_TEST_WORKERS=1` serves them on the test's runtime instead, as on one
    /// core (CI runs the suite both ways).
    pub async fn start(body: &str) -> Self {
        let workers = match std::env::var("GATEWAY_TEST_WORKERS") {
            Ok(n) => n
                .parse()
                .unwrap_or_else(|_| panic!("GATEWAY_TEST_WORKERS={n}: not a number")),
            Err(_) => 2,
        };
        Self::start_with_workers(body, workers).await
    }

    /// Starts a gateway whose client connections are served by `workers` threads of
    /// their own (1: on the test's runtime).
    pub async fn start_with_workers(body: &str, workers: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, format!("{LISTEN}{body}")).expect("write config");
        let config = gateway::config::load(&config_path)
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let listeners = gateway::Listeners { proxy, admin };
        let (addr, admin) = listeners.local_addrs().expect("addrs");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway::run_with_workers(
            listeners,
            config,
            workers,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            admin,
            config_path,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A proxy URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs to `path` with a body fed chunk by chunk through the returned sender
    /// (dropping it ends the body); the task resolves to the response.
    pub fn start_upload(
        &self,
        path: &str,
    ) -> (
        tokio::sync::mpsc::Sender<bytes::Bytes>,
        JoinHandle<crate::TestResponse>,
    ) {
        let (tx, body) = crate::chunked_body();
        let req = http::Request::post(self.url(path)).body(body).unwrap();
        let response = tokio::spawn(async move { Client::default().send(req).await });
        (tx, response)
    }

    /// An admin URL for `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Replaces the config file the way editors do: write a temp file, rename it over.
    pub fn write_config(&self, body: &str) {
        let tmp = self.config_path.with_extension("toml.tmp");
        std::fs::write(&tmp, format!("{LISTEN}{body}")).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Writes raw text (no `[listen]` added) to the config file.
    pub fn write_raw_config(&self, text: &str) {
        let tmp = self.config_path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// `POST /admin/reload`, returning status and report.
    pub async fn reload(&self) -> (u16, serde_json::Value) {
        let r = Client::default()
            .request(Method::POST, &self.admin_url("/admin/reload"), &[], "")
            .await;
        (r.status.as_u16(), r.json())
    }

    /// The snapshot generation now serving.
    pub async fn generation(&self) -> u64 {
        let r = Client::default()
            .get(&self.admin_url("/admin/config"))
            .await;
        r.json()["generation"].as_u64().expect("generation")
    }

    /// Sends the shutdown signal without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits (bounded) for `run` to return.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            crate::within("gateway shutdown", task)
                .await
                .expect("gateway task")
                .expect("gateway run");
        }
    }

    /// Waits (bounded) for `run` to return after [`TestGateway::begin_shutdown`].
    pub async fn stopped(&mut self) {
        if let Some(task) = self.task.take() {
            crate::within("gateway shutdown", task)
                .await
                .expect("gateway task")
                .expect("gateway run");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
