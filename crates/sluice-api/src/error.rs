//! OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.

use serde::{Deserialize, Serialize};

/// The envelope OpenAI wraps every error in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorObject,
}

/// One error as OpenAI reports it. `param` and `code` are serialised as `null` when absent, as OpenAI does,
/// because some SDKs index them without checking for presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// Human-readable explanation, safe to show to the caller.
    pub message: String,
    /// The error class, such as `invalid_request_error` or `rate_limit_exceeded`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field the error is about, as a path like `messages[0].role`.
    #[serde(default)]
    pub param: Option<String>,
    /// A machine-readable code such as `model_not_found`.
    #[serde(default)]
    pub code: Option<String>,
}

impl ErrorBody {
    /// Builds an error body from its parts.
    pub fn new(
        kind: impl Into<String>,
        message: impl Into<String>,
        param: Option<String>,
        code: Option<String>,
    ) -> Self {
        Self {
            error: ErrorObject {
                message: message.into(),
                kind: kind.into(),
                param,
                code,
            },
        }
    }

    /// Serialises the body to JSON bytes. Serialising these plain strings cannot fail; should it ever, a
    /// fixed body is returned rather than a panic.
    pub fn to_bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self).map(bytes::Bytes::from).unwrap_or_else(|_| {
            bytes::Bytes::from_static(
                br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#,
            )
        })
    }
}
