//! The router: which deployment and which upstream key serve a request, how much of each key's budget
//! it may use, and what to do when an upstream fails.
//!
//! A model name maps to deployments (a provider and the vendor's model id), each provider to a pool of
//! keys, and each (key, deployment) pair to a [`budget::KeyBudget`] of requests and tokens per minute.
//! A request reserves its prompt tokens plus its completion cap (or the deployment's learned estimate)
//! from the first candidate with capacity: by priority, by weight within a priority, and across keys.
//! The reservation is settled with the real usage when the answer is known. A failure that another
//! candidate could avoid (rate limit, overload, 5xx, timeout, connect error) moves the request to the
//! next candidate as long as nothing has reached the client; a vendor 429 also cools the key down for
//! its retry time. When no candidate has capacity, requests wait their turn (first come, first served)
//! up to the model's `max_queue`, else get [`RouteError::Exhausted`] with the earliest time one will.
//!
//! The router knows no vendor's wire format: it sees requests and chunks in OpenAI's format and errors
//! already classified by the adapters. Its state is in this process's memory; several replicas each
//! enforce the full budgets (sharing them through Redis is future work).

pub mod breaker;
pub mod budget;
mod estimate;
pub mod metrics;
mod pool;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use sluice_api::{ChatCompletionRequest, EmbeddingRequest, TokenUsage};
use sluice_providers::{
    BoxFuture, ChatCall, ChatReply, EmbedCall, EmbedReply, EventStream, ProviderError, RateLimitSnapshot, ReplyBody,
    StreamEvent, UpstreamKey,
};
use tokio::time::Instant;

use crate::breaker::BreakerView;
use crate::budget::{Backoff, BudgetView, Refusal, Reservation};
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
    /// The upstream's reply. A stream's first chunk has already been received; the stream settles the
    /// key's budget with the real usage when it ends.
    pub reply: R,
    /// The provider that answered.
    pub provider: Arc<str>,
    /// The vendor's model id that answered.
    pub vendor_model: Arc<str>,
    /// The key that answered, by id.
    pub key_id: Arc<str>,
    /// Attempts made, including the one that answered.
    pub attempts: u32,
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

/// One candidate: a deployment and one of its provider's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    deployment: usize,
    key: usize,
}

/// What a look for capacity found.
enum Acquired {
    /// A candidate with its capacity held.
    Ready(Candidate, Reservation),
    /// Every candidate was tried already or has no usable key.
    NoneLeft,
    /// Candidates remain, but none has capacity before this long.
    Wait(Duration),
    /// The request is larger than every remaining candidate's whole budget.
    TooLarge { tokens: u64, largest: u64 },
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

    /// Whether any model has a provider with a usable key.
    pub fn has_enabled_model(&self) -> bool {
        self.models
            .iter()
            .any(|m| m.deployments.iter().any(|d| d.provider.is_enabled()))
    }

