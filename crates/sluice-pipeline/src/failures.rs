//! The last failures, for operators (`GET /admin/failures`, the console): every upstream call that failed,
//! whether or not another candidate then served the request, and every request answered with an error.
//!
//! A ring of fixed capacity, newest first: memory stays bounded however many requests fail, and recording
//! costs one short lock, on failures only. A record holds names and ids only (model, provider, the
//! upstream key's id, tenant, a kind, a status), never a key, a prompt or a vendor's message, which may
//! quote either.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How many failures a [`FailureLog`] keeps unless told otherwise.
pub const DEFAULT_FAILURE_CAPACITY: usize = 256;

/// Where a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureStage {
    /// One call to a vendor failed. The request may still have been served, by another candidate.
    Upstream,
    /// The client was answered with an error.
    Answer,
}

/// One failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// An upstream call or the answer.
    pub stage: FailureStage,
    /// What went wrong, snake_case: for an upstream call, the vendor's failure (`rate_limited`,
    /// `timeout`, `key_refused`...); for an answer, why the gateway refused or failed ([`crate::PipelineError::kind`]).
    pub kind: &'static str,
    /// The HTTP status the client got, for an answer.
    pub status: Option<u16>,
    /// The model name the client asked for.
    pub model: String,
    /// The provider called, when one was.
    pub provider: Option<String>,
    /// The vendor's model id, when a provider was called.
    pub vendor_model: Option<String>,
    /// The id of the upstream key used (`openai#0`), never the key.
    pub upstream_key: Option<String>,
    /// The caller's tenant.
    pub tenant: String,
}

/// The last failures, in a ring of fixed capacity. See the module docs.
#[derive(Debug)]
pub struct FailureLog {
    recent: Mutex<VecDeque<Failure>>,
    capacity: usize,
    recorded: AtomicU64,
}

impl Default for FailureLog {
    fn default() -> Self {
        Self::new(DEFAULT_FAILURE_CAPACITY)
    }
}

impl FailureLog {
    /// A log keeping the last `capacity` failures (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            recent: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            recorded: AtomicU64::new(0),
        }
    }

    /// Keeps `failure`, dropping the oldest one when full.
    pub fn record(&self, mut failure: Failure) {
        // Model names may come from the client (an unknown model): capped like the ledger caps them.
        if failure.model.len() > sluice_store::MAX_MODEL_BYTES {
            failure.model = sluice_store::cap(&failure.model, sluice_store::MAX_MODEL_BYTES).to_owned();
        }
        self.recorded.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == self.capacity {
            recent.pop_back();
        }
        recent.push_front(failure);
    }

    /// The failures kept, newest first.
    pub fn recent(&self) -> Vec<Failure> {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Failures recorded since start, the ones no longer kept included.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    /// How many failures are kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(model: &str) -> Failure {
        Failure {
            at: Utc::now(),
            stage: FailureStage::Answer,
            kind: "exhausted",
            status: Some(429),
            model: model.to_owned(),
            provider: None,
            vendor_model: None,
            upstream_key: None,
            tenant: "t".to_owned(),
        }
    }

    #[test]
    fn keeps_the_newest_within_its_capacity() {
        let log = FailureLog::new(3);
        for i in 0..5 {
            log.record(failure(&format!("m{i}")));
        }
        let models: Vec<String> = log.recent().into_iter().map(|f| f.model).collect();
        assert_eq!(models, ["m4", "m3", "m2"]);
        assert_eq!(log.recorded(), 5);
        assert_eq!(log.capacity(), 3);
    }

    #[test]
    fn caps_client_chosen_names() {
        let log = FailureLog::new(1);
        log.record(failure(&"x".repeat(10_000)));
        assert_eq!(log.recent()[0].model.len(), sluice_store::MAX_MODEL_BYTES);
        assert_eq!(FailureLog::new(0).capacity(), 1);
    }
}
