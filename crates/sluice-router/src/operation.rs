//! What the routing loop needs to know of one kind of upstream call, and the kinds there are.

use bytes::Bytes;
use futures_util::StreamExt;
use sluice_api::{ChatCompletionRequest, EmbeddingRequest, ErrorBody};
use sluice_providers::{
    BoxFuture, ChatCall, ChatReply, EmbedCall, EmbedReply, MessagesBody, MessagesCall, MessagesReply, ProviderError,
    RateLimitSnapshot, ReplyBody, UpstreamKey,
};

use crate::pool::Deployment;

/// One kind of upstream call, as the routing loop drives it: budgets, cooldowns, breakers and failover
/// are the loop's, the same for every operation.
pub trait Operation: Send + Sync {
    /// The adapter's answer.
    type Reply: Send;

    /// The model name the client asked for.
    fn model(&self) -> &str;

    /// What the request may generate, for reserving it.
    fn completion(&self) -> Completion;

    /// Calls one candidate. A stream must have delivered its first chunk before this resolves, so that a
    /// stream failing at once is a failed attempt rather than a broken answer.
    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        key: &'a UpstreamKey,
    ) -> BoxFuture<'a, Result<Self::Reply, ProviderError>>;

    /// What the vendor said of the key's limits.
    fn limits(reply: &Self::Reply) -> &RateLimitSnapshot;
}

/// What a request may generate: reserved as `choices` times the cap, or times the deployment's learned
/// completion length when the client set no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The client's cap per choice (`max_completion_tokens` or `max_tokens`), if any.
    pub cap: Option<u64>,
    /// Choices asked for (`n`), at least 1.
    pub choices: u64,
}

/// A chat completion.
#[derive(Debug, Clone, Copy)]
pub struct ChatOperation<'r> {
    /// The client's request.
    pub request: &'r ChatCompletionRequest,
}

impl Operation for ChatOperation<'_> {
    type Reply = ChatReply;

    fn model(&self) -> &str {
        &self.request.model
    }

    fn completion(&self) -> Completion {
        Completion {
            cap: self.request.completion_cap().map(u64::from),
            choices: u64::from(self.request.n.unwrap_or(1).max(1)),
        }
    }

    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        key: &'a UpstreamKey,
    ) -> BoxFuture<'a, Result<ChatReply, ProviderError>> {
        Box::pin(async move {
            let call = ChatCall {
                request: self.request,
                model: &deployment.model,
                key,
                default_max_tokens: deployment.max_tokens,
                drop_unsupported: deployment.drop_unsupported,
            };
            first_chunk_arrived(deployment.provider.adapter.chat(call).await?).await
        })
    }

    fn limits(reply: &ChatReply) -> &RateLimitSnapshot {
        &reply.limits
    }
}

/// An embeddings request.
#[derive(Debug, Clone, Copy)]
pub struct EmbedOperation<'r> {
    /// The client's request.
    pub request: &'r EmbeddingRequest,
}

impl Operation for EmbedOperation<'_> {
    type Reply = EmbedReply;

    fn model(&self) -> &str {
        &self.request.model
    }

    fn completion(&self) -> Completion {
        // Embeddings generate nothing: only the input counts.
        Completion {
            cap: Some(0),
            choices: 1,
        }
    }

    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        key: &'a UpstreamKey,
    ) -> BoxFuture<'a, Result<EmbedReply, ProviderError>> {
        let call = EmbedCall {
            request: self.request,
            model: &deployment.model,
            key,
        };
        deployment.provider.adapter.embed(call)
    }

    fn limits(reply: &EmbedReply) -> &RateLimitSnapshot {
        &reply.limits
    }
}

/// Waits for a stream's first chunk, so that a stream that fails before sending anything counts as a
/// failed attempt rather than a broken answer.
async fn first_chunk_arrived(reply: ChatReply) -> Result<ChatReply, ProviderError> {
    let ChatReply { body, limits, dropped } = reply;
    let mut events = match body {
        ReplyBody::Stream(events) => events,
        complete => {
            return Ok(ChatReply {
                body: complete,
                limits,
                dropped,
            });
        }
    };
    let first = match events.next().await {
        Some(Err(err)) => return Err(err),
        Some(Ok(first)) => first,
        None => {
            return Err(ProviderError::Truncated {
                detail: "the stream ended before its first chunk".to_owned(),
            });
        }
    };
    let events = futures_util::stream::once(std::future::ready(Ok(first))).chain(events);
    Ok(ChatReply {
        body: ReplyBody::Stream(Box::pin(events)),
        limits,
        dropped,
    })
}

