//! Google Gemini (the Gemini API at generativelanguage.googleapis.com), translated to and from OpenAI's
//! chat completions.
//!
//! - [`request`]: an OpenAI request becomes a `GenerateContentRequest` (`systemInstruction`, `contents` with
//!   roles `user`/`model`, `generationConfig`, `tools`, `toolConfig`).
//! - [`response`]: a `GenerateContentResponse` becomes a `chat.completion`.
//! - [`stream`]: each SSE event of `streamGenerateContent?alt=sse` (one `GenerateContentResponse`) becomes
//!   zero or more `chat.completion.chunk`s, as a pure function of the event and a small state.
//! - [`error`]: Google's `{"error": {"code", "message", "status", "details"}}` becomes a [`ProviderError`].
//!
//! Wire shapes follow Google's Gemini API reference (ai.google.dev/api/generate-content and the guides on
//! function calling, thought signatures, structured output and file input).
//!
//! ## Tool call ids
//! Gemini's `functionCall` may carry an `id`, and on thinking models a `thoughtSignature` on its part that
//! must come back with the call on the next turn (Gemini 3 answers 400 without it). OpenAI clients keep
//! nothing of a tool call but its id, which they echo both on the assistant message and on the `tool`
//! message that answers it. So the id carries both, and the gateway stays stateless:
//! `call_<random>_<n>` or `gcall_<Gemini's id>`, then optionally `__ts_` and the signature in URL-safe
//! base64 without padding. Every character is in `[A-Za-z0-9_-]`, so the id stays valid for vendors that
//! restrict tool call ids. A signature makes the id long (hundreds of bytes).

mod content;
pub(crate) mod embed;
pub(crate) mod error;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod stream;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{ACCEPT, CONTENT_TYPE};

use crate::internals::Translator;
use crate::limits::RateLimitSnapshot;
use crate::params::Unsupported;
use crate::registry::{Field, ProviderSettings, VendorSpec, WireFormat};
use crate::transport::{self, MAX_RESPONSE_BYTES, Timeouts};
use crate::{BoxFuture, ChatCall, ChatProvider, ChatReply, EmbedCall, EmbedReply, ProviderError, ReplyBody};

/// Google's Gemini API.
pub(crate) static GEMINI: VendorSpec = VendorSpec {
    kind: "gemini",
    name: "Gemini",
    wire: WireFormat::Gemini,
    default_base_url: Some(DEFAULT_BASE_URL),
    api_version: Field::Refused,
    current_api_version: None,
    stream_usage: Field::Refused,
    keys: Field::Required,
    embeds: true,
    build,
    translator,
    classify,
};

fn build(client: crate::UpstreamClient, settings: &ProviderSettings, timeouts: Timeouts) -> Arc<dyn ChatProvider> {
    Arc::new(GeminiAdapter::new(client, &settings.base_url, timeouts))
}

fn translator() -> Translator {
    Translator::of(stream::StreamState::new(crate::internals::gemini_context()))
}

/// Gemini reports no limits in its headers; its limits show only as 429s.
fn classify(status: u16, headers: &HeaderMap, body: &[u8], _now: SystemTime) -> (ProviderError, RateLimitSnapshot) {
    (
        error::classify(status, crate::limits::retry_after(headers), body),
        RateLimitSnapshot::default(),
    )
}

/// Client parameters the translation reads from `extra`.
pub(crate) const TRANSLATED: &[&str] = &["seed", "presence_penalty", "frequency_penalty"];
/// Client parameters with no Gemini equivalent that change nothing in the answer, left out silently.
pub(crate) const IGNORED: &[&str] = &["parallel_tool_calls", "safety_identifier"];

/// The Gemini API's public endpoint, for configurations that give no `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// An adapter for Google's Gemini API (`generateContent` and `streamGenerateContent`).
#[derive(Debug, Clone)]
pub struct GeminiAdapter {
    client: crate::UpstreamClient,
    base_url: String,
    timeouts: Timeouts,
}

impl GeminiAdapter {
    /// An adapter calling `{base_url}/v1beta/models/{model}:generateContent` (and
    /// `:streamGenerateContent?alt=sse`) through the shared `client`, authenticated by `x-goog-api-key`.
    pub fn new(client: crate::UpstreamClient, base_url: &str, timeouts: Timeouts) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeouts,
        }
    }
}

/// The URL of one call. A model id written as `models/gemini-x` is accepted as well as `gemini-x`.
fn endpoint(base_url: &str, model: &str, streaming: bool) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    if streaming {
        format!("{base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("{base_url}/v1beta/models/{model}:generateContent")
    }
}

