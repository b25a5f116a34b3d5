//! Provider adapters: one module per vendor, each translating requests, responses, streams and errors
//! between the OpenAI wire format and the vendor's own.
//!
//! Adapters know nothing of tenants or budgets. They take one call (a request, the vendor's model id and
//! one upstream key) and return either a complete OpenAI-format body or a stream of OpenAI-format chunks,
//! plus what the vendor said about its rate limits. Failures come back as a [`ProviderError`] whose kind
//! the router acts on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use secrecy::{ExposeSecret, SecretString};
use sluice_api::{ChatCompletionRequest, EmbeddingRequest, Usage};

pub mod anthropic;
pub mod error;
pub mod gemini;
pub mod limits;
pub mod openai;
mod params;
pub mod simulated;
mod transport;

pub use anthropic::AnthropicAdapter;
pub use error::{ProviderError, TimeoutPhase};
pub use gemini::GeminiAdapter;
pub use limits::RateLimitSnapshot;
pub use openai::{AZURE_DEFAULT_API_VERSION, OpenAiAdapter, OpenAiFlavor};
pub use simulated::{Fault, SimConfig, SimStats, SimulatedAdapter, Simulator};
pub use transport::Timeouts;

/// A boxed future, as returned by [`ChatProvider::chat`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The chunks of a streamed answer. Each item is one OpenAI chunk; a stream that cannot finish cleanly
/// ends with an `Err` item, so that a cut answer never looks complete.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// One vendor's adapter.
pub trait ChatProvider: Send + Sync + 'static {
    /// Sends one chat completion upstream. A streaming request (`request.stream == true`) answers with
    /// [`ReplyBody::Stream`] once the upstream has sent its response head.
    fn chat<'a>(&'a self, call: ChatCall<'a>) -> BoxFuture<'a, Result<ChatReply, ProviderError>>;

    /// Sends one embeddings request upstream. Vendors without embeddings refuse it as invalid.
    fn embed<'a>(&'a self, call: EmbedCall<'a>) -> BoxFuture<'a, Result<EmbedReply, ProviderError>> {
        let _ = call;
        Box::pin(std::future::ready(Err(ProviderError::Rejected {
            status: 400,
            error: sluice_api::ErrorBody::new(
                "invalid_request_error",
                "This model's provider does not offer embeddings.",
                Some("model".to_owned()),
                Some("embeddings_not_supported".to_owned()),
            ),
        })))
    }
}

/// Everything an adapter needs for one embeddings call.
#[derive(Debug, Clone, Copy)]
pub struct EmbedCall<'a> {
    /// The client's request, in OpenAI's format.
    pub request: &'a EmbeddingRequest,
    /// The vendor's model id to call.
    pub model: &'a str,
    /// The key to call with.
    pub key: &'a UpstreamKey,
}

/// A successful embeddings answer.
#[derive(Debug)]
pub struct EmbedReply {
    /// The OpenAI-format JSON body.
    pub body: Bytes,
    /// Tokens read, as `prompt_tokens`, when the vendor reported them.
    pub usage: Option<Usage>,
    /// What the vendor said about the key's remaining limits.
    pub limits: RateLimitSnapshot,
}

/// One upstream API key. Its `id` names it in logs and admin views; its secret never leaves this type but
/// through [`UpstreamKey::secret`].
#[derive(Clone)]
pub struct UpstreamKey {
    id: Arc<str>,
    secret: SecretString,
}

impl UpstreamKey {
    /// A key with a display id such as `openai#0`.
    pub fn new(id: impl Into<Arc<str>>, secret: SecretString) -> Self {
        Self { id: id.into(), secret }
    }

    /// The key's display id, safe to log.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key's value, for the request header only.
    pub fn secret(&self) -> &str {
        self.secret.expose_secret()
    }
}

impl std::fmt::Debug for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Everything an adapter needs for one call.
#[derive(Debug, Clone, Copy)]
pub struct ChatCall<'a> {
    /// The client's request, in OpenAI's format.
    pub request: &'a ChatCompletionRequest,
    /// The vendor's model id to call.
    pub model: &'a str,
    /// The key to call with.
    pub key: &'a UpstreamKey,
    /// The completion cap to send when the client set none and the vendor requires one.
    pub default_max_tokens: Option<u32>,
    /// Drop client parameters the vendor cannot honour (listed in [`ChatReply::dropped`]) instead of
    /// refusing the request with a 400 naming them.
    pub drop_unsupported: bool,
}

/// A successful upstream answer.
pub struct ChatReply {
    /// The answer itself.
    pub body: ReplyBody,
    /// What the vendor said about the key's remaining limits.
    pub limits: RateLimitSnapshot,
    /// Client parameters dropped because the vendor cannot honour them (with `drop_unsupported`).
    pub dropped: Vec<String>,
}

/// A complete body or a stream.
pub enum ReplyBody {
    /// A complete `chat.completion` JSON body, as the client will receive it.
    Complete {
        /// The OpenAI-format JSON body.
        body: Bytes,
        /// The usage the vendor reported, if it did.
        usage: Option<Usage>,
    },
    /// A stream of `chat.completion.chunk`s.
    Stream(EventStream),
}

impl std::fmt::Debug for ReplyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyBody::Complete { body, usage } => f
                .debug_struct("Complete")
                .field("bytes", &body.len())
                .field("usage", usage)
                .finish(),
            ReplyBody::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// One chunk of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// The chunk's JSON, in OpenAI's `chat.completion.chunk` format, without SSE framing.
    pub data: Bytes,
    /// The usage the chunk carries, if any.
    pub usage: Option<Usage>,
    /// True for the final chunk that only carries usage (no choices). It is sent to the client only if
    /// the client asked for `stream_options.include_usage`.
    pub usage_only: bool,
    /// True when the usage was counted by the gateway because the upstream reported none.
    pub estimated: bool,
}
