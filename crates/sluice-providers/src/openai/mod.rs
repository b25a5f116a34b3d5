//! OpenAI, Azure OpenAI and OpenAI-compatible servers (vLLM, Ollama, Mistral, Groq, DeepSeek...).
//!
//! The wire format is the gateway's own, so translation is light: the client's model name is swapped for
//! the vendor's id, streams ask for usage, and the vendor's body is passed through. Streams are parsed
//! event by event anyway, to meter usage and to notice a stream that breaks.
//!
//! Azure OpenAI speaks the same format behind another URL scheme and key header:
//! `POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}` with the
//! key in `api-key` (bearer tokens there are for Entra ID). The deployment is the deployment's vendor
//! `model`; Azure's `retry-after-ms` is honoured by [`crate::limits`].

mod chunk_scan;
pub(crate) mod error;
pub(crate) mod stream;

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use http::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use sluice_api::{TokenUsage, UpstreamChatRequest, UpstreamEmbeddingRequest, Usage};

use crate::client::{self, UpstreamClient, UpstreamRequest};
use crate::internals::Translator;
use crate::limits::RateLimitSnapshot;
use crate::registry::{Field, ProviderSettings, VendorSpec, WireFormat};
use crate::transport::{self, MAX_RESPONSE_BYTES, Timeouts};
use crate::{
    BoxFuture, ChatCall, ChatProvider, ChatReply, EmbedCall, EmbedReply, ProviderError, ReplyBody, UpstreamKey,
};

pub(crate) use error::error_from_response;

/// The latest generally available dated `api-version` of Azure OpenAI's inference API.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// api.openai.com.
pub(crate) static OPENAI: VendorSpec = VendorSpec {
    kind: "openai",
    name: "OpenAI",
    wire: WireFormat::OpenAi,
    default_base_url: Some("https://api.openai.com/v1"),
    api_version: Field::Refused,
    current_api_version: None,
    stream_usage: Field::Optional,
    keys: Field::Required,
    embeds: true,
    build: build_openai,
    translator,
    classify,
};

/// Azure OpenAI.
pub(crate) static AZURE: VendorSpec = VendorSpec {
    kind: "azure",
    name: "Azure OpenAI",
    wire: WireFormat::OpenAi,
    default_base_url: None,
    api_version: Field::Required,
    current_api_version: Some(AZURE_DEFAULT_API_VERSION),
    stream_usage: Field::Refused,
    keys: Field::Required,
    embeds: true,
    build: build_azure,
    translator,
    classify,
};

/// Any server that speaks OpenAI's chat completions (vLLM, Ollama, Mistral, Groq...), with or without a key.
pub(crate) static COMPATIBLE: VendorSpec = VendorSpec {
    kind: "openai_compatible",
    name: "an OpenAI-compatible server",
    wire: WireFormat::OpenAi,
    default_base_url: None,
    api_version: Field::Refused,
    current_api_version: None,
    stream_usage: Field::Optional,
    keys: Field::Optional,
    embeds: true,
    build: build_compatible,
    translator,
    classify,
};

fn build(
    client: UpstreamClient,
    settings: &ProviderSettings,
    flavor: OpenAiFlavor,
    timeouts: Timeouts,
) -> Arc<dyn ChatProvider> {
    Arc::new(OpenAiAdapter::new(
        client,
        &settings.base_url,
        flavor,
        timeouts,
        settings.stream_usage,
    ))
}

fn build_openai(client: UpstreamClient, settings: &ProviderSettings, timeouts: Timeouts) -> Arc<dyn ChatProvider> {
    build(client, settings, OpenAiFlavor::OpenAi, timeouts)
}

fn build_azure(client: UpstreamClient, settings: &ProviderSettings, timeouts: Timeouts) -> Arc<dyn ChatProvider> {
    let api_version = settings
        .api_version
        .clone()
        .unwrap_or_else(|| AZURE_DEFAULT_API_VERSION.to_owned());
    build(client, settings, OpenAiFlavor::Azure { api_version }, timeouts)
}

fn build_compatible(client: UpstreamClient, settings: &ProviderSettings, timeouts: Timeouts) -> Arc<dyn ChatProvider> {
    build(client, settings, OpenAiFlavor::Compatible, timeouts)
}

fn translator() -> Translator {
    Translator::of(stream::StreamState::default())
}

fn classify(status: u16, headers: &HeaderMap, body: &[u8], _now: SystemTime) -> (ProviderError, RateLimitSnapshot) {
    (
        error::classify(status, crate::limits::retry_after(headers), body),
        RateLimitSnapshot::from_openai_headers(headers),
    )
}

