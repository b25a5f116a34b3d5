//! The one error type adapters return, classified so the router knows whether to fail over.

use std::time::Duration;

use sluice_api::ErrorBody;

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Opening the connection.
    Connect,
    /// Waiting for the response head (for a non-streaming call, the whole answer).
    FirstByte,
    /// Waiting for the next part of a body or stream.
    Idle,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connecting",
            TimeoutPhase::FirstByte => "waiting for the first byte",
            TimeoutPhase::Idle => "waiting for more data",
        })
    }
}

/// Why an upstream call failed. Messages are safe to show to clients: they carry no key and no internal
/// address; `detail` fields are for logs.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The connection could not be opened.
    #[error("could not connect to the upstream")]
    Connect {
        /// The transport's explanation, for logs.
        detail: String,
    },
    /// A timeout ran out.
    #[error("the upstream timed out {phase} after {} ms", after.as_millis())]
    Timeout {
        /// Which wait ran out.
        phase: TimeoutPhase,
        /// How long it was.
        after: Duration,
    },
    /// The key hit a rate limit; it may be used again after `retry_after`.
    #[error("the upstream rate-limited this key: {message}")]
    RateLimited {
        /// When the vendor says to retry, if it said.
        retry_after: Option<Duration>,
        /// The vendor's message.
        message: String,
    },
    /// The key's quota or credit is used up; other keys may still work.
    #[error("the upstream key's quota is exhausted: {message}")]
    QuotaExhausted {
        /// The vendor's message.
        message: String,
    },
    /// The vendor is overloaded (503, Anthropic's 529).
    #[error("the upstream is overloaded: {message}")]
    Overloaded {
        /// When the vendor says to retry, if it said.
        retry_after: Option<Duration>,
        /// The vendor's message.
        message: String,
    },
    /// The vendor failed (5xx).
    #[error("the upstream failed with status {status}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The vendor's message.
        message: String,
    },
    /// The vendor refused our key itself (a 401, or an error saying the key is invalid, revoked or its
    /// account disabled): a gateway configuration problem, never the client's.
    #[error("the upstream rejected the gateway's key (status {status})")]
    Authentication {
        /// The HTTP status.
        status: u16,
        /// The vendor's message, for logs.
        detail: String,
    },
    /// The vendor rejected the request itself (a 4xx that is neither a rate limit nor about the key, a 403
    /// about what the request asks for included). Not retried; the vendor's error reaches the client in
    /// OpenAI's shape with the same status.
    #[error("{}", error.error.message)]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The vendor's error, in OpenAI's shape.
        error: ErrorBody,
    },
    /// The vendor answered something that is not the protocol (malformed JSON, a bad event).
    #[error("the upstream sent a malformed response")]
    Protocol {
        /// What was wrong, for logs.
        detail: String,
    },
    /// The stream or body ended before it was complete (connection reset or closed early).
    #[error("the upstream connection closed before the answer was complete")]
    Truncated {
        /// What the transport said, for logs.
        detail: String,
    },
}

impl ProviderError {
    /// Whether another key or deployment may succeed where this one failed. Invalid requests are never
    /// retried: they would fail everywhere.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ProviderError::Rejected { .. })
    }

    /// The failure's kind, a stable snake_case name (`rate_limited`, `timeout`, `key_refused`...), as the
    /// ledger's attempt log and the admin view of recent failures name it.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "connect",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::QuotaExhausted { .. } => "quota_exhausted",
            ProviderError::Overloaded { .. } => "overloaded",
            ProviderError::Server { .. } => "server_error",
            ProviderError::Authentication { .. } => "key_refused",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::Protocol { .. } => "malformed",
            ProviderError::Truncated { .. } => "truncated",
        }
    }

    /// When the vendor said the key can be used again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } | ProviderError::Overloaded { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// An error and its sources on one line, for logs (a transport error's top-level message alone hides the cause).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