    /// The encoding to count a request for `model` with: its first deployment's. Deployments of one model
    /// name normally share a tokenizer family; when they do not, the first one's count is the estimate.
    pub fn encoding(&self, model: &str) -> Option<sluice_tokens::Encoding> {
        self.route(model).ok()?.deployments.first().map(|d| d.encoding)
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

    /// Serves `request`, whose prompt counts `prompt_tokens`, within the budgets, failing over between
    /// candidates.
    pub async fn chat(&self, request: &ChatCompletionRequest, prompt_tokens: u64) -> Result<Routed, RouteError> {
        self.serve(&ChatOperation { request }, prompt_tokens).await
    }

    /// Serves an embeddings `request` whose input counts `input_tokens`, as [`Router::chat`] does.
    pub async fn embed(&self, request: &EmbeddingRequest, input_tokens: u64) -> Result<Routed<EmbedReply>, RouteError> {
        self.serve(&EmbedOperation { request }, input_tokens).await
    }

    /// The routing loop every operation shares: acquire a candidate with capacity, call it, learn from
    /// the outcome, fail over on what another candidate could avoid.
    async fn serve<O: Operation>(&self, operation: &O, prompt_tokens: u64) -> Result<Routed<O::Reply>, RouteError> {
        let model = operation.model();
        let route = self.route(model)?;
        let mut tried: Vec<Candidate> = Vec::new();
        let mut last: Option<(ProviderError, Arc<str>)> = None;
        let mut attempts = 0u32;
        let cap = operation.completion_cap();
        while attempts < self.settings.max_attempts {
            let (candidate, reservation) = match self.acquire(route, prompt_tokens, cap, &tried).await {
                Acquired::Ready(candidate, reservation) => (candidate, reservation),
                Acquired::NoneLeft => break,
                Acquired::Wait(retry_after) => {
                    route.counters.rejections.fetch_add(1, Ordering::Relaxed);
                    return Err(RouteError::Exhausted {
                        model: model.to_owned(),
                        retry_after,
                        attempts,
                    });
                }
                Acquired::TooLarge { tokens, largest } => {
                    return Err(RouteError::TooLarge {
                        model: model.to_owned(),
                        tokens,
                        largest,
                    });
                }
            };
            tried.push(candidate);
            attempts += 1;
            let deployment = &route.deployments[candidate.deployment];
            let key = &deployment.provider.keys[candidate.key];
            let provider = Arc::clone(&deployment.provider.name);
            deployment.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let outcome = operation.call(deployment, key).await;
            let budget = &deployment.budgets[candidate.key];
            let now = Instant::now();
            match outcome {
                Ok(reply) => {
                    deployment.breaker.success();
                    budget.succeeded();
                    budget.learn(O::limits(&reply), now);
                    let meter = Meter {
                        estimate: Arc::clone(&deployment.estimate),
                        encoding: deployment.encoding,
                        prompt_tokens,
                    };
                    let reply = O::settle(reply, reservation, meter);
                    return Ok(Routed {
                        reply,
                        provider,
                        vendor_model: Arc::clone(&deployment.model),
                        key_id: key.id().into(),
                        attempts,
                    });
                }
                Err(err) => {
                    log_failure(&err, &provider, key, attempts);
                    self.learn_from_failure(deployment, candidate.key, &err, reservation, now);
                    if !err.is_retryable() {
                        return Err(RouteError::Upstream {
                            last: err,
                            provider,
                            attempts,
                        });
                    }
                    deployment.counters.failovers.fetch_add(1, Ordering::Relaxed);
                    last = Some((err, provider));
                }
            }
        }
        match last {
            // Rate limits are the gateway's to report with an honest retry time across every candidate.
            Some((ProviderError::RateLimited { .. }, _)) => {
                route.counters.rejections.fetch_add(1, Ordering::Relaxed);
                Err(RouteError::Exhausted {
                    model: model.to_owned(),
                    retry_after: self.earliest_capacity(route, prompt_tokens, cap),
                    attempts,
                })
            }
            Some((last, provider)) => Err(RouteError::Upstream {
                last,
                provider,
                attempts,
            }),
            None => Err(RouteError::NotConfigured {
                model: model.to_owned(),
                missing: route
                    .deployments
                    .iter()
                    .flat_map(|d| d.provider.missing.iter().cloned())
                    .collect(),
                rejected: route
                    .deployments
                    .iter()
                    .flat_map(|d| d.provider.rejected_ids().map(str::to_owned))
                    .collect(),
            }),
        }
    }

    /// Finds a candidate with capacity, waiting for one up to the model's queue time. Waiters take turns
    /// in arrival order, and a newcomer queues behind them rather than taking capacity they wait for.
    async fn acquire(&self, route: &ModelRoute, prompt_tokens: u64, cap: Option<u32>, tried: &[Candidate]) -> Acquired {
        if route.waiting.load(Ordering::Acquire) == 0 {
            match try_candidates(route, prompt_tokens, cap, tried, Instant::now()) {
                Acquired::Wait(wait) if !route.max_queue.is_zero() && wait <= route.max_queue => {}
                other => return other,
            }
        }
        if route.max_queue.is_zero() {
            return try_candidates(route, prompt_tokens, cap, tried, Instant::now());
        }
        route.counters.queue_waits.fetch_add(1, Ordering::Relaxed);
        route.waiting.fetch_add(1, Ordering::AcqRel);
        let deadline = Instant::now() + route.max_queue;
        let result = async {
            let Ok(_turn) = tokio::time::timeout_at(deadline, route.queue.lock()).await else {
                return try_candidates(route, prompt_tokens, cap, tried, Instant::now());
            };
            loop {
                let now = Instant::now();
                match try_candidates(route, prompt_tokens, cap, tried, now) {
                    Acquired::Wait(wait) if now + wait <= deadline => tokio::time::sleep(wait).await,
                    other => return other,
                }
            }
        }
        .await;
        route.waiting.fetch_sub(1, Ordering::AcqRel);
        result
    }

    /// The earliest moment a candidate of `route` can take a request of this size.
    fn earliest_capacity(&self, route: &ModelRoute, prompt_tokens: u64, cap: Option<u32>) -> Duration {
        try_candidates_peek(route, prompt_tokens, cap, Instant::now()).unwrap_or(Duration::from_secs(1))
    }

    fn learn_from_failure(
        &self,
        deployment: &Deployment,
        key: usize,
        err: &ProviderError,
        reservation: Reservation,
        now: Instant,
    ) {
        let budget = &deployment.budgets[key];
        match err {
            ProviderError::RateLimited { retry_after, .. } => {
                deployment
                    .counters
                    .upstream_rate_limited
                    .fetch_add(1, Ordering::Relaxed);
                // The vendor did not count a refused request.
                reservation.cancel(now);
                let pause = budget.cool_down(*retry_after, self.settings.backoff, now);
                tracing::info!(
                    key = deployment.provider.keys[key].id(),
                    cooldown_ms = pause.as_millis() as u64,
                    "key cooling down"
                );
            }
            ProviderError::QuotaExhausted { .. } => {
                deployment
                    .counters
                    .upstream_rate_limited
                    .fetch_add(1, Ordering::Relaxed);
                reservation.cancel(now);
                // Quota comes back with billing, not with time: keep the key out for a long while.
                budget.cool_down(Some(Duration::from_secs(600)), self.settings.backoff, now);
            }
            ProviderError::Authentication { .. } => {
                reservation.cancel(now);
                deployment.provider.reject(key);
            }
            ProviderError::Connect { .. } => {
                reservation.cancel(now);
                deployment.breaker.failure(now);
            }
            ProviderError::Rejected { .. } => reservation.cancel(now),
            ProviderError::Overloaded { .. }
            | ProviderError::Server { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::Protocol { .. }
            | ProviderError::Truncated { .. } => {
                // The vendor may have counted the request; the tokens stay reserved until they refill.
                drop(reservation);
                deployment.breaker.failure(now);
            }
        }
    }

    /// Every key's budget and every deployment's breaker, for `GET /admin/limits`.
    pub fn limits(&self) -> Vec<LimitsView> {
        let now = Instant::now();
        self.models
            .iter()
            .flat_map(|route| {
                route.deployments.iter().flat_map(move |deployment| {
                    deployment
                        .budgets
                        .iter()
                        .enumerate()
                        .map(move |(k, budget)| LimitsView {
                            model: route.name.to_string(),
                            provider: deployment.provider.name.to_string(),
                            vendor_model: deployment.model.to_string(),
                            key: deployment.provider.keys[k].id().to_owned(),
                            usable: deployment.provider.is_usable(k),
                            budget: budget.view(now),
                            breaker: deployment.breaker.view(now),
                            completion_estimate: deployment.estimate.tokens(),
                        })
                })
            })
            .collect()
    }
}

/// The shortest wait before any candidate could take a request of this size, without taking anything.
fn try_candidates_peek(route: &ModelRoute, prompt_tokens: u64, cap: Option<u32>, now: Instant) -> Option<Duration> {
    let mut earliest: Option<Duration> = None;
    for deployment in &route.deployments {
        let breaker_wait = deployment.breaker_wait(now);
        let cost = deployment.cost(prompt_tokens, cap);
        for (k, budget) in deployment.budgets.iter().enumerate() {
            if !deployment.provider.is_usable(k) {
                continue;
            }
            if let Ok(wait) = budget.available_in(cost, now) {
                let wait = wait.max(breaker_wait);
                earliest = Some(earliest.map_or(wait, |e| e.min(wait)));
            }
        }
    }
    earliest
}

/// What settling a reservation needs besides the reply.
struct Meter {
    /// The deployment's learned completion length, fed with each real one.
    estimate: Arc<estimate::CompletionEstimate>,
    /// How to count a stream whose vendor reports no usage.
    encoding: sluice_tokens::Encoding,
    /// The prompt's size as the gateway counted it.
    prompt_tokens: u64,
}

/// Settles the reservation with the real usage: at once for a complete answer, at the end of a stream
/// for a streamed one (or when the client goes away mid-stream).
fn settle_when_known(reply: ChatReply, reservation: Reservation, meter: Meter) -> ChatReply {
    let ChatReply { body, limits, dropped } = reply;
    let body = match body {
        ReplyBody::Complete { body, usage } => {
            settle(reservation, usage.as_ref(), &meter.estimate);
            ReplyBody::Complete { body, usage }
        }
        ReplyBody::Stream(events) => ReplyBody::Stream(Box::pin(Metered {
            events,
            reservation: Some(reservation),
            usage: None,
            tally: CompletionTally::new(meter.encoding),
            pending_error: None,
            ended: false,
            meter,
        })),
    };
    ChatReply { body, limits, dropped }
}

fn settle(reservation: Reservation, usage: Option<&TokenUsage>, estimate: &estimate::CompletionEstimate) {
    match usage {
        Some(usage) => {
            estimate.record(usage.output);
            reservation.settle(usage.total(), Instant::now());
        }
        // Without any count, what was reserved stays counted.
        None => {
            let reserved = reservation.tokens();
            reservation.settle(reserved, Instant::now());
        }
    }
}

/// A stream that remembers the usage it carries and settles its reservation when it ends or is dropped.
/// When the vendor reports no usage (some OpenAI-compatible servers never do), it counts the completion
/// from the streamed text and adds a final usage chunk marked as an estimate, before the end or before
/// the error that cut the stream, so the answer is metered either way.
struct Metered {
    events: EventStream,
    reservation: Option<Reservation>,
    usage: Option<TokenUsage>,
    /// What is needed to count the completion if no usage report arrives.
    tally: CompletionTally,
    pending_error: Option<ProviderError>,
    /// The inner stream has ended; it must not be polled again.
    ended: bool,
    meter: Meter,
}

impl Metered {
    fn finish(&mut self) {
        if let Some(reservation) = self.reservation.take() {
            settle(reservation, self.usage.as_ref(), &self.meter.estimate);
        }
    }

    /// The gateway's own usage chunk, when the vendor sent none and there is something to count.
    fn estimated_usage(&mut self) -> Option<StreamEvent> {
        if self.usage.is_some() || self.tally.is_empty() {
            return None;
        }
        let counted = std::mem::replace(&mut self.tally, CompletionTally::new(self.meter.encoding)).finish();
        let usage = TokenUsage::new(self.meter.prompt_tokens, counted.tokens);
        self.usage = Some(usage);
        let chunk = serde_json::json!({
            "id": counted.id,
            "object": "chat.completion.chunk",
            "created": counted.created,
            "model": counted.model,
            "choices": [],
            "usage": usage.to_openai(),
        });
        Some(StreamEvent {
            data: serde_json::to_vec(&chunk).map(bytes::Bytes::from).unwrap_or_default(),
            usage: Some(usage),
            usage_only: true,
            estimated: true,
        })
    }
}

/// Chunks kept unparsed before the tally starts counting as they pass. Most vendors report usage in the
/// last chunk, so most streams are never parsed for counting; a long stream costs at most this much memory
/// before its chunks are counted and let go.
const KEPT_CHUNK_BYTES: usize = 64 * 1024;

/// The completion of a stream, for when the vendor reports no usage. Short streams keep their chunks (by
/// reference count, not copied) and are counted only if needed; past [`KEPT_CHUNK_BYTES`] chunks are
/// counted as they pass, so a stream of any length holds a bounded amount of memory.
struct CompletionTally {
    kept: Vec<bytes::Bytes>,
    kept_bytes: usize,
    counting: Option<Counting>,
    encoding: sluice_tokens::Encoding,
}

/// A tally that counts as chunks pass.
struct Counting {
    counter: sluice_tokens::CompletionCounter,
    found: CountedCompletion,
}

impl CompletionTally {
    fn new(encoding: sluice_tokens::Encoding) -> Self {
        Self {
            kept: Vec::new(),
            kept_bytes: 0,
            counting: None,
            encoding,
        }
    }

    fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.counting.is_none()
    }

    /// Takes one OpenAI-format chunk.
    fn push(&mut self, data: &bytes::Bytes) {
        if let Some(counting) = &mut self.counting {
            counting.add(data);
            return;
        }
        self.kept_bytes += data.len();
        self.kept.push(data.clone());
        if self.kept_bytes > KEPT_CHUNK_BYTES {
            let mut counting = Counting::new(self.encoding);
            for kept in self.kept.drain(..) {
                counting.add(&kept);
            }
            self.kept = Vec::new();
            self.kept_bytes = 0;
            self.counting = Some(counting);
        }
    }

    /// A usage report arrived: nothing needs counting.
    fn clear(&mut self) {
        self.kept = Vec::new();
        self.kept_bytes = 0;
        self.counting = None;
    }

    fn finish(self) -> CountedCompletion {
        let mut counting = self.counting.unwrap_or_else(|| Counting::new(self.encoding));
        for kept in &self.kept {
            counting.add(kept);
        }
        counting.found.tokens = counting.counter.tokens();
        counting.found
    }
}

/// What counting a stream's text found.
struct CountedCompletion {
    tokens: u64,
    id: String,
    model: String,
    created: u64,
}

impl Counting {
    fn new(encoding: sluice_tokens::Encoding) -> Self {
        Self {
            counter: sluice_tokens::CompletionCounter::new(encoding),
            found: CountedCompletion {
                tokens: 0,
                id: String::new(),
                model: String::new(),
                created: 0,
            },
        }
    }

