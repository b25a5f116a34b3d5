//! Delivery: each webhook has its own bounded queue and task, so a slow or dead receiver delays only its
//! own alerts, and nothing on the request path ever waits for one.
//!
//! A delivery is a `POST` of the payload's JSON with `content-type: application/json`, and, when the sink
//! has a secret, `x-sluice-signature: sha256=<hex>`, the HMAC-SHA256 of the exact body bytes under the
//! secret. A connect error, a timeout, a 408, a 429 or a 5xx is retried with exponential backoff and full
//! jitter (`retry_min` doubling up to `retry_max`, at most `attempts` tries); any other answer ends it.
//! A full queue drops the alert with a warning: alerts are worth less than the memory of a gateway whose
//! receiver is gone.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::payload::{Alert, Event};

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-sluice-signature";

/// Alerts waiting per webhook before new ones are dropped.
const QUEUE: usize = 256;

/// One `[[alerts]]` webhook and what it watches.
#[derive(Clone)]
pub struct Sink {
    /// Where alerts are posted. Slack-style URLs carry a token: only the host is ever logged.
    pub url: reqwest::Url,
    /// Signs each body when set.
    pub secret: Option<SecretString>,
    /// Thresholds of a tenant's budget to announce, in basis points (8000 = 80%); empty: none.
    pub budget_bp: Vec<u32>,
    /// Whether key and deployment health is announced.
    pub keys: bool,
    /// Whether tenants' subscription requests are announced.
    pub subscriptions: bool,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("host", &self.host())
            .field("signed", &self.secret.is_some())
            .field("budget_bp", &self.budget_bp)
            .field("keys", &self.keys)
            .field("subscriptions", &self.subscriptions)
            .finish()
    }
}

impl Sink {
    /// The host alone, what logs and the CLI show of the URL.
    pub fn host(&self) -> String {
        match (self.url.host_str(), self.url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => "(no host)".to_owned(),
        }
    }

    /// Whether this sink wants `event`.
    pub fn wants(&self, event: &Event) -> bool {
        match event {
            Event::BudgetThreshold { threshold, .. } => self.budget_bp.contains(&share_to_bp(*threshold)),
            Event::SubscriptionRequested { .. } => self.subscriptions,
            Event::Test => true,
            _ => self.keys,
        }
    }
}

/// A share of a budget (0.8) in basis points (8000).
pub fn share_to_bp(share: f64) -> u32 {
    (share * 10_000.0).round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first backoff.
    pub retry_min: Duration,
    /// The largest backoff.
    pub retry_max: Duration,
    /// The longest wait for one answer.
    pub timeout: Duration,
}

impl Default for Retry {
    /// Six tries over about a minute at most, 10 s per try.
    fn default() -> Self {
        Self {
            attempts: 6,
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why a delivery failed for good.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver answered with a status that will not change on a retry.
    #[error("the webhook at {host} answered {status}")]
    Refused {
        /// The webhook's host.
        host: String,
        /// Its answer.
        status: u16,
    },
    /// Every try failed; the last one's cause.
    #[error("the webhook at {host} did not take the alert after {attempts} tries: {last}")]
    GaveUp {
        /// The webhook's host.
        host: String,
        /// Tries made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

/// The HMAC-SHA256 of `body` under `secret`, as `sha256=<lowercase hex>`.
pub fn signature(secret: &SecretString, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes a key of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    out
}

/// Posts `alert` to `sink`, retrying as `retry` says; returns the receiver's status.
pub async fn deliver(client: &reqwest::Client, sink: &Sink, alert: &Alert, retry: Retry) -> Result<u16, DeliveryError> {
    let body = alert.body();
    let signed = sink.secret.as_ref().map(|secret| signature(secret, &body));
    let mut backoff = retry.retry_min;
    let mut last = String::new();
    for attempt in 1..=retry.attempts.max(1) {
        let mut request = client
            .post(sink.url.clone())
            .timeout(retry.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(signed) = &signed {
            request = request.header(SIGNATURE_HEADER, signed);
        }
        match request.send().await {
            Ok(answer) => {
                let status = answer.status();
                if status.is_success() {
                    return Ok(status.as_u16());
                }
                let retryable = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
                if !retryable {
                    return Err(DeliveryError::Refused {
                        host: sink.host(),
                        status: status.as_u16(),
                    });
                }
                last = format!("status {}", status.as_u16());
            }
            // Without the URL: a webhook's path is its secret.
            Err(error) => last = describe(&error),
        }
        if attempt < retry.attempts {
            tracing::warn!(host = %sink.host(), attempt, %last, "alert delivery failed; retrying");
            let jittered = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64));
            tokio::time::sleep(jittered.max(retry.retry_min / 2)).await;
            backoff = (backoff * 2).min(retry.retry_max);
        }
    }
    Err(DeliveryError::GaveUp {
        host: sink.host(),
        attempts: retry.attempts,
        last,
    })
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

/// Hands alerts to each webhook's delivery task.
#[derive(Debug, Clone)]
pub struct Notifier {
    sinks: Vec<(Sink, mpsc::Sender<Alert>)>,
}

impl Notifier {
    /// Starts one delivery task per sink; they end when the notifier and its clones are dropped.
    pub fn start(client: reqwest::Client, sinks: Vec<Sink>, retry: Retry) -> Self {
        let sinks = sinks
            .into_iter()
            .map(|sink| {
                let (tx, mut rx) = mpsc::channel::<Alert>(QUEUE);
                let task_sink = sink.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    while let Some(alert) = rx.recv().await {
                        match deliver(&client, &task_sink, &alert, retry).await {
                            Ok(_) => tracing::info!(host = %task_sink.host(), id = %alert.id, "alert delivered"),
                            Err(error) => tracing::error!(id = %alert.id, "alert lost: {error}"),
                        }
                    }
                });
                (sink, tx)
            })
            .collect();
        Self { sinks }
    }

    /// Queues `alert` for every sink that wants it, never waiting.
    pub fn notify(&self, alert: &Alert) {
        tracing::info!(kind = ?alert.event, "alert: {}", alert.text);
        for (sink, tx) in &self.sinks {
            if sink.wants(&alert.event) && tx.try_send(alert.clone()).is_err() {
                tracing::warn!(host = %sink.host(), "the alert queue of this webhook is full; alert dropped");
            }
        }
    }

    /// The budget thresholds some sink announces, in basis points, ascending.
    pub fn budget_thresholds(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self
            .sinks
            .iter()
            .flat_map(|(s, _)| s.budget_bp.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Whether some sink announces key health.
    pub fn watches_keys(&self) -> bool {
        self.sinks.iter().any(|(s, _)| s.keys)
    }

    /// Whether some sink announces subscription requests.
    pub fn watches_subscriptions(&self) -> bool {
        self.sinks.iter().any(|(s, _)| s.subscriptions)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        let secret = SecretString::from("Jefe".to_owned());
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn thresholds_round_to_basis_points() {
        assert_eq!(share_to_bp(0.8), 8000);
        assert_eq!(share_to_bp(0.333_33), 3333);
        assert_eq!(share_to_bp(1.0), 10_000);
    }
}
