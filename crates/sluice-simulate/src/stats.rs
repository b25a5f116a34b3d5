//! What the simulated vendor counts: requests, refusals, streams, and per key what it served.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use serde::Serialize;
use sluice_api::TokenUsage;

/// Counters of what one key was served.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KeyStats {
    /// Requests accepted.
    pub requests: u64,
    /// Tokens (prompt + completion) accepted: what the key's tokens-per-minute limit was charged.
    pub tokens: u64,
    /// Requests refused for a rate limit.
    pub rate_limited: u64,
    /// Prompt tokens of the accepted requests, as their usage reported them.
    pub prompt_tokens: u64,
    /// Completion tokens (reasoning included) of the accepted requests, as their usage reported them: whole
    /// answers, even of streams that stopped early.
    pub completion_tokens: u64,
    /// What a vendor would invoice this key, by category: the input of every accepted request (also when
    /// the client then left), and every token generated, for a stream the tokens sent before it stopped
    /// (see `sluice_simulate::bill`). A stream still open has its input billed and its output not yet.
    pub bill: TokenUsage,
}

/// What the simulated vendor has done since it started.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SimStats {
    /// Requests received.
    pub requests: u64,
    /// Requests refused with a 429.
    pub rate_limited: u64,
    /// Requests answered with a drawn 500.
    pub server_errors: u64,
    /// Requests a face refused as invalid, as the real vendor would (a 400 for a malformed or
    /// inconsistent conversation). Through the gateway this stays zero unless a translation is wrong.
    pub invalid_requests: u64,
    /// Streams begun.
    pub streams_started: u64,
    /// Streams sent to the end.
    pub streams_completed: u64,
    /// Streams whose reader went away before the end.
    pub streams_cancelled: u64,
    /// Per key, by [`crate::Simulator::key_label`].
    pub keys: HashMap<String, KeyStats>,
}

impl SimStats {
    /// The bill of every key together.
    pub fn bill(&self) -> TokenUsage {
        self.keys
            .values()
            .fold(TokenUsage::default(), |sum, key| sum.plus(&key.bill))
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) server_errors: AtomicU64,
    pub(crate) invalid_requests: AtomicU64,
    pub(crate) streams_started: AtomicU64,
    pub(crate) streams_completed: AtomicU64,
    pub(crate) streams_cancelled: AtomicU64,
}
