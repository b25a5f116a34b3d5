//! `/admin/tenants/{name}/request-logs`: a tenant's opt-in request logs, their settings and the latest
//! logs. The pipeline keeps them ([`sluice_pipeline::RequestLogs`]); this is only their HTTP face.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sluice_store::{DEFAULT_RETENTION_DAYS, LogMode, LogSettings, StoreError};

use crate::AppState;
use crate::admin::{store_error, tenancy};
use crate::error::ApiError;
use crate::extract::ApiJson;

/// The most logs one page shows.
const MAX_LIMIT: u32 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsBody {
    mode: LogMode,
    #[serde(default)]
    retention_days: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    #[serde(default)]
    limit: Option<u32>,
}

/// `PUT`: `{"mode": "off" | "redacted" | "hashed", "retention_days"?: N}` (30 days by default).
pub(crate) async fn set(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<SettingsBody>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let settings = LogSettings {
        mode: body.mode,
        retention_days: body.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS),
    };
    tenancy
        .store
        .set_log_settings(&name, settings)
        .await
        .map_err(|e| store_error(&e))?;
    if let Some(logs) = state.pipeline().request_logs() {
        logs.set(&name, settings);
    }
    Ok(axum::Json(json!({"tenant": name, "settings": settings})).into_response())
}

/// `GET ?limit=N`: the settings and the latest logs (50 by default), newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    if tenancy
        .store
        .tenant(&name)
        .await
        .map_err(|e| store_error(&e))?
        .is_none()
    {
        return Err(store_error(&StoreError::TenantNotFound(name)));
    }
    let limit = page.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let settings = state
        .pipeline()
        .request_logs()
        .map(|logs| logs.settings(&name))
        .unwrap_or_default();
    let logs = tenancy
        .store
        .request_logs(&name, limit)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(axum::Json(json!({"tenant": name, "settings": settings, "data": logs})).into_response())
}
