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
use sluice_api::{ChatCompletionRequest, EmbeddingRequest, TokenUsage};

pub mod anthropic;
pub mod client;
pub mod error;
pub mod gemini;
pub mod limits;
pub mod model_field;
pub mod openai;
mod params;
pub mod passthrough;
pub mod registry;
pub mod sse;
mod sse_frames;
mod transport;

pub use anthropic::AnthropicAdapter;
pub use client::{ClientSettings, UpstreamClient};
pub use error::{ProviderError, TimeoutPhase};
pub use gemini::GeminiAdapter;
pub use limits::RateLimitSnapshot;
pub use openai::{AZURE_DEFAULT_API_VERSION, OpenAiAdapter, OpenAiFlavor};
pub use passthrough::{
    FrameStream, MessagesBody, MessagesCall, MessagesPassthrough, MessagesReply, RawFrame, TokenCount,
};
pub use registry::{Field, ProviderSettings, VENDORS, VendorSpec, WireFormat, vendor};
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

    /// The Anthropic Messages pass-through, for adapters whose upstream takes Messages bodies as they are
    /// (Anthropic's): a `/v1/messages` call goes through it byte for byte instead of being translated.
    /// `None` for the others, whose Messages calls are translated to chat completions.
    fn messages_passthrough(&self) -> Option<&dyn MessagesPassthrough> {
        None
    }

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
    /// Tokens read (as uncached input), when the vendor reported them.
    pub usage: Option<TokenUsage>,
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
        /// The usage the vendor reported, by billing category, if it did.
        usage: Option<TokenUsage>,
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
    /// The usage the chunk carries, by billing category, if any. The chunk's JSON carries the same usage
    /// in OpenAI's shape.
    pub usage: Option<TokenUsage>,
    /// True for the final chunk that only carries usage (no choices). It is sent to the client only if
    /// the client asked for `stream_options.include_usage`.
    pub usage_only: bool,
    /// True when the usage was counted by the gateway because the upstream reported none.
    pub estimated: bool,
}

/// The crate's private machinery, exposed for the fuzz targets (`fuzz/`) and the benchmarks only: the
/// SSE driver every HTTP adapter uses, the stream translator type (each vendor's is
/// [`VendorSpec::translator`]), and the pure translations of requests and complete responses. Not an
/// API: it changes with the code it exposes.
#[doc(hidden)]
pub mod internals {
    use std::collections::VecDeque;
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::Stream;
    use secrecy::SecretString;
    use sluice_api::{ChatCompletionRequest, ChatCompletionResponse, EmbeddingRequest, TokenUsage};

    use crate::params::Unsupported;
    use crate::transport::{self, Flow, SseTranslator};
    use crate::{ChatCall, EventStream, ProviderError, StreamEvent, UpstreamKey};

    /// Whether the scan that recognises an ordinary OpenAI stream chunk without deserialising it agrees with
    /// the full probe on each line of `text` (the scan may leave a chunk to the probe, never misread one),
    /// and answers the same for each line when resumed from the line before.
    pub fn openai_chunk_scan_agrees(text: &str) -> bool {
        crate::openai::stream::scan_agrees(text)
    }

    /// The Unix time the translators here report as `created`.
    pub const CREATED: u64 = 1_700_000_000;
    /// The model Gemini's translators report when the vendor names none.
    pub const GEMINI_MODEL: &str = "gemini-model";
    /// The random token Gemini's translators make ids from.
    pub const GEMINI_SEED: &str = "seed";

    /// A vendor's stream translator with a fresh state ([`crate::VendorSpec::translator`]), or the raw one
    /// that hands each event's data on as it is (to exercise the SSE parser alone).
    pub struct Translator(Inner);

    enum Inner {
        Raw,
        Vendor(Box<dyn SseTranslator>),
    }

    impl Translator {
        /// The translator of one vendor's stream state.
        pub(crate) fn of(state: impl SseTranslator) -> Self {
            Self(Inner::Vendor(Box::new(state)))
        }

        /// A translator that makes one event of each SSE event's data, unchanged, and never ends the stream.
        pub fn raw() -> Self {
            Self(Inner::Raw)
        }

