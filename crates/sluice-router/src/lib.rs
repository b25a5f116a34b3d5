//! The router: which deployment and which upstream key serve a request, how much of each key's budget
//! it may use, and what to do when an upstream fails.
//!
//! A model name maps to deployments (a provider and the vendor's model id), each provider to a pool of
//! keys, and each (key, deployment) pair to a [`sluice_budget::RateBudget`] of requests and tokens per
//! minute. A request reserves its prompt tokens plus its completion cap (or the deployment's learned
//! estimate), times its choices, from the first candidate with capacity: by priority, by weight within a
//! priority, and across keys ([`candidates`]). The reservation comes back with the answer as a
//! [`KeySettlement`], settled with the real usage when the caller knows it. A failure that another
//! candidate could avoid (rate limit, overload, 5xx, timeout, connect error) moves the request to the
//! next candidate as long as nothing has reached the client; a vendor 429 also cools the key down for
//! its retry time, and a key the vendor refuses as invalid sits out until a probe finds it good. When no
//! candidate has capacity, requests wait their turn (first come, first served) up to the model's
//! `max_queue` for the earliest one that will, the same key after its cooldown included, else get
//! [`RouteError::Exhausted`] with the earliest time one will ([`serve`]).
//!
//! The router knows no vendor's wire format: it sees requests in OpenAI's format and errors already
//! classified by the adapters. Its budgets live behind the [`sluice_budget::BudgetBackend`] it is built
//! with: in memory for one process, shared for several replicas.

pub mod breaker;
mod candidates;
mod estimate;
pub mod metrics;
mod operation;
mod pool;
mod serve;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use sluice_api::{ChatCompletionRequest, EmbeddingRequest, TokenUsage};
pub use sluice_budget::BudgetView;
use sluice_budget::{Backoff, Reservation};
use sluice_providers::{ChatReply, EmbedReply, MessagesCall, ProviderError, TokenCount};
use tokio::time::Instant;

use crate::breaker::BreakerView;
pub use crate::estimate::CompletionEstimate;
pub use crate::operation::{ChatOperation, Completion, EmbedOperation, MessagesAnswer, MessagesOperation, Operation};
pub use crate::pool::{Deployment, DeploymentSpec, ModelRoute, ProviderPool};

/// Why the router could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No model of that name is configured.
    #[error("the model `{model}` does not exist")]
    UnknownModel {
        /// The name the client sent.
        model: String,
        /// The names it could have sent.
        known: Vec<Arc<str>>,
    },
    /// Every deployment of the model belongs to a provider without a usable key.
    #[error("the model `{model}` has no provider with an API key configured")]
    NotConfigured {
        /// The model.
        model: String,
        /// The environment variables that would enable it.
        missing: Vec<String>,
        /// Ids of keys the upstream refused, taken out of their pools.
        rejected: Vec<String>,
    },
    /// No candidate has capacity now nor within the model's queue time.
    #[error("every upstream key for `{model}` is at its limit")]
    Exhausted {
        /// The model.
        model: String,
        /// When the first candidate will have capacity for this request.
        retry_after: Duration,
        /// Attempts made before giving up.
        attempts: u32,
    },
    /// The request needs more tokens than any key's whole per-minute budget: no wait would help.
    #[error("the request needs {tokens} tokens, more than any key's budget for `{model}` ({largest} per minute)")]
    TooLarge {
        /// The model.
        model: String,
        /// Tokens the request needs (prompt and completion).
        tokens: u64,
        /// The largest per-minute token budget of a candidate.
        largest: u64,
    },
    /// Every attempt failed; this is the last failure.
    #[error("{last}")]
    Upstream {
        /// The last attempt's error.
        last: ProviderError,
        /// The provider of the last attempt.
        provider: Arc<str>,
        /// How many attempts were made.
        attempts: u32,
    },
}

/// A request served: the reply and how it was obtained.
pub struct Routed<R = ChatReply> {
    /// The upstream's reply. A stream's first chunk has already been received.
    pub reply: R,
    /// The provider that answered.
    pub provider: Arc<str>,
    /// The vendor's model id that answered.
    pub vendor_model: Arc<str>,
    /// The key that answered, by id.
    pub key_id: Arc<str>,
    /// The deployment that answered, by its position among its model's deployments in the configuration.
    pub deployment: usize,
    /// How the deployment's tokens are counted when the vendor reports none.
    pub encoding: sluice_tokens::Encoding,
    /// Attempts made, including the one that answered.
    pub attempts: u32,
    /// The key's reservation, to settle with the real usage.
    pub settlement: KeySettlement,
}

