//! Prompt templates as endpoints: list, describe, run, and the OpenAPI document of them all.
//!
//! Running a prompt renders it into a chat completion request and sends that down the same path as
//! `POST /v1/chat/completions`, so limits, routing, failover and usage apply alike.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_prompts::{Lifecycle, Prompt, PromptRegistry, RenderError, Status};

use sluice_pipeline::{Access, Chat, Permission, Principal, Service, TenantRefusal};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiCaller, ApiJson};

/// The body of `POST /v1/prompts/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PromptCall {
    #[serde(default)]
    variables: Map<String, Value>,
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<sluice_api::StreamOptions>,
}

pub(crate) fn registry(state: &AppState) -> Arc<PromptRegistry> {
    state
        .prompts()
        .map_or_else(|| Arc::new(PromptRegistry::empty()), |watcher| watcher.current())
}

/// Who may call the prompt `name`, as the pipeline reads it (an unknown name is open, so that a name
/// off a tenant's list is refused whether it exists or not).
pub(crate) fn access_of(registry: &PromptRegistry, name: &str) -> Access {
    registry.access(name).unwrap_or_default()
}

/// What `principal` may do with the prompt `name`: a configured key may call every prompt.
fn permission(principal: &Principal, registry: &PromptRegistry, name: &str) -> Permission {
    principal.tenant.as_ref().map_or(Permission::Call, |tenant| {
        tenant.permission(&Service::prompt(name), access_of(registry, name))
    })
}

/// Whether `principal` may call the prompt `name`: what lists and the OpenAPI document show.
fn allowed(principal: &Principal, registry: &PromptRegistry, name: &str) -> bool {
    permission(principal, registry, name) == Permission::Call
}

/// A 403 when `principal` may neither call nor ask for the prompt `name`; one it may ask for is described.
fn not_visible(principal: &Principal, registry: &PromptRegistry, name: &str) -> Option<ApiError> {
    let tenant = principal.tenant.as_ref()?;
    let permission = permission(principal, registry, name);
    (permission == Permission::None).then(|| {
        let refusal = TenantRefusal::NotAllowed {
            service: Service::prompt(name),
            permission,
        };
        ApiError::from_tenant(&refusal, tenant.name(), "")
    })
}

/// A 404 for `name`, listing only the prompts `principal` may use.
fn not_found(name: &str, version: Option<u32>, registry: &PromptRegistry, principal: &Principal) -> ApiError {
    let (message, code) = match (version, registry.get(name, None)) {
        (Some(version), Some(latest)) => {
            let versions = registry
                .list()
                .into_iter()
                .find(|p| p.name == name)
                .map(|p| p.versions.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
                .unwrap_or_else(|| latest.version().to_string());
            (
                format!("The prompt `{name}` has no version {version}. Available versions: {versions}."),
                "prompt_version_not_found",
            )
        }
        _ => {
            let names: Vec<String> = registry
                .list()
                .into_iter()
                .map(|p| p.name)
                .filter(|p| allowed(principal, registry, p))
                .collect();
            (
                format!(
                    "The prompt `{name}` does not exist. Available prompts: {}.",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
                "prompt_not_found",
            )
        }
    };
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        message,
        None,
        Some(code),
    )
}

pub(crate) async fn list(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    let registry = registry(&state);
    let prompts: Vec<_> = registry
        .list()
        .into_iter()
        .filter(|p| allowed(&principal, &registry, &p.name))
        .collect();
    axum::Json(json!({"object": "list", "data": prompts})).into_response()
}

/// Query of `GET /v1/prompts/{name}`: a version to describe instead of the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DescribeQuery {
    #[serde(default)]
    version: Option<u32>,
}

pub(crate) async fn describe(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    query: Result<Query<DescribeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid_request(format!("Invalid query: {}", e.body_text()), Some("version")))?;
    let registry = registry(&state);
    if let Some(refusal) = not_visible(&principal, &registry, &name) {
        return Err(refusal);
    }
    let prompt = registry
        .get(&name, query.version)
        .ok_or_else(|| not_found(&name, query.version, &registry, &principal))?;
    let versions: Vec<Value> = registry.versions(&name).map(version_status).collect();
    let mut response = axum::Json(json!({
        "name": prompt.name(),
        "version": prompt.version(),
        "status": prompt.status(),
        "sunset": prompt.lifecycle().sunset,
        "replaced_by": prompt.lifecycle().replaced_by,
        "versions": versions,
        "access": registry.access(&name),
        "description": prompt.description(),
        "model": prompt.model(),
        "parameters": prompt.parameters(),
        "variables": prompt.variables_schema(),
    }))
    .into_response();
    lifecycle_headers(prompt.lifecycle(), response.headers_mut());
    Ok(response)
}

