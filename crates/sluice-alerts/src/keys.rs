//! Key and deployment health, from the router's own view of its limits (`GET /admin/limits`), compared
//! check after check: a pure state machine, so the rules below are tested without a clock.
//!
//! - A key is out when the vendor refused it (announced at the first check that sees it) or when it is
//!   cooling down after 429s at two checks in a row (one 429 with a short retry time is traffic, not an
//!   outage; a key still cooling at the next check is a 429 storm, its quota exhausted).
//! - A deployment is out when its circuit breaker is open or half open (announced at once: the breaker
//!   already waited for consecutive failures), or when at least half of its calls since the last check
//!   were answered 429 by the vendor, over ten calls or more (a rising share of 429s, before any key is
//!   out for good); a check with fewer calls keeps what was seen.
//! - What was announced out is announced recovered after two checks in a row see it good.
//!
//! Each replica watches its own keys: the state is per process, as the router's is.

use std::collections::HashMap;

use sluice_router::LimitsView;
use sluice_router::breaker::BreakerView;

use crate::payload::{Event, OutReason};

/// Checks in a row a state must be seen before it is announced, where it is not announced at once.
const CONFIRM: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Key {
        model: String,
        provider: String,
        vendor_model: String,
        key: String,
    },
    Deployment {
        model: String,
        provider: String,
        vendor_model: String,
    },
}

#[derive(Debug, Default)]
struct Tracked {
    /// What the last check saw.
    seen: Option<OutReason>,
    /// Checks in a row that saw it.
    streak: u32,
    /// The outage announced and not yet recovered.
    announced: Option<OutReason>,
}

/// Calls in a check below which the share of 429s says nothing.
const MIN_CALLS: u64 = 10;

/// One deployment's counters since start, as `/metrics` has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentLoad {
    /// The model name clients send.
    pub model: String,
    /// The provider.
    pub provider: String,
    /// The vendor's model id.
    pub vendor_model: String,
    /// Calls sent upstream.
    pub attempts: u64,
    /// Of them, answered 429.
    pub rate_limited: u64,
}

/// Key and deployment health across checks.
#[derive(Debug, Default)]
pub struct KeyWatch {
    tracked: HashMap<Subject, Tracked>,
    /// Each deployment's counters at the last check, and whether its 429 share was high then.
    loads: HashMap<Subject, (u64, u64, bool)>,
}

impl KeyWatch {
    /// Compares `views` (the router's limits now) and `loads` (its deployments' counters) with the checks
    /// before, and returns what to announce.
    pub fn check(&mut self, views: &[LimitsView], loads: &[DeploymentLoad]) -> Vec<Event> {
        let mut observed: Vec<(Subject, Option<OutReason>, Option<u64>)> = Vec::new();
        for view in views {
            let reason = if !view.usable {
                Some(OutReason::Refused)
            } else if view.budget.cooldown_ms.is_some() {
                Some(OutReason::Cooldown)
            } else {
                None
            };
            observed.push((
                Subject::Key {
                    model: view.model.clone(),
                    provider: view.provider.clone(),
                    vendor_model: view.vendor_model.clone(),
                    key: view.key.clone(),
                },
                reason,
                view.budget.cooldown_ms,
            ));
            let deployment = Subject::Deployment {
                model: view.model.clone(),
                provider: view.provider.clone(),
                vendor_model: view.vendor_model.clone(),
            };
            // One row per key: the deployment is seen once.
            if !observed.iter().any(|(s, _, _)| *s == deployment) {
                let open = !matches!(view.breaker, BreakerView::Closed);
                let limited = self.rate_limited(&deployment, loads);
                let reason = if open {
                    Some(OutReason::BreakerOpen)
                } else {
                    limited.then_some(OutReason::RateLimited)
                };
                observed.push((deployment, reason, None));
            }
        }
        let mut events = Vec::new();
        for (subject, reason, cooldown_ms) in observed {
            let tracked = self.tracked.entry(subject.clone()).or_default();
            if tracked.seen == reason {
                tracked.streak = tracked.streak.saturating_add(1);
            } else {
                tracked.seen = reason;
                tracked.streak = 1;
            }
            match (tracked.announced, reason) {
                (None, Some(out)) => {
                    let needed = if out == OutReason::Cooldown { CONFIRM } else { 1 };
                    if tracked.streak >= needed {
                        tracked.announced = Some(out);
                        events.push(out_event(subject, out, cooldown_ms));
                    }
                }
                (Some(was), None) if tracked.streak >= CONFIRM => {
                    tracked.announced = None;
                    events.push(recovered_event(subject, was));
                }
                _ => {}
            }
        }
        events
    }
}

impl KeyWatch {
    /// Whether at least half of the deployment's calls since the last check were 429s; with fewer than
    /// [`MIN_CALLS`] calls, what the last check said.
    fn rate_limited(&mut self, deployment: &Subject, loads: &[DeploymentLoad]) -> bool {
        let Subject::Deployment {
            model,
            provider,
            vendor_model,
        } = deployment
        else {
            return false;
        };
        let Some(load) = loads
            .iter()
            .find(|l| l.model == *model && l.provider == *provider && l.vendor_model == *vendor_model)
        else {
            return false;
        };
        let (attempts, limited, high) = self.loads.get(deployment).copied().unwrap_or((0, 0, false));
        let calls = load.attempts.saturating_sub(attempts);
        if calls < MIN_CALLS {
            return high;
        }
        let high = load.rate_limited.saturating_sub(limited).saturating_mul(2) >= calls;
        self.loads
            .insert(deployment.clone(), (load.attempts, load.rate_limited, high));
        high
    }
}