impl<R> Routed<R> {
    /// The same answer with its reply turned into another type.
    pub fn map_reply<T>(self, f: impl FnOnce(R) -> T) -> Routed<T> {
        Routed {
            reply: f(self.reply),
            provider: self.provider,
            vendor_model: self.vendor_model,
            key_id: self.key_id,
            deployment: self.deployment,
            encoding: self.encoding,
            attempts: self.attempts,
            settlement: self.settlement,
        }
    }
}

impl<R> std::fmt::Debug for Routed<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routed")
            .field("provider", &self.provider)
            .field("vendor_model", &self.vendor_model)
            .field("key_id", &self.key_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// One upstream call a request made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The provider called.
    pub provider: Arc<str>,
    /// The vendor's model id called.
    pub vendor_model: Arc<str>,
    /// The key called, by id.
    pub key_id: Arc<str>,
    /// The deployment, by its position among its model's deployments in the configuration.
    pub deployment: usize,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Its span, when the request is traced.
    pub span: Option<sluice_trace::AttemptSpan>,
}

/// How an upstream call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Sent, no answer yet (the request was dropped while it was out).
    Pending,
    /// It answered; this is the call whose reply the client gets.
    Answered,
    /// It failed.
    Failed {
        /// The failure's kind (`rate_limited`, `timeout`, `truncated`...).
        kind: &'static str,
        /// Whether the vendor may bill it: it accepted the request and may have generated tokens.
        billable: bool,
    },
}

impl AttemptOutcome {
    /// Whether the vendor may bill the call.
    pub fn may_be_billed(self) -> bool {
        match self {
            Self::Pending | Self::Answered => true,
            Self::Failed { billable, .. } => billable,
        }
    }
}

/// The answering key's reservation and what settling it teaches the deployment. Settle it with the real
/// usage once known; dropping it keeps what was reserved counted (the vendor may have counted it too).
#[derive(Debug)]
pub struct KeySettlement {
    reservation: Reservation,
    estimate: Arc<CompletionEstimate>,
    completion: Completion,
}

impl KeySettlement {
    fn new(reservation: Reservation, estimate: Arc<CompletionEstimate>, completion: Completion) -> Self {
        Self {
            reservation,
            estimate,
            completion,
        }
    }

    /// The tokens reserved.
    pub fn reserved(&self) -> u64 {
        self.reservation.tokens()
    }

    /// Settles with `usage`; a vendor-reported completion also feeds the deployment's completion estimate,
    /// per choice (the estimate is reserved per choice). Without any usage, what was reserved stays counted.
    pub fn settle(self, usage: Option<&TokenUsage>, vendor_reported: bool) {
        match usage {
            Some(usage) => {
                // Operations that generate nothing (embeddings, `cap` 0) teach nothing about completions.
                if vendor_reported && self.completion.cap != Some(0) {
                    self.estimate.record(usage.output / self.completion.choices.max(1));
                }
                self.reservation.settle(usage.total());
            }
            None => {
                let reserved = self.reservation.tokens();
                self.reservation.settle(reserved);
            }
        }
    }
}

/// Router-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterSettings {
    /// Upstream calls per request, failovers included.
    pub max_attempts: u32,
    /// How 429s without a retry time back off.
    pub backoff: Backoff,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::default(),
        }
    }
}

/// Routes requests to deployments.
#[derive(Debug)]
pub struct Router {
    models: Vec<ModelRoute>,
    index: HashMap<Arc<str>, usize>,
    settings: RouterSettings,
}

impl Router {
    /// A router over `models`.
    pub fn new(models: Vec<ModelRoute>, settings: RouterSettings) -> Self {
        let index = models
            .iter()
            .enumerate()
            .map(|(i, m)| (Arc::clone(&m.name), i))
            .collect();
        Self {
            models,
            index,
            settings: RouterSettings {
                max_attempts: settings.max_attempts.max(1),
                ..settings
            },
        }
    }

