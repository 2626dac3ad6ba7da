//! The admin API, on its own port: liveness, readiness, Prometheus metrics, and the
//! live routes, upstreams and config, plus a reload trigger.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::config::{DiscoveryConfig, Rewrite};
use crate::control::Trigger;
use crate::shared::Shared;

/// A reload reads one small file; if it takes longer than this something is stuck.
const RELOAD_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Admin {
    shared: Arc<Shared>,
    triggers: mpsc::Sender<Trigger>,
}

/// The admin router.
pub(crate) fn router(shared: Arc<Shared>, triggers: mpsc::Sender<Trigger>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/admin/routes", get(routes))
        .route("/admin/upstreams", get(upstreams))
        .route("/admin/config", get(config))
        .route("/admin/reload", post(reload))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not_found", "message": "no such admin endpoint"})),
            )
        })
        .with_state(Admin { shared, triggers })
}

/// Serves the admin API until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    triggers: mpsc::Sender<Trigger>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared, triggers))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(a): State<Admin>) -> Response {
    if a.shared.ready.load(Ordering::SeqCst) {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready"})),
        )
            .into_response()
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        a.shared.metrics.encode(),
    )
        .into_response()
}

async fn routes(State(a): State<Admin>) -> Json<Value> {
    let snapshot = a.shared.snapshot.load();
    let routes: Vec<Value> = snapshot
        .routes
        .iter()
        .map(|r| {
            let c = &r.config;
            json!({
                "name": &*c.name,
                "host": c.host,
                "prefix": c.prefix,
                "methods": c.methods.as_ref().map(|ms| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                "upstream": &*c.upstream,
                "rewrite": match &c.rewrite { Rewrite::Keep => None, Rewrite::Prefix(p) => Some(p.as_str()) },
                "max_request_body": c.max_request_body,
            })
        })
        .collect();
    Json(json!({"generation": snapshot.generation, "routes": routes}))
}

async fn upstreams(State(a): State<Admin>) -> Json<Value> {
    let snapshot = a.shared.snapshot.load();
    let mut names: Vec<_> = snapshot.upstreams.keys().collect();
    names.sort();
    let upstreams: Vec<Value> = names
        .into_iter()
        .filter_map(|n| snapshot.upstreams.get(n))
        .map(|u| {
            let discovery = snapshot
                .config
                .upstreams
                .get(&u.name)
                .map(|c| match c.discovery {
                    DiscoveryConfig::Static(_) => "static",
                });
            let endpoints: Vec<Value> = u
                .balancer
                .endpoints()
                .iter()
                .map(|e| {
                    json!({
                        "address": e.authority.as_str(),
                        "state": "active",
                        "requests": e.stats.requests.load(Ordering::Relaxed),
                        "failures": e.stats.failures.load(Ordering::Relaxed),
                        "in_flight": e.stats.in_flight.load(Ordering::Relaxed),
                        "idle_connections": e.pool.idle(),
                        "connections_opened": e.pool.opened(),
                    })
                })
                .collect();
            let c = &u.connection;
            json!({
                "name": &*u.name,
                "discovery": discovery,
                "endpoints": endpoints,
                "connect_timeout_ms": c.connect_timeout.as_millis() as u64,
                "request_timeout_ms": c.request_timeout.as_millis() as u64,
                "idle_timeout_ms": c.idle_timeout.as_millis() as u64,
                "max_idle_per_endpoint": c.max_idle_per_endpoint,
                "connect_concurrency": c.connect_concurrency,
            })
        })
        .collect();
    Json(json!({"generation": snapshot.generation, "upstreams": upstreams}))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

async fn config(State(a): State<Admin>) -> Json<Value> {
    let snapshot = a.shared.snapshot.load();
    let status = a.shared.reload_status.lock().map(|s| s.clone()).ok();
    let c = &snapshot.config;
    Json(json!({
        "path": c.source.display().to_string(),
        "generation": snapshot.generation,
        "listen": {"proxy": c.listen.proxy.to_string(), "admin": c.listen.admin.to_string()},
        "routes": c.routes.len(),
        "upstreams": c.upstreams.len(),
        "last_reload": status.as_ref().and_then(|s| s.last.clone()),
        "last_reload_at": status.as_ref().and_then(|s| s.last_attempt).map(rfc3339),
        "last_success_at": status.as_ref().map(|s| rfc3339(s.last_success)),
    }))
}

async fn reload(State(a): State<Admin>) -> Response {
    let (tx, rx) = oneshot::channel();
    if a.triggers.send(Trigger::Admin(tx)).await.is_err() {
        return unavailable("the control loop has stopped");
    }
    match tokio::time::timeout(RELOAD_REPLY_TIMEOUT, rx).await {
        Ok(Ok(report)) if report.ok => Json(report).into_response(),
        Ok(Ok(report)) => (StatusCode::UNPROCESSABLE_ENTITY, Json(report)).into_response(),
        Ok(Err(_)) => unavailable("the control loop dropped the request"),
        Err(_) => unavailable("the reload did not finish in time"),
    }
}

fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "reload_unavailable", "message": message})),
    )
        .into_response()
}
