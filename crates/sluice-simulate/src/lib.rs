//! The simulated vendor: the [`Simulator`] (deterministic answers, per-key limits, faults, stats), its
//! in-process adapter ([`SimulatedAdapter`], `kind = "simulated"` in the configuration), and its HTTP faces,
//! served by `sluice simulate --vendor <kind>` for any vendor of the registry ([`vendor`]).
//!
//! The simulator sits behind each face; the face speaks one vendor's wire format, checks what that vendor
//! checks, and renders the simulator's answers, refusals and streams as that vendor would:
//!
//! - [`openai`]: `POST /v1/chat/completions` (and `/chat/completions`), `GET /v1/models`.
//! - [`anthropic`]: `POST /v1/messages` with `x-api-key` and `anthropic-version`.
//! - [`gemini`]: `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse` with
//!   `x-goog-api-key`.
//!
//! Every face reports usage by the simulator's billing rules ([`bill`]: automatic prefix caching for
//! OpenAI and Gemini, `cache_control` breakpoints for Anthropic, reasoning for o-series and thinking
//! models) and serves `GET /sim/stats` (the simulator's [`SimStats`] with each key's bill, for tests and
//! drills) and `GET /healthz`. A request a face refuses as invalid is counted in [`SimStats::invalid_requests`], so a
//! test driving a gateway can assert that none of its translations tripped the vendor's validation.

mod adapter;
pub mod anthropic;
pub mod bill;
mod config;
mod conversation;
pub mod gemini;
mod limiter;
pub mod openai;
mod render;
pub mod reply;
mod simulator;
mod stats;
mod text;

pub use adapter::SimulatedAdapter;
pub use config::{Fault, SimConfig};
pub use conversation::{
    SimBreakpoint, SimCacheTtl, SimCaching, SimCallMade, SimRequest, SimRole, SimTool, SimToolChoice, SimTurn,
    openai_reasons,
};
pub use limiter::{LimitState, SimLimits};
pub use reply::{SimFinish, SimReply, SimToolCall};
pub use simulator::{Paced, SimAnswer, SimFrame, SimRejection, Simulator};
pub use stats::{KeyStats, SimStats};

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, header};
use sluice_providers::VendorSpec;
pub use sluice_providers::WireFormat;

/// The vendor of the registry named `kind`, for `sluice simulate --vendor`; the error lists the known kinds.
pub fn vendor(kind: &str) -> Result<&'static VendorSpec, String> {
    sluice_providers::vendor(kind.trim()).ok_or_else(|| {
        let kinds: Vec<&str> = sluice_providers::VENDORS.iter().map(|v| v.kind).collect();
        format!("unknown vendor `{kind}`: expected one of {}", kinds.join(", "))
    })
}

/// The largest request body a face reads: Anthropic's documented limit for the Messages API.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The simulated vendor's HTTP app speaking wire format `wire`, plus `GET /sim/stats` and `GET /healthz`.
/// Every vendor of the registry ([`sluice_providers::VENDORS`]) is simulated by the face of its
/// [`VendorSpec::wire`]: OpenAI's face also takes Azure's URLs and `api-key` header.
pub fn router(sim: Arc<Simulator>, wire: WireFormat) -> Router {
    let routes = match wire {
        WireFormat::OpenAi => openai::routes(),
        WireFormat::Anthropic => anthropic::routes(),
        WireFormat::Gemini => gemini::routes(),
    };
    routes
        .route("/sim/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(sim)
}

async fn stats(State(sim): State<Arc<Simulator>>) -> Response {
    axum::Json(sim.stats()).into_response()
}

// === Shared by the faces ===

/// What every face and the in-process adapter do before answering an admitted request: never answer
/// under the `hang` fault, else wait the configured latency. No latency means no timer at all: tokio fires
/// even a zero sleep on its timer's next millisecond tick, which held every answer for up to two.
pub(crate) async fn before_answer(sim: &Simulator) {
    let config = sim.config();
    if config.fault == Some(Fault::Hang) {
        std::future::pending::<()>().await;
    }
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
}

/// A request header as text.
pub(crate) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// One SSE event: an optional `event:` line and a `data:` line, ended by `separator`.
pub(crate) fn sse_event(event: Option<&str>, data: &[u8], separator: &str) -> Bytes {
    let mut frame = Vec::with_capacity(data.len() + 32);
    if let Some(event) = event {
        frame.extend_from_slice(b"event: ");
        frame.extend_from_slice(event.as_bytes());
        frame.extend_from_slice(separator.get(..separator.len() / 2).unwrap_or("\n").as_bytes());
    }
    frame.extend_from_slice(b"data: ");
    frame.extend_from_slice(data);
    frame.extend_from_slice(separator.as_bytes());
    frame.into()
}

/// A streamed response of `answer`'s already framed `events` (each with the visible tokens generated once
/// it is sent), paced, faulted and billed by the simulator: a malformed step sends `malformed`, a reset
/// breaks the connection, and `tail` (OpenAI's `[DONE]`) follows the events.
pub(crate) fn paced_sse(
    sim: &Arc<Simulator>,
    answer: &SimAnswer,
    events: Vec<(Bytes, u64)>,
    malformed: &'static [u8],
    tail: Option<&'static [u8]>,
) -> Response {
    let body = sim
        .paced(answer, events)
        .map(move |step| match step {
            Paced::Event(frame) => Ok(frame),
            Paced::Malformed => Ok(Bytes::from_static(malformed)),
            Paced::Reset => Err(std::io::Error::other("simulated connection reset")),
        })
        .chain(futures_util::stream::iter(tail.map(|t| Ok(Bytes::from_static(t)))));
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: http::StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Whole seconds, rounded up, at least one: a client retrying after them must not be early.
pub(crate) fn whole_seconds(after: std::time::Duration) -> u64 {
    (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1)
}

/// Inserts `(name, value)` headers, skipping any that is not a valid header.
pub(crate) fn add_headers<'a>(out: &mut HeaderMap, headers: impl IntoIterator<Item = (&'a str, String)>) {
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_vendor_can_be_named() {
        for spec in sluice_providers::VENDORS {
            assert_eq!(vendor(spec.kind), Ok(*spec));
        }
        let unknown = vendor("bedrock").unwrap_err();
        assert!(
            unknown.contains("openai, azure, anthropic, gemini, openai_compatible"),
            "{unknown}"
        );
    }

    #[test]
    fn sse_events_are_framed() {
        assert_eq!(
            sse_event(Some("ping"), br#"{"type": "ping"}"#, "\n\n"),
            Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")
        );
        assert_eq!(
            sse_event(None, b"{}", "\r\n\r\n"),
            Bytes::from_static(b"data: {}\r\n\r\n")
        );
        assert_eq!(whole_seconds(std::time::Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(std::time::Duration::ZERO), 1);
    }

    /// Real time: paused time completes a zero sleep at once, where the real timer waits for its tick.
    #[tokio::test]
    async fn no_latency_answers_without_a_timer() {
        use futures_util::FutureExt;

        let prompt = Simulator::new(SimConfig::default());
        assert!(before_answer(&prompt).now_or_never().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_set_latency_is_waited() {
        use futures_util::FutureExt;

        let slow = Simulator::new(SimConfig {
            latency: std::time::Duration::from_millis(5),
            ..SimConfig::default()
        });
        let start = tokio::time::Instant::now();
        assert!(before_answer(&slow).now_or_never().is_none());
        before_answer(&slow).await;
        assert_eq!(start.elapsed(), std::time::Duration::from_millis(5));
    }
}
