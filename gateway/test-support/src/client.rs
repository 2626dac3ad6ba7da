//! A test HTTP client: sends a request, collects the response.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

/// Request body type used by tests: in-memory or streamed from a channel.
pub type TestBody = BoxBody<Bytes, Infallible>;

/// A collected response.
#[derive(Debug)]
pub struct TestResponse {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl TestResponse {
    /// The body parsed as JSON (panics on invalid JSON: tests want to know).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header as a string, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A body fed chunk by chunk through the returned sender; closing the sender ends it.
pub fn chunked_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let s = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    (tx, BodyExt::boxed(StreamBody::new(s)))
}

/// An HTTP client for tests.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, TestBody>,
}

impl Default for Client {
    fn default() -> Self {
        Self::http1()
    }
}

impl Client {
    /// HTTP/1.1 with keep-alive.
    pub fn http1() -> Self {
        Self {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// HTTP/2 with prior knowledge (h2c).
    pub fn h2c() -> Self {
        Self {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// GET a URL.
    pub async fn get(&self, url: &str) -> TestResponse {
        self.send(Request::get(url).body(empty()).unwrap()).await
    }

    /// Sends a request with an in-memory body.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(full(body)).unwrap()).await
    }

    /// Sends a request and collects the response, panicking on transport errors.
    pub async fn send(&self, req: Request<TestBody>) -> TestResponse {
        let uri = req.uri().clone();
        let response = crate::within(&format!("response from {uri}"), self.inner.request(req))
            .await
            .unwrap_or_else(|e| panic!("request to {uri} failed: {e:?}"));
        let (parts, body) = response.into_parts();
        let body = crate::within("response body", body.collect())
            .await
            .expect("body")
            .to_bytes();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// Sends a request and returns the response with its body still streaming.
    pub async fn send_streaming(
        &self,
        req: Request<TestBody>,
    ) -> http::Response<hyper::body::Incoming> {
        crate::within("response head", self.inner.request(req))
            .await
            .expect("request")
    }
}

/// An empty body.
pub fn empty() -> TestBody {
    full(Bytes::new())
}

/// An in-memory body.
pub fn full(b: impl Into<Bytes>) -> TestBody {
    BodyExt::boxed(Full::new(b.into()))
}
