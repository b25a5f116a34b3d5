//! The Sluice HTTP surface: OpenAI-compatible routes, authentication, response headers and errors.
//!
//! Handlers are thin: they parse, call the router, and write the answer. Failures become OpenAI-shaped
//! errors in one place, [`error::ApiError`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router as AxumRouter;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use sluice_api::ModelList;
use sluice_budget::BudgetBackend;
use sluice_pipeline::{Authenticator, Directory, Pipeline, Principal};
use sluice_prompts::PromptWatcher;
use sluice_protocols::messages::ModelAliases;
use sluice_router::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;

pub mod admin;
mod answer;
pub mod auth;
mod catalog;
mod chat;
mod console;
mod embeddings;
pub mod error;
mod event_body;
pub mod extract;
mod failures;
mod messages;
mod prompts;
mod request_logs;
mod request_span;
mod responses;
pub mod serve;
pub mod throttle;
mod translate;

pub use error::ApiError;
pub use serve::{PeerAddr, ServeSettings, ServeStats, serve, serve_with, shutdown_signal};

/// Settings of the HTTP surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// The largest accepted request body.
    pub max_body_bytes: usize,
    /// The longest a request may take to get its response head.
    pub request_timeout: Duration,
    /// How failed authentication is throttled per client address.
    pub auth_throttle: throttle::ThrottleSettings,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Clone)]
struct StateInner {
    pipeline: Arc<Pipeline>,
    auth: Arc<dyn Authenticator>,
    settings: HttpSettings,
    models_body: Bytes,
    prompts: Option<Arc<PromptWatcher>>,
    tenancy: Option<Tenancy>,
    budgets: Arc<dyn BudgetBackend>,
    aliases: Arc<ModelAliases>,
    /// When the configuration was loaded (Unix seconds), as model lists report it.
    created: u64,
}

/// What tenant features need: the store and the key and tenant directory.
#[derive(Clone, Debug)]
pub struct Tenancy {
    /// The database.
    pub store: sluice_store::Store,
    /// Keys and tenants in memory.
    pub directory: Arc<Directory>,
}

impl AppState {
    /// State over the request `pipeline`, `auth` and, when they are on, the published `prompts` and the
    /// `tenancy` (tenants and virtual keys); `budgets` is asked for its health by `/readyz` and `/metrics`.
    pub fn new(
        pipeline: Arc<Pipeline>,
        auth: Arc<dyn Authenticator>,
        settings: HttpSettings,
        prompts: Option<Arc<PromptWatcher>>,
        tenancy: Option<Tenancy>,
        budgets: Arc<dyn BudgetBackend>,
    ) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // The model list only changes with the configuration, so it is serialised once.
        let models_body = serde_json::to_vec(&ModelList::from_names(pipeline.router().model_names(), created))
            .map(Bytes::from)
            .unwrap_or_default();
        Self {
            inner: Arc::new(StateInner {
                pipeline,
                auth,
                settings,
                models_body,
                prompts,
                tenancy,
                budgets,
                aliases: Arc::new(ModelAliases::default()),
                created,
            }),
        }
    }

    /// The same state with the Anthropic model ids the Messages API maps to configured models.
    pub fn with_model_aliases(self, aliases: ModelAliases) -> Self {
        let mut inner = (*self.inner).clone();
        inner.aliases = Arc::new(aliases);
        Self { inner: Arc::new(inner) }
    }
}

impl extract::BodyLimit for AppState {
    fn max_body_bytes(&self) -> usize {
        self.inner.settings.max_body_bytes
    }
}

impl AppState {
    pub(crate) fn router(&self) -> &Router {
        self.inner.pipeline.router()
    }

    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    pub(crate) fn auth(&self) -> &dyn Authenticator {
        self.inner.auth.as_ref()
    }

    pub(crate) fn prompts(&self) -> Option<&Arc<PromptWatcher>> {
        self.inner.prompts.as_ref()
    }

    pub(crate) fn tenancy(&self) -> Option<&Tenancy> {
        self.inner.tenancy.as_ref()
    }

    pub(crate) fn aliases(&self) -> &ModelAliases {
        &self.inner.aliases
    }

    pub(crate) fn ledger(&self) -> Option<&Arc<sluice_pipeline::Ledger>> {
        self.inner.pipeline.ledger()
    }
}

