//! The admin API (tenants, virtual keys, spend) and a tenant's own usage, over the store.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use http::StatusCode;
use secrecy::ExposeSecret;
use serde::{Deserialize, Deserializer};
use serde_json::json;
use sluice_store::{BudgetPeriod, GroupBy, NewTenant, SpendFilter, StoreError, TenantChange, usd_to_micros};

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::{AppState, Tenancy};
use sluice_pipeline::Principal;

pub(crate) fn tenancy(state: &AppState) -> Result<&Tenancy, ApiError> {
    state.tenancy().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "server_error",
            "This gateway runs without a store: tenants and usage are not available.",
            None,
            Some("store_disabled"),
        )
    })
}

pub(crate) fn store_error(err: &StoreError) -> ApiError {
    match err {
        StoreError::DuplicateTenant { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            err.to_string(),
            Some("name"),
            Some("tenant_exists"),
        ),
        StoreError::TenantNotFound { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            err.to_string(),
            None,
            Some("tenant_not_found"),
        ),
        StoreError::KeyNotFound { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            err.to_string(),
            None,
            Some("key_not_found"),
        ),
        StoreError::Invalid { field, .. } => ApiError::invalid_request(err.to_string(), Some(field)),
        other => {
            tracing::error!(error = %other, "store error");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "The gateway's database is unavailable; try again shortly.",
                None,
                Some("store_unavailable"),
            )
        }
    }
}

/// The body of `POST /admin/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantBody {
    name: String,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    budget_usd: Option<f64>,
    #[serde(default)]
    budget_period: Option<BudgetPeriod>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    prompts: Option<Vec<String>>,
}

pub(crate) async fn create_tenant(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TenantBody>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let budget_micros = body.budget_usd.map(budget_micros).transpose()?;
    check_models(&state, body.models.as_deref())?;
    let tenant = NewTenant {
        name: body.name,
        rpm: body.rpm,
        tpm: body.tpm,
        budget_micros,
        budget_period: body.budget_period.unwrap_or_default(),
        models: body.models,
        prompts: body.prompts,
    };
    let created = tenancy
        .store
        .create_tenant(&tenant)
        .await
        .map_err(|e| store_error(&e))?;
    refresh(tenancy).await;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

fn budget_micros(usd: f64) -> Result<i64, ApiError> {
    usd_to_micros(usd).filter(|m| *m >= 0).ok_or_else(|| {
        ApiError::invalid_request(
            "`budget_usd` must be a non-negative amount of dollars.",
            Some("budget_usd"),
        )
    })
}

/// Refuses a model list naming a model the gateway does not serve.
fn check_models(state: &AppState, models: Option<&[String]>) -> Result<(), ApiError> {
    let known: Vec<&str> = state.router().model_names().collect();
    match models.into_iter().flatten().find(|m| !known.contains(&m.as_str())) {
        None => Ok(()),
        Some(unknown) => Err(ApiError::invalid_request(
            format!(
                "`models` names `{unknown}`, which is not a configured model ({}).",
                known.join(", ")
            ),
            Some("models"),
        )),
    }
}

/// Reads a field that is present, `null` included, as `Some`: an absent field is `None` by `default`.
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The body of `PATCH /admin/tenants/{name}`: the limits to change; `null` lifts one, a field left out
/// keeps its value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantPatch {
    #[serde(default, deserialize_with = "present")]
    rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    budget_usd: Option<Option<f64>>,
    #[serde(default)]
    budget_period: Option<BudgetPeriod>,
    #[serde(default, deserialize_with = "present")]
    models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    prompts: Option<Option<Vec<String>>>,
}

pub(crate) async fn update_tenant(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<TenantPatch>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    check_models(&state, body.models.as_ref().and_then(Option::as_deref))?;
    let change = TenantChange {
        rpm: body.rpm,
        tpm: body.tpm,
        budget_micros: body.budget_usd.map(|b| b.map(budget_micros).transpose()).transpose()?,
        budget_period: body.budget_period,
        models: body.models,
        prompts: body.prompts,
    };
    let changed = tenancy
        .store
        .update_tenant(&name, &change)
        .await
        .map_err(|e| store_error(&e))?;
    refresh(tenancy).await;
    Ok(axum::Json(changed).into_response())
}

/// `GET /admin/tenants/{name}`: the tenant, its budget used this period (as the gateway enforces it), its
/// rate limit's state now and its keys with their state.
pub(crate) async fn describe_tenant(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let tenant = tenancy
        .store
        .tenant(&name)
        .await
        .map_err(|e| store_error(&e))?
        .ok_or_else(|| store_error(&StoreError::TenantNotFound(name.clone())))?;
    let now = Utc::now();
    let live = tenancy.directory.tenant(&name);
    let period_start = tenant.budget_period.start(now);
    let spent = match &live {
        Some(live) => live.spent(now),
        None => tenancy
            .store
            .tenant_spend_since(&name, period_start)
            .await
            .map_err(|e| store_error(&e))?,
    };
    let keys: Vec<_> = tenancy
        .store
        .list_keys(&name)
        .await
        .map_err(|e| store_error(&e))?
        .into_iter()
        .map(|key| {
            let state = key.state(now);
            let mut value = serde_json::to_value(key).unwrap_or_default();
            value["state"] = json!(state);
            value
        })
        .collect();
    Ok(axum::Json(json!({
        "tenant": tenant,
        "budget": {
            "budget_micros": tenant.budget_micros,
            "spent_micros": spent,
            "period": tenant.budget_period,
            "period_start": period_start,
            "resets_at": tenant.budget_period.next_reset(now),
        },
        "rate": live.and_then(|t| t.rate_view()),
        "keys": keys,
    }))
    .into_response())
}

