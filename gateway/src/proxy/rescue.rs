//! Failures the gateway answers itself: one error type that knows its status, who is
//! to blame and whether a retry would be safe, and one function that turns it into a
//! JSON response marked with `x-gateway-error`.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use super::headers::{X_GATEWAY_ERROR, X_REQUEST_ID};
use super::ResponseBody;

/// Who caused a failure; decides logging level and, later, retry and breaker policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The request was bad or the client went away.
    Client,
    /// The gateway's own config had nothing to offer.
    Gateway,
    /// The upstream failed or was unreachable.
    Upstream,
}

/// Why the gateway answered instead of an upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches host, path and method.
    #[error("no route matches this request")]
    NoRoute,
    /// The route's upstream has no endpoint to send to.
    #[error("upstream `{0}` has no available endpoint")]
    NoEndpoint(std::sync::Arc<str>),
    /// TCP connect to the endpoint failed or timed out.
    #[error("could not connect to the upstream")]
    Connect(#[source] super::client::ClientError),
    /// No response head within the upstream's request timeout.
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    /// The upstream closed or broke the exchange.
    #[error("the upstream failed to answer")]
    UpstreamFailed(#[source] super::client::ClientError),
    /// The request body is larger than the route allows.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request head is larger than the listener allows.
    #[error("request headers exceed the limit of {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request is malformed in a way the HTTP parser let through.
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// The client stopped sending its request body for its `client_idle_timeout`.
    #[error("the client sent nothing of its request body for too long")]
    ClientTimeout,
    /// Reading the request body from the client failed midway.
    #[error("the client's request body was cut off")]
    ClientAborted(#[source] super::client::ClientError),
    /// The request's `Transfer-Encoding` is not exactly `chunked`: the gateway could
    /// not decode the rest (RFC 9112 6.1 answers 501).
    #[error("transfer codings other than chunked are not supported")]
    UnsupportedTransferCoding,
}

impl ProxyError {
    /// Stable machine-readable kind, used in the body, the marker header and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::NoEndpoint(_) => "no_endpoint",
            ProxyError::Connect(_) => "connect_failed",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamFailed(_) => "upstream_failed",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::HeadersTooLarge { .. } => "headers_too_large",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::ClientAborted(_) => "client_aborted",
            ProxyError::ClientTimeout => "client_timeout",
            ProxyError::UnsupportedTransferCoding => "unsupported_transfer_coding",
        }
    }

    /// The status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientAborted(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// Who is at fault.
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::NoRoute | ProxyError::NoEndpoint(_) => Blame::Gateway,
            ProxyError::Connect(_)
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamFailed(_) => Blame::Upstream,
            ProxyError::BodyTooLarge { .. }
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::ClientAborted(_)
            | ProxyError::ClientTimeout
            | ProxyError::UnsupportedTransferCoding => Blame::Client,
        }
    }

    /// True when the upstream cannot have seen the request, so any method may be retried.
    pub fn is_safe_to_retry(&self) -> bool {
        match self {
            ProxyError::Connect(_) | ProxyError::NoEndpoint(_) => true,
            ProxyError::NoRoute
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamFailed(_)
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::ClientAborted(_)
            | ProxyError::ClientTimeout
            | ProxyError::UnsupportedTransferCoding => false,
        }
    }
}

#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: String,
    request_id: &'a str,
}

/// The response for a gateway-made error.
pub fn respond(err: &ProxyError, request_id: &HeaderValue) -> Response<ResponseBody> {
    let body = ErrorBody {
        error: err.kind(),
        message: err.to_string(),
        request_id: request_id.to_str().unwrap_or_default(),
    };
    let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    let mut response = Response::new(ResponseBody::full(Bytes::from(json)));
    *response.status_mut() = err.status();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(X_GATEWAY_ERROR, HeaderValue::from_static(err.kind()));
    headers.insert(X_REQUEST_ID, request_id.clone());
    response
}
