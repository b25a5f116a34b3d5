//! The alert payload: one JSON object per alert, stable (fields are only ever added, never renamed or
//! removed; `version` changes if one must be), with a Slack-compatible `text`.
//!
//! ```json
//! {"version": 1, "id": "0193...", "kind": "budget_threshold", "at": "2026-12-05T01:02:03.456789Z",
//!  "gateway": "host-1", "text": "Sluice: tenant `search` has spent 80% of its month budget ...",
//!  "tenant": "search", "period": "2026-12", "threshold": 0.8, "spend_usd": "20.010000", "budget_usd": "25.000000"}
//! ```

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// The payload's format version.
pub const PAYLOAD_VERSION: u32 = 1;

/// One alert as it is sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// [`PAYLOAD_VERSION`].
    pub version: u32,
    /// Unique per alert (a UUIDv7), for receivers to drop a retried delivery they already have.
    pub id: String,
    /// What happened, with its own fields beside the common ones.
    #[serde(flatten)]
    pub event: Event,
    /// When the gateway saw it (RFC 3339, UTC).
    pub at: String,
    /// The gateway that saw it (its host name).
    pub gateway: String,
    /// One line for people, in Slack's `mrkdwn`; Slack, Mattermost and Discord's Slack-compatible
    /// webhooks show it as the message.
    pub text: String,
}

/// Why a key or a deployment is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutReason {
    /// The key has been cooling down after the vendor's 429s at two checks in a row: a 429 storm, the
    /// key's quota exhausted.
    Cooldown,
    /// The vendor refused the key (invalid, revoked, account disabled); it is out until a probe finds it
    /// good.
    Refused,
    /// The deployment's circuit breaker is open after consecutive failures.
    BreakerOpen,
    /// At least half of the deployment's calls since the last check were answered 429 (ten calls or more).
    RateLimited,
}

impl OutReason {
    fn words(self) -> &'static str {
        match self {
            Self::Cooldown => "cooling down after repeated 429s (quota exhausted)",
            Self::Refused => "refused by the vendor (invalid or revoked key)",
            Self::BreakerOpen => "circuit breaker open after consecutive failures",
            Self::RateLimited => "at least half of its calls answered 429",
        }
    }
}

/// What an alert says, by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A tenant's spend this period reached a threshold of its budget.
    BudgetThreshold {
        /// The tenant.
        tenant: String,
        /// The budget period: `YYYY-MM` (monthly budget) or `YYYY-MM-DD` (daily).
        period: String,
        /// The threshold reached, as a share of the budget (0.8 = 80%).
        threshold: f64,
        /// The spend seen, in USD as an exact decimal.
        spend_usd: String,
        /// The budget, in USD as an exact decimal.
        budget_usd: String,
    },
    /// An upstream key was taken out for a deployment.
    KeyOut {
        /// The model name clients send.
        model: String,
        /// The provider.
        provider: String,
        /// The vendor's model id.
        vendor_model: String,
        /// The key's id (never its value).
        key: String,
        /// Why.
        reason: OutReason,
        /// For a cooldown: how long it has left, in milliseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        cooldown_ms: Option<u64>,
    },
    /// A key announced out is serving again.
    KeyRecovered {
        /// The model name clients send.
        model: String,
        /// The provider.
        provider: String,
        /// The vendor's model id.
        vendor_model: String,
        /// The key's id.
        key: String,
        /// Why it was out.
        reason: OutReason,
    },
    /// A deployment was taken out (its breaker opened).
    DeploymentOut {
        /// The model name clients send.
        model: String,
        /// The provider.
        provider: String,
        /// The vendor's model id.
        vendor_model: String,
        /// Why.
        reason: OutReason,
    },
    /// A deployment announced out is serving again.
    DeploymentRecovered {
        /// The model name clients send.
        model: String,
        /// The provider.
        provider: String,
        /// The vendor's model id.
        vendor_model: String,
        /// Why it was out.
        reason: OutReason,
    },
    /// A tenant asked for a service that needs an admin's approval.
    SubscriptionRequested {
        /// The request's id, what `sluice subscriptions approve` takes (`id` is the alert's own).
        request: String,
        /// The tenant.
        tenant: String,
        /// The service asked for: `model:NAME` or `prompt:NAME`.
        service: String,
        /// Why the tenant wants it, as it wrote it.
        reason: String,
    },
    /// Sent by `sluice alerts test`.
    Test,
}

impl Alert {
    /// An alert of `event` seen now by `gateway`, with its text.
    pub fn new(event: Event, gateway: &str, now: DateTime<Utc>) -> Self {
        let text = text(&event, gateway);
        Self {
            version: PAYLOAD_VERSION,
            id: uuid::Uuid::now_v7().to_string(),
            event,
            at: now.to_rfc3339_opts(SecondsFormat::Micros, true),
            gateway: gateway.to_owned(),
            text,
        }
    }