        /// Translates one event's data, appending the chunks it means to `out`; true when it was the
        /// vendor's end marker.
        pub fn event(&mut self, data: String, out: &mut VecDeque<StreamEvent>) -> Result<bool, ProviderError> {
            SseTranslator::event(self, data, out).map(|flow| flow == Flow::End)
        }

        /// The connection closed without an end marker.
        pub fn close(&mut self, out: &mut VecDeque<StreamEvent>) -> Result<(), ProviderError> {
            SseTranslator::close(self, out)
        }
    }

    impl SseTranslator for Translator {
        fn event(&mut self, data: String, out: &mut VecDeque<StreamEvent>) -> Result<Flow, ProviderError> {
            match &mut self.0 {
                Inner::Raw => {
                    out.push_back(StreamEvent {
                        data: Bytes::from(data),
                        usage: None,
                        usage_only: false,
                        estimated: false,
                    });
                    Ok(Flow::Continue)
                }
                Inner::Vendor(state) => state.event(data, out),
            }
        }

        fn close(&mut self, out: &mut VecDeque<StreamEvent>) -> Result<(), ProviderError> {
            match &mut self.0 {
                Inner::Raw => Ok(()),
                Inner::Vendor(state) => state.close(out),
            }
        }
    }

    /// The adapters' stream driver: `body` through the SSE parser and `translator`, waiting at most
    /// `idle` between events.
    pub fn sse_events<S, B, E>(body: S, idle: Duration, translator: Translator) -> EventStream
    where
        S: Stream<Item = Result<B, E>> + Send + 'static,
        B: AsRef<[u8]> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        transport::sse_events(body, idle, translator)
    }

    /// What Gemini's translators are started with here.
    pub(crate) fn gemini_context() -> crate::gemini::response::Context<'static> {
        crate::gemini::response::Context {
            model: GEMINI_MODEL,
            created: CREATED,
            seed: GEMINI_SEED.to_owned(),
        }
    }

    /// The Messages pass-through's stream driver: `body` cut into the vendor's SSE frames, bytes untouched,
    /// with the usage read out, waiting at most `idle` between reads.
    pub fn passthrough_frames<S, B, E>(body: S, idle: Duration) -> crate::FrameStream
    where
        S: Stream<Item = Result<B, E>> + Send + 'static,
        B: AsRef<[u8]> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        crate::anthropic::passthrough::frames(body, idle)
    }

    /// A complete Anthropic Messages body as the OpenAI body the client gets and the usage by billing
    /// category.
    pub fn anthropic_response(body: &[u8]) -> Result<(Bytes, Option<TokenUsage>), ProviderError> {
        crate::anthropic::response::translate(body, CREATED)
    }

    /// A complete Gemini `GenerateContentResponse` as the OpenAI completion the client gets and the usage
    /// by billing category.
    pub fn gemini_response(body: &[u8]) -> Result<(ChatCompletionResponse, Option<TokenUsage>), ProviderError> {
        crate::gemini::response::translate(body, &gemini_context())
    }

    /// The body the Anthropic adapter sends for `request`.
    pub fn anthropic_request(
        request: &ChatCompletionRequest,
        model: &str,
        default_max_tokens: Option<u32>,
        drop_unsupported: bool,
    ) -> Result<Vec<u8>, ProviderError> {
        let key = UpstreamKey::new("internals#0", SecretString::from(String::new()));
        let call = ChatCall {
            request,
            model,
            key: &key,
            default_max_tokens,
            drop_unsupported,
        };
        let translated = crate::anthropic::request::translate(&call, drop_unsupported)?;
        transport::json_body(&translated.body)
    }

    /// The body the Gemini adapter sends for `request`.
    pub fn gemini_request(
        request: &ChatCompletionRequest,
        default_max_tokens: Option<u32>,
        drop_unsupported: bool,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut unsupported = Unsupported::new("Gemini", drop_unsupported);
        unsupported.check_extra(request, crate::gemini::TRANSLATED, crate::gemini::IGNORED)?;
        let translated = crate::gemini::request::translate(request, default_max_tokens)?;
        transport::json_body(&translated)
    }

    /// The `batchEmbedContents` body the Gemini adapter sends for `request` on `model` (`models/...`).
    pub fn gemini_embed_request(request: &EmbeddingRequest, model: &str) -> Result<Vec<u8>, ProviderError> {
        crate::gemini::embed::translate(request, model)
    }
}