pub(crate) async fn list_tenants(State(state): State<AppState>) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let tenants = tenancy.store.list_tenants().await.map_err(|e| store_error(&e))?;
    Ok(axum::Json(json!({"data": tenants})).into_response())
}

/// The body of `POST /admin/tenants/{name}/keys`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

pub(crate) async fn create_key(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    // The body is optional: an empty one asks for an unnamed key that never expires.
    let body: KeyBody = if body.iter().all(u8::is_ascii_whitespace) {
        KeyBody::default()
    } else {
        sluice_api::parse_json(&body).map_err(|e| ApiError::from_parse(&e))?
    };
    let created = tenancy
        .store
        .create_key(&tenant, body.name.as_deref(), body.expires_at)
        .await
        .map_err(|e| store_error(&e))?;
    refresh(tenancy).await;
    // The only time the key itself is shown.
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "id": created.id,
            "key": created.key.expose_secret(),
            "prefix": created.prefix,
            "tenant": created.tenant,
            "name": created.name,
            "created_at": created.created_at,
            "expires_at": created.expires_at,
        })),
    )
        .into_response())
}

pub(crate) async fn list_keys(State(state): State<AppState>, Path(tenant): Path<String>) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let keys = tenancy.store.list_keys(&tenant).await.map_err(|e| store_error(&e))?;
    Ok(axum::Json(json!({"data": keys})).into_response())
}

pub(crate) async fn revoke_key(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    tenancy.store.revoke_key(&id).await.map_err(|e| store_error(&e))?;
    tenancy.directory.key_revoked(&id);
    refresh(tenancy).await;
    Ok(axum::Json(json!({"id": id, "revoked": true})).into_response())
}

/// A change made through this gateway takes effect at once here; other replicas sharing its budgets are
/// told to read it, and see it at their next refresh otherwise.
async fn refresh(tenancy: &Tenancy) {
    if let Err(err) = tenancy.directory.refresh().await {
        tracing::warn!(%err, "could not refresh keys and tenants after a change");
    }
    tenancy.directory.changed();
}

/// Query of the spend endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpendQuery {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    from: Option<NaiveDate>,
    #[serde(default)]
    to: Option<NaiveDate>,
    #[serde(default)]
    group_by: Option<String>,
}

fn spend_filter(query: SpendQuery, default: GroupBy, allowed: &[&str]) -> Result<SpendFilter, ApiError> {
    let group_by = match query.group_by.as_deref() {
        None => default,
        Some(text) if allowed.contains(&text) => text
            .parse()
            .map_err(|e: StoreError| ApiError::invalid_request(e.to_string(), Some("group_by")))?,
        Some(other) => {
            return Err(ApiError::invalid_request(
                format!("`group_by` must be one of {}; got `{other}`.", allowed.join(", ")),
                Some("group_by"),
            ));
        }
    };
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from > to
    {
        return Err(ApiError::invalid_request("`from` is after `to`.", Some("from")));
    }
    Ok(SpendFilter {
        tenant: query.tenant,
        from: query.from,
        to: query.to,
        group_by,
    })
}

fn spend_query(
    query: Result<Query<SpendQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<SpendQuery, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::invalid_request(format!("Invalid query: {}", e.body_text()), None))
}

pub(crate) async fn spend(
    State(state): State<AppState>,
    query: Result<Query<SpendQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let filter = spend_filter(spend_query(query)?, GroupBy::Tenant, &["tenant", "model", "day", "key"])?;
    let rows = tenancy.store.spend(&filter).await.map_err(|e| store_error(&e))?;
    Ok(axum::Json(json!({"data": rows})).into_response())
}

/// `GET /v1/usage`: the caller's own tenant only.
pub(crate) async fn usage(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    query: Result<Query<SpendQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let mut query = spend_query(query)?;
    if query.tenant.is_some() {
        return Err(ApiError::invalid_request(
            "`tenant` is not accepted here: this endpoint shows the caller's own tenant.",
            Some("tenant"),
        ));
    }
    query.tenant = Some(principal.tenant_name().to_owned());
    let filter = spend_filter(query, GroupBy::Model, &["model", "day", "key"])?;
    let rows = tenancy.store.spend(&filter).await.map_err(|e| store_error(&e))?;
    Ok(axum::Json(json!({"tenant": principal.tenant_name(), "data": rows})).into_response())
}
