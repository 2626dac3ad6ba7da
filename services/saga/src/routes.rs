//! HTTP handlers: `POST /saga/execute`, `GET /saga/{id}`, health.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use services_common::http_error::idempotency_key;
use services_common::{ApiJson, ApiPath};
use uuid::Uuid;

use crate::domain::{Saga, SagaRequest};
use crate::error::ApiError;
use crate::AppState;

/// `POST /saga/execute`: runs the saga and answers with its outcome (200 for every outcome;
/// `status` says which). An `Idempotency-Key` seen before answers that saga instead of starting
/// another. The saga runs in its own task, so a client hanging up does not stop it
/// half way.
pub(crate) async fn execute(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SagaRequest>,
) -> Result<Json<Saga>, ApiError> {
    let request = body.validate().map_err(ApiError::Validation)?;
    let orchestrator = state.orchestrator.clone();
    let key = idempotency_key(&headers);
    let saga =
        tokio::spawn(async move { orchestrator.execute_once(request, key.as_deref()).await })
            .await
            .map_err(|e| ApiError::Task(e.to_string()))??;
    Ok(Json(saga))
}

/// `GET /saga/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Saga>, ApiError> {
    state
        .orchestrator
        .store()
        .get(id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound)
}