impl GeminiAdapter {
    /// The HTTP request of one call, with the body translated to Gemini's format, and the client
    /// parameters dropped on the way. A request Gemini cannot take is refused here, before it costs a
    /// call.
    fn request(&self, call: &ChatCall<'_>) -> Result<(crate::client::UpstreamRequest, Vec<String>), ProviderError> {
        let mut unsupported = Unsupported::new("Gemini", call.drop_unsupported);
        unsupported.check_extra(call.request, TRANSLATED, IGNORED)?;
        let dropped = unsupported.into_dropped().into_iter().map(str::to_owned).collect();
        let translated = request::translate(call.request, call.default_max_tokens)?;
        let body = transport::json_body(&translated)?;
        let streaming = call.request.is_stream();
        let request = self
            .client
            .post(crate::client::uri(&endpoint(&self.base_url, call.model, streaming))?)
            .header("x-goog-api-key", transport::key_header(call.key, "")?)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, transport::accept(streaming))
            .body(body);
        Ok((request, dropped))
    }
}

impl GeminiAdapter {
    async fn embeddings(&self, call: EmbedCall<'_>) -> Result<EmbedReply, ProviderError> {
        let model = call.model.strip_prefix("models/").unwrap_or(call.model);
        let body = embed::translate(call.request, &format!("models/{model}"))?;
        let request = self
            .client
            .post(crate::client::uri(&format!(
                "{}/v1beta/models/{model}:batchEmbedContents",
                self.base_url
            ))?)
            .header("x-goog-api-key", transport::key_header(call.key, "")?)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, transport::accept(false))
            .body(body);
        let response = transport::send(request, &self.timeouts).await?;
        if !response.status().is_success() {
            return Err(error::error_from_response(response, self.timeouts.idle).await);
        }
        let body = transport::read_body(response, self.timeouts.idle, MAX_RESPONSE_BYTES).await?;
        let (body, usage) = embed::response(&body, model)?;
        Ok(EmbedReply {
            body,
            usage,
            limits: RateLimitSnapshot::default(),
        })
    }
}

impl ChatProvider for GeminiAdapter {
    fn embed<'a>(&'a self, call: EmbedCall<'a>) -> BoxFuture<'a, Result<EmbedReply, ProviderError>> {
        Box::pin(self.embeddings(call))
    }

