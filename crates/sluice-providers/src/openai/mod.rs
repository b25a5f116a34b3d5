//! OpenAI and OpenAI-compatible servers (vLLM, Ollama, Mistral, Groq, DeepSeek...).
//!
//! The wire format is the gateway's own, so translation is light: the client's model name is swapped for
//! the vendor's id, streams ask for usage, and the vendor's body is passed through. Streams are parsed
//! event by event anyway, to meter usage and to notice a stream that breaks.

mod error;
mod stream;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use sluice_api::{UpstreamChatRequest, Usage};

use crate::limits::RateLimitSnapshot;
use crate::{BoxFuture, ChatCall, ChatProvider, ChatReply, ProviderError, ReplyBody, TimeoutPhase};

pub(crate) use error::error_from_response;

/// Which server an [`OpenAiAdapter`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiFlavor {
    /// api.openai.com.
    OpenAi,
    /// Any server that speaks OpenAI's chat completions API.
    Compatible,
}

/// How long to wait for each phase of an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection (set on the shared HTTP client; kept here to report it).
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Between two reads of a body or stream.
    pub idle: Duration,
}

/// The largest non-streaming response body accepted from an upstream.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// An adapter for OpenAI's chat completions API and the servers that copy it.
#[derive(Debug, Clone)]
pub struct OpenAiAdapter {
    client: reqwest::Client,
    endpoint: String,
    timeouts: Timeouts,
    request_stream_usage: bool,
}

impl OpenAiAdapter {
    /// An adapter calling `{base_url}/chat/completions` through the shared `client`. With
    /// `request_stream_usage`, streams ask the upstream for a final usage chunk; turn it off for servers that
    /// reject `stream_options`.
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        _flavor: OpenAiFlavor,
        timeouts: Timeouts,
        request_stream_usage: bool,
    ) -> Self {
        Self {
            client,
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            timeouts,
            request_stream_usage,
        }
    }
}

impl ChatProvider for OpenAiAdapter {
    fn chat<'a>(&'a self, call: ChatCall<'a>) -> BoxFuture<'a, Result<ChatReply, ProviderError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&UpstreamChatRequest::new(
                call.request,
                call.model,
                self.request_stream_usage,
            ))
            .map_err(|e| ProviderError::Protocol {
                detail: format!("could not serialise the request: {e}"),
            })?;
            let streaming = call.request.is_stream();
            let mut request = self.client.post(&self.endpoint);
            // Keyless local servers (Ollama, vLLM without --api-key) get no Authorization header at all.
            if !call.key.secret().is_empty() {
                request = request.bearer_auth(call.key.secret());
            }
            let request = request
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, if streaming { "text/event-stream" } else { "application/json" })
                .body(body);
            let response = tokio::time::timeout(self.timeouts.first_byte, request.send())
                .await
                .map_err(|_| ProviderError::Timeout {
                    phase: TimeoutPhase::FirstByte,
                    after: self.timeouts.first_byte,
                })?
                .map_err(|e| ProviderError::from_transport(&e, self.timeouts.connect))?;

            let limits = RateLimitSnapshot::from_openai_headers(response.headers());
            if !response.status().is_success() {
                return Err(error_from_response(response, self.timeouts.idle).await);
            }
            if streaming {
                let events = stream::events(response, self.timeouts.idle);
                return Ok(ChatReply {
                    body: ReplyBody::Stream(events),
                    limits,
                });
            }
            let body = read_body(response, self.timeouts.idle, MAX_RESPONSE_BYTES).await?;
            let usage = parse_usage(&body)?;
            Ok(ChatReply {
                body: ReplyBody::Complete { body, usage },
                limits,
            })
        })
    }
}

/// Reads the usage of a complete body, and checks on the way that the body is JSON at all.
fn parse_usage(body: &[u8]) -> Result<Option<Usage>, ProviderError> {
    #[derive(Deserialize)]
    struct UsageOnly {
        #[serde(default)]
        usage: Option<Usage>,
    }
    serde_json::from_slice::<UsageOnly>(body)
        .map(|u| u.usage)
        .map_err(|e| ProviderError::Protocol {
            detail: format!("the response body is not a chat completion: {e}"),
        })
}

/// Reads a whole body, waiting at most `idle` between reads and accepting at most `cap` bytes.
pub(crate) async fn read_body(response: reqwest::Response, idle: Duration, cap: usize) -> Result<Bytes, ProviderError> {
    let mut stream = response.bytes_stream();
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    loop {
        let next = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| ProviderError::Timeout {
                phase: TimeoutPhase::Idle,
                after: idle,
            })?;
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                return Err(ProviderError::Truncated {
                    detail: crate::error::error_chain(&e),
                });
            }
        };
        let total = first.as_ref().map_or(0, Bytes::len) + rest.len() + chunk.len();
        if total > cap {
            return Err(ProviderError::Protocol {
                detail: format!("the response body is larger than {cap} bytes"),
            });
        }
        // Most bodies arrive in one read: keep that buffer as it is instead of copying it.
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            None => rest.extend_from_slice(&chunk),
            Some(previous) => {
                rest.extend_from_slice(&previous);
                rest.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}