/// Which server an [`OpenAiAdapter`] talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenAiFlavor {
    /// api.openai.com: `{base_url}/chat/completions`, bearer key.
    OpenAi,
    /// Any server that speaks OpenAI's chat completions API: as OpenAI, and no header at all for an
    /// empty key (keyless local servers).
    Compatible,
    /// Azure OpenAI: per-deployment URLs with an `api-version`, key in `api-key`.
    Azure {
        /// The `api-version` query parameter.
        api_version: String,
    },
}

/// An adapter for OpenAI's chat completions API and the servers that copy it.
#[derive(Debug, Clone)]
pub struct OpenAiAdapter {
    client: UpstreamClient,
    base_url: String,
    /// The chat endpoint parsed once (the client parsed the text on every call); `None` for Azure, whose
    /// URL names the deployment, and for a base URL that does not parse, which the call then reports.
    chat_url: Option<http::Uri>,
    flavor: OpenAiFlavor,
    timeouts: Timeouts,
    request_stream_usage: bool,
}

impl OpenAiAdapter {
    /// An adapter for the API at `base_url` through the shared `client`. With `request_stream_usage`,
    /// streams ask the upstream for a final usage chunk; turn it off for servers that reject
    /// `stream_options`.
    pub fn new(
        client: UpstreamClient,
        base_url: &str,
        flavor: OpenAiFlavor,
        timeouts: Timeouts,
        request_stream_usage: bool,
    ) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        Self {
            client,
            chat_url: match flavor {
                OpenAiFlavor::Azure { .. } => None,
                _ => http::Uri::try_from(format!("{base_url}/chat/completions")).ok(),
            },
            base_url,
            flavor,
            timeouts,
            request_stream_usage,
        }
    }

    /// The URL of an operation (`chat/completions`, `embeddings`) on the vendor model (an Azure
    /// deployment) `model`.
    fn url(&self, model: &str, operation: &str) -> String {
        match &self.flavor {
            OpenAiFlavor::Azure { api_version } => format!(
                "{}/openai/deployments/{model}/{operation}?api-version={api_version}",
                self.base_url
            ),
            _ => format!("{}/{operation}", self.base_url),
        }
    }

    /// A POST to `url` with the key in the flavor's header and a JSON body.
    fn post(
        &self,
        url: http::Uri,
        key: &UpstreamKey,
        body: Vec<u8>,
        streaming: bool,
    ) -> Result<UpstreamRequest, ProviderError> {
        let mut request = self.client.post(url);
        match self.flavor {
            OpenAiFlavor::Azure { .. } => request = request.header("api-key", transport::key_header(key, "")?),
            // Keyless local servers (Ollama, vLLM without --api-key) get no Authorization header at all.
            _ if key.secret().is_empty() => {}
            _ => request = request.bearer_auth(key)?,
        }
        Ok(request
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, transport::accept(streaming))
            .body(body))
    }

    /// The HTTP request of one chat call.
    fn request(&self, call: &ChatCall<'_>) -> Result<UpstreamRequest, ProviderError> {
        let body = transport::json_body(&UpstreamChatRequest::new(
            call.request,
            call.model,
            self.request_stream_usage,
        ))?;
        let streaming = call.request.is_stream();
        match &self.chat_url {
            Some(url) => self.post(url.clone(), call.key, body, streaming),
            None => self.post(
                client::uri(&self.url(call.model, "chat/completions"))?,
                call.key,
                body,
                streaming,
            ),
        }
    }
}

impl ChatProvider for OpenAiAdapter {
    fn embed<'a>(&'a self, call: EmbedCall<'a>) -> BoxFuture<'a, Result<EmbedReply, ProviderError>> {
        Box::pin(self.embeddings(call))
    }

    fn chat<'a>(&'a self, call: ChatCall<'a>) -> BoxFuture<'a, Result<ChatReply, ProviderError>> {
        Box::pin(async move {
            let response = transport::send(self.request(&call)?, &self.timeouts).await?;
            let limits = RateLimitSnapshot::from_openai_headers(response.headers());
            if !response.status().is_success() {
                return Err(error_from_response(response, self.timeouts.idle).await);
            }
            if call.request.is_stream() {
                let events = transport::sse_events(
                    transport::body_stream(response),
                    self.timeouts.idle,
                    stream::StreamState::default(),
                );
                return Ok(ChatReply {
                    body: ReplyBody::Stream(events),
                    limits,
                    dropped: Vec::new(),
                });
            }
            let body = transport::read_body(response, self.timeouts.idle, MAX_RESPONSE_BYTES).await?;
            let usage = parse_usage(&body)?;
            Ok(ChatReply {
                body: ReplyBody::Complete { body, usage },
                limits,
                dropped: Vec::new(),
            })
        })
    }
}