    fn chat<'a>(&'a self, call: ChatCall<'a>) -> BoxFuture<'a, Result<ChatReply, ProviderError>> {
        Box::pin(async move {
            let (request, dropped) = self.request(&call)?;
            let response = transport::send(request, &self.timeouts).await?;
            // Gemini reports no remaining-budget headers; its limits show only as 429s.
            let limits = RateLimitSnapshot::default();
            if !response.status().is_success() {
                return Err(error::error_from_response(response, self.timeouts.idle).await);
            }
            let context = response::Context {
                model: call.model,
                created: unix_now(),
                seed: new_seed(),
            };
            if call.request.is_stream() {
                let state = stream::StreamState::new(context);
                let events = transport::sse_events(transport::body_stream(response), self.timeouts.idle, state);
                return Ok(ChatReply {
                    body: ReplyBody::Stream(events),
                    limits,
                    dropped,
                });
            }
            let body = transport::read_body(response, self.timeouts.idle, MAX_RESPONSE_BYTES).await?;
            let (completion, usage) = response::translate(&body, &context)?;
            let body = serde_json::to_vec(&completion).map_err(|e| ProviderError::Protocol {
                detail: format!("could not serialise the completion: {e}"),
            })?;
            Ok(ChatReply {
                body: ReplyBody::Complete {
                    body: body.into(),
                    usage,
                },
                limits,
                dropped,
            })
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random token for the ids of one answer (Gemini gives tool calls no id of their own).
fn new_seed() -> String {
    std::iter::repeat_with(fastrand::alphanumeric).take(16).collect()
}

// === tool call ids ===

const GEMINI_ID_PREFIX: &str = "gcall_";
const SIGNATURE_MARK: &str = "__ts_";

/// The OpenAI id of the `n`th tool call of an answer.
pub(crate) fn encode_tool_call_id(gemini_id: Option<&str>, seed: &str, n: usize, signature: Option<&str>) -> String {
    let mut id = match gemini_id {
        Some(gemini_id) => format!("{GEMINI_ID_PREFIX}{gemini_id}"),
        None => format!("call_{seed}_{n}"),
    };
    if let Some(signature) = signature.filter(|s| !s.is_empty()) {
        id.push_str(SIGNATURE_MARK);
        id.extend(signature.chars().filter_map(|c| match c {
            '+' => Some('-'),
            '/' => Some('_'),
            '=' => None,
            other => Some(other),
        }));
    }
    id
}

/// What a tool call id carries back to Gemini.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DecodedId<'a> {
    /// The id Gemini gave the call, if it gave one.
    pub(crate) gemini_id: Option<&'a str>,
    /// The call's thought signature, in standard base64.
    pub(crate) signature: Option<String>,
}

/// Reads an id made by [`encode_tool_call_id`]. Ids from elsewhere (another vendor, a client) carry neither.
pub(crate) fn decode_tool_call_id(id: &str) -> DecodedId<'_> {
    let (head, signature) = match id.split_once(SIGNATURE_MARK) {
        Some((head, signature)) if !signature.is_empty() => {
            let mut standard: String = signature
                .chars()
                .map(|c| match c {
                    '-' => '+',
                    '_' => '/',
                    other => other,
                })
                .collect();
            while !standard.len().is_multiple_of(4) {
                standard.push('=');
            }
            (head, Some(standard))
        }
        _ => (id, None),
    };
    DecodedId {
        gemini_id: head.strip_prefix(GEMINI_ID_PREFIX).filter(|g| !g.is_empty()),
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_to_the_documented_endpoints_with_the_key_header() {
        use std::time::Duration;

        use secrecy::SecretString;
        use sluice_api::ChatCompletionRequest;

        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = "https://generativelanguage.googleapis.com";
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            first_byte: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        };
        let adapter = GeminiAdapter::new(
            crate::UpstreamClient::new(crate::ClientSettings::default()).unwrap(),
            &format!("{base}/"),
            timeouts,
        );
        let key = crate::UpstreamKey::new("g#0", SecretString::from("AIza-test".to_owned()));
        for (streaming, url) in [
            (false, format!("{base}/v1beta/models/gemini-2.5-flash:generateContent")),
            (
                true,
                format!("{base}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
            ),
        ] {
            assert_eq!(endpoint(base, "models/gemini-2.5-flash", streaming), url);
            assert_eq!(endpoint(base, "gemini-2.5-flash", streaming), url);
            let request: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
                "model": "g", "messages": [{"role": "user", "content": "hi"}], "stream": streaming
            }))
            .unwrap();
            let call = ChatCall {
                request: &request,
                model: "gemini-2.5-flash",
                key: &key,
                default_max_tokens: None,
                drop_unsupported: false,
            };
            let built = adapter.request(&call).unwrap().0.into_http().unwrap().1;
            assert_eq!(built.method(), http::Method::POST);
            assert_eq!(built.uri().to_string(), url);
            assert_eq!(built.headers()["x-goog-api-key"], "AIza-test");
            assert!(built.headers()["x-goog-api-key"].is_sensitive());
            assert!(built.headers().get(http::header::AUTHORIZATION).is_none());
            assert_eq!(built.headers()[CONTENT_TYPE], "application/json");
            assert_eq!(built.headers()[ACCEPT], transport::accept(streaming));
        }
        let bad_key = crate::UpstreamKey::new("g#1", SecretString::from("bad\nkey".to_owned()));
        let request: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
            "model": "g", "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap();
        let call = ChatCall {
            request: &request,
            model: "gemini-2.5-flash",
            key: &bad_key,
            default_max_tokens: None,
            drop_unsupported: false,
        };
        assert!(matches!(
            adapter.request(&call),
            Err(ProviderError::Authentication { .. })
        ));
    }

    #[test]
    fn tool_call_ids_carry_gemini_ids_and_signatures_both_ways() {
        let plain = encode_tool_call_id(None, "abc", 2, None);
        assert_eq!(plain, "call_abc_2");
        assert_eq!(
            decode_tool_call_id(&plain),
            DecodedId {
                gemini_id: None,
                signature: None
            }
        );

        let signature = "CiQB/dH+ti8=";
        let id = encode_tool_call_id(Some("fc-123"), "abc", 0, Some(signature));
        assert!(
            id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{id}"
        );
        assert_eq!(
            decode_tool_call_id(&id),
            DecodedId {
                gemini_id: Some("fc-123"),
                signature: Some(signature.to_owned())
            }
        );
        // A padless signature stays padless; one that needs two pad characters gets them back.
        for signature in ["AAAA", "AA==", "AAA=", "skip_thought_signature_validator"] {
            let id = encode_tool_call_id(None, "s", 0, Some(signature));
            let decoded = decode_tool_call_id(&id).signature.unwrap();
            let expected = signature.replace('_', "/");
            assert_eq!(decoded, expected);
        }
        // Foreign ids pass through as they are.
        assert_eq!(decode_tool_call_id("call_Xy12").gemini_id, None);
        assert_eq!(decode_tool_call_id("toolu_01A").signature, None);
    }
}
