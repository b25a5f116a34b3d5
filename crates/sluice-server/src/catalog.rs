//! The catalog and its access: `GET /v1/catalog` (every model and prompt, and what the calling tenant may
//! do with each), subscription requests by tenants, and the admins' side: decisions, grants and the audit
//! log. Who may call what is decided in the pipeline ([`sluice_pipeline::access`]); this module reads and
//! writes the store and renders.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_pipeline::{Access, Permission, Principal, Service, ServiceKind, TenantRefusal};
use sluice_store::{AuditQuery, StoreError, SubscriptionStatus};

use crate::admin::{audit, store_error, tenancy};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::prompts::{access_of, registry, version_status};
use crate::{AppState, Tenancy};

/// What `principal` may do with `service` of `access`: a configured key may call everything.
fn permission(principal: &Principal, service: &Service, access: Access) -> Permission {
    principal
        .tenant
        .as_ref()
        .map_or(Permission::Call, |tenant| tenant.permission(service, access))
}

/// Adds `permission` (and the pending request's id) to a catalog entry.
fn with_permission(mut entry: Value, permission: &Permission) -> Value {
    let (name, subscription) = match permission {
        Permission::Call => ("call", None),
        Permission::Request => ("request", None),
        Permission::Pending { subscription } => ("pending", Some(subscription.as_str())),
        Permission::None => ("none", None),
    };
    entry["permission"] = json!(name);
    if let Some(id) = subscription {
        entry["subscription"] = json!(id);
    }
    entry
}

/// `GET /v1/catalog`: every model and prompt with its description, access and (for prompts) versions
/// with their lifecycle, and what the caller may do with each: `call`, `request`, `pending` (a request
/// waits for an admin) or `none`.
pub(crate) async fn catalog(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    let mut data = Vec::new();
    for model in state.router().model_names() {
        let policy = state.pipeline().model_policy(model);
        let service = Service::model(model);
        let entry = json!({
            "service": service,
            "kind": "model",
            "name": model,
            "description": policy.description,
            "access": policy.access,
        });
        data.push(with_permission(entry, &permission(&principal, &service, policy.access)));
    }
    let registry = registry(&state);
    for summary in registry.list() {
        let access = access_of(&registry, &summary.name);
        let service = Service::prompt(&summary.name);
        let versions: Vec<Value> = registry.versions(&summary.name).map(version_status).collect();
        let entry = json!({
            "service": service,
            "kind": "prompt",
            "name": summary.name,
            "description": summary.description,
            "model": summary.model,
            "access": access,
            "default_version": summary.default,
            "status": summary.status,
            "versions": versions,
        });
        data.push(with_permission(entry, &permission(&principal, &service, access)));
    }
    axum::Json(json!({"object": "list", "tenant": principal.tenant_name(), "data": data})).into_response()
}

/// A service named by a client: `model:NAME`, `prompt:NAME`, or a bare name that is one of the two.
fn resolve(state: &AppState, text: &str) -> Result<(Service, Access), ApiError> {
    let registry = registry(state);
    let is_model = |name: &str| state.router().model_names().any(|m| m == name);
    let is_prompt = |name: &str| registry.get(name, None).is_some();
    let service = match text.parse::<Service>() {
        Ok(service) => service,
        Err(_) => match (is_model(text), is_prompt(text)) {
            (true, false) => Service::model(text),
            (false, true) => Service::prompt(text),
            (true, true) => {
                return Err(ApiError::invalid_request(
                    format!("`{text}` is both a model and a prompt: write `model:{text}` or `prompt:{text}`."),
                    Some("service"),
                ));
            }
            (false, false) => return Err(unknown_service(text)),
        },
    };
    let access = match service.kind {
        ServiceKind::Model if is_model(&service.name) => state.pipeline().model_access(&service.name),
        ServiceKind::Prompt if is_prompt(&service.name) => access_of(&registry, &service.name),
        _ => return Err(unknown_service(text)),
    };
    Ok((service, access))
}

fn unknown_service(text: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("No model or prompt `{text}`: GET /v1/catalog lists them."),
        Some("service"),
        Some("service_not_found"),
    )
}

/// The body of `POST /v1/subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscribeBody {
    service: String,
    reason: String,
}

/// `POST /v1/subscriptions`: the caller's tenant asks for an `approval` service. 201 with the new request,
/// 200 with the one already pending; 409 when it may call the service already; 403 when it may not ask.
pub(crate) async fn subscribe(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<SubscribeBody>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let Some(tenant) = principal.tenant.as_ref() else {
        return Err(ApiError::invalid_request(
            "Subscriptions are a tenant's: call with a tenant's virtual key.",
            None,
        ));
    };
    let (service, access) = resolve(&state, &body.service)?;
    let status = match tenant.permission(&service, access) {
        Permission::Call => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "invalid_request_error",
                format!("The tenant `{}` may call `{service}` already.", tenant.name()),
                Some("service"),
                Some("already_allowed"),
            ));
        }
        Permission::None => {
            let refusal = TenantRefusal::NotAllowed {
                service,
                permission: Permission::None,
            };
            return Err(ApiError::from_tenant(&refusal, tenant.name(), ""));
        }
        Permission::Pending { .. } => StatusCode::OK,
        Permission::Request => StatusCode::CREATED,
    };
    let request = tenancy
        .store
        .request_subscription(tenant.name(), &service, &body.reason)
        .await
        .map_err(|e| store_error(&e))?;
    reload(tenancy).await;
    tracing::info!(tenant = tenant.name(), service = %service, id = %request.id, "subscription requested");
    Ok((status, axum::Json(request)).into_response())
}