/// Builds the gateway's HTTP app.
///
/// Layers, outermost first, and what each adds:
/// 1. `SetRequestId`: takes the client's `x-request-id` or makes a UUID, so every log line and answer
///    can be tied to one request.
/// 2. `RequestSpan` (`request_span.rs`): one span per request carrying the method, path and request id,
///    around the handler; logs each answer's status and latency when its head is ready, and the caller
///    on authenticated routes. The body is not wrapped: a stream's later work keeps the span itself.
/// 3. `SetSensitiveRequestHeaders`: `Authorization` is redacted from anything the trace prints.
/// 4. `PropagateRequestId`: copies `x-request-id` onto every answer, errors included.
/// 5. `shape_errors`: answers that a layer below produced without a body (timeout, body limit, wrong
///    method) get OpenAI's error shape.
/// 6. `Timeout`: bounds the time to a response head (streams run on after it).
/// 7. `RequestBodyLimit`: refuses bodies over `max_body_bytes`, by `content-length` or while reading.
///    It is the one body limit: axum's own default (2 MiB) is turned off.
///
/// Under `/v1`, one middleware (`api_gate`) runs the throttle, then `require_key_then`, which
/// authenticates the caller and adds its [`Principal`] as an extension, then `open_trace`, which puts the
/// request in its W3C trace when spans are exported; under `/admin`, `require_admin` lets only the admin
/// key through. Before either, the throttle answers 429 to an address with too many failed
/// authentications. `/healthz`, `/readyz`, `/metrics` and the
/// console's files under `/ui` (which hold no data: the page calls `/admin` with the key it is given) are
/// public.
pub fn build_router(state: AppState) -> AxumRouter {
    let settings = state.inner.settings;
    let throttle = Arc::new(throttle::AuthThrottle::new(settings.auth_throttle));
    let api = AxumRouter::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/responses", post(responses::create).get(responses::websocket))
        .route("/v1/messages", post(messages::create))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/models", get(list_models))
        .route("/v1/prompts", get(prompts::list))
        .route("/v1/prompts/{name}", get(prompts::describe).post(prompts::run))
        .route("/v1/openapi.json", get(prompts::openapi))
        .route("/v1/usage", get(admin::usage))
        .route("/v1/catalog", get(catalog::catalog))
        .route(
            "/v1/subscriptions",
            post(catalog::subscribe).get(catalog::own_subscriptions),
        )
        .route_layer(middleware::from_fn_with_state(
            ApiGate {
                state: state.clone(),
                throttle: Arc::clone(&throttle),
            },
            api_gate,
        ));
    let admin = AxumRouter::new()
        .route("/admin/limits", get(admin_limits))
        .route("/admin/tenants", post(admin::create_tenant).get(admin::list_tenants))
        .route(
            "/admin/tenants/{name}",
            get(admin::describe_tenant).patch(admin::update_tenant),
        )
        .route(
            "/admin/tenants/{name}/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/admin/tenants/{name}/request-logs",
            get(request_logs::list).put(request_logs::set),
        )
        .route("/admin/keys/{id}", axum::routing::delete(admin::revoke_key))
        .route("/admin/spend", get(admin::spend))
        .route("/admin/failures", get(failures::recent))
        .route("/admin/prompts", get(prompts::catalog))
        .route("/admin/subscriptions", get(catalog::list_subscriptions))
        .route("/admin/subscriptions/{id}/{decision}", post(catalog::decide))
        .route("/admin/grants", get(catalog::list_grants))
        .route("/admin/tenants/{name}/grants", post(catalog::grant))
        .route(
            "/admin/tenants/{name}/grants/{service}",
            axum::routing::delete(catalog::revoke_grant),
        )
        .route("/admin/audit", get(catalog::audit_log))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin))
        .route_layer(middleware::from_fn_with_state(throttle, throttle::guard));
    let sensitive = Arc::from([header::AUTHORIZATION, header::PROXY_AUTHORIZATION]);
    let routes = AxumRouter::new()
        .merge(api)
        .merge(admin)
        .merge(console::routes())
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(fallback)
        .with_state(state.clone());
    // The layers wrap the routes once, as one service. `Router::layer` would wrap every route in each of
    // them, boxed, and a request would clone the boxed stack beneath every level it passes: about fifty
    // allocations a request.
    let layered = tower::ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
        .layer(request_span::RequestSpanLayer)
        .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(middleware::from_fn_with_state(state, shape_errors))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            settings.request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(settings.max_body_bytes))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .service(routes);
    AxumRouter::new().fallback_service(layered)
}

