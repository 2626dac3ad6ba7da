//! The JSON error body every service answers with, and extractors that use it.
//!
//! axum's own rejections are plain text; [`ApiJson`], [`ApiPath`] and [`ApiQuery`] wrap the stock
//! extractors and turn their rejections into `{"error": "<kind>", "message": "..."}`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The body of every 4xx/5xx answer: a stable machine-readable kind and a human message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable, snake_case error kind (`not_found`, `validation_error`, ...).
    pub error: String,
    /// Human-readable detail, safe to show to clients.
    pub message: String,
}

/// Builds a JSON error response with the given status, kind and message.
pub fn error_response(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: kind.to_owned(),
            message: message.into(),
        }),
    )
        .into_response()
}

/// The 500 answer: the cause is logged by the caller once and never shown to clients.
pub fn internal_error() -> Response {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal error",
    )
}

/// The 422 answer for a request that broke a business rule: kind `validation_error`.
pub fn validation_error(message: impl Into<String>) -> Response {
    error_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
        message,
    )
}

/// Logs `error` once at error level with `context` and answers the opaque 500.
pub fn logged_internal_error(error: &dyn std::fmt::Display, context: &str) -> Response {
    tracing::error!(error = %error, "{context}");
    internal_error()
}

/// Fallback handler so unknown paths answer JSON 404 like the rest of the API.
pub async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Liveness handler shared by the services: `GET /health` -> `{"status":"ok"}`.
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// A JSON body extractor whose rejections are JSON errors (400 malformed, 422 wrong shape, 415).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> Response {
    let (status, kind) = match rejection {
        JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
        JsonRejection::MissingJsonContentType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        JsonRejection::BytesRejection(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
        _ => (StatusCode::BAD_REQUEST, "invalid_body"),
    };
    error_response(status, kind, rejection.body_text())
}

/// A path extractor whose rejections (a bad UUID, say) are JSON 400s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

fn path_rejection(rejection: &PathRejection) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_path",
        rejection.body_text(),
    )
}

/// A query-string extractor whose rejections are JSON 400s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        rejection.body_text(),
    )
}

/// Reads the optional `Idempotency-Key` header; blank or non-ASCII keys count as absent.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 255)
        .map(str::to_owned)
}
