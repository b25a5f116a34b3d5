//! What the routing loop needs to know of one kind of upstream call, and the kinds there are.

use futures_util::StreamExt;
use sluice_api::{ChatCompletionRequest, EmbeddingRequest};
use sluice_providers::{
    BoxFuture, ChatCall, ChatReply, EmbedCall, EmbedReply, ProviderError, RateLimitSnapshot, ReplyBody, UpstreamKey,
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
