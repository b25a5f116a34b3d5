//! Budgets shared by every replica through Redis.
//!
//! - **Rate budgets** (an upstream key's, a tenant's rpm and tpm) live in Redis as one continuously
//!   refilled bucket per budget, refilled by Redis's clock. Each replica serves reservations from a
//!   *lease*: requests and tokens taken from the bucket by one Lua script, spent locally without a round
//!   trip, the unused part given back when the lease expires (`lease`, 1 s by default) and overruns
//!   charged back as debt. A lease is sized by this replica's recent use and never exceeds `lease_share`
//!   of the limit divided by the replicas alive, so capacity stranded in idle leases is bounded. A
//!   request the lease cannot cover waits for one round trip. Every grant comes out of the shared bucket,
//!   so together the replicas never take more than the limit; see `docs/architecture.md` for the bounds.
//! - **Cooldowns** after a 429 (and a key taken out after a 401) are written to the bucket and announced
//!   on one pub/sub channel; every replica applies them at once. What a vendor's `x-ratelimit-remaining-*`
//!   headers say tightens the shared bucket.
//! - **Spend** for a tenant with a dollar cap is held the same way: each replica takes an *allowance* of
//!   the cap by one script (spent, plus what every live replica holds, plus the allowance, within the
//!   cap) and holds its requests' worst cases against it locally; settlement is written in the
//!   background. A period is seeded from the ledger once for the whole cluster.
//! - **Announcements** (a key revoked, tenants changed) go out on the same channel.
//!
//! **When Redis fails** (down, slow past `timeout`, restarted with its state lost), no request fails or
//! waits for it: the first failed call switches every budget to a local share (each limit divided by the
//! replicas last seen alive, each replica heartbeating in Redis), logged once and counted in
//! [`crate::BackendStatus::fallbacks`]; the heartbeat reconnects, and budgets then take new leases,
//! owing the shared bucket what they used beyond their share's refill.

mod events;
mod lease;
mod link;
mod rate;
mod scripts;
mod spend;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::Client;

use self::link::Link;
use self::rate::RedisRate;
use self::spend::RedisSpend;
use crate::{Announcement, BackendStatus, BudgetBackend, BudgetError, Limits, RateBudget, SpendBudget};

/// How the Redis backend connects and leases.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Every key and the channel start with it, so several gateways (or tests) can share one Redis.
    pub prefix: String,
    /// The longest wait for any call; past it, the replica serves from its local share.
    pub timeout: Duration,
    /// The longest wait for a connection.
    pub connect_timeout: Duration,
    /// How often a replica announces itself alive; three missed beats and the others count it gone.
    pub heartbeat: Duration,
    /// How long a lease serves reservations before what is left goes back.
    pub lease: Duration,
    /// The largest lease, as a share of a limit divided by the replicas alive.
    pub lease_share: f64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "sluice".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(500),
            heartbeat: Duration::from_secs(1),
            lease: Duration::from_secs(1),
            lease_share: 0.1,
        }
    }
}

/// Every budget of one replica, shared through Redis with the others. Cheap to look at; the background
/// work (heartbeat, writes, the subscription) ends when it is dropped.
#[derive(Debug)]
pub struct RedisBudgets {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
struct Inner {
    link: Arc<Link>,
    rates: Mutex<HashMap<Box<str>, Arc<RedisRate>>>,
    spends: Mutex<HashMap<Box<str>, Arc<RedisSpend>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisBudgets {
    /// Starts the backend: connects in the background (budgets serve their local shares until it is up)
    /// and keeps the heartbeat, the background writes and the subscription running. Fails only for a URL
    /// the client cannot use or outside a tokio runtime; an unreachable Redis is not an error.
    pub fn start(settings: RedisSettings) -> Result<Self, BudgetError> {
        let client = Client::open(settings.url.as_str()).map_err(|e| BudgetError::InvalidUrl(e.to_string()))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BudgetError::NoRuntime)?;
        let inner = Arc::new(Inner {
            link: Arc::new(Link::new(settings, client)),
            rates: Mutex::default(),
            spends: Mutex::default(),
        });
        let tasks = vec![
            runtime.spawn(heartbeat(Arc::clone(&inner))),
            runtime.spawn(flusher(Arc::clone(&inner))),
            runtime.spawn(events::listen(Arc::clone(&inner))),
        ];
        Ok(Self { inner, tasks })
    }

    /// Waits until Redis answered, for at most `limit`; whether it did. A replica that starts serving
    /// first enforces its local shares until then.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let link = &self.inner.link;
        let connected = link.connected.notified();
        if link.is_up() {
            return true;
        }
        tokio::time::timeout(limit, connected).await.is_ok() || link.is_up()
    }

    /// This replica's id in Redis.
    pub fn replica(&self) -> &str {
        &self.inner.link.id
    }

