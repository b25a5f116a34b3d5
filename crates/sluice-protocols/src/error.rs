//! The crate's one error type, and how a broken stream is described to the translators.

use sluice_api::{ErrorBody, ParseError};

/// Why a request could not be translated to chat completions, or an answer back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not JSON, or a field has the wrong type; the error names the field's path.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The request asks for something chat completions cannot express (a built-in tool, stored
    /// conversation state...). A 400 naming the field.
    #[error("{message}")]
    Unsupported {
        /// The field's path, like `tools[2].type`.
        param: String,
        /// What cannot be done and why, safe to show to the client.
        message: String,
    },
    /// A field's value is not acceptable (a required field missing inside an item, say). A 400 naming the
    /// field.
    #[error("{message}")]
    Invalid {
        /// The field's path.
        param: String,
        /// What is wrong, safe to show to the client.
        message: String,
    },
    /// The chat completion to translate back is not one (malformed JSON, a chunk out of protocol). The
    /// upstream's fault, not the client's: a 502, and for a stream, the caller ends it with `fail`.
    #[error("the upstream answer could not be translated: {detail}")]
    Answer {
        /// What was wrong, for logs.
        detail: String,
    },
}

impl ProtocolError {
    pub(crate) fn unsupported(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unsupported {
            param: param.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }

    pub(crate) fn answer(detail: impl Into<String>) -> Self {
        Self::Answer { detail: detail.into() }
    }

    /// The HTTP status to answer with: 400 for the client's request, 502 for an answer that could not
    /// be translated.
    pub fn status(&self) -> u16 {
        match self {
            Self::Answer { .. } => 502,
            _ => 400,
        }
    }

    /// The request field the error is about, if any.
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::Parse(err) => err.param(),
            Self::Unsupported { param, .. } | Self::Invalid { param, .. } => Some(param),
            Self::Answer { .. } => None,
        }
    }

    /// The error in OpenAI's shape, as `/v1/responses` answers it. An untranslatable answer says no more
    /// than that: its detail is for logs.
    pub fn to_openai(&self) -> ErrorBody {
        match self {
            Self::Answer { .. } => ErrorBody::new(
                "server_error",
                "The upstream answered in a form the gateway could not translate.",
                None,
                None,
            ),
            Self::Unsupported { .. } => ErrorBody::new(
                "invalid_request_error",
                self.to_string(),
                self.param().map(str::to_owned),
                Some("unsupported_parameter".to_owned()),
            ),
            _ => ErrorBody::new(
                "invalid_request_error",
                self.to_string(),
                self.param().map(str::to_owned),
                None,
            ),
        }
    }

    /// The error in Anthropic's shape, as `/v1/messages` answers it, with the status of
    /// [`ProtocolError::status`].
    pub fn to_anthropic(&self) -> bytes::Bytes {
        match self {
            Self::Answer { .. } => crate::messages::error_body(
                self.status(),
                "The upstream answered in a form the gateway could not translate.",
            ),
            // The messages name their field already (Anthropic's style: `max_tokens: Field required`).
            _ => crate::messages::error_body(self.status(), &self.to_string()),
        }
    }
}

/// What broke a stream, as the stream translators' `fail` reports it to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The upstream rate-limited the call mid-stream.
    RateLimited,
    /// The upstream is overloaded.
    Overloaded,
    /// Any other failure: the upstream failed, the connection closed early, a timeout ran out, the answer
    /// could not be read.
    Upstream,
}

/// A broken stream, described for the client: what kind of failure and a message safe to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFailure<'a> {
    /// The kind, which picks the protocol's error code.
    pub kind: FailureKind,
    /// The message, safe to show to the client (no key, no internal address).
    pub message: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_params_and_shapes() {
        let err = ProtocolError::unsupported("tools[0].type", "built-in tools cannot be served");
        assert_eq!(err.status(), 400);
        assert_eq!(err.param(), Some("tools[0].type"));
        let body = err.to_openai();
        assert_eq!(body.error.kind, "invalid_request_error");
        assert_eq!(body.error.param.as_deref(), Some("tools[0].type"));
        assert_eq!(body.error.code.as_deref(), Some("unsupported_parameter"));
        let anthropic: serde_json::Value = serde_json::from_slice(&err.to_anthropic()).unwrap();
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "invalid_request_error");
        assert_eq!(anthropic["error"]["message"], "built-in tools cannot be served");

        let answer = ProtocolError::answer("chunk 3 is not JSON: secret detail");
        assert_eq!(answer.status(), 502);
        assert!(!answer.to_openai().error.message.contains("secret"));
        let anthropic: serde_json::Value = serde_json::from_slice(&answer.to_anthropic()).unwrap();
        assert_eq!(anthropic["error"]["type"], "api_error");
        assert!(!anthropic.to_string().contains("secret"));

        let parse = ProtocolError::from(sluice_api::parse_json::<serde_json::Value>(b"{").unwrap_err());
        assert_eq!(parse.status(), 400);
        assert_eq!(parse.param(), None);
    }
}
