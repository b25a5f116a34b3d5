//! Anthropic's Messages API (`POST {base_url}/v1/messages`).
//!
//! Every call is translated both ways: the client's OpenAI request to an Anthropic request ([`request`],
//! with message content in [`content`]), the answer back to a `chat.completion` ([`response`]) or to
//! `chat.completion.chunk`s ([`stream`]), and errors and rate-limit headers to the gateway's
//! classification ([`error`]). The client cannot tell, but by the text, that Anthropic answered.
//!
//! A client that speaks the Messages API itself is served by the pass-through instead (`passthrough`,
//! [`crate::MessagesPassthrough`]): its body goes byte for byte, only the model swapped.

mod content;
pub(crate) mod error;
pub(crate) mod passthrough;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod stream;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{ACCEPT, CONTENT_TYPE};

use crate::internals::{CREATED, Translator};
use crate::registry::{Field, ProviderSettings, VendorSpec, WireFormat};
use crate::transport::{self, MAX_RESPONSE_BYTES, Timeouts};
use crate::{BoxFuture, ChatCall, ChatProvider, ChatReply, ProviderError, RateLimitSnapshot, ReplyBody};

use error::{error_from_response, rate_limit_snapshot};

/// Anthropic's Messages API.
pub(crate) static ANTHROPIC: VendorSpec = VendorSpec {
    kind: "anthropic",
    name: "Anthropic",
    wire: WireFormat::Anthropic,
    default_base_url: Some(AnthropicAdapter::DEFAULT_BASE_URL),
    api_version: Field::Refused,
    current_api_version: None,
    stream_usage: Field::Refused,
    keys: Field::Required,
    embeds: false,
    build,
    translator,
    classify,
};

fn build(client: crate::UpstreamClient, settings: &ProviderSettings, timeouts: Timeouts) -> Arc<dyn ChatProvider> {
    Arc::new(AnthropicAdapter::new(client, &settings.base_url, timeouts))
}

fn translator() -> Translator {
    Translator::of(stream::StreamState::new(CREATED))
}

fn classify(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> (ProviderError, RateLimitSnapshot) {
    let retry = error::retry_after(headers, now);
    (error::classify(status, retry, body), rate_limit_snapshot(headers, now))
}

/// An adapter for Anthropic's Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicAdapter {
    client: crate::UpstreamClient,
    endpoint: String,
    timeouts: Timeouts,
}

impl AnthropicAdapter {
    /// Anthropic's own API, the usual `base_url`.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.anthropic.com";
    /// The `anthropic-version` header sent with every call: the API version the translation follows.
    pub const API_VERSION: &'static str = "2023-06-01";

    /// An adapter calling `{base_url}/v1/messages` through the shared `client`.
    pub fn new(client: crate::UpstreamClient, base_url: &str, timeouts: Timeouts) -> Self {
        Self {
            client,
            endpoint: format!("{}/v1/messages", base_url.trim_end_matches('/')),
            timeouts,
        }
    }
}

impl AnthropicAdapter {
    /// The HTTP request of one call, with the body translated to Anthropic's format, and the client
    /// parameters dropped on the way (Anthropic cannot honour them, and the deployment allows dropping).
    fn request(&self, call: &ChatCall<'_>) -> Result<(crate::client::UpstreamRequest, Vec<String>), ProviderError> {
        let translated = request::translate(call, call.drop_unsupported)?;
        let dropped = translated.dropped.iter().map(|p| (*p).to_owned()).collect();
        let body = transport::json_body(&translated.body)?;
        let request = self
            .client
            .post(crate::client::uri(&self.endpoint)?)
            .header("x-api-key", transport::key_header(call.key, "")?)
            .header("anthropic-version", Self::API_VERSION)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, transport::accept(call.request.is_stream()))
            .body(body);
        Ok((request, dropped))
    }
}

impl ChatProvider for AnthropicAdapter {
    fn messages_passthrough(&self) -> Option<&dyn crate::MessagesPassthrough> {
        Some(self)
    }

    fn chat<'a>(&'a self, call: ChatCall<'a>) -> BoxFuture<'a, Result<ChatReply, ProviderError>> {
        Box::pin(async move {
            let (request, dropped) = self.request(&call)?;
            let response = transport::send(request, &self.timeouts).await?;
            let now = SystemTime::now();
            let limits = rate_limit_snapshot(response.headers(), now);
            if !response.status().is_success() {
                return Err(error_from_response(response, self.timeouts.idle).await);
            }
            // Anthropic sends no creation time; the chunks and the completion carry the time of the answer.
            let created = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if call.request.is_stream() {
                let state = stream::StreamState::new(created);
                let events = transport::sse_events(transport::body_stream(response), self.timeouts.idle, state);
                return Ok(ChatReply {
                    body: ReplyBody::Stream(events),
                    limits,
                    dropped,
                });
            }
            let body = transport::read_body(response, self.timeouts.idle, MAX_RESPONSE_BYTES).await?;
            let (body, usage) = response::translate(&body, created)?;
            Ok(ChatReply {
                body: ReplyBody::Complete { body, usage },
                limits,
                dropped,
            })
        })
    }
}