fn out_event(subject: Subject, reason: OutReason, cooldown_ms: Option<u64>) -> Event {
    match subject {
        Subject::Key {
            model,
            provider,
            vendor_model,
            key,
        } => Event::KeyOut {
            model,
            provider,
            vendor_model,
            key,
            reason,
            cooldown_ms: cooldown_ms.filter(|_| reason == OutReason::Cooldown),
        },
        Subject::Deployment {
            model,
            provider,
            vendor_model,
        } => Event::DeploymentOut {
            model,
            provider,
            vendor_model,
            reason,
        },
    }
}

fn recovered_event(subject: Subject, reason: OutReason) -> Event {
    match subject {
        Subject::Key {
            model,
            provider,
            vendor_model,
            key,
        } => Event::KeyRecovered {
            model,
            provider,
            vendor_model,
            key,
            reason,
        },
        Subject::Deployment {
            model,
            provider,
            vendor_model,
        } => Event::DeploymentRecovered {
            model,
            provider,
            vendor_model,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use sluice_router::LimitsView;

    use super::*;

    fn view(usable: bool, cooldown_ms: Option<u64>, breaker: BreakerView) -> LimitsView {
        LimitsView {
            model: "m".into(),
            provider: "up".into(),
            vendor_model: "v".into(),
            key: "up#0".into(),
            usable,
            probe_in_ms: None,
            budget: budget_view(cooldown_ms),
            breaker,
            completion_estimate: 512,
        }
    }

    fn budget_view(cooldown_ms: Option<u64>) -> sluice_router::BudgetView {
        sluice_router::BudgetView {
            rpm: None,
            remaining_requests: None,
            tpm: None,
            remaining_tokens: None,
            in_flight: 0,
            max_in_flight: None,
            cooldown_ms,
        }
    }

    impl KeyWatch {
        fn check_views(&mut self, views: &[LimitsView]) -> Vec<Event> {
            self.check(views, &[])
        }
    }

    fn load(attempts: u64, rate_limited: u64) -> DeploymentLoad {
        DeploymentLoad {
            model: "m".into(),
            provider: "up".into(),
            vendor_model: "v".into(),
            attempts,
            rate_limited,
        }
    }

    #[test]
    fn a_rising_share_of_429s_takes_a_deployment_out() {
        let mut watch = KeyWatch::default();
        let good = [view(true, None, BreakerView::Closed)];
        assert!(watch.check(&good, &[load(100, 10)]).is_empty(), "10% of 429s");
        // 6 of the next 10 calls were 429s.
        let out = watch.check(&good, &[load(110, 16)]);
        assert_eq!(kinds(&out), ["deployment_out"]);
        assert!(matches!(
            out[0],
            Event::DeploymentOut {
                reason: OutReason::RateLimited,
                ..
            }
        ));
        // Too few calls to say: still out, nothing new.
        assert!(watch.check(&good, &[load(112, 18)]).is_empty());
        // Two checks of mostly good calls: recovered.
        assert!(watch.check(&good, &[load(140, 19)]).is_empty());
        assert_eq!(kinds(&watch.check(&good, &[load(160, 19)])), ["deployment_recovered"]);
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events
            .iter()
            .map(|e| match e {
                Event::KeyOut { .. } => "key_out",
                Event::KeyRecovered { .. } => "key_recovered",
                Event::DeploymentOut { .. } => "deployment_out",
                Event::DeploymentRecovered { .. } => "deployment_recovered",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn one_short_cooldown_is_not_an_outage() {
        let mut watch = KeyWatch::default();
        assert!(watch.check_views(&[view(true, None, BreakerView::Closed)]).is_empty());
        assert!(
            watch
                .check_views(&[view(true, Some(300), BreakerView::Closed)])
                .is_empty()
        );
        assert!(watch.check_views(&[view(true, None, BreakerView::Closed)]).is_empty());
        assert!(watch.check_views(&[view(true, None, BreakerView::Closed)]).is_empty());
    }

    #[test]
    fn a_429_storm_is_announced_once_then_its_recovery() {
        let mut watch = KeyWatch::default();
        assert!(
            watch
                .check_views(&[view(true, Some(9000), BreakerView::Closed)])
                .is_empty()
        );
        let out = watch.check_views(&[view(true, Some(8000), BreakerView::Closed)]);
        assert_eq!(kinds(&out), ["key_out"]);
        assert!(matches!(
            out[0],
            Event::KeyOut {
                reason: OutReason::Cooldown,
                cooldown_ms: Some(8000),
                ..
            }
        ));
        // Still out, or out for another reason: nothing new.
        assert!(
            watch
                .check_views(&[view(true, Some(7000), BreakerView::Closed)])
                .is_empty()
        );
        assert!(watch.check_views(&[view(false, None, BreakerView::Closed)]).is_empty());
        // Good once is not enough; twice is a recovery.
        assert!(watch.check_views(&[view(true, None, BreakerView::Closed)]).is_empty());
        assert_eq!(
            kinds(&watch.check_views(&[view(true, None, BreakerView::Closed)])),
            ["key_recovered"]
        );
        assert!(watch.check_views(&[view(true, None, BreakerView::Closed)]).is_empty());
    }

    #[test]
    fn refused_keys_and_open_breakers_are_announced_at_once() {
        let mut watch = KeyWatch::default();
        let open = BreakerView::Open { retry_in_ms: 1000 };
        assert_eq!(
            kinds(&watch.check_views(&[view(false, None, open)])),
            ["key_out", "deployment_out"]
        );
        assert!(
            watch
                .check_views(&[view(false, None, BreakerView::HalfOpen)])
                .is_empty()
        );
        assert!(watch.check_views(&[view(true, None, BreakerView::Closed)]).is_empty());
        assert_eq!(
            kinds(&watch.check_views(&[view(true, None, BreakerView::Closed)])),
            ["key_recovered", "deployment_recovered"]
        );
    }
}