    /// Counts one chunk's text and tool call arguments; the first chunk also gives the id, model and time
    /// the estimated usage chunk carries.
    fn add(&mut self, data: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Chunk<'a> {
            #[serde(default, borrow)]
            id: std::borrow::Cow<'a, str>,
            #[serde(default, borrow)]
            model: std::borrow::Cow<'a, str>,
            #[serde(default)]
            created: u64,
            #[serde(default, borrow)]
            choices: Vec<Choice<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Choice<'a> {
            #[serde(default, borrow)]
            delta: Option<Delta<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Delta<'a> {
            #[serde(default, borrow)]
            content: Option<std::borrow::Cow<'a, str>>,
            #[serde(default)]
            tool_calls: Option<Vec<serde_json::Value>>,
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
            return;
        };
        let found = &mut self.found;
        if found.id.is_empty() {
            found.id = chunk.id.into_owned();
            found.model = chunk.model.into_owned();
            found.created = chunk.created;
        }
        for delta in chunk.choices.into_iter().filter_map(|c| c.delta) {
            if let Some(text) = delta.content {
                self.counter.push(&text);
            }
            for call in delta.tool_calls.iter().flatten() {
                if let Some(arguments) = call.pointer("/function/arguments").and_then(serde_json::Value::as_str) {
                    self.counter.push(arguments);
                }
            }
        }
    }
}