    /// The configured model names, in configuration order.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| m.name())
    }

    /// The configured models.
    pub fn models(&self) -> &[ModelRoute] {
        &self.models
    }

    /// Whether any model has a provider with a key.
    pub fn has_enabled_model(&self) -> bool {
        self.models
            .iter()
            .any(|m| m.deployments.iter().any(|d| d.provider.is_enabled()))
    }

    /// The encodings the configured deployments use, to load them before the first request.
    pub fn encodings(&self) -> Vec<sluice_tokens::EncodingName> {
        let mut names: Vec<_> = self
            .models
            .iter()
            .flat_map(|m| m.deployments.iter().map(|d| d.encoding.name))
            .collect();
        names.sort_unstable_by_key(|n| n.as_str());
        names.dedup();
        names
    }

    /// The route of a model name.
    pub fn route(&self, model: &str) -> Result<&ModelRoute, RouteError> {
        self.index
            .get(model)
            .map(|i| &self.models[*i])
            .ok_or_else(|| RouteError::UnknownModel {
                model: model.to_owned(),
                known: self.models.iter().map(|m| Arc::clone(&m.name)).collect(),
            })
    }

    /// Serves a chat `request` whose prompt counts `prompt_tokens`; see [`Router::serve`].
    pub async fn chat(
        &self,
        request: &ChatCompletionRequest,
        prompt_tokens: u64,
        trail: &mut Vec<Attempt>,
    ) -> Result<Routed, RouteError> {
        self.serve(&ChatOperation { request }, prompt_tokens, trail).await
    }

    /// Serves a Messages API call whose prompt counts `prompt_tokens`; see [`Router::serve`] and
    /// [`MessagesOperation`].
    pub async fn messages(
        &self,
        operation: &MessagesOperation<'_>,
        prompt_tokens: u64,
        trail: &mut Vec<Attempt>,
    ) -> Result<Routed<MessagesAnswer>, RouteError> {
        self.serve(operation, prompt_tokens, trail).await
    }

    /// Whether a deployment of `model` takes Messages API bodies as they are (an Anthropic upstream), so a
    /// body only the pass-through can serve may be routed.
    pub fn takes_messages(&self, model: &str) -> bool {
        self.route(model).is_ok_and(|route| {
            route
                .deployments
                .iter()
                .any(|d| d.provider.adapter.messages_passthrough().is_some())
        })
    }

    /// Asks the first deployment of `model` whose upstream counts Messages tokens itself (Anthropic's
    /// `count_tokens`) to count the client's `body`, trying its keys in good standing in turn. `None` when
    /// no deployment can (the caller estimates instead) or every key failed; a vendor's refusal of the
    /// request as invalid comes back as `Some(Err)`. A count generates nothing and vendors meter it apart
    /// from messages, so it takes no budget.
    pub async fn count_tokens(
        &self,
        model: &str,
        body: &Bytes,
        headers: &http::HeaderMap,
    ) -> Option<Result<TokenCount, ProviderError>> {
        let route = self.route(model).ok()?;
        let now = Instant::now();
        for deployment in &route.deployments {
            let Some(passthrough) = deployment.provider.adapter.messages_passthrough() else {
                continue;
            };
            for index in deployment.provider.key_order() {
                if deployment.provider.is_out(index, now).is_some() {
                    continue;
                }
                let call = MessagesCall {
                    body,
                    model: &deployment.model,
                    key: &deployment.provider.keys[index],
                    client_headers: headers,
                };
                match passthrough.count_tokens(call).await {
                    Ok(count) => return Some(Ok(count)),
                    Err(err @ ProviderError::Rejected { .. }) => return Some(Err(err)),
                    Err(err) => tracing::warn!(
                        provider = %deployment.provider.name,
                        key = deployment.provider.keys[index].id(),
                        error = %err,
                        "count_tokens failed; trying the next key"
                    ),
                }
            }
        }
        None
    }

    /// Serves an embeddings `request` whose input counts `input_tokens`; see [`Router::serve`].
    pub async fn embed(
        &self,
        request: &EmbeddingRequest,
        input_tokens: u64,
        trail: &mut Vec<Attempt>,
    ) -> Result<Routed<EmbedReply>, RouteError> {
        self.serve(&EmbedOperation { request }, input_tokens, trail).await
    }

    /// Every key's budget and every deployment's breaker, for `GET /admin/limits`.
    pub fn limits(&self) -> Vec<LimitsView> {
        let now = Instant::now();
        self.models
            .iter()
            .flat_map(|route| {
                route.deployments.iter().flat_map(move |deployment| {
                    deployment.budgets.iter().enumerate().map(move |(k, budget)| {
                        let out = deployment.provider.is_out(k, now);
                        LimitsView {
                            model: route.name.to_string(),
                            provider: deployment.provider.name.to_string(),
                            vendor_model: deployment.model.to_string(),
                            key: deployment.provider.keys[k].id().to_owned(),
                            usable: out.is_none(),
                            probe_in_ms: out.map(|wait| wait.as_millis() as u64),
                            budget: budget.view(),
                            breaker: deployment.breaker.view(now),
                            completion_estimate: deployment.estimate.tokens(),
                        }
                    })
                })
            })
            .collect()
    }
}

/// One key's limits for one deployment, as `GET /admin/limits` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitsView {
    /// The model name clients send.
    pub model: String,
    /// The provider.
    pub provider: String,
    /// The vendor's model id.
    pub vendor_model: String,
    /// The key's id (never its value).
    pub key: String,
    /// False while the key is out of its pool because the vendor refused it.
    pub usable: bool,
    /// For a key out of its pool: when a request will probe it again.
    pub probe_in_ms: Option<u64>,
    /// Its budget now.
    pub budget: BudgetView,
    /// The deployment's breaker.
    pub breaker: BreakerView,
    /// Completion tokens reserved when a client sets no cap.
    pub completion_estimate: u64,
}
