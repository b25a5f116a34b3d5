//! The HTTP face of the simulated vendor, served by `sluice simulate`: OpenAI's wire format, including
//! its 429s, `retry-after` and `x-ratelimit-*` headers, plus `GET /sim/stats` for tests and drills.

use std::sync::Arc;

use axum::Router as AxumRouter;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, StatusCode, header};
use sluice_api::{ChatCompletionRequest, ModelList};
use sluice_providers::simulated::{SimFrame, SimRejection};
use sluice_providers::{Fault, Simulator};

use crate::error::{ApiError, retry_after_secs};
use crate::extract::{ApiJson, BodyLimit};

/// The simulator's state: the simulated vendor and its body limit.
#[derive(Clone, Debug)]
pub struct SimState {
    sim: Arc<Simulator>,
}

impl BodyLimit for SimState {
    fn max_body_bytes(&self) -> usize {
        32 * 1024 * 1024
    }
}

/// The simulated vendor's HTTP app.
pub fn router(sim: Arc<Simulator>) -> AxumRouter {
    AxumRouter::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/sim/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(SimState { sim })
}

async fn models() -> Response {
    axum::Json(ModelList::from_names(["sluice-sim"], 0)).into_response()
}

async fn stats(State(state): State<SimState>) -> Response {
    axum::Json(state.sim.stats()).into_response()
}

fn bearer(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

async fn chat_completions(State(state): State<SimState>, request: Request) -> Result<Response, ApiError> {
    let Some(key) = bearer(&request) else {
        return Err(ApiError::missing_key());
    };
    let ApiJson(body) =
        <ApiJson<ChatCompletionRequest> as axum::extract::FromRequest<SimState>>::from_request(request, &state).await?;
    let sim = &state.sim;
    if sim.config().fault == Some(Fault::Hang) {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(sim.config().latency).await;
    let answer = match sim.admit(&key, &body) {
        Ok(answer) => answer,
        Err(SimRejection::RateLimited {
            limit,
            retry_after,
            headers,
        }) => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                limit,
                format!(
                    "Rate limit reached for {limit} on this key (simulated). Please try again in {}ms.",
                    retry_after.as_millis()
                ),
                None,
                Some("rate_limit_exceeded"),
            );
            error.retry_after = Some(retry_after);
            let mut response = error.into_response();
            let out = response.headers_mut();
            out.insert(
                HeaderName::from_static("retry-after-ms"),
                HeaderValue::from(retry_after.as_millis() as u64),
            );
            out.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(retry_after)));
            add_headers(out, &headers);
            return Ok(response);
        }
        Err(SimRejection::ServerError) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The simulated vendor drew an error.",
                None,
                None,
            ));
        }
    };
    let mut response = if body.is_stream() {
        let frames = sim.frames(&answer, &body, body.wants_stream_usage());
        let sse = frames
            .map(|frame| match frame {
                SimFrame::Chunk { data, .. } => Ok(sse_frame(&data)),
                SimFrame::Malformed => Ok(Bytes::from_static(b"data: {\"choices\": [tru\n\n")),
                SimFrame::Reset => Err(std::io::Error::other("simulated connection reset")),
            })
            .chain(futures_util::stream::once(async {
                Ok(Bytes::from_static(b"data: [DONE]\n\n"))
            }));
        let mut response = Response::new(Body::from_stream(sse));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        response
    } else {
        axum::Json(answer.completion(&body)).into_response()
    };
    add_headers(response.headers_mut(), &answer.headers);
    Ok(response)
}

fn sse_frame(data: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(data.len() + 8);
    frame.extend_from_slice(b"data: ");
    frame.extend_from_slice(data);
    frame.extend_from_slice(b"\n\n");
    frame.into()
}

fn add_headers(out: &mut http::HeaderMap, headers: &[(&'static str, String)]) {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), value);
        }
    }
}