impl Stream for Metered {
    type Item = Result<StreamEvent, ProviderError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(err) = self.pending_error.take() {
            self.finish();
            self.ended = true;
            return Poll::Ready(Some(Err(err)));
        }
        if self.ended {
            self.finish();
            return Poll::Ready(None);
        }
        match self.events.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(event))) => {
                match event.usage {
                    Some(usage) => {
                        self.usage = Some(usage);
                        self.tally.clear();
                    }
                    None if self.usage.is_none() => self.tally.push(&event.data),
                    None => {}
                }
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(Some(Err(err))) => match self.estimated_usage() {
                Some(usage) => {
                    self.pending_error = Some(err);
                    Poll::Ready(Some(Ok(usage)))
                }
                None => {
                    self.finish();
                    self.ended = true;
                    Poll::Ready(Some(Err(err)))
                }
            },
            Poll::Ready(None) => {
                self.ended = true;
                match self.estimated_usage() {
                    Some(usage) => Poll::Ready(Some(Ok(usage))),
                    None => {
                        self.finish();
                        Poll::Ready(None)
                    }
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What the routing loop needs to know of one kind of upstream call.
trait Operation {
    /// The adapter's answer.
    type Reply;

    /// The model name the client asked for.
    fn model(&self) -> &str;

    /// The completion cap the client set, if any.
    fn completion_cap(&self) -> Option<u32>;

    /// Calls one candidate. A stream must have delivered its first chunk before this resolves.
    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        key: &'a UpstreamKey,
    ) -> BoxFuture<'a, Result<Self::Reply, ProviderError>>;

    /// What the vendor said of the key's limits.
    fn limits(reply: &Self::Reply) -> &RateLimitSnapshot;

    /// Settles the reservation when the usage is known.
    fn settle(reply: Self::Reply, reservation: Reservation, meter: Meter) -> Self::Reply;
}

struct ChatOperation<'r> {
    request: &'r ChatCompletionRequest,
}

impl Operation for ChatOperation<'_> {
    type Reply = ChatReply;

    fn model(&self) -> &str {
        &self.request.model
    }

    fn completion_cap(&self) -> Option<u32> {
        self.request.completion_cap()
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

    fn settle(reply: ChatReply, reservation: Reservation, meter: Meter) -> ChatReply {
        settle_when_known(reply, reservation, meter)
    }
}

struct EmbedOperation<'r> {
    request: &'r EmbeddingRequest,
}

