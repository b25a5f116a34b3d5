//! Alerts: operators hear before a budget or a key runs dry.
//!
//! - [`BudgetWatch`] reads every budgeted tenant's spend this period from the store and announces each
//!   threshold (50%, 80%, 100% by default) once per period, whichever replica sees it first, across
//!   restarts: the store's `alerts_fired` row is the one record.
//! - [`KeyWatch`] compares the router's view of its keys and breakers check after check, and announces a
//!   key or a deployment taken out (a 429 storm, a key the vendor refused, a breaker open) and its
//!   recovery.
//! - [`SubscriptionWatch`] announces each tenant's subscription request waiting for an admin, once,
//!   whichever replica took it (recorded in `alerts_fired` like a budget threshold).
//! - [`Notifier`] delivers [`Alert`]s to each `[[alerts]]` webhook from its own bounded queue and task,
//!   signed with HMAC-SHA256 when the webhook has a secret, retried with backoff.
//!
//! Nothing here runs on the request path: [`spawn`] starts one task that checks every `interval`.

mod budget;
mod deliver;
mod keys;
mod payload;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use sluice_router::Router;
use sluice_store::Store;
use tokio::time::MissedTickBehavior;

pub use crate::budget::BudgetWatch;
pub use crate::deliver::{DeliveryError, Notifier, Retry, SIGNATURE_HEADER, Sink, deliver, share_to_bp, signature};
pub use crate::keys::{DeploymentLoad, KeyWatch};
pub use crate::payload::{Alert, Event, OutReason, PAYLOAD_VERSION};
pub use crate::subscriptions::SubscriptionWatch;

/// The thresholds announced when a webhook names none: 50%, 80% and 100% of a budget.
pub const DEFAULT_THRESHOLDS: [f64; 3] = [0.5, 0.8, 1.0];

/// How the watches run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The webhooks.
    pub sinks: Vec<Sink>,
    /// Time between checks.
    pub interval: Duration,
    /// How deliveries are retried.
    pub retry: Retry,
    /// The name alerts carry as `gateway`.
    pub gateway: String,
}

/// Starts the watches and the delivery tasks: budgets when a store is given, keys from `router`. The
/// task ends when aborted; alerts already queued are then lost.
pub fn spawn(
    settings: Settings,
    client: reqwest::Client,
    store: Option<Store>,
    router: Arc<Router>,
) -> tokio::task::JoinHandle<()> {
    let notifier = Notifier::start(client, settings.sinks, settings.retry);
    let mut subscriptions = store
        .clone()
        .filter(|_| notifier.watches_subscriptions())
        .map(SubscriptionWatch::new);
    let mut budgets = store.map(|store| BudgetWatch::new(store, notifier.budget_thresholds()));
    let mut keys = notifier.watches_keys().then(KeyWatch::default);
    let gateway = settings.gateway;
    let interval = settings.interval;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = chrono::Utc::now();
            let mut events = Vec::new();
            if let Some(keys) = &mut keys {
                events.extend(keys.check(&router.limits(), &loads(&router)));
            }
            if let Some(budgets) = &mut budgets {
                match budgets.check(now).await {
                    Ok(found) => events.extend(found),
                    // The next check tries again; nothing was recorded for what was not read.
                    Err(error) => tracing::warn!("budget alerts: cannot read spend: {error}"),
                }
            }
            if let Some(subscriptions) = &mut subscriptions {
                match subscriptions.check(now).await {
                    Ok(found) => events.extend(found),
                    Err(error) => tracing::warn!("subscription alerts: cannot read requests: {error}"),
                }
            }
            for event in events {
                notifier.notify(&Alert::new(event, &gateway, now));
            }
        }
    })
}

/// Every deployment's counters now.
fn loads(router: &Router) -> Vec<DeploymentLoad> {
    use std::sync::atomic::Ordering;
    router
        .models()
        .iter()
        .flat_map(|route| {
            route.deployments().iter().map(move |d| DeploymentLoad {
                model: route.name().to_owned(),
                provider: d.provider().name().to_owned(),
                vendor_model: d.model().to_owned(),
                attempts: d.counters().attempts.load(Ordering::Relaxed),
                rate_limited: d.counters().upstream_rate_limited.load(Ordering::Relaxed),
            })
        })
        .collect()
}

/// This machine's host name, what alerts carry as `gateway` unless configured.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sluice".to_owned())
}
