//! `GET /admin/failures`: what is failing now. The last failures the pipeline kept (upstream calls and
//! error answers, with model, provider, key id, tenant, kind and status; never a key or a message), and
//! the router's counters since start, per deployment and per model.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;

pub(crate) async fn recent(State(state): State<AppState>) -> Response {
    let failures = state.pipeline().failures();
    let router = state.router();
    let deployments: Vec<_> = router
        .models()
        .iter()
        .flat_map(|route| {
            route.deployments().iter().map(move |deployment| {
                let counters = deployment.counters();
                json!({
                    "model": route.name(),
                    "provider": deployment.provider().name(),
                    "vendor_model": deployment.model(),
                    "attempts": counters.attempts.load(Ordering::Relaxed),
                    "upstream_rate_limited": counters.upstream_rate_limited.load(Ordering::Relaxed),
                    "failovers": counters.failovers.load(Ordering::Relaxed),
                })
            })
        })
        .collect();
    let models: Vec<_> = router
        .models()
        .iter()
        .map(|route| {
            let counters = route.counters();
            json!({
                "model": route.name(),
                "queue_waits": counters.queue_waits.load(Ordering::Relaxed),
                "rejections": counters.rejections.load(Ordering::Relaxed),
            })
        })
        .collect();
    axum::Json(json!({
        "data": failures.recent(),
        "capacity": failures.capacity(),
        "recorded": failures.recorded(),
        "deployments": deployments,
        "models": models,
    }))
    .into_response()
}
