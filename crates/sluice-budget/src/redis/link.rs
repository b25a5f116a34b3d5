//! The connection to Redis every shared budget goes through: one multiplexed connection, every call
//! bounded by the configured wait, and whether Redis is reachable now (budgets serve their local shares
//! while it is not). The heartbeat loop reconnects; the first failed call switches every budget to its
//! share and logs once.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};
use tokio::sync::{Notify, broadcast};

use super::RedisSettings;
use super::scripts::Scripts;
use crate::Announcement;

/// The connection, its state and what every budget shares.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) settings: RedisSettings,
    /// This replica's id in heartbeats, holds and announcements.
    pub(crate) id: String,
    client: Client,
    connection: RwLock<Option<MultiplexedConnection>>,
    up: AtomicBool,
    replicas: AtomicU32,
    fallbacks: AtomicU64,
    pub(crate) scripts: Scripts,
    /// Wakes the flusher: something is waiting to be written.
    pub(crate) wake: Notify,
    /// Wakes the flusher without gathering more first: a cooldown to announce.
    pub(crate) urgent: Notify,
    /// Told when Redis becomes reachable.
    pub(crate) connected: Notify,
    pub(crate) announcements: broadcast::Sender<Announcement>,
    /// The replicas' heartbeats, a sorted set.
    pub(crate) replicas_key: String,
    /// The channel of cooldowns and announcements.
    pub(crate) channel: String,
}

/// Why a call did not complete.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Not connected (or known down): the call was not sent.
    Down,
    /// Sent, but it failed or took longer than the bounded wait (logged when it switched to the shares).
    Failed,
}

impl Link {
    pub(crate) fn new(settings: RedisSettings, client: Client) -> Self {
        let id = format!("{:016x}", fastrand::u64(..));
        let replicas_key = format!("{}:replicas", settings.prefix);
        let channel = format!("{}:events", settings.prefix);
        Self {
            settings,
            id,
            client,
            connection: RwLock::new(None),
            up: AtomicBool::new(false),
            replicas: AtomicU32::new(1),
            fallbacks: AtomicU64::new(0),
            scripts: Scripts::new(),
            wake: Notify::new(),
            urgent: Notify::new(),
            connected: Notify::new(),
            announcements: broadcast::channel(64).0,
            replicas_key,
            channel,
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Whether budgets are shared now.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Replicas last seen alive, this one included.
    pub(crate) fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    pub(crate) fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        self.connection.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs `call` on the connection, within the bounded wait. A failure switches every budget to its
    /// local share until the heartbeat finds Redis again.
    pub(crate) async fn call<T, F, Fut>(&self, call: F) -> Result<T, Failure>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(Failure::Down);
        }
        let Some(connection) = self.connection() else {
            return Err(Failure::Down);
        };
        let outcome = match tokio::time::timeout(self.settings.timeout, call(connection)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {} ms", self.settings.timeout.as_millis()),
        };
        self.fail(&outcome);
        Err(Failure::Failed)
    }

    /// Redis failed: budgets fall back to their shares. Logged once per outage.
    pub(crate) fn fail(&self, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = why,
                replicas = self.replicas(),
                "Redis is unreachable: each replica now enforces its share of every limit (the limit divided by the replicas last seen alive) until it is back"
            );
        }
    }

    /// One heartbeat: connects first if needed. Returns whether Redis answered.
    pub(crate) async fn beat(&self) -> bool {
        let connection = match self.connection() {
            Some(connection) => connection,
            None => match self.connect().await {
                Ok(connection) => connection,
                Err(err) => {
                    self.fail(&err);
                    return false;
                }
            },
        };
        let dead_after = self.dead_after_us();
        let mut beat = connection.clone();
        let counted = tokio::time::timeout(self.settings.timeout.max(self.settings.connect_timeout), async {
            self.scripts
                .heartbeat
                .key(&self.replicas_key)
                .arg(&self.id)
                .arg(dead_after)
                .invoke_async::<u32>(&mut beat)
                .await
        })
        .await;
        match counted {
            Ok(Ok(replicas)) => {
                self.replicas.store(replicas.max(1), Ordering::Relaxed);
                if !self.up.swap(true, Ordering::AcqRel) {
                    tracing::info!(replicas, "Redis is reachable: budgets are shared between replicas");
                    self.connected.notify_waiters();
                    self.wake.notify_one();
                }
                true
            }
            Ok(Err(err)) => {
                self.fail(&err.to_string());
                // A broken connection is made anew at the next beat.
                *self.connection.write().unwrap_or_else(PoisonError::into_inner) = None;
                false
            }
            Err(_) => {
                self.fail("the heartbeat got no answer in time");
                *self.connection.write().unwrap_or_else(PoisonError::into_inner) = None;
                false
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(self.settings.timeout.max(self.settings.connect_timeout)));
        let mut connection = tokio::time::timeout(
            self.settings.connect_timeout,
            self.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| format!("no connection within {} ms", self.settings.connect_timeout.as_millis()))?
        .map_err(|e| e.to_string())?;
        // Loaded once per connection, so requests run them by hash without a second round trip.
        for script in self.scripts.all() {
            tokio::time::timeout(
                self.settings.connect_timeout,
                script.prepare_invoke().load_async(&mut connection),
            )
            .await
            .map_err(|_| "the scripts could not be loaded in time".to_owned())?
            .map_err(|e| e.to_string())?;
        }
        *self.connection.write().unwrap_or_else(PoisonError::into_inner) = Some(connection.clone());
        Ok(connection)
    }

    /// Leaves the heartbeats at shutdown, so the others divide by one replica less at once.
    pub(crate) async fn leave(&self) {
        let _ = self
            .call(|mut connection| {
                let key = self.replicas_key.clone();
                let id = self.id.clone();
                async move {
                    redis::cmd("ZREM")
                        .arg(key)
                        .arg(id)
                        .query_async::<u32>(&mut connection)
                        .await
                }
            })
            .await;
    }

    /// How old a heartbeat may be before its replica counts as gone: three beats.
    pub(crate) fn dead_after_us(&self) -> u64 {
        (self.settings.heartbeat.as_micros() as u64).saturating_mul(3)
    }
}