/// Request ids for requests that bring none: random (version 4) UUIDs from a per-thread generator.
/// tower-http's `MakeRequestUuid` asked the kernel for each (a `getrandom` system call per request); an
/// id must be unique, not secret.
#[derive(Debug, Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
        let mut text = uuid::Uuid::encode_buffer();
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
            .ok()
            .map(RequestId::new)
    }
}

/// What the `/v1` routes' middleware needs.
#[derive(Clone)]
struct ApiGate {
    state: AppState,
    throttle: Arc<throttle::AuthThrottle>,
}

/// The `/v1` routes' one middleware: the throttle, the key, then the trace. One layer rather than three:
/// each axum middleware layer clones and boxes the route beneath it for every request.
async fn api_gate(State(gate): State<ApiGate>, request: Request, next: Next) -> Response {
    throttle::guard_then(&gate.throttle, request, |request| {
        auth::require_key_then(&gate.state, request, |request| open_trace(&gate.state, request, next))
    })
    .await
}

/// Runs the request inside its trace (the client's `traceparent`, else a new trace) when the pipeline
/// exports spans: the ledger entry, the router's attempts and the upstream `traceparent` header find it.
async fn open_trace(state: &AppState, request: Request, next: Next) -> Response {
    if !state.inner.pipeline.traces() {
        return next.run(request).await;
    }
    let operation = if request.uri().path() == "/v1/embeddings" {
        "embeddings"
    } else {
        "chat"
    };
    let traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok());
    let trace = Arc::new(sluice_trace::RequestTrace::start(traceparent, operation));
    sluice_trace::scope(trace, next.run(request)).await
}

/// `GET /v1/models`: OpenAI's list, or Anthropic's when the request carries `anthropic-version` (the
/// Anthropic SDKs and Claude Code send it); only the models the caller's tenant may use.
async fn list_models(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<Principal>,
    headers: http::HeaderMap,
) -> Response {
    let pipeline = state.pipeline();
    // A tenant sees the models it may call; configured keys see every model.
    let callable = |m: &str| {
        principal.tenant.as_ref().is_none_or(|tenant| {
            let service = sluice_pipeline::Service::model(m);
            tenant.permission(&service, pipeline.model_access(m)) == sluice_pipeline::Permission::Call
        })
    };
    if headers.contains_key(&auth::ANTHROPIC_VERSION) {
        let names = state.router().model_names().filter(|m| callable(m));
        return json_response(
            StatusCode::OK,
            sluice_protocols::messages::model_list(names, state.inner.created),
        );
    }
    match principal.tenant.as_ref() {
        // Configured keys see every model: the list serialised once at start.
        None => json_response(StatusCode::OK, state.inner.models_body.clone()),
        Some(_) => {
            let names = state.router().model_names().filter(|m| callable(m));
            let list = ModelList::from_names(names, 0);
            axum::Json(list).into_response()
        }
    }
}

/// Every key's budget, cooldown and breaker state (key ids, never key values), and per provider what
/// keeps keys out of its pool: the environment variables not set and the keys the vendor refused.
async fn admin_limits(State(state): State<AppState>) -> Response {
    let mut providers = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for deployment in state.router().models().iter().flat_map(|m| m.deployments()) {
        let pool = deployment.provider();
        if seen.insert(pool.name()) {
            providers.push(serde_json::json!({
                "provider": pool.name(),
                "enabled": pool.is_enabled(),
                "missing_env": pool.missing(),
                "rejected_keys": pool.out_ids(tokio::time::Instant::now()).collect::<Vec<_>>(),
            }));
        }
    }
    axum::Json(serde_json::json!({"data": state.router().limits(), "providers": providers})).into_response()
}

