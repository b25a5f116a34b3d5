//! The router: which deployment and which upstream key serve a request, and what to do when one fails.
//!
//! A model name maps to deployments (a provider and the vendor's model id), each provider to a pool of
//! keys. Candidates are tried by priority, spread by weight within a priority and across keys, and a
//! failure that another candidate could avoid (rate limit, overload, 5xx, timeout, connect error) moves
//! the request to the next candidate, as long as nothing has reached the client. A streamed answer is
//! committed only once its first chunk arrived, so a stream that fails at once can still fail over.
//!
//! The router knows no vendor's wire format: it sees requests and chunks in OpenAI's format and errors
//! already classified by the adapters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::StreamExt;
use sluice_api::ChatCompletionRequest;
use sluice_providers::{ChatCall, ChatProvider, ChatReply, ProviderError, ReplyBody, UpstreamKey};

/// A provider as the router sees it: an adapter and its key pool.
pub struct ProviderPool {
    name: Arc<str>,
    adapter: Arc<dyn ChatProvider>,
    keys: Vec<UpstreamKey>,
    /// Per key: the upstream refused it (401/403), so it is out of the pool until restart.
    rejected: Vec<AtomicBool>,
    missing: Vec<String>,
    next_key: AtomicUsize,
}

impl std::fmt::Debug for ProviderPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderPool")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .field("missing", &self.missing)
            .finish_non_exhaustive()
    }
}

impl ProviderPool {
    /// A provider named `name` served by `adapter` with `keys`. `missing` names the environment
    /// variables of keys that were not set, so a request can say what to set.
    pub fn new(
        name: impl Into<Arc<str>>,
        adapter: Arc<dyn ChatProvider>,
        keys: Vec<UpstreamKey>,
        missing: Vec<String>,
    ) -> Self {
        Self {
            name: name.into(),
            adapter,
            rejected: keys.iter().map(|_| AtomicBool::new(false)).collect(),
            keys,
            missing,
            next_key: AtomicUsize::new(0),
        }
    }

    /// The provider's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the provider has at least one usable key.
    pub fn is_enabled(&self) -> bool {
        self.rejected.iter().any(|r| !r.load(Ordering::Relaxed))
    }

    /// The usable keys in the order to try them: a rotating start spreads load over the pool.
    fn keys_in_turn(&self) -> impl Iterator<Item = (usize, &UpstreamKey)> {
        let start = self.next_key.fetch_add(1, Ordering::Relaxed);
        let len = self.keys.len();
        (0..len)
            .map(move |i| (start + i) % len)
            .filter(|i| !self.rejected[*i].load(Ordering::Relaxed))
            .map(|i| (i, &self.keys[i]))
    }

    /// Takes a key the upstream refused out of the pool. Its value is never logged, only its id.
    fn reject(&self, index: usize) {
        if !self.rejected[index].swap(true, Ordering::Relaxed) {
            tracing::error!(
                provider = %self.name,
                key = self.keys[index].id(),
                "the upstream refused this key; it is out of the pool until the gateway restarts"
            );
        }
    }

    /// Ids of the keys the upstream refused.
    fn rejected_ids(&self) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .zip(&self.rejected)
            .filter(|(_, r)| r.load(Ordering::Relaxed))
            .map(|(k, _)| k.id())
    }
}

/// One way to serve a model: a provider and the vendor's model id.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Who serves it.
    pub provider: Arc<ProviderPool>,
    /// The vendor's model id.
    pub model: Arc<str>,
    /// Completion cap sent when the client sets none and the vendor requires one.
    pub max_tokens: Option<u32>,
    /// Lower is tried first.
    pub priority: u32,
    /// Share of traffic among deployments of equal priority.
    pub weight: u32,
}

/// A model name clients may call, and its deployments.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    name: Arc<str>,
    deployments: Vec<Deployment>,
}

impl ModelRoute {
    /// A model `name` served by `deployments`.
    pub fn new(name: impl Into<Arc<str>>, mut deployments: Vec<Deployment>) -> Self {
        deployments.sort_by_key(|d| d.priority);
        Self {
            name: name.into(),
            deployments,
        }
    }