/// `GET /v1/subscriptions`: the caller's tenant's requests.
pub(crate) async fn own_subscriptions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let mut all = tenancy
        .store
        .list_subscriptions(None)
        .await
        .map_err(|e| store_error(&e))?;
    all.retain(|s| s.tenant == principal.tenant_name());
    Ok(axum::Json(json!({"object": "list", "data": all})).into_response())
}

/// Query of `GET /admin/subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscriptionQuery {
    #[serde(default)]
    status: Option<SubscriptionStatus>,
}

/// `GET /admin/subscriptions[?status=pending]`: requests, oldest first.
pub(crate) async fn list_subscriptions(
    State(state): State<AppState>,
    query: Result<Query<SubscriptionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let Query(query) =
        query.map_err(|e| ApiError::invalid_request(format!("Invalid query: {}", e.body_text()), Some("status")))?;
    let found = tenancy
        .store
        .list_subscriptions(query.status)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(axum::Json(json!({"object": "list", "data": found})).into_response())
}

/// `POST /admin/subscriptions/{id}/{approve|reject}`: decides a pending request; an approval grants the
/// service, in effect here at once and on other replicas at their next access poll.
pub(crate) async fn decide(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, decision)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(ApiError::not_found(&format!("/admin/subscriptions/{id}/{decision}"))),
    };
    let actor = actor(&principal);
    let decided = tenancy
        .store
        .decide_subscription(&id, approve, &actor)
        .await
        .map_err(|e| store_error(&e))?;
    reload(tenancy).await;
    let action = if approve {
        "subscription.approve"
    } else {
        "subscription.reject"
    };
    let detail = json!({"tenant": decided.tenant, "service": decided.service, "reason": decided.reason});
    audit(tenancy, &principal, action, &id, detail).await;
    Ok(axum::Json(decided).into_response())
}

/// The body of `POST /admin/tenants/{name}/grants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantBody {
    service: String,
}

/// `POST /admin/tenants/{name}/grants`: the tenant may call the service whatever its access.
pub(crate) async fn grant(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant): Path<String>,
    ApiJson(body): ApiJson<GrantBody>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let (service, _) = resolve(&state, &body.service)?;
    let added = tenancy
        .store
        .grant(&tenant, &service, &actor(&principal))
        .await
        .map_err(|e| store_error(&e))?;
    reload(tenancy).await;
    audit(
        tenancy,
        &principal,
        "grant.create",
        &format!("{tenant}/{service}"),
        json!({"new": added}),
    )
    .await;
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok((
        status,
        axum::Json(json!({"tenant": tenant, "service": service, "granted": true})),
    )
        .into_response())
}

/// `DELETE /admin/tenants/{name}/grants/{service}`: takes a grant back.
pub(crate) async fn revoke_grant(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((tenant, service)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let service: Service = service
        .parse()
        .map_err(|e: StoreError| ApiError::invalid_request(e.to_string(), Some("service")))?;
    let removed = tenancy
        .store
        .revoke_grant(&tenant, &service)
        .await
        .map_err(|e| store_error(&e))?;
    if !removed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The tenant `{tenant}` holds no grant of `{service}`."),
            Some("service"),
            Some("grant_not_found"),
        ));
    }
    reload(tenancy).await;
    audit(
        tenancy,
        &principal,
        "grant.revoke",
        &format!("{tenant}/{service}"),
        json!({}),
    )
    .await;
    Ok(axum::Json(json!({"tenant": tenant, "service": service, "granted": false})).into_response())
}

/// `GET /admin/grants`: every grant.
pub(crate) async fn list_grants(State(state): State<AppState>) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let grants = tenancy.store.list_grants().await.map_err(|e| store_error(&e))?;
    Ok(axum::Json(json!({"object": "list", "data": grants})).into_response())
}

/// Query of `GET /admin/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    before: Option<i64>,
}

/// `GET /admin/audit[?limit=N&before=ID]`: admin actions, newest first.
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    query: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let tenancy = tenancy(&state)?;
    let Query(params) =
        query.map_err(|e| ApiError::invalid_request(format!("Invalid query: {}", e.body_text()), None))?;
    let entries = tenancy
        .store
        .audit_log(AuditQuery {
            limit: params.limit.unwrap_or(100),
            before: params.before,
        })
        .await
        .map_err(|e| store_error(&e))?;
    Ok(axum::Json(json!({"object": "list", "data": entries})).into_response())
}

/// Who acts, as the audit log and decisions record it: the admin key's id.
pub(crate) fn actor(principal: &Principal) -> String {
    principal
        .key_id
        .as_deref()
        .unwrap_or(principal.name.as_ref())
        .to_owned()
}

/// A change to access takes effect here at once; other replicas see it at their next access poll.
async fn reload(tenancy: &Tenancy) {
    if let Err(err) = tenancy.directory.reload_access().await {
        tracing::warn!(%err, "could not reload grants after a change");
    }
}
