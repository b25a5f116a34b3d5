//! Providers with their key pools, deployments with their per-key budgets, and models.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sluice_budget::{BudgetBackend, Limits, RateBudget};
use sluice_providers::{ChatProvider, UpstreamKey};
use sluice_tokens::{Encoding, EncodingName};
use tokio::time::Instant;

use crate::breaker::{Breaker, BreakerPolicy};
use crate::estimate::CompletionEstimate;
use crate::operation::Completion;

// === impl ProviderPool ===

/// A provider as the router sees it: an adapter and its key pool.
pub struct ProviderPool {
    pub(crate) name: Arc<str>,
    pub(crate) adapter: Arc<dyn ChatProvider>,
    pub(crate) keys: Vec<UpstreamKey>,
    /// Per key: whether the vendor refused it, and when it is tried again.
    health: Vec<KeyHealth>,
    pub(crate) missing: Vec<String>,
    next_key: AtomicUsize,
    /// Whether the vendor offers embeddings.
    embeds: bool,
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
    /// variables of keys that were not set, so the log and the admin can say what to set.
    pub fn new(
        name: impl Into<Arc<str>>,
        adapter: Arc<dyn ChatProvider>,
        keys: Vec<UpstreamKey>,
        missing: Vec<String>,
    ) -> Self {
        Self {
            name: name.into(),
            adapter,
            health: keys.iter().map(|_| KeyHealth::default()).collect(),
            keys,
            missing,
            next_key: AtomicUsize::new(0),
            embeds: true,
        }
    }

    /// The same pool, saying whether its vendor offers embeddings (by default it does): a model none of
    /// whose providers does is refused an embeddings request before its input is counted.
    pub fn with_embeddings(mut self, embeds: bool) -> Self {
        self.embeds = embeds;
        self
    }

    /// Whether the vendor offers embeddings.
    pub fn embeds(&self) -> bool {
        self.embeds
    }

    /// The provider's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The provider's keys.
    pub fn keys(&self) -> &[UpstreamKey] {
        &self.keys
    }

    /// Whether the provider has a key at all (a provider whose keys are all unset is disabled).
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// How long key `index` stays out of the pool (zero when its probe is due and unclaimed), or `None`
    /// when it is in good standing.
    pub(crate) fn is_out(&self, index: usize, now: Instant) -> Option<Duration> {
        self.health[index].out_for(now)
    }

    /// Claims the probe of key `index`, out and due for one: true for one caller until it answers.
    pub(crate) fn claim_probe(&self, index: usize, now: Instant) -> bool {
        self.health[index].claim(now)
    }

    /// Gives back a claimed probe that will not be sent.
    pub(crate) fn release_probe(&self, index: usize) {
        self.health[index].release();
    }

    /// Key indexes starting from a rotating position, so load spreads over the pool.
    pub(crate) fn key_order(&self) -> impl Iterator<Item = usize> + use<> {
        let start = self.next_key.fetch_add(1, Ordering::Relaxed);
        let len = self.keys.len();
        (0..len).map(move |i| (start + i) % len)
    }

    /// The vendor refused key `index` as invalid: it is out until a probe on a growing backoff (a minute,
    /// doubling up to an hour) finds it good again; returns that wait. Its value is never logged, only its id.
    pub(crate) fn refuse(&self, index: usize, now: Instant) -> Duration {
        let out_for = self.health[index].refuse(now);
        tracing::error!(
            provider = %self.name,
            key = self.keys[index].id(),
            probe_in_s = out_for.as_secs(),
            "the upstream refused this key as invalid; it is out of the pool until a probe finds it good"
        );
        out_for
    }

    /// Key `index` answered: if it was out, it is back.
    pub(crate) fn answered(&self, index: usize) {
        if self.health[index].heal() {
            tracing::info!(provider = %self.name, key = self.keys[index].id(), "the key is good again");
        }
    }

    /// The environment variables of keys that were not set, which would enable them.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// Ids of the keys out of the pool now: the vendor refused them and their probe has not found them good.
    pub fn out_ids(&self, now: Instant) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .zip(&self.health)
            .filter(move |(_, h)| h.out_for(now).is_some())
            .map(|(k, _)| k.id())
    }
}

/// A key's standing with its vendor.
#[derive(Debug, Default)]
struct KeyHealth {
    state: Mutex<Option<KeyOut>>,
}

/// A key the vendor refused.
#[derive(Debug, Clone, Copy)]
struct KeyOut {
    /// When one request may probe it.
    probe_at: Instant,
    /// Refusals in a row, for the backoff.
    strikes: u32,
    /// A probe is out since then.
    probing: Option<Instant>,
}

