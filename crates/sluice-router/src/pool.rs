//! Providers with their key pools, deployments with their per-key budgets, and models.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use sluice_providers::{ChatProvider, UpstreamKey};
use sluice_tokens::{Encoding, EncodingName};
use tokio::time::Instant;

use crate::breaker::{Breaker, BreakerPolicy};
use crate::budget::{KeyBudget, Limits};
use crate::estimate::CompletionEstimate;

// === impl ProviderPool ===

/// A provider as the router sees it: an adapter and its key pool.
pub struct ProviderPool {
    pub(crate) name: Arc<str>,
    pub(crate) adapter: Arc<dyn ChatProvider>,
    pub(crate) keys: Vec<UpstreamKey>,
    /// Per key: the upstream refused it (401/403), so it is out of the pool until restart.
    rejected: Vec<AtomicBool>,
    pub(crate) missing: Vec<String>,
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

    pub(crate) fn is_usable(&self, index: usize) -> bool {
        !self.rejected[index].load(Ordering::Relaxed)
    }

    /// Key indexes starting from a rotating position, so load spreads over the pool.
    pub(crate) fn key_order(&self) -> impl Iterator<Item = usize> {
        let start = self.next_key.fetch_add(1, Ordering::Relaxed);
        let len = self.keys.len();
        (0..len).map(move |i| (start + i) % len)
    }

    /// Takes a key the upstream refused out of the pool. Its value is never logged, only its id.
    pub(crate) fn reject(&self, index: usize) {
        if !self.rejected[index].swap(true, Ordering::Relaxed) {
            tracing::error!(
                provider = %self.name,
                key = self.keys[index].id(),
                "the upstream refused this key; it is out of the pool until the gateway restarts"
            );
        }
    }

    /// Ids of the keys the upstream refused.
    /// The environment variables of keys that were not set, which would enable them.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// The ids of keys the vendor refused, out of the pool until restart.
    pub fn rejected_ids(&self) -> impl Iterator<Item = &str> {
        self.keys
            .iter()
            .zip(&self.rejected)
            .filter(|(_, r)| r.load(Ordering::Relaxed))
            .map(|(k, _)| k.id())
    }
}

// === impl Deployment ===

/// How a deployment is configured.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
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
    pub(crate) provider: Arc<ProviderPool>,
    pub(crate) model: Arc<str>,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) priority: u32,
    pub(crate) weight: u32,
    pub(crate) drop_unsupported: bool,
    pub(crate) budgets: Vec<Arc<KeyBudget>>,
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
    /// A deployment with full budgets for each key of its provider.
    pub fn new(spec: DeploymentSpec) -> Self {
        let now = Instant::now();
        let budgets = spec
            .provider
            .keys
            .iter()
            .map(|_| Arc::new(KeyBudget::new(spec.limits, now)))
            .collect();
        let default_estimate = spec.max_tokens.map_or(DEFAULT_COMPLETION_ESTIMATE, |m| {
            u64::from(m).min(DEFAULT_COMPLETION_ESTIMATE)
        });
        let encoding = Encoding::for_model(&spec.model, EncodingName::O200kBase);
        Self {
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
    pub(crate) fn cost(&self, prompt_tokens: u64, completion_cap: Option<u32>) -> u64 {
        let completion = completion_cap.map_or_else(|| self.estimate.tokens(), u64::from);
        prompt_tokens + completion
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