    /// The body sent.
    pub fn body(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes; the fallback is never taken.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn text(event: &Event, gateway: &str) -> String {
    match event {
        Event::BudgetThreshold {
            tenant,
            period,
            threshold,
            spend_usd,
            budget_usd,
        } => format!(
            ":warning: Sluice: tenant `{tenant}` has spent {}% of its budget for {period}: ${spend_usd} of \
             ${budget_usd}.",
            percent(*threshold)
        ),
        Event::KeyOut {
            model,
            provider,
            key,
            reason,
            ..
        } => format!(
            ":red_circle: Sluice ({gateway}): upstream key `{key}` of provider `{provider}` is out for model \
             `{model}`: {}.",
            reason.words()
        ),
        Event::KeyRecovered {
            model, provider, key, ..
        } => format!(
            ":large_green_circle: Sluice ({gateway}): upstream key `{key}` of provider `{provider}` is serving \
             model `{model}` again."
        ),
        Event::DeploymentOut {
            model,
            provider,
            vendor_model,
            reason,
        } => format!(
            ":red_circle: Sluice ({gateway}): deployment `{vendor_model}` on `{provider}` is out for model \
             `{model}`: {}.",
            reason.words()
        ),
        Event::DeploymentRecovered {
            model,
            provider,
            vendor_model,
            ..
        } => format!(
            ":large_green_circle: Sluice ({gateway}): deployment `{vendor_model}` on `{provider}` is serving \
             model `{model}` again."
        ),
        Event::SubscriptionRequested {
            request,
            tenant,
            service,
            reason,
        } => format!(
            ":inbox_tray: Sluice: tenant `{tenant}` asks for `{service}` ({reason:?}); approve or reject \
             request `{request}` in the console or with `sluice subscriptions approve|reject {request}`."
        ),
        Event::Test => format!("Sluice ({gateway}): a test alert from `sluice alerts test`; this webhook works."),
    }
}

/// A share as a percentage, without a trailing `.0`.
fn percent(share: f64) -> String {
    let p = (share * 10_000.0).round() / 100.0;
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn budget_payload_is_flat_and_stable() {
        let now = DateTime::parse_from_rfc3339("2026-12-05T01:02:03.456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let alert = Alert::new(
            Event::BudgetThreshold {
                tenant: "search".into(),
                period: "2026-12".into(),
                threshold: 0.8,
                spend_usd: "20.010000".into(),
                budget_usd: "25.000000".into(),
            },
            "host-1",
            now,
        );
        let mut json: serde_json::Value = serde_json::from_slice(&alert.body()).unwrap();
        assert!(json["id"].as_str().unwrap().len() == 36);
        json["id"] = "x".into();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1, "id": "x", "kind": "budget_threshold", "at": "2026-12-05T01:02:03.456789Z",
                "gateway": "host-1", "tenant": "search", "period": "2026-12", "threshold": 0.8,
                "spend_usd": "20.010000", "budget_usd": "25.000000",
                "text": ":warning: Sluice: tenant `search` has spent 80% of its budget for 2026-12: $20.010000 of \
                         $25.000000."
            })
        );
    }

    #[test]
    fn subscription_payload_names_the_request() {
        let alert = Alert::new(
            Event::SubscriptionRequested {
                request: "0190e0b0-0000-7000-8000-000000000001".into(),
                tenant: "search".into(),
                service: "prompt:summarize".into(),
                reason: "weekly digest".into(),
            },
            "h",
            Utc::now(),
        );
        let json: serde_json::Value = serde_json::from_slice(&alert.body()).unwrap();
        assert_eq!(json["kind"], "subscription_requested");
        assert_eq!(json["request"], "0190e0b0-0000-7000-8000-000000000001");
        assert_ne!(json["id"], json["request"], "the alert's own id stays its own");
        assert_eq!(json["service"], "prompt:summarize");
        let text = json["text"].as_str().unwrap();
        assert!(
            text.contains("`search` asks for `prompt:summarize` (\"weekly digest\")"),
            "{text}"
        );
        assert!(
            text.contains("approve|reject 0190e0b0-0000-7000-8000-000000000001"),
            "{text}"
        );
    }

    #[test]
    fn key_payload_names_the_key_by_id_and_why() {
        let alert = Alert::new(
            Event::KeyOut {
                model: "m".into(),
                provider: "up".into(),
                vendor_model: "v".into(),
                key: "up#0".into(),
                reason: OutReason::Cooldown,
                cooldown_ms: Some(1500),
            },
            "h",
            Utc::now(),
        );
        let json: serde_json::Value = serde_json::from_slice(&alert.body()).unwrap();
        assert_eq!(json["kind"], "key_out");
        assert_eq!(json["reason"], "cooldown");
        assert_eq!(json["cooldown_ms"], 1500);
        assert!(json["text"].as_str().unwrap().contains("`up#0`"));
        assert_eq!(percent(0.5), "50");
        assert_eq!(percent(0.125), "12.5");
    }
}
