//! What the pipeline needs of one kind of request, and the kinds there are: chat completions (prompt
//! runs and the inbound protocols translated to chat included) and embeddings.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use sluice_api::{ChatCompletionRequest, EmbeddingRequest, ErrorBody};
use sluice_providers::{BoxFuture, ChatReply, MessagesBody, MessagesReply, ReplyBody, StreamEvent};
use sluice_router::{
    Attempt, ChatOperation, Completion, EmbedOperation, MessagesAnswer, MessagesOperation, ModelRoute,
    Operation as RouteOperation, RouteError, Routed, Router,
};
use sluice_tokens::Encoding;

use crate::error::PipelineError;

/// The most messages one chat request may carry. Counting and translating are linear in them, but an
/// unbounded number lets one request buy unbounded work; OpenAI's own limit is of this order.
pub const MAX_MESSAGES: usize = 2048;
/// The most inputs one embeddings request may carry: OpenAI's documented limit.
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// One kind of request as the pipeline drives it: admission, counting, the ledger entry and settling are
/// the pipeline's, the same for every operation.
pub trait Operation: Send + Sync {
    /// The model name the client asked for.
    fn model(&self) -> &str;

    /// Checks what parsing cannot: values that parse but make no sense, and bounds on the work a request
    /// may ask for. Cheap: it runs before anything else.
    fn validate(&self) -> Result<(), PipelineError>;

    /// Whether the model's `route` can serve this operation at all: checked right after the route is found,
    /// before any token is counted.
    fn admits(&self, route: &ModelRoute) -> Result<(), PipelineError> {
        let _ = route;
        Ok(())
    }

    /// The input's tokens with `encoding`. Large inputs are counted off the executor.
    fn count(&self, encoding: Encoding) -> BoxFuture<'_, u64>;

    /// What the request may generate, for reserving it.
    fn completion(&self) -> Completion;

    /// The input as a tenant's request log keeps it (JSON: the messages, or what to embed).
    fn log_input(&self) -> String {
        String::new()
    }

    /// Routes the request, appending every upstream call to `trail`.
    fn route<'a>(
        &'a self,
        router: &'a Router,
        prompt_tokens: u64,
        trail: &'a mut Vec<Attempt>,
    ) -> BoxFuture<'a, Result<Routed<ChatReply>, RouteError>>;

    /// Whether the answer `route` brought back is in the client's own protocol, passed through from a
    /// vendor that speaks it (bodies and stream frames byte for byte), rather than in chat completions.
    fn answered_natively(&self) -> bool {
        false
    }
}

// === impl Chat ===

/// A chat completion: a client's, a rendered prompt template, or an inbound protocol translated to chat.
#[derive(Debug, Clone)]
pub struct Chat {
    request: Arc<ChatCompletionRequest>,
}

impl Chat {
    /// The operation for `request`.
    pub fn new(request: ChatCompletionRequest) -> Self {
        Self {
            request: Arc::new(request),
        }
    }

    /// The request.
    pub fn request(&self) -> &ChatCompletionRequest {
        &self.request
    }
}

impl Operation for Chat {
    fn log_input(&self) -> String {
        serde_json::to_string(&self.request.messages).unwrap_or_default()
    }

    fn model(&self) -> &str {
        &self.request.model
    }

    fn validate(&self) -> Result<(), PipelineError> {
        let request = &self.request;
        if request.messages.is_empty() {
            return Err(PipelineError::invalid(
                "`messages` must contain at least one message.",
                "messages",
            ));
        }
        if request.messages.len() > MAX_MESSAGES {
            return Err(PipelineError::invalid(
                format!(
                    "`messages` has {} messages; at most {MAX_MESSAGES} are accepted.",
                    request.messages.len()
                ),
                "messages",
            ));
        }
        if request.n == Some(0) {
            return Err(PipelineError::invalid("`n` must be at least 1.", "n"));
        }
        if let Some(t) = request.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(PipelineError::invalid(
                format!("`temperature` must be between 0 and 2; got {t}."),
                "temperature",
            ));
        }
        if request.stream_options.is_some() && !request.is_stream() {
            return Err(PipelineError::invalid(
                "`stream_options` is only allowed when `stream` is true.",
                "stream_options",
            ));
        }
        Ok(())
    }

    fn count(&self, encoding: Encoding) -> BoxFuture<'_, u64> {
        Box::pin(async move {
            sluice_tokens::count_chat_offloaded(Arc::clone(&self.request), encoding)
                .await
                .tokens
        })
    }

    fn completion(&self) -> Completion {
        RouteOperation::completion(&ChatOperation { request: &self.request })
    }

    fn route<'a>(
        &'a self,
        router: &'a Router,
        prompt_tokens: u64,
        trail: &'a mut Vec<Attempt>,
    ) -> BoxFuture<'a, Result<Routed<ChatReply>, RouteError>> {
        Box::pin(router.chat(&self.request, prompt_tokens, trail))
    }
}

// === impl Embeddings ===

/// An embeddings request.
#[derive(Debug, Clone)]
pub struct Embeddings {
    request: Arc<EmbeddingRequest>,
}

impl Embeddings {
    /// The operation for `request`.
    pub fn new(request: EmbeddingRequest) -> Self {
        Self {
            request: Arc::new(request),
        }
    }
}

impl Operation for Embeddings {
    fn log_input(&self) -> String {
        serde_json::to_string(&self.request.input).unwrap_or_default()
    }

    fn model(&self) -> &str {
        &self.request.model
    }