impl OpenAiAdapter {
    async fn embeddings(&self, call: EmbedCall<'_>) -> Result<EmbedReply, ProviderError> {
        let body = transport::json_body(&UpstreamEmbeddingRequest::new(call.request, call.model))?;
        let request = self.post(client::uri(&self.url(call.model, "embeddings"))?, call.key, body, false)?;
        let response = transport::send(request, &self.timeouts).await?;
        let limits = RateLimitSnapshot::from_openai_headers(response.headers());
        if !response.status().is_success() {
            return Err(error_from_response(response, self.timeouts.idle).await);
        }
        let body = transport::read_body(response, self.timeouts.idle, MAX_RESPONSE_BYTES).await?;
        let usage = parse_usage(&body)?;
        Ok(EmbedReply { body, usage, limits })
    }
}

/// Reads the usage of a complete body by billing category (`prompt_tokens_details.cached_tokens` as cache
/// reads, `completion_tokens_details.reasoning_tokens` as reasoning), and checks on the way that the body is
/// JSON at all.
fn parse_usage(body: &[u8]) -> Result<Option<TokenUsage>, ProviderError> {
    #[derive(Deserialize)]
    struct UsageOnly {
        #[serde(default)]
        usage: Option<Usage>,
    }
    sluice_api::from_json_bytes::<UsageOnly>(body)
        .map(|u| u.usage.as_ref().map(TokenUsage::from_openai))
        .map_err(|e| ProviderError::Protocol {
            detail: format!("the response body is not a chat completion: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;
    use serde_json::json;
    use sluice_api::ChatCompletionRequest;

    use super::*;

    fn adapter(base_url: &str, flavor: OpenAiFlavor) -> OpenAiAdapter {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            first_byte: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        };
        OpenAiAdapter::new(
            UpstreamClient::new(crate::ClientSettings::default()).unwrap(),
            base_url,
            flavor,
            timeouts,
            true,
        )
    }

    fn built(adapter: &OpenAiAdapter, key: &str, stream: bool) -> http::Request<bytes::Bytes> {
        let request: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": stream
        }))
        .unwrap();
        let key = UpstreamKey::new("k#0", SecretString::from(key.to_owned()));
        let call = ChatCall {
            request: &request,
            model: "gpt-4o-mini-prod",
            key: &key,
            default_max_tokens: None,
            drop_unsupported: false,
        };
        adapter.request(&call).unwrap().into_http().unwrap().1
    }

    #[test]
    fn openai_requests_use_a_bearer_key_and_the_vendor_model() {
        let openai = adapter("https://api.openai.com/v1/", OpenAiFlavor::OpenAi);
        let request = built(&openai, "sk-upstream", true);
        assert_eq!(request.uri().to_string(), "https://api.openai.com/v1/chat/completions");
        assert_eq!(request.headers()["authorization"], "Bearer sk-upstream");
        assert_eq!(request.headers()[ACCEPT], "text/event-stream");
        let sent: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
        assert_eq!(sent["model"], "gpt-4o-mini-prod");
        assert_eq!(sent["stream_options"], json!({"include_usage": true}));
        let keyless = adapter("http://127.0.0.1:11434/v1", OpenAiFlavor::Compatible);
        assert!(built(&keyless, "", false).headers().get("authorization").is_none());
    }

    #[test]
    fn azure_requests_go_to_the_deployment_with_the_api_key_header() {
        let azure = adapter(
            "https://my-resource.openai.azure.com/",
            OpenAiFlavor::Azure {
                api_version: AZURE_DEFAULT_API_VERSION.to_owned(),
            },
        );
        let request = built(&azure, "azure-secret", false);
        assert_eq!(
            request.uri().to_string(),
            "https://my-resource.openai.azure.com/openai/deployments/gpt-4o-mini-prod/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(request.headers()["api-key"], "azure-secret");
        assert!(request.headers()["api-key"].is_sensitive());
        assert!(
            request.headers().get("authorization").is_none(),
            "keys do not go as bearer tokens"
        );
        assert_eq!(request.headers()[ACCEPT], "application/json");
    }

    #[test]
    fn usage_is_read_from_complete_bodies() {
        let body = br#"{"id": "c", "object": "chat.completion", "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}"#;
        assert_eq!(parse_usage(body).unwrap(), Some(TokenUsage::new(3, 4)));
        assert!(matches!(parse_usage(b"<html>"), Err(ProviderError::Protocol { .. })));
    }

    #[test]
    fn documented_usage_is_read_by_billing_category() {
        // OpenAI's documented chat completion of a reasoning model with a cached prompt prefix.
        let body = include_str!("../../../../tests/fixtures/openai/chat_completion_cached_reasoning.json");
        let usage = parse_usage(body.as_bytes()).unwrap().unwrap();
        assert_eq!(
            usage,
            TokenUsage {
                input: 86,
                cache_read: 1920,
                cache_write_5m: 0,
                cache_write_1h: 0,
                output: 300,
                reasoning: 256,
            }
        );
        assert_eq!((usage.prompt_tokens(), usage.total()), (2006, 2306));
    }
}
