//! A small JSON-over-HTTP client on hyper-util's pooled client, with connect and request timeouts.
//!
//! Used by the saga orchestrator to call the services (through the gateway by default) and by the
//! API test suites. Non-JSON bodies come back as a JSON string so callers always get a `Value`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

/// Why a call produced no HTTP answer.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The URL or a header could not be used to build a request.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Connecting or exchanging the request failed.
    #[error("transport: {0}")]
    Transport(String),
    /// No complete answer within the request timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// An HTTP answer with its body parsed as JSON (or kept as a JSON string when it is not JSON).
#[derive(Debug, Clone)]
pub struct JsonResponse {
    /// The status code.
    pub status: StatusCode,
    /// The body.
    pub body: serde_json::Value,
}

/// A cloneable JSON client: one connection pool, fixed timeouts.
#[derive(Clone)]
pub struct JsonClient {
    client: Client<HttpConnector, Full<Bytes>>,
    request_timeout: Duration,
}

impl JsonClient {
    /// A client that gives up connecting after `connect_timeout` and on the whole call after
    /// `request_timeout`.
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            request_timeout,
        }
    }

    /// Sends `method url` with an optional JSON body and extra headers.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Result<JsonResponse, ClientError> {
        let mut builder = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
            builder = builder.header(*name, value);
        }
        let payload = match body {
            Some(v) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(
                    serde_json::to_vec(v)
                        .map_err(|e| ClientError::InvalidRequest(e.to_string()))?,
                )
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(payload))
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| ClientError::Transport(error_chain(&e)))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?
                .to_bytes();
            let body = if bytes.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
                })
            };
            Ok(JsonResponse { status, body })
        };
        tokio::time::timeout(self.request_timeout, call)
            .await
            .map_err(|_| ClientError::Timeout(self.request_timeout))?
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
