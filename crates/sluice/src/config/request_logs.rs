//! `[request_logs]`: how tenants' opt-in request logs are redacted. Whether a tenant logs at all is the
//! tenant's setting (`PUT /admin/tenants/{name}/request-logs`), off by default.

use regex::Regex;
use serde::Deserialize;

/// Patterns replaced by `[REDACTED]` when none are configured: API keys and bearer tokens, e-mail
/// addresses, card-like digit runs, AWS access key ids.
pub const DEFAULT_REDACT: [&str; 5] = [
    r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}",
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}",
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    r"\b(?:\d[ -]?){12,18}\d\b",
    r"\bAKIA[0-9A-Z]{16}\b",
];

/// `[request_logs]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRequestLogs {
    /// Regular expressions (Rust `regex` syntax) whose matches are replaced by `[REDACTED]` in redacted
    /// logs, in order.
    pub redact: Vec<String>,
}

impl Default for RawRequestLogs {
    fn default() -> Self {
        Self {
            redact: DEFAULT_REDACT.iter().map(|p| (*p).to_owned()).collect(),
        }
    }
}

impl RawRequestLogs {
    /// The compiled patterns, or every problem as (key, message).
    pub(crate) fn compile(&self) -> Result<Vec<Regex>, Vec<(String, String)>> {
        let mut patterns = Vec::new();
        let mut problems = Vec::new();
        for (i, pattern) in self.redact.iter().enumerate() {
            match Regex::new(pattern) {
                Ok(regex) => patterns.push(regex),
                Err(error) => problems.push((format!("request_logs.redact[{i}]"), error.to_string())),
            }
        }
        if problems.is_empty() {
            Ok(patterns)
        } else {
            Err(problems)
        }
    }
}