    /// Flushes what waits to be written and leaves the replicas' heartbeats, at shutdown.
    pub async fn leave(&self) {
        self.inner.flush().await;
        self.inner.link.leave().await;
    }

    /// Publishes `change` once on the channel of `settings`, from a process that runs no gateway (the
    /// command line's `keys revoke`).
    pub async fn announce_once(settings: &RedisSettings, change: Announcement) -> Result<(), BudgetError> {
        let client = Client::open(settings.url.as_str()).map_err(|e| BudgetError::InvalidUrl(e.to_string()))?;
        let message = events::encode("cli", &events::Event::Announced(change));
        let channel = format!("{}:events", settings.prefix);
        let publish = async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async::<u64>(&mut connection)
                .await
        };
        match tokio::time::timeout(settings.connect_timeout.max(settings.timeout), publish).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(BudgetError::Unreachable(err.to_string())),
            Err(_) => Err(BudgetError::Unreachable("no answer in time".to_owned())),
        }
    }
}

impl Drop for RedisBudgets {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Inner {
    /// Applies a cooldown another replica announced.
    fn cooled_elsewhere(&self, name: &str, pause: Duration) {
        let budget = lock(&self.rates).get(name).cloned();
        if let Some(budget) = budget {
            tracing::debug!(
                budget = name,
                pause_ms = pause.as_millis() as u64,
                "cooldown from another replica"
            );
            budget.cooled_elsewhere(pause);
        }
    }

    /// Writes everything waiting, concurrently over the multiplexed connection.
    async fn flush(&self) {
        let rates: Vec<Arc<RedisRate>> = lock(&self.rates).values().cloned().collect();
        let spends: Vec<Arc<RedisSpend>> = lock(&self.spends).values().cloned().collect();
        let rates = futures_util::future::join_all(rates.iter().map(|rate| rate.flush()));
        let spends = futures_util::future::join_all(spends.iter().map(|spend| spend.flush()));
        futures_util::future::join(rates, spends).await;
    }
}

/// Beats every `heartbeat`, reconnecting when needed.
async fn heartbeat(inner: Arc<Inner>) {
    let every = inner.link.settings.heartbeat;
    loop {
        inner.link.beat().await;
        tokio::time::sleep(every).await;
    }
}

/// Writes what budgets left to write: at once for a cooldown, 50 ms after a settlement (so many go
/// together), and at least twice per lease so expired leases and allowances go back.
async fn flusher(inner: Arc<Inner>) {
    // Settlements are not urgent (what they release is still held, safely, until written): gathered
    // over 50 ms, a busy replica writes each budget about 20 times a second.
    const GATHER: Duration = Duration::from_millis(50);
    let every = inner.link.settings.lease / 2;
    loop {
        tokio::select! {
            () = inner.link.wake.notified() => tokio::time::sleep(GATHER).await,
            () = inner.link.urgent.notified() => {}
            () = tokio::time::sleep(every) => {}
        }
        if inner.link.is_up() {
            inner.flush().await;
        }
    }
}

impl BudgetBackend for RedisBudgets {
    fn rate(&self, name: &str, limits: Limits) -> Arc<dyn RateBudget> {
        let mut rates = lock(&self.inner.rates);
        if let Some(existing) = rates.get(name)
            && existing.limits() == limits
        {
            return Arc::clone(existing) as Arc<dyn RateBudget>;
        }
        let fresh = Arc::new(RedisRate::new(name, limits, Arc::clone(&self.inner.link)));
        rates.insert(name.into(), Arc::clone(&fresh));
        fresh
    }

    fn spend(&self, name: &str) -> Arc<dyn SpendBudget> {
        let mut spends = lock(&self.inner.spends);
        let spend = spends
            .entry(name.into())
            .or_insert_with(|| Arc::new(RedisSpend::new(name, Arc::clone(&self.inner.link))));
        Arc::clone(spend) as Arc<dyn SpendBudget>
    }

    fn status(&self) -> BackendStatus {
        let link = &self.inner.link;
        BackendStatus {
            backend: "redis",
            shared: link.is_up(),
            replicas: link.replicas(),
            fallbacks: link.fallbacks(),
        }
    }

    fn announce(&self, change: Announcement) {
        let link = Arc::clone(&self.inner.link);
        let message = events::encode(&link.id, &events::Event::Announced(change));
        tokio::spawn(async move {
            let channel = link.channel.clone();
            let published = link
                .call(|mut connection| async move {
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(message)
                        .query_async::<u64>(&mut connection)
                        .await
                })
                .await;
            if published.is_err() {
                tracing::warn!("could not announce a change to the other replicas; they see it at their next refresh");
            }
        });
    }

    fn announcements(&self) -> Option<tokio::sync::broadcast::Receiver<Announcement>> {
        Some(self.inner.link.announcements.subscribe())
    }
}

#[cfg(test)]
mod tests;