/// The first wait before probing a refused key, doubled per refusal up to [`KEY_PROBE_MAX`].
const KEY_PROBE_BASE: Duration = Duration::from_secs(60);
const KEY_PROBE_MAX: Duration = Duration::from_secs(3600);
/// A probe with no answer after this long (its request was dropped) no longer holds the key's probe.
const KEY_PROBE_STALE: Duration = Duration::from_secs(60);

impl KeyHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<KeyOut>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn claim(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match state.as_mut() {
            None => true,
            Some(out) if now >= out.probe_at && out.probing.is_none_or(|since| now >= since + KEY_PROBE_STALE) => {
                out.probing = Some(now);
                true
            }
            Some(_) => false,
        }
    }

    fn release(&self) {
        if let Some(out) = self.lock().as_mut() {
            out.probing = None;
        }
    }

    fn out_for(&self, now: Instant) -> Option<Duration> {
        self.lock().map(|out| match out.probing {
            // Out until the probe answers (or goes stale); checked again shortly.
            Some(since) if now < since + KEY_PROBE_STALE => {
                Duration::from_millis(100).max(out.probe_at.saturating_duration_since(now))
            }
            _ => out.probe_at.saturating_duration_since(now),
        })
    }

    fn refuse(&self, now: Instant) -> Duration {
        let mut state = self.lock();
        let strikes = state.map_or(1, |out| out.strikes.saturating_add(1));
        let wait = KEY_PROBE_BASE
            .saturating_mul(1 << strikes.saturating_sub(1).min(6))
            .min(KEY_PROBE_MAX);
        *state = Some(KeyOut {
            probe_at: now + wait,
            strikes,
            probing: None,
        });
        wait
    }

    fn heal(&self) -> bool {
        self.lock().take().is_some()
    }
}

// === impl Deployment ===

/// How a deployment is configured.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    /// Its position among its model's deployments in the configuration, which names its budgets and
    /// lets callers keep per-deployment settings (prices) beside the route.
    pub ordinal: usize,
    /// Who serves it.
    pub provider: Arc<ProviderPool>,
    /// The vendor's model id.
    pub model: Arc<str>,
    /// Completion cap sent when the client sets none and the vendor requires one; also the first
    /// completion estimate for budgets.
    pub max_tokens: Option<u32>,
    /// Lower is tried first.
    pub priority: u32,
    /// Share of traffic among deployments of equal priority.
    pub weight: u32,
    /// Per-key limits, as the vendor counts them.
    pub limits: Limits,
    /// When the deployment's breaker opens.
    pub breaker: BreakerPolicy,
    /// Drop client parameters the vendor cannot honour instead of refusing the request.
    pub drop_unsupported: bool,
}

/// Counters of one deployment, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeploymentCounters {
    /// Attempts sent upstream.
    pub attempts: AtomicU64,
    /// 429s the vendor answered.
    pub upstream_rate_limited: AtomicU64,
    /// Attempts that failed over to another candidate.
    pub failovers: AtomicU64,
}

/// One way to serve a model: a provider, the vendor's model id, and a budget per key of the provider.
#[derive(Debug)]
pub struct Deployment {
    pub(crate) ordinal: usize,
    pub(crate) provider: Arc<ProviderPool>,
    pub(crate) model: Arc<str>,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) priority: u32,
    pub(crate) weight: u32,
    pub(crate) drop_unsupported: bool,
    /// One budget per key of the provider, as the vendor counts them.
    pub(crate) budgets: Vec<Arc<dyn RateBudget>>,
    pub(crate) breaker: Breaker,
    pub(crate) estimate: Arc<CompletionEstimate>,
    pub(crate) counters: DeploymentCounters,
    /// How the vendor's tokens are counted when it reports none.
    pub(crate) encoding: Encoding,
}

/// Completion tokens reserved before a deployment has history, when neither the client nor the
/// configuration gives a cap.
const DEFAULT_COMPLETION_ESTIMATE: u64 = 512;

impl Deployment {
    /// A deployment of model `model_name` with a budget from `budgets` for each key of its provider,
    /// named `key/{model}/{ordinal}/{key id}` so every replica names it alike.
    pub fn new(model_name: &str, spec: DeploymentSpec, budgets: &dyn BudgetBackend) -> Self {
        let budgets = spec
            .provider
            .keys
            .iter()
            .map(|key| budgets.rate(&format!("key/{model_name}/{}/{}", spec.ordinal, key.id()), spec.limits))
            .collect();
        let default_estimate = spec.max_tokens.map_or(DEFAULT_COMPLETION_ESTIMATE, |m| {
            u64::from(m).min(DEFAULT_COMPLETION_ESTIMATE)
        });
        let encoding = Encoding::for_model(&spec.model, EncodingName::O200kBase);
        Self {
            ordinal: spec.ordinal,
            provider: spec.provider,
            model: spec.model,
            max_tokens: spec.max_tokens,
            priority: spec.priority,
            weight: spec.weight.max(1),
            drop_unsupported: spec.drop_unsupported,
            budgets,
            breaker: Breaker::new(spec.breaker),
            estimate: Arc::new(CompletionEstimate::new(default_estimate)),
            counters: DeploymentCounters::default(),
            encoding,
        }
    }

