//! HTTP handlers: `GET /notifications?order_id=&limit=`, health.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use services_common::ApiQuery;

use crate::error::ApiError;
use crate::AppState;

/// Default and largest page size.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// Query of `GET /notifications`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    order_id: Option<String>,
    limit: Option<i64>,
}

/// `GET /notifications?order_id=`: oldest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit must be 1..={MAX_LIMIT}"
        )));
    }
    let items = state.store.list(q.order_id.as_deref(), limit).await?;
    Ok(Json(serde_json::json!({ "notifications": items })))
}
