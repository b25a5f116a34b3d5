//! The one search for a candidate (a deployment and one of its provider's keys) with capacity: which
//! candidates are eligible and in what order, taking capacity from the first that has it, or looking,
//! without taking, at how soon any will.

use std::time::Duration;

use sluice_budget::{Refusal, Reservation};
use tokio::time::Instant;

use crate::operation::Completion;
use crate::pool::ModelRoute;

/// One candidate: a deployment (by its index in the route) and one of its provider's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) deployment: usize,
    pub(crate) key: usize,
}

/// Candidates a request has already called, and whether each may be called again once it has capacity
/// (a key that answered 429 may, after its cooldown; one that failed otherwise may not).
#[derive(Debug, Default)]
pub(crate) struct Tried {
    calls: Vec<(Candidate, bool)>,
}

impl Tried {
    pub(crate) fn push(&mut self, candidate: Candidate, again_later: bool) {
        self.calls.push((candidate, again_later));
    }

    fn allows(&self, candidate: Candidate, again: bool) -> bool {
        self.calls
            .iter()
            .filter(|(c, _)| *c == candidate)
            .all(|(_, later)| again && *later)
    }
}

/// What a search found.
#[derive(Debug)]
pub(crate) enum Found {
    /// A candidate with its capacity held.
    Ready(Candidate, Reservation),
    /// No candidate is left to call.
    NoneLeft,
    /// Candidates remain, but none has capacity before this long.
    Wait(Duration),
    /// The request is larger than every remaining candidate's whole budget.
    TooLarge { tokens: u64, largest: u64 },
}

/// What a search is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Candidates not called yet: failing over.
    Untried,
    /// Also candidates called before that may be called again: waiting for capacity.
    Again,
}

/// The eligible candidates of `route` in the order to try them: deployments by priority (weighted
/// within a priority), each provider's keys from a rotating start, skipping keys out of their pool and
/// candidates `tried` excludes.
fn eligible<'r>(route: &'r ModelRoute, tried: &'r Tried, scope: Scope) -> impl Iterator<Item = Candidate> + 'r {
    route.deployment_order().into_iter().flat_map(move |d| {
        let provider = &route.deployments[d].provider;
        provider
            .key_order()
            .map(move |key| Candidate { deployment: d, key })
            .filter(move |c| tried.allows(*c, scope == Scope::Again))
    })
}

/// Takes capacity from the first eligible candidate that has it now, for a request of `prompt_tokens`
/// and its `completion`.
pub(crate) async fn take(
    route: &ModelRoute,
    prompt_tokens: u64,
    completion: Completion,
    tried: &Tried,
    scope: Scope,
) -> Found {
    let now = Instant::now();
    let mut earliest: Option<Duration> = None;
    let mut too_large: Option<(u64, u64)> = None;
    let mut any = false;
    for candidate in eligible(route, tried, scope) {
        let deployment = &route.deployments[candidate.deployment];
        let provider = &deployment.provider;
        // A key the vendor refused sits out until its probe is due.
        let probe = match provider.is_out(candidate.key, now) {
            None => false,
            Some(wait) if wait.is_zero() => true,
            Some(_) => continue,
        };
        any = true;
        let cost = deployment.cost(prompt_tokens, completion);
        let budget = &deployment.budgets[candidate.key];
        let reservation = match Reservation::take(budget, cost).await {
            Ok(reservation) => reservation,
            Err(Refusal::Wait(wait)) => {
                earliest = Some(earliest.map_or(wait, |e| e.min(wait)));
                continue;
            }
            Err(Refusal::TooLarge) => {
                let largest = budget.view().tpm.unwrap_or(0);
                too_large = Some(too_large.map_or((cost, largest), |(c, l)| (c.min(cost), l.max(largest))));
                continue;
            }
        };
        // Claims last, so that a candidate passed over never keeps a probe it will not send.
        if probe && !provider.claim_probe(candidate.key, now) {
            reservation.cancel();
            continue;
        }
        if let Err(wait) = deployment.breaker.admit(now) {
            if probe {
                provider.release_probe(candidate.key);
            }
            reservation.cancel();
            earliest = Some(earliest.map_or(wait, |e| e.min(wait)));
            continue;
        }
        return Found::Ready(candidate, reservation);
    }
    match (any, earliest, too_large) {
        (true, Some(wait), _) => Found::Wait(wait),
        (true, None, Some((tokens, largest))) => Found::TooLarge { tokens, largest },
        _ => Found::NoneLeft,
    }
}

/// The shortest wait before an eligible candidate could take a request of this size, without taking
/// anything (nor claiming a breaker's or a key's probe). `None` when no candidate ever could.
pub(crate) fn earliest(
    route: &ModelRoute,
    prompt_tokens: u64,
    completion: Completion,
    tried: &Tried,
) -> Option<Duration> {
    let now = Instant::now();
    let mut earliest: Option<Duration> = None;
    for candidate in eligible(route, tried, Scope::Again) {
        let deployment = &route.deployments[candidate.deployment];
        if deployment
            .provider
            .is_out(candidate.key, now)
            .is_some_and(|wait| !wait.is_zero())
        {
            continue;
        }
        let cost = deployment.cost(prompt_tokens, completion);
        if let Ok(wait) = deployment.budgets[candidate.key].available_in(cost) {
            let wait = wait.max(deployment.breaker_wait(now));
            earliest = Some(earliest.map_or(wait, |e| e.min(wait)));
        }
    }
    earliest
}
