//! A circuit breaker per deployment: after consecutive failures it opens and the deployment is skipped;
//! after its cool-off one probe request goes through, and that probe's outcome closes or reopens it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// How long it stays open before a probe.
    pub cool_off: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            cool_off: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out since then; others are refused until it answers, or until a cool-off has passed
    /// without an answer (the probe's request was cancelled), when another may probe.
    Probing {
        since: Instant,
    },
}

/// The breaker of one deployment.
#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: Mutex<State>,
}

/// The breaker's state for the admin view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerView {
    /// Requests flow.
    Closed,
    /// Requests are refused for this long still.
    Open {
        /// Time left before a probe.
        retry_in_ms: u64,
    },
    /// A probe is testing the deployment.
    HalfOpen,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a request may go to the deployment now; when open, how long until it may. Letting the
    /// first request through after the cool-off makes it the probe.
    pub fn admit(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now >= until => {
                *state = State::Probing { since: now };
                Ok(())
            }
            State::Open { until } => Err(until - now),
            // A probe that never answered (its request was dropped) does not hold the breaker forever.
            State::Probing { since } if now.saturating_duration_since(since) >= self.policy.cool_off => {
                *state = State::Probing { since: now };
                Ok(())
            }
            // The probe's answer decides; meanwhile others wait a little.
            State::Probing { .. } => Err(Duration::from_millis(100)),
        }
    }

    /// The deployment answered.
    pub fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// The deployment failed (5xx, overload, timeout, connect error).
    pub fn failure(&self, now: Instant) {
        let mut state = self.lock();
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.policy.failures => {
                State::Closed { failures: failures + 1 }
            }
            _ => {
                tracing::warn!(
                    cool_off_ms = self.policy.cool_off.as_millis() as u64,
                    "circuit breaker opened"
                );
                State::Open {
                    until: now + self.policy.cool_off,
                }
            }
        };
    }

    /// The state for the admin view.
    pub fn view(&self, now: Instant) -> BreakerView {
        match *self.lock() {
            State::Closed { .. } => BreakerView::Closed,
            State::Open { until } if until > now => BreakerView::Open {
                retry_in_ms: (until - now).as_millis() as u64,
            },
            State::Open { .. } | State::Probing { .. } => BreakerView::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_after_cool_off() {
        let breaker = Breaker::new(BreakerPolicy {
            failures: 3,
            cool_off: Duration::from_secs(10),
        });
        let now = Instant::now();
        breaker.failure(now);
        breaker.failure(now);
        breaker.success();
        breaker.failure(now);
        breaker.failure(now);
        assert!(breaker.admit(now).is_ok(), "a success reset the count");
        breaker.failure(now);
        assert_eq!(breaker.admit(now), Err(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;
        let later = Instant::now();
        assert!(breaker.admit(later).is_ok(), "the probe");
        assert!(breaker.admit(later).is_err(), "only one probe at a time");
        breaker.failure(later);
        assert_eq!(
            breaker.admit(later),
            Err(Duration::from_secs(10)),
            "a failed probe reopens"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(breaker.admit(Instant::now()).is_ok());
        breaker.success();
        assert_eq!(breaker.view(Instant::now()), BreakerView::Closed);
    }
}