    /// Its position among its model's deployments in the configuration.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The provider serving it.
    pub fn provider(&self) -> &ProviderPool {
        &self.provider
    }

    /// The vendor's model id.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The encoding its tokens are counted with (an estimate for other vendors than OpenAI).
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Its counters.
    pub fn counters(&self) -> &DeploymentCounters {
        &self.counters
    }

    /// How long the deployment's breaker keeps it closed to requests, zero when it admits them. Unlike
    /// admitting, looking does not make the caller the probe.
    pub(crate) fn breaker_wait(&self, now: Instant) -> Duration {
        match self.breaker.view(now) {
            crate::breaker::BreakerView::Open { retry_in_ms } => Duration::from_millis(retry_in_ms),
            _ => Duration::ZERO,
        }
    }

    /// Tokens to reserve for a request: its prompt and its completion cap, or the learned estimate.
    pub(crate) fn cost(&self, prompt_tokens: u64, completion: Completion) -> u64 {
        let per_choice = completion.cap.unwrap_or_else(|| self.estimate.tokens());
        prompt_tokens.saturating_add(per_choice.saturating_mul(completion.choices))
    }

    /// The completion tokens a request is expected to generate here: its cap, or the learned estimate,
    /// times its choices.
    pub fn expected_completion(&self, completion: Completion) -> u64 {
        self.cost(0, completion)
    }
}

// === impl ModelRoute ===

/// Counters of one model, for `/metrics`.
#[derive(Debug, Default)]
pub struct ModelCounters {
    /// Requests that waited in the queue for capacity.
    pub queue_waits: AtomicU64,
    /// Requests refused with a 429 because no candidate had capacity in time.
    pub rejections: AtomicU64,
}

/// A model name clients may call, and its deployments.
#[derive(Debug)]
pub struct ModelRoute {
    pub(crate) name: Arc<str>,
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) max_queue: Duration,
    /// Requests waiting for capacity take turns through this lock: tokio's mutex is fair (FIFO).
    pub(crate) queue: tokio::sync::Mutex<()>,
    pub(crate) waiting: AtomicUsize,
    pub(crate) counters: ModelCounters,
}

impl ModelRoute {
    /// A model `name` served by `deployments`; a request waits at most `max_queue` for capacity.
    pub fn new(name: impl Into<Arc<str>>, mut deployments: Vec<Deployment>, max_queue: Duration) -> Self {
        deployments.sort_by_key(|d| d.priority);
        Self {
            name: name.into(),
            deployments,
            max_queue,
            queue: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
            counters: ModelCounters::default(),
        }
    }

    /// The name clients send.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its deployments, by priority.
    pub fn deployments(&self) -> &[Deployment] {
        &self.deployments
    }

    /// The encoding to count a request for this model with: its first deployment's. Deployments of one
    /// model name normally share a tokenizer family; when they do not, the first one's count is the
    /// estimate.
    pub fn encoding(&self) -> Encoding {
        self.deployments
            .first()
            .map_or_else(|| EncodingName::O200kBase.into(), Deployment::encoding)
    }

    /// Whether any of its deployments' providers offers embeddings.
    pub fn embeds(&self) -> bool {
        self.deployments.iter().any(|d| d.provider.embeds())
    }

    /// Its counters.
    pub fn counters(&self) -> &ModelCounters {
        &self.counters
    }

    /// Deployment indexes in the order to try them: by priority, and by a weighted draw within a
    /// priority so traffic spreads by weight.
    pub(crate) fn deployment_order(&self) -> Vec<usize> {
        let mut ordered = Vec::with_capacity(self.deployments.len());
        let mut group_start = 0;
        while group_start < self.deployments.len() {
            let priority = self.deployments[group_start].priority;
            let group_end = self.deployments[group_start..]
                .iter()
                .position(|d| d.priority != priority)
                .map_or(self.deployments.len(), |offset| group_start + offset);
            let mut group: Vec<usize> = (group_start..group_end).collect();
            while !group.is_empty() {
                let total: u64 = group.iter().map(|i| u64::from(self.deployments[*i].weight)).sum();
                let mut draw = fastrand::u64(0..total.max(1));
                let pick = group
                    .iter()
                    .position(|i| {
                        let weight = u64::from(self.deployments[*i].weight);
                        if draw < weight {
                            true
                        } else {
                            draw -= weight;
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