/// Prometheus metrics.
async fn metrics(State(state): State<AppState>, served: Option<axum::Extension<Arc<ServeStats>>>) -> Response {
    let mut body = String::with_capacity(4096);
    sluice_router::metrics::render(state.router(), &mut body);
    if let Some(axum::Extension(stats)) = served {
        serve::render_metrics(&stats, &mut body);
    }
    {
        use std::fmt::Write;
        let (inline, offloaded) = sluice_tokens::counting_stats();
        let (hits, misses) = sluice_tokens::text_cache_stats();
        let _ = writeln!(
            body,
            "# HELP sluice_token_counts_total Inputs counted, on the request's own thread or on the bounded pool.\n\
             # TYPE sluice_token_counts_total counter\n\
             sluice_token_counts_total{{where=\"inline\"}} {inline}\n\
             sluice_token_counts_total{{where=\"offloaded\"}} {offloaded}\n\
             # HELP sluice_token_count_cache_total Texts of 256 bytes or more, found in the count cache or counted.\n\
             # TYPE sluice_token_count_cache_total counter\n\
             sluice_token_count_cache_total{{result=\"hit\"}} {hits}\n\
             sluice_token_count_cache_total{{result=\"miss\"}} {misses}"
        );
    }
    if let Some(ledger) = state.ledger() {
        use std::fmt::Write;
        let stats = ledger.writer().stats();
        for (name, kind, help, value) in [
            (
                "sluice_ledger_queue_depth",
                "gauge",
                "Usage rows waiting to be written.",
                stats.queue_depth,
            ),
            (
                "sluice_ledger_rows_written_total",
                "counter",
                "Usage rows written to the database.",
                stats.written,
            ),
            (
                "sluice_ledger_rows_spooled_total",
                "counter",
                "Usage rows spooled to the local file while the database was unreachable.",
                stats.spooled,
            ),
            (
                "sluice_ledger_spool_pending",
                "gauge",
                "Spooled usage rows not replayed yet.",
                stats.spool_pending,
            ),
            (
                "sluice_ledger_rows_replayed_total",
                "counter",
                "Spooled usage rows replayed into the database.",
                stats.replayed,
            ),
            (
                "sluice_ledger_write_errors_total",
                "counter",
                "Failed writes to the database.",
                stats.write_errors,
            ),
            (
                "sluice_ledger_database_up",
                "gauge",
                "1 when the last write reached the database.",
                u64::from(stats.database_up),
            ),
        ] {
            let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
    }
    budget_metrics(&state.inner.budgets.status(), &mut body);
    operator_metrics(state.pipeline(), &mut body);
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// What the operators' side channels did: spans exported and dropped, request logs dropped.
fn operator_metrics(pipeline: &Pipeline, body: &mut String) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering;
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    };
    if let Some(sink) = pipeline.trace_sink() {
        let stats = sink.exporter().stats();
        counter(
            "sluice_trace_spans_exported_total",
            "Spans the OTLP collector accepted.",
            stats.exported.load(Ordering::Relaxed),
        );
        counter(
            "sluice_trace_spans_dropped_total",
            "Spans dropped: the export queue was full, or the collector refused them or could not be reached.",
            stats.dropped.load(Ordering::Relaxed),
        );
    }
    if let Some(logs) = pipeline.request_logs() {
        counter(
            "sluice_request_logs_dropped_total",
            "Request logs dropped: their queue was full or the database refused them.",
            logs.dropped(),
        );
    }
}

/// The budget backend's health: whether budgets are shared, by how many replicas, and how often they fell
/// back to local shares.
fn budget_metrics(status: &sluice_budget::BackendStatus, out: &mut String) {
    use std::fmt::Write;
    let backend = status.backend;
    for (name, kind, help, value) in [
        (
            "sluice_budgets_shared",
            "gauge",
            "1 while budgets are shared between replicas (0 for local budgets, or while the shared store is unreachable).",
            u64::from(status.shared),
        ),
        (
            "sluice_budgets_replicas",
            "gauge",
            "Replicas sharing the budgets, as last seen.",
            u64::from(status.replicas),
        ),
        (
            "sluice_budgets_fallbacks_total",
            "counter",
            "Times the shared budgets fell back to local shares because the shared store was unreachable.",
            status.fallbacks,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{backend=\"{backend}\"}} {value}"
        );
    }
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
}

/// Ready when at least one model can be served. The body also tells how budgets are kept: a replica whose
/// shared store is unreachable still serves (each limit divided by the replicas last seen), so it stays
/// ready and says so.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.router().has_enabled_model() {
        let status = state.inner.budgets.status();
        let body = serde_json::json!({
            "status": "ready",
            "budgets": {
                "backend": status.backend,
                "shared": status.shared,
                "replicas": status.replicas,
                "fallbacks": status.fallbacks,
            },
        });
        json_response(StatusCode::OK, Bytes::from(body.to_string()))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(br#"{"status":"not ready","reason":"no provider has a usable API key"}"#),
        )
    }
}

async fn fallback(request: Request) -> ApiError {
    ApiError::not_found(request.uri().path())
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Gives error answers without a JSON body OpenAI's error shape (Anthropic's for Messages API clients).
async fn shape_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let anthropic = auth::speaks_anthropic(&request);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large(state.inner.settings.max_body_bytes)
    } else {
        ApiError::from_status(status)
    };
    let (mut parts, _) = response.into_parts();
    let shaped = if anthropic {
        error.into_anthropic_response()
    } else {
        error.into_response()
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, shaped.into_body())
}