    /// The name clients send.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deployments in the order to try them: by priority, and by a weighted draw within a priority.
    fn deployments_in_turn(&self) -> Vec<&Deployment> {
        let mut ordered = Vec::with_capacity(self.deployments.len());
        let mut group_start = 0;
        while group_start < self.deployments.len() {
            let priority = self.deployments[group_start].priority;
            let group_end = self.deployments[group_start..]
                .iter()
                .position(|d| d.priority != priority)
                .map_or(self.deployments.len(), |offset| group_start + offset);
            let mut group: Vec<&Deployment> = self.deployments[group_start..group_end].iter().collect();
            while !group.is_empty() {
                let total: u64 = group.iter().map(|d| u64::from(d.weight.max(1))).sum();
                let mut draw = fastrand::u64(0..total);
                let pick = group
                    .iter()
                    .position(|d| {
                        let w = u64::from(d.weight.max(1));
                        if draw < w {
                            true
                        } else {
                            draw -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                ordered.push(group.remove(pick));
            }
            group_start = group_end;
        }
        ordered
    }
}

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
pub struct Routed {
    /// The upstream's reply. A stream's first chunk has already been received.
    pub reply: ChatReply,
    /// The provider that answered.
    pub provider: Arc<str>,
    /// The key that answered, by id.
    pub key_id: Arc<str>,
    /// Attempts made, including the one that answered.
    pub attempts: u32,
}

/// Routes requests to deployments.
#[derive(Debug)]
pub struct Router {
    models: Vec<ModelRoute>,
    index: HashMap<Arc<str>, usize>,
    max_attempts: u32,
}

impl Router {
    /// A router over `models`, making at most `max_attempts` upstream calls per request.
    pub fn new(models: Vec<ModelRoute>, max_attempts: u32) -> Self {
        let index = models
            .iter()
            .enumerate()
            .map(|(i, m)| (Arc::clone(&m.name), i))
            .collect();
        Self {
            models,
            index,
            max_attempts: max_attempts.max(1),
        }
    }

    /// The configured model names, in configuration order.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| m.name())
    }

    /// Whether any model has a provider with a usable key.
    pub fn has_enabled_model(&self) -> bool {
        self.models
            .iter()
            .any(|m| m.deployments.iter().any(|d| d.provider.is_enabled()))
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

    /// Serves `request`, failing over between deployments and keys.
    pub async fn chat(&self, request: &ChatCompletionRequest) -> Result<Routed, RouteError> {
        let route = self.route(&request.model)?;
        let mut attempts = 0u32;
        let mut last: Option<(ProviderError, Arc<str>)> = None;
        let deployments = route.deployments_in_turn();
        'candidates: for deployment in deployments.iter().filter(|d| d.provider.is_enabled()) {
            for (key_index, key) in deployment.provider.keys_in_turn() {
                if attempts >= self.max_attempts {
                    break 'candidates;
                }
                attempts += 1;
                let call = ChatCall {
                    request,
                    model: &deployment.model,
                    key,
                    default_max_tokens: deployment.max_tokens,
                };
                let provider = Arc::clone(&deployment.provider.name);
                let outcome = match deployment.provider.adapter.chat(call).await {
                    Ok(reply) => first_chunk_arrived(reply).await,
                    Err(err) => Err(err),
                };
                match outcome {
                    Ok(reply) => {
                        return Ok(Routed {
                            reply,
                            provider,
                            key_id: key.id().into(),
                            attempts,
                        });
                    }
                    Err(err) => {
                        log_failure(&err, &provider, key, attempts);
                        if matches!(err, ProviderError::Authentication { .. }) {
                            deployment.provider.reject(key_index);
                        }
                        if !err.is_retryable() {
                            return Err(RouteError::Upstream {
                                last: err,
                                provider,
                                attempts,
                            });
                        }
                        last = Some((err, provider));
                    }
                }
            }
        }
        match last {
            Some((last, provider)) => Err(RouteError::Upstream {
                last,
                provider,
                attempts,
            }),
            None => Err(RouteError::NotConfigured {
                model: request.model.clone(),
                missing: deployments
                    .iter()
                    .flat_map(|d| d.provider.missing.iter().cloned())
                    .collect(),
                rejected: deployments
                    .iter()
                    .flat_map(|d| d.provider.rejected_ids().map(str::to_owned))
                    .collect(),
            }),
        }
    }
}

/// Waits for a stream's first chunk, so that a stream that fails before sending anything counts as a
/// failed attempt rather than a broken answer.
async fn first_chunk_arrived(reply: ChatReply) -> Result<ChatReply, ProviderError> {
    let ChatReply { body, limits } = reply;
    let mut events = match body {
        ReplyBody::Stream(events) => events,
        complete => return Ok(ChatReply { body: complete, limits }),
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
    })
}

fn log_failure(err: &ProviderError, provider: &str, key: &UpstreamKey, attempt: u32) {
    match err {
        // The vendor's message may quote part of the key, so only the status is logged.
        ProviderError::Authentication { status, .. } => tracing::error!(
            provider,
            key = key.id(),
            status,
            "the upstream rejected this key; check the provider's keys"
        ),
        ProviderError::Connect { detail }
        | ProviderError::Truncated { detail }
        | ProviderError::Protocol { detail } => {
            tracing::warn!(provider, key = key.id(), attempt, error = %err, detail, "upstream attempt failed")
        }
        _ => tracing::warn!(provider, key = key.id(), attempt, error = %err, "upstream attempt failed"),
    }
}
