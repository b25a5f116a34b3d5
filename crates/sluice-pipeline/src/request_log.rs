//! Request logs, opt-in per tenant: the prompt and the answer of each request of a tenant that asked for
//! them, redacted (each configured pattern replaced by `[REDACTED]`) or reduced to their SHA-256 and
//! length, kept for the tenant's retention.
//!
//! Off by default: a tenant logs nothing until its settings say otherwise (`PUT
//! /admin/tenants/{name}/request-logs`). Settings are read from the store at start and every refresh, and
//! changed at once on the replica that wrote them. Nothing waits on the database on the request path: a
//! finished request's log goes to a bounded queue (a full queue drops it and counts it), written by one
//! task; the texts are redacted there, off the request path too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;
use sha2::{Digest, Sha256};
use sluice_store::{LogMode, LogSettings, RequestLog, Store, StoreError};
use tokio::sync::mpsc;

/// Logs waiting to be written before new ones are dropped.
const QUEUE: usize = 1024;
/// The most of a prompt or an answer kept, in bytes; the hash and length are of the whole text.
const MAX_TEXT_BYTES: usize = 256 * 1024;
/// What a redacted match becomes.
pub const REDACTED: &str = "[REDACTED]";

/// Tenants' request-log settings and the writer of their logs.
#[derive(Debug)]
pub struct RequestLogs {
    store: Store,
    redact: Vec<Regex>,
    settings: RwLock<HashMap<String, LogSettings>>,
    tx: mpsc::Sender<Pending>,
    dropped: AtomicU64,
}

/// A finished request's texts, before redaction.
#[derive(Debug)]
struct Pending {
    log: RequestLog,
    request: String,
    response: String,
}

impl RequestLogs {
    /// Loads the settings from `store` and starts the writer; `redact` are the patterns replaced in
    /// redacted logs.
    pub async fn start(store: Store, redact: Vec<Regex>) -> Result<Arc<Self>, StoreError> {
        let settings = store.log_settings().await?.into_iter().collect();
        let (tx, rx) = mpsc::channel(QUEUE);
        let logs = Arc::new(Self {
            store,
            redact,
            settings: RwLock::new(settings),
            tx,
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(write(Arc::downgrade(&logs), rx));
        Ok(logs)
    }

    /// Re-reads the settings every `refresh` (so a change made on another replica arrives) and purges
    /// logs past their tenant's retention at start and every hour. Ends when aborted.
    pub fn maintain(self: Arc<Self>, refresh: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last_purge: Option<tokio::time::Instant> = None;
            loop {
                if last_purge.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                    match self.purge(Utc::now()).await {
                        Ok(0) => {}
                        Ok(purged) => tracing::info!(purged, "request logs past their retention deleted"),
                        Err(error) => tracing::warn!("request logs: cannot purge: {error}"),
                    }
                    last_purge = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(refresh).await;
                match self.store.log_settings().await {
                    Ok(read) => {
                        *self.settings.write().unwrap_or_else(PoisonError::into_inner) = read.into_iter().collect()
                    }
                    Err(error) => tracing::warn!("request logs: cannot read settings: {error}"),
                }
            }
        })
    }

    /// What the tenant named `tenant` keeps.
    pub fn settings(&self, tenant: &str) -> LogSettings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .copied()
            .unwrap_or_default()
    }

    /// Applies settings just written to the store, on this replica at once.
    pub fn set(&self, tenant: &str, settings: LogSettings) {
        self.settings
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.to_owned(), settings);
    }

    /// Deletes every tenant's logs older than its retention at `now`; returns how many.
    pub async fn purge(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut purged = 0;
        for tenant in self.store.logged_tenants().await? {
            let days = self.settings(&tenant).retention_days;
            let before = now - chrono::Duration::days(i64::from(days));
            purged += self.store.purge_request_logs(&tenant, before).await?;
        }
        Ok(purged)
    }

    /// Logs dropped because the queue was full or the database refused them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A capture for a request of `tenant` whose input reads `request`, if the tenant logs requests.
    pub(crate) fn capture(self: &Arc<Self>, tenant: &str, request: impl FnOnce() -> String) -> Option<Capture> {
        let mode = self.settings(tenant).mode;
        (mode != LogMode::Off).then(|| Capture {
            logs: Arc::clone(self),
            mode,
            request: capped(request()),
            response: String::new(),
        })
    }

    /// The texts as kept: redacted, or only hashed.
    fn seal(&self, pending: Pending) -> RequestLog {
        let Pending {
            mut log,
            request,
            response,
        } = pending;
        log.request_sha256 = sha256_hex(&request);
        log.request_bytes = request.len() as u64;
        log.response_sha256 = sha256_hex(&response);
        log.response_bytes = response.len() as u64;
        if log.mode == LogMode::Redacted {
            log.request = Some(self.redacted(&request));
            log.response = Some(self.redacted(&response));
        }
        log
    }

    /// `text` with every match of every pattern replaced by [`REDACTED`].
    pub fn redacted(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for pattern in &self.redact {
            if pattern.is_match(&out) {
                out = pattern.replace_all(&out, REDACTED).into_owned();
            }
        }
        out
    }
}

/// One request's texts as it runs.
#[derive(Debug)]
pub(crate) struct Capture {
    logs: Arc<RequestLogs>,
    mode: LogMode,
    request: String,
    response: String,
}

impl Capture {
    /// A complete answer in OpenAI's format: its messages' text (and tool calls) are the answer.
    pub(crate) fn complete(&mut self, body: &[u8]) {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        for choice in value["choices"].as_array().into_iter().flatten() {
            let message = &choice["message"];
            self.push(message["content"].as_str().unwrap_or_default());
            if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
                self.push(&calls.to_string());
            }
        }
    }

    /// A stream's chunk in OpenAI's format: its deltas' text is appended.
    pub(crate) fn chunk(&mut self, data: &[u8]) {
        if self.response.len() >= MAX_TEXT_BYTES {
            return;
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        for choice in value["choices"].as_array().into_iter().flatten() {
            if let Some(text) = choice["delta"]["content"].as_str() {
                self.push(text);
            }
        }
    }

    fn push(&mut self, text: &str) {
        let room = MAX_TEXT_BYTES.saturating_sub(self.response.len());
        self.response.push_str(cut(text, room));
    }

    /// Queues the log of the finished request, never waiting.
    pub(crate) fn finish(self, id: &str, tenant: &str, model: &str, status: u16, created_at: DateTime<Utc>) {
        let pending = Pending {
            log: RequestLog {
                id: id.to_owned(),
                tenant: tenant.to_owned(),
                model: model.to_owned(),
                status,
                mode: self.mode,
                request: None,
                response: None,
                request_sha256: String::new(),
                request_bytes: 0,
                response_sha256: String::new(),
                response_bytes: 0,
                created_at,
            },
            request: self.request,
            response: self.response,
        };
        if self.logs.tx.try_send(pending).is_err() {
            self.logs.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write(logs: std::sync::Weak<RequestLogs>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 64).await > 0 {
        let Some(logs) = logs.upgrade() else { return };
        let sealed: Vec<RequestLog> = batch.drain(..).map(|pending| logs.seal(pending)).collect();
        if let Err(error) = logs.store.insert_request_logs(&sealed).await {
            logs.dropped.fetch_add(sealed.len() as u64, Ordering::Relaxed);
            tracing::warn!(count = sealed.len(), "request logs lost: {error}");
        }
    }
}

fn capped(text: String) -> String {
    if text.len() <= MAX_TEXT_BYTES {
        text
    } else {
        cut(&text, MAX_TEXT_BYTES).to_owned()
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
