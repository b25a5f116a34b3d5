//! The routing loop every operation shares: acquire a candidate with capacity (waiting in turn when
//! none has it), call it, learn from the outcome, fail over on what another candidate could avoid.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_budget::Reservation;
use sluice_providers::{ProviderError, TimeoutPhase};
use tokio::time::Instant;

use crate::candidates::{self, Candidate, Found, Scope, Tried};
use crate::operation::{Completion, Operation};
use crate::{Attempt, AttemptOutcome, Deployment, KeySettlement, ModelRoute, RouteError, Routed, Router};

/// What a look for capacity found.
enum Acquired {
    Ready(Candidate, Reservation),
    /// No candidate is left to call.
    NoneLeft,
    /// Nothing has capacity within the request's queue time; the earliest capacity is this far.
    Exhausted(Duration),
    TooLarge {
        tokens: u64,
        largest: u64,
    },
}

impl Router {
    /// Serves `operation`, whose input counts `prompt_tokens`, within the budgets, failing over between
    /// candidates. Every upstream call is appended to `trail` as it is made, so a caller dropped halfway
    /// still knows which calls the vendors may bill.
    pub async fn serve<O: Operation>(
        &self,
        operation: &O,
        prompt_tokens: u64,
        trail: &mut Vec<Attempt>,
    ) -> Result<Routed<O::Reply>, RouteError> {
        let model = operation.model();
        let route = self.route(model)?;
        let completion = operation.completion();
        let deadline = Instant::now() + route.max_queue;
        let mut tried = Tried::default();
        let mut last: Option<(ProviderError, Arc<str>)> = None;
        let mut attempts = 0u32;
        let mut refused_a_key = false;
        while attempts < self.settings.max_attempts {
            let (candidate, reservation) = match self.acquire(route, prompt_tokens, completion, &tried, deadline).await
            {
                Acquired::Ready(candidate, reservation) => (candidate, reservation),
                Acquired::NoneLeft => break,
                Acquired::Exhausted(retry_after) => {
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
            attempts += 1;
            let deployment = &route.deployments[candidate.deployment];
            let key = &deployment.provider.keys[candidate.key];
            let provider = Arc::clone(&deployment.provider.name);
            deployment.counters.attempts.fetch_add(1, Ordering::Relaxed);
            trail.push(Attempt {
                provider: Arc::clone(&provider),
                vendor_model: Arc::clone(&deployment.model),
                key_id: Arc::from(key.id()),
                deployment: deployment.ordinal,
                outcome: AttemptOutcome::Pending,
                span: sluice_trace::begin_attempt(),
            });
            let outcome = operation.call(deployment, key).await;
            if let Some(span) = trail.last_mut().and_then(|a| a.span.as_mut()) {
                span.end();
            }
            let budget = &deployment.budgets[candidate.key];
            match outcome {
                Ok(reply) => {
                    // The vendor answered: it counted the request, which holds no more room out of a
                    // shared bucket while the answer streams.
                    let mut reservation = reservation;
                    reservation.reached();
                    if let Some(attempt) = trail.last_mut() {
                        attempt.outcome = AttemptOutcome::Answered;
                    }
                    deployment.breaker.success();
                    deployment.provider.answered(candidate.key);
                    budget.succeeded();
                    let limits = O::limits(&reply);
                    budget.learn_remaining(limits.remaining_requests, limits.remaining_tokens);
                    return Ok(Routed {
                        reply,
                        provider,
                        vendor_model: Arc::clone(&deployment.model),
                        key_id: Arc::from(key.id()),
                        deployment: deployment.ordinal,
                        encoding: deployment.encoding,
                        attempts,
                        settlement: KeySettlement::new(reservation, Arc::clone(&deployment.estimate), completion),
                    });
                }
                Err(err) => {
                    if let Some(attempt) = trail.last_mut() {
                        attempt.outcome = AttemptOutcome::Failed {
                            kind: err.kind(),
                            billable: may_be_billed(&err),
                        };
                    }
                    log_failure(&err, &provider, key.id(), attempts);
                    let refused = matches!(err, ProviderError::Authentication { .. });
                    // One request takes out at most one key for one cause: a second refusal in a row is more
                    // likely the request's doing than every key's.
                    let take_out = refused && !refused_a_key;
                    refused_a_key |= refused;
                    self.learn_from_failure(deployment, candidate.key, &err, reservation, take_out);
                    let again_later = matches!(err, ProviderError::RateLimited { .. });
                    tried.push(candidate, again_later);
                    if !err.is_retryable() || (refused && !take_out) {
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
            // Rate limits are the gateway's to report, with an honest retry time across every candidate.
            Some((ProviderError::RateLimited { .. }, _)) => {
                route.counters.rejections.fetch_add(1, Ordering::Relaxed);
                Err(RouteError::Exhausted {
                    model: model.to_owned(),
                    retry_after: candidates::earliest(route, prompt_tokens, completion, &Tried::default())
                        .unwrap_or(Duration::from_secs(1)),
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
                    .flat_map(|d| d.provider.out_ids(Instant::now()).map(str::to_owned))
                    .collect(),
            }),
        }
    }

    /// Finds a candidate with capacity: an untried one now, else any that may be called (the same key
    /// after its cooldown included) as soon as one has capacity, waiting in turn (first come, first
    /// served) until `deadline`. A newcomer queues behind the requests already waiting rather than taking
    /// capacity they wait for.
    async fn acquire(
        &self,
        route: &ModelRoute,
        prompt_tokens: u64,
        completion: Completion,
        tried: &Tried,
        deadline: Instant,
    ) -> Acquired {
        if route.waiting.load(Ordering::Acquire) == 0 {
            match candidates::take(route, prompt_tokens, completion, tried, Scope::Untried).await {
                Found::Ready(candidate, reservation) => return Acquired::Ready(candidate, reservation),
                Found::TooLarge { tokens, largest } => return Acquired::TooLarge { tokens, largest },
                Found::NoneLeft | Found::Wait(_) => {}
            }
        }
        let Some(wait) = candidates::earliest(route, prompt_tokens, completion, tried) else {
            return Acquired::NoneLeft;
        };
        if Instant::now() + wait > deadline {
            return Acquired::Exhausted(self.honest_wait(route, prompt_tokens, completion, wait));
        }
        route.counters.queue_waits.fetch_add(1, Ordering::Relaxed);
        // Counted while waiting, and uncounted however the wait ends, the request dropped included.
        let _waiting = Waiting::enter(&route.waiting);
        async {
            let Ok(_turn) = tokio::time::timeout_at(deadline, route.queue.lock()).await else {
                return self.after_deadline(route, prompt_tokens, completion, tried).await;
            };
            loop {
                match candidates::take(route, prompt_tokens, completion, tried, Scope::Again).await {
                    Found::Ready(candidate, reservation) => return Acquired::Ready(candidate, reservation),
                    Found::TooLarge { tokens, largest } => return Acquired::TooLarge { tokens, largest },
                    Found::NoneLeft => return Acquired::NoneLeft,
                    Found::Wait(wait) if Instant::now() + wait <= deadline => tokio::time::sleep(wait).await,
                    Found::Wait(wait) => {
                        return Acquired::Exhausted(self.honest_wait(route, prompt_tokens, completion, wait));
                    }
                }
            }
        }
        .await
    }

    /// The last look when the queue time ran out waiting for a turn.
    async fn after_deadline(
        &self,
        route: &ModelRoute,
        prompt_tokens: u64,
        completion: Completion,
        tried: &Tried,
    ) -> Acquired {
        match candidates::take(route, prompt_tokens, completion, tried, Scope::Again).await {
            Found::Ready(candidate, reservation) => Acquired::Ready(candidate, reservation),
            Found::TooLarge { tokens, largest } => Acquired::TooLarge { tokens, largest },
            Found::NoneLeft => Acquired::NoneLeft,
            Found::Wait(wait) => Acquired::Exhausted(self.honest_wait(route, prompt_tokens, completion, wait)),
        }
    }

    /// The `retry-after` of a refusal: the earliest capacity over every candidate, tried ones included.
    fn honest_wait(
        &self,
        route: &ModelRoute,
        prompt_tokens: u64,
        completion: Completion,
        fallback: Duration,
    ) -> Duration {
        candidates::earliest(route, prompt_tokens, completion, &Tried::default()).map_or(fallback, |w| w.min(fallback))
    }

    fn learn_from_failure(
        &self,
        deployment: &Deployment,
        key: usize,
        err: &ProviderError,
        reservation: Reservation,
        take_out: bool,
    ) {
        let budget = &deployment.budgets[key];
        let now = Instant::now();
        match err {
            ProviderError::RateLimited { retry_after, .. } => {
                deployment
                    .counters
                    .upstream_rate_limited
                    .fetch_add(1, Ordering::Relaxed);
                // The vendor did not count a refused request.
                reservation.cancel();
                let pause = budget.cool_down(*retry_after, self.settings.backoff);
                tracing::info!(
                    key = deployment.provider.keys[key].id(),
                    cooldown_ms = pause.as_millis() as u64,
                    "key cooling down"
                );
                // The vendor authenticated the key and answered: it is good, and the deployment is up.
                deployment.provider.answered(key);
                deployment.breaker.success();
            }
            ProviderError::QuotaExhausted { .. } => {
                deployment
                    .counters
                    .upstream_rate_limited
                    .fetch_add(1, Ordering::Relaxed);
                reservation.cancel();
                // Quota comes back with billing, not with time: keep the key out for a long while.
                budget.cool_down(Some(Duration::from_secs(600)), self.settings.backoff);
                deployment.provider.answered(key);
                deployment.breaker.success();
            }
            ProviderError::Authentication { .. } => {
                reservation.cancel();
                if take_out {
                    let out_for = deployment.provider.refuse(key, now);
                    // The key's budget cools down as long: replicas sharing the budget skip the key too.
                    budget.cool_down(Some(out_for), self.settings.backoff);
                } else {
                    deployment.provider.release_probe(key);
                }
                // The deployment answered; the key is the problem.
                deployment.breaker.success();
            }
            ProviderError::Connect { .. } => {
                reservation.cancel();
                deployment.provider.release_probe(key);
                deployment.breaker.failure(now);
            }
            ProviderError::Rejected { .. } => {
                reservation.cancel();
                // A key on probation answered: the request was bad, the key is good, the deployment is up.
                deployment.provider.answered(key);
                deployment.breaker.success();
            }
            ProviderError::Overloaded { .. }
            | ProviderError::Server { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::Protocol { .. }
            | ProviderError::Truncated { .. } => {
                // The vendor may have counted the request; the tokens stay reserved until they refill.
                drop(reservation);
                deployment.provider.release_probe(key);
                deployment.breaker.failure(now);
            }
        }
    }
}

/// One request counted among those waiting for capacity, for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::AcqRel);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether the vendor may bill a failed call: it accepted the request and may have generated tokens
/// (a timeout after sending, a stream cut or malformed after its head). Refusals, connect errors and
/// error statuses are not billed.
fn may_be_billed(err: &ProviderError) -> bool {
    match err {
        ProviderError::Timeout { phase, .. } => *phase != TimeoutPhase::Connect,
        ProviderError::Protocol { .. } | ProviderError::Truncated { .. } => true,
        _ => false,
    }
}

fn log_failure(err: &ProviderError, provider: &str, key: &str, attempt: u32) {
    match err {
        // The vendor's message may quote part of the key, so only the status is logged.
        ProviderError::Authentication { status, .. } => tracing::error!(
            provider,
            key,
            status,
            "the upstream rejected this key; check the provider's keys"
        ),
        ProviderError::Connect { detail }
        | ProviderError::Truncated { detail }
        | ProviderError::Protocol { detail } => {
            tracing::warn!(provider, key, attempt, error = %err, detail, "upstream attempt failed")
        }
        _ => tracing::warn!(provider, key, attempt, error = %err, "upstream attempt failed"),
    }
}
