//! Per-key requests and tokens per minute, as a vendor enforces them: continuously refilled buckets.

use std::time::Duration;

use tokio::time::Instant;

/// One per-minute limit.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_minute: u32, now: Instant) -> Self {
        Self {
            capacity: f64::from(per_minute),
            level: f64::from(per_minute),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + elapsed * self.capacity / 60.0).min(self.capacity);
        self.last = now;
    }

    /// How long until `amount` is available; zero when it is now.
    fn wait_for(&self, amount: f64) -> Duration {
        if self.level >= amount {
            return Duration::ZERO;
        }
        let per_sec = self.capacity / 60.0;
        if per_sec <= 0.0 {
            return Duration::from_secs(60);
        }
        Duration::from_secs_f64(((amount - self.level) / per_sec).min(3600.0))
    }

    /// Time until the bucket is full again, as OpenAI's reset headers report it.
    fn until_full(&self) -> Duration {
        self.wait_for(self.capacity)
    }
}

/// One limit of a key as a vendor reports it: its size, what is left, and when it is full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    /// Requests or tokens per minute.
    pub limit: u64,
    /// What is left now.
    pub remaining: u64,
    /// Time until the limit is fully replenished.
    pub reset: Duration,
}

/// The limits of a key at one moment, for faces that report them in their vendor's own headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimLimits {
    /// Requests per minute, when limited.
    pub requests: Option<LimitState>,
    /// Tokens per minute, when limited.
    pub tokens: Option<LimitState>,
}

/// The limits of one key.
#[derive(Debug)]
pub(crate) struct KeyLimiter {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

type Headers = Vec<(&'static str, String)>;

impl KeyLimiter {
    pub(crate) fn new(rpm: Option<u32>, tpm: Option<u32>, now: Instant) -> Self {
        Self {
            requests: rpm.map(|r| Bucket::new(r, now)),
            tokens: tpm.map(|t| Bucket::new(t, now)),
        }
    }

    /// Takes one request and `tokens` tokens, or says which limit refused and for how long.
    pub(crate) fn try_take(&mut self, tokens: u64, now: Instant) -> Result<Headers, (&'static str, Duration, Headers)> {
        let tokens = tokens as f64;
        for bucket in [&mut self.requests, &mut self.tokens].into_iter().flatten() {
            bucket.refill(now);
        }
        if let Some(bucket) = &self.requests {
            let wait = bucket.wait_for(1.0);
            if !wait.is_zero() {
                return Err(("requests", wait, self.headers()));
            }
        }
        if let Some(bucket) = &self.tokens {
            let wait = bucket.wait_for(tokens);
            if !wait.is_zero() {
                return Err(("tokens", wait, self.headers()));
            }
        }
        if let Some(bucket) = &mut self.requests {
            bucket.level -= 1.0;
        }
        if let Some(bucket) = &mut self.tokens {
            bucket.level -= tokens;
        }
        Ok(self.headers())
    }

    /// The limits now, after refilling to `now`.
    pub(crate) fn snapshot(&mut self, now: Instant) -> SimLimits {
        for bucket in [&mut self.requests, &mut self.tokens].into_iter().flatten() {
            bucket.refill(now);
        }
        self.limits()
    }

    /// The limits as of the last refill.
    pub(crate) fn limits(&self) -> SimLimits {
        let state = |bucket: &Bucket| LimitState {
            limit: bucket.capacity as u64,
            remaining: bucket.level.max(0.0).floor() as u64,
            reset: bucket.until_full(),
        };
        SimLimits {
            requests: self.requests.as_ref().map(state),
            tokens: self.tokens.as_ref().map(state),
        }
    }

    fn headers(&self) -> Headers {
        let mut headers = Vec::with_capacity(6);
        for (bucket, name) in [(&self.requests, "requests"), (&self.tokens, "tokens")] {
            let Some(bucket) = bucket else { continue };
            let (limit, remaining, reset) = match name {
                "requests" => (
                    "x-ratelimit-limit-requests",
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-reset-requests",
                ),
                _ => (
                    "x-ratelimit-limit-tokens",
                    "x-ratelimit-remaining-tokens",
                    "x-ratelimit-reset-tokens",
                ),
            };
            headers.push((limit, format!("{}", bucket.capacity as u64)));
            headers.push((remaining, format!("{}", bucket.level.max(0.0).floor() as u64)));
            headers.push((reset, format!("{}ms", bucket.until_full().as_millis())));
        }
        headers
    }
}