impl Operation for EmbedOperation<'_> {
    type Reply = EmbedReply;

    fn model(&self) -> &str {
        &self.request.model
    }

    fn completion_cap(&self) -> Option<u32> {
        // Embeddings generate nothing: only the input counts.
        Some(0)
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

    fn settle(reply: EmbedReply, reservation: Reservation, _meter: Meter) -> EmbedReply {
        let used = reply.usage.map_or_else(|| reservation.tokens(), |u| u.prompt_tokens());
        reservation.settle(used, Instant::now());
        reply
    }
}

/// Tries each untried candidate in turn; takes capacity from the first that has it.
fn try_candidates(
    route: &ModelRoute,
    prompt_tokens: u64,
    cap: Option<u32>,
    tried: &[Candidate],
    now: Instant,
) -> Acquired {
    let mut earliest: Option<Duration> = None;
    let mut too_large: Option<(u64, u64)> = None;
    let mut any = false;
    for d in route.deployment_order() {
        let deployment = &route.deployments[d];
        let breaker_wait = deployment.breaker.admit(now).err();
        let cost = deployment.cost(prompt_tokens, cap);
        for k in deployment.provider.key_order() {
            let candidate = Candidate { deployment: d, key: k };
            if !deployment.provider.is_usable(k) || tried.contains(&candidate) {
                continue;
            }
            any = true;
            if let Some(wait) = breaker_wait {
                earliest = Some(earliest.map_or(wait, |e| e.min(wait)));
                continue;
            }
            match deployment.budgets[k].try_reserve(cost, now) {
                Ok(reservation) => return Acquired::Ready(candidate, reservation),
                Err(Refusal::Wait(wait)) => earliest = Some(earliest.map_or(wait, |e| e.min(wait))),
                Err(Refusal::TooLarge) => {
                    let largest = deployment.budgets[k].view(now).tpm.unwrap_or(0);
                    too_large = Some(too_large.map_or((cost, largest), |(c, l)| (c.min(cost), l.max(largest))));
                }
            }
        }
    }
    match (any, earliest, too_large) {
        (false, _, _) => Acquired::NoneLeft,
        (true, Some(wait), _) => Acquired::Wait(wait),
        (true, None, Some((tokens, largest))) => Acquired::TooLarge { tokens, largest },
        (true, None, None) => Acquired::NoneLeft,
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
    /// False once the vendor refused the key.
    pub usable: bool,
    /// Its budget now.
    pub budget: BudgetView,
    /// The deployment's breaker.
    pub breaker: BreakerView,
    /// Completion tokens reserved when a client sets no cap.
    pub completion_estimate: u64,
}