    fn validate(&self) -> Result<(), PipelineError> {
        if self.request.input.is_empty() {
            return Err(PipelineError::invalid(
                "`input` must not be empty, nor contain an empty string.",
                "input",
            ));
        }
        let inputs = self.request.input.len();
        if inputs > MAX_EMBEDDING_INPUTS {
            return Err(PipelineError::invalid(
                format!("`input` has {inputs} entries; at most {MAX_EMBEDDING_INPUTS} are accepted."),
                "input",
            ));
        }
        Ok(())
    }

    fn admits(&self, route: &ModelRoute) -> Result<(), PipelineError> {
        if route.embeds() {
            return Ok(());
        }
        Err(PipelineError::invalid(
            format!(
                "The model `{}` has no provider that offers embeddings.",
                self.request.model
            ),
            "model",
        )
        .with_code("embeddings_not_supported"))
    }

    fn count(&self, encoding: Encoding) -> BoxFuture<'_, u64> {
        Box::pin(async move {
            let bytes = self.request.input.text_bytes() as u64;
            if self.request.input.texts().is_none() {
                // Token ids: one token each, and the JSON text is a generous bound on their number.
                return bytes.max(1);
            }
            let request = Arc::clone(&self.request);
            // A token is at least a byte, so the bytes bound the count.
            let counted = sluice_tokens::count_offloaded(bytes, encoding, move || {
                let texts = request.input.texts().unwrap_or_default();
                let tokens = texts
                    .iter()
                    .map(|text| sluice_tokens::count_text(text, encoding).tokens)
                    .fold(0u64, u64::saturating_add);
                sluice_tokens::TokenCount {
                    tokens,
                    exactness: encoding.exactness,
                }
            })
            .await;
            counted.tokens.max(1)
        })
    }

    fn completion(&self) -> Completion {
        RouteOperation::completion(&EmbedOperation { request: &self.request })
    }

    fn route<'a>(
        &'a self,
        router: &'a Router,
        prompt_tokens: u64,
        trail: &'a mut Vec<Attempt>,
    ) -> BoxFuture<'a, Result<Routed<ChatReply>, RouteError>> {
        Box::pin(async move {
            let routed = router.embed(&self.request, prompt_tokens, trail).await?;
            Ok(routed.map_reply(|reply| ChatReply {
                body: ReplyBody::Complete {
                    body: reply.body,
                    usage: reply.usage,
                },
                limits: reply.limits,
                dropped: Vec::new(),
            }))
        })
    }
}

// === impl Messages ===

/// An Anthropic Messages API call. Admitted, counted and reserved as the chat request it translates to;
/// routed to a deployment that takes Messages bodies as they are (the client's body goes byte for byte,
/// and its answer comes back so) or, for the others, as that chat request.
#[derive(Debug)]
pub struct Messages {
    chat: Chat,
    body: Bytes,
    headers: http::HeaderMap,
    untranslatable: Option<ErrorBody>,
    native: AtomicBool,
}

impl Messages {
    /// The operation for the client's `body` as received, its `headers`, and `chat`, the body translated
    /// to chat completions (or read roughly, to count by) with the model set to the Sluice model it names.
    /// `untranslatable` says why the body cannot be translated, when only the pass-through can serve it:
    /// other deployments refuse it with that error.
    pub fn new(
        chat: ChatCompletionRequest,
        body: Bytes,
        headers: http::HeaderMap,
        untranslatable: Option<ErrorBody>,
    ) -> Self {
        Self {
            chat: Chat::new(chat),
            body,
            headers,
            untranslatable,
            native: AtomicBool::new(false),
        }
    }

    /// The request, translated to chat completions.
    pub fn chat(&self) -> &ChatCompletionRequest {
        self.chat.request()
    }
}

impl Operation for Messages {
    fn model(&self) -> &str {
        self.chat.model()
    }

    fn validate(&self) -> Result<(), PipelineError> {
        self.chat.validate()
    }

    fn count(&self, encoding: Encoding) -> BoxFuture<'_, u64> {
        self.chat.count(encoding)
    }

    fn completion(&self) -> Completion {
        self.chat.completion()
    }

    fn route<'a>(
        &'a self,
        router: &'a Router,
        prompt_tokens: u64,
        trail: &'a mut Vec<Attempt>,
    ) -> BoxFuture<'a, Result<Routed<ChatReply>, RouteError>> {
        Box::pin(async move {
            let operation = MessagesOperation {
                chat: self.chat.request(),
                body: &self.body,
                headers: &self.headers,
                untranslatable: self.untranslatable.as_ref(),
            };
            let routed = router.messages(&operation, prompt_tokens, trail).await?;
            Ok(routed.map_reply(|answer| match answer {
                MessagesAnswer::Chat(reply) => {
                    self.native.store(false, Ordering::Release);
                    reply
                }
                MessagesAnswer::Native(reply) => {
                    self.native.store(true, Ordering::Release);
                    native_reply(reply)
                }
            }))
        })
    }

    fn answered_natively(&self) -> bool {
        self.native.load(Ordering::Acquire)
    }
}

/// A passed-through answer in the shape the pipeline settles and meters: the vendor's body, or each frame
/// as one event whose data is the frame's bytes (`event:` line and blank line included) and whose usage is
/// what the frame reported.
fn native_reply(reply: MessagesReply) -> ChatReply {
    let body = match reply.body {
        MessagesBody::Complete { body, usage } => ReplyBody::Complete { body, usage },
        MessagesBody::Stream(frames) => ReplyBody::Stream(Box::pin(frames.map(|frame| {
            frame.map(|frame| StreamEvent {
                data: frame.bytes,
                usage: frame.usage,
                usage_only: false,
                estimated: false,
            })
        }))),
    };
    ChatReply {
        body,
        limits: reply.limits,
        dropped: Vec::new(),
    }
}
