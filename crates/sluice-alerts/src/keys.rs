//! Key and deployment health, from the router's own view of its limits (`GET /admin/limits`), compared
//! check after check: a pure state machine, so the rules below are tested without a clock.
//!
//! - A key is out when the vendor refused it (announced at the first check that sees it) or when it is
//!   cooling down after 429s at two checks in a row (one 429 with a short retry time is traffic, not an
//!   outage; a key still cooling at the next check is a 429 storm, its quota exhausted).
//! - A deployment is out when its circuit breaker is open or half open (announced at once: the breaker
//!   already waited for consecutive failures).
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

/// Key and deployment health across checks.
#[derive(Debug, Default)]
pub struct KeyWatch {
    tracked: HashMap<Subject, Tracked>,
}

impl KeyWatch {
    /// Compares `views` (the router's limits now) with the checks before, and returns what to announce.
    pub fn check(&mut self, views: &[LimitsView]) -> Vec<Event> {
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
                observed.push((deployment, open.then_some(OutReason::BreakerOpen), None));
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
        assert!(watch.check(&[view(true, None, BreakerView::Closed)]).is_empty());
        assert!(watch.check(&[view(true, Some(300), BreakerView::Closed)]).is_empty());
        assert!(watch.check(&[view(true, None, BreakerView::Closed)]).is_empty());
        assert!(watch.check(&[view(true, None, BreakerView::Closed)]).is_empty());
    }

    #[test]
    fn a_429_storm_is_announced_once_then_its_recovery() {
        let mut watch = KeyWatch::default();
        assert!(watch.check(&[view(true, Some(9000), BreakerView::Closed)]).is_empty());
        let out = watch.check(&[view(true, Some(8000), BreakerView::Closed)]);
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
        assert!(watch.check(&[view(true, Some(7000), BreakerView::Closed)]).is_empty());
        assert!(watch.check(&[view(false, None, BreakerView::Closed)]).is_empty());
        // Good once is not enough; twice is a recovery.
        assert!(watch.check(&[view(true, None, BreakerView::Closed)]).is_empty());
        assert_eq!(
            kinds(&watch.check(&[view(true, None, BreakerView::Closed)])),
            ["key_recovered"]
        );
        assert!(watch.check(&[view(true, None, BreakerView::Closed)]).is_empty());
    }

    #[test]
    fn refused_keys_and_open_breakers_are_announced_at_once() {
        let mut watch = KeyWatch::default();
        let open = BreakerView::Open { retry_in_ms: 1000 };
        assert_eq!(
            kinds(&watch.check(&[view(false, None, open)])),
            ["key_out", "deployment_out"]
        );
        assert!(watch.check(&[view(false, None, BreakerView::HalfOpen)]).is_empty());
        assert!(watch.check(&[view(true, None, BreakerView::Closed)]).is_empty());
        assert_eq!(
            kinds(&watch.check(&[view(true, None, BreakerView::Closed)])),
            ["key_recovered", "deployment_recovered"]
        );
    }
}