/// One version's number and lifecycle, as descriptions and the catalog list them.
pub(crate) fn version_status(prompt: &Prompt) -> Value {
    let lifecycle = prompt.lifecycle();
    json!({
        "version": prompt.version(),
        "status": lifecycle.status,
        "sunset": lifecycle.sunset,
        "replaced_by": lifecycle.replaced_by,
    })
}

pub(crate) async fn run(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    Path(name): Path<String>,
    ApiJson(call): ApiJson<PromptCall>,
) -> Result<Response, ApiError> {
    let registry = registry(&state);
    // Admission first, so that a name off a tenant's list is refused whether it exists or not.
    let access = access_of(&registry, &name);
    let model = registry.get(&name, None).map_or("", |p| p.model());
    state
        .pipeline()
        .admit_prompt(&caller, &name, model, access)
        .map_err(|refused| ApiError::from_pipeline(&refused.record(403)))?;
    let prompt = registry
        .get(&name, call.version)
        .ok_or_else(|| not_found(&name, call.version, &registry, &caller.principal))?;
    if prompt.status() == Status::Retired {
        return Err(retired(prompt));
    }
    let mut request = prompt.render(&call.variables).map_err(|err| render_error(&err))?;
    request.stream = call.stream;
    request.stream_options = call.stream_options;
    tracing::info!(
        prompt = prompt.name(),
        prompt_version = prompt.version(),
        "prompt rendered"
    );
    let caller = caller.with_prompt(prompt.name(), prompt.version());
    let forward_usage = request.wants_stream_usage();
    let mut response = crate::answer::run(&state, &caller, &Chat::new(request), forward_usage).await;
    lifecycle_headers(prompt.lifecycle(), response.headers_mut());
    Ok(response)
}

/// A deprecated version's answer says so: `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a `Link`
/// to its successor; an active one with an announced sunset carries `Sunset` alone.
fn lifecycle_headers(lifecycle: &Lifecycle, headers: &mut HeaderMap) {
    let values = [
        ("deprecation", lifecycle.deprecation_header()),
        ("sunset", lifecycle.sunset_header()),
        (
            "link",
            lifecycle.deprecation_header().and_then(|_| lifecycle.link_header()),
        ),
    ];
    for (name, value) in values {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, value);
        }
    }
}

/// A 410 for a retired version, naming its replacement.
fn retired(prompt: &Prompt) -> ApiError {
    let lifecycle = prompt.lifecycle();
    let instead = lifecycle.replaced_by.as_ref().map_or_else(
        || " It has no replacement.".to_owned(),
        |r| format!(" Use {r} instead."),
    );
    ApiError::new(
        StatusCode::GONE,
        "invalid_request_error",
        format!(
            "The prompt `{}` version {} is retired.{instead}",
            prompt.name(),
            prompt.version()
        ),
        Some("version"),
        Some("prompt_version_retired"),
    )
}

fn render_error(err: &RenderError) -> ApiError {
    let param = err.variable().map(|name| format!("variables.{name}"));
    ApiError::invalid_request(err.to_string(), param.as_deref())
}

pub(crate) async fn openapi(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    let registry = registry(&state);
    axum::Json(registry.openapi_of(None, |name| allowed(&principal, &registry, name))).into_response()
}

/// `GET /admin/prompts`: every prompt with every version loaded, its model, parameters, variables and
/// message templates, for the console's catalog.
pub(crate) async fn catalog(State(state): State<AppState>) -> Response {
    let registry = registry(&state);
    let prompts: Vec<Value> = registry
        .list()
        .into_iter()
        .map(|summary| {
            let versions: Vec<Value> = summary
                .versions
                .iter()
                .filter_map(|v| registry.get(&summary.name, Some(*v)))
                .map(|prompt| {
                    let messages: Vec<Value> = prompt
                        .messages()
                        .iter()
                        .map(|m| json!({"role": m.role, "content": m.content}))
                        .collect();
                    json!({
                        "version": prompt.version(),
                        "status": prompt.status(),
                        "sunset": prompt.lifecycle().sunset,
                        "replaced_by": prompt.lifecycle().replaced_by,
                        "description": prompt.description(),
                        "model": prompt.model(),
                        "parameters": prompt.parameters(),
                        "variables": prompt.variables_schema(),
                        "messages": messages,
                    })
                })
                .collect();
            json!({
                "name": summary.name,
                "latest": summary.latest,
                "default": summary.default,
                "access": summary.access,
                "versions": versions,
            })
        })
        .collect();
    axum::Json(json!({"object": "list", "data": prompts})).into_response()
}
