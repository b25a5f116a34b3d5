//! Request logs, opt-in per tenant: what a tenant chose to keep of its prompts and answers, and the rows.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// What a tenant's request logs keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogMode {
    /// Nothing (the default).
    #[default]
    Off,
    /// The prompt and the answer, with the configured patterns replaced.
    Redacted,
    /// Only each text's SHA-256 and length.
    Hashed,
}

impl LogMode {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Redacted => "redacted",
            Self::Hashed => "hashed",
        }
    }
}

impl fmt::Display for LogMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogMode {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Self::Off),
            "redacted" => Ok(Self::Redacted),
            "hashed" => Ok(Self::Hashed),
            other => Err(StoreError::invalid(
                "mode",
                format!("must be off, redacted or hashed, not {other:?}"),
            )),
        }
    }
}

/// A tenant's request-log settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LogSettings {
    /// What is kept.
    pub mode: LogMode,
    /// Days a log is kept (at least 1).
    pub retention_days: u32,
}

/// Days a log is kept when the tenant says nothing.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            mode: LogMode::Off,
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }
}

impl LogSettings {
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.retention_days == 0 || self.retention_days > 3650 {
            return Err(StoreError::invalid("retention_days", "must be 1 to 3650"));
        }
        Ok(())
    }
}

/// One request's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestLog {
    /// The ledger row's id.
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The model the client named.
    pub model: String,
    /// The status the client got.
    pub status: u16,
    /// `redacted` or `hashed`.
    pub mode: LogMode,
    /// The prompt, redacted; `None` when hashed.
    pub request: Option<String>,
    /// The answer, redacted; `None` when hashed.
    pub response: Option<String>,
    /// SHA-256 (hex) of the prompt before redaction.
    pub request_sha256: String,
    /// Its length in bytes.
    pub request_bytes: u64,
    /// SHA-256 (hex) of the answer before redaction.
    pub response_sha256: String,
    /// Its length in bytes.
    pub response_bytes: u64,
    /// When the request was made.
    pub created_at: DateTime<Utc>,
}