/// A Messages API call (`POST /v1/messages`): passed through byte for byte to a deployment whose adapter
/// takes Messages bodies as they are (Anthropic's), translated to chat completions for the others. Which
/// one is the adapter's to say ([`sluice_providers::ChatProvider::messages_passthrough`]); the router only
/// hands the body over, it reads none of it.
#[derive(Debug, Clone, Copy)]
pub struct MessagesOperation<'r> {
    /// The request translated to chat completions, for deployments that do not take Messages bodies, and
    /// for what the loop needs to know (model, completion cap).
    pub chat: &'r ChatCompletionRequest,
    /// The client's body, exactly as received, for the pass-through.
    pub body: &'r Bytes,
    /// The client's headers (the pass-through forwards `anthropic-version` and `anthropic-beta`).
    pub headers: &'r http::HeaderMap,
    /// Why the body cannot be translated, when it asks for what only the pass-through can serve: a
    /// deployment that does not take Messages bodies refuses it with a 400 carrying this error.
    pub untranslatable: Option<&'r ErrorBody>,
}

/// A Messages call's answer: the vendor's own bytes, or a chat completion to translate back.
pub enum MessagesAnswer {
    /// Passed through: the vendor's Messages body or frames, byte for byte.
    Native(MessagesReply),
    /// Translated: a chat completion, or its chunks.
    Chat(ChatReply),
}

impl std::fmt::Debug for MessagesAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessagesAnswer::Native(reply) => f.debug_tuple("Native").field(reply).finish(),
            MessagesAnswer::Chat(reply) => f.debug_tuple("Chat").field(&reply.body).finish(),
        }
    }
}

impl Operation for MessagesOperation<'_> {
    type Reply = MessagesAnswer;

    fn model(&self) -> &str {
        &self.chat.model
    }

    fn completion(&self) -> Completion {
        ChatOperation { request: self.chat }.completion()
    }

    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        key: &'a UpstreamKey,
    ) -> BoxFuture<'a, Result<MessagesAnswer, ProviderError>> {
        Box::pin(async move {
            let Some(passthrough) = deployment.provider.adapter.messages_passthrough() else {
                if let Some(error) = self.untranslatable {
                    return Err(ProviderError::Rejected {
                        status: 400,
                        error: error.clone(),
                    });
                }
                let reply = ChatOperation { request: self.chat }.call(deployment, key).await?;
                return Ok(MessagesAnswer::Chat(reply));
            };
            let call = MessagesCall {
                body: self.body,
                model: &deployment.model,
                key,
                client_headers: self.headers,
            };
            let reply = passthrough.messages(call).await?;
            Ok(MessagesAnswer::Native(first_frame_arrived(reply).await?))
        })
    }

    fn limits(reply: &MessagesAnswer) -> &RateLimitSnapshot {
        match reply {
            MessagesAnswer::Native(reply) => &reply.limits,
            MessagesAnswer::Chat(reply) => &reply.limits,
        }
    }
}

/// Waits for a passed-through stream's first frame, as [`first_chunk_arrived`] does for chat streams.
async fn first_frame_arrived(reply: MessagesReply) -> Result<MessagesReply, ProviderError> {
    let MessagesReply { body, limits } = reply;
    let mut frames = match body {
        MessagesBody::Stream(frames) => frames,
        complete => return Ok(MessagesReply { body: complete, limits }),
    };
    let first = match frames.next().await {
        Some(Err(err)) => return Err(err),
        Some(Ok(first)) => first,
        None => {
            return Err(ProviderError::Truncated {
                detail: "the stream ended before its first frame".to_owned(),
            });
        }
    };
    let frames = futures_util::stream::once(std::future::ready(Ok(first))).chain(frames);
    Ok(MessagesReply {
        body: MessagesBody::Stream(Box::pin(frames)),
        limits,
    })
}
