//! OpenAI-format error responses, classified.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sluice_api::ErrorBody;

use crate::ProviderError;
use crate::limits::retry_after;

/// Error bodies are small; anything longer is cut when quoted.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Turns a non-2xx OpenAI-format response into a classified error.
pub(crate) async fn error_from_response(
    response: http::Response<crate::client::UpstreamBody>,
    idle: Duration,
) -> ProviderError {
    let status = response.status().as_u16();
    let retry = retry_after(response.headers());
    let body = crate::transport::read_body(response, idle, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    classify(status, retry, &body)
}

/// Error codes that say the key itself is unusable (invalid, revoked, its account or organisation
/// deactivated), whatever the request. OpenAI sends them with a 401; compatible servers sometimes with a 403.
const KEY_CODES: &[&str] = &["invalid_api_key", "account_deactivated", "invalid_organization"];

/// Classifies an OpenAI-format error by status and body. Only a 401, or an error whose code or type says
/// the key is unusable, is the key's problem; any other 403 (a region the vendor does not serve, a model
/// the key's project may not use, Azure's network rules) is passed to the client as the vendor's refusal.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> ProviderError {
    let error = parse_error_body(status, body);
    let message = error.error.message.clone();
    let names_the_key = error
        .error
        .code
        .as_deref()
        .is_some_and(|code| KEY_CODES.contains(&code))
        || error.error.kind == "authentication_error";
    match status {
        429 if error.error.code.as_deref() == Some("insufficient_quota") => ProviderError::QuotaExhausted { message },
        429 => ProviderError::RateLimited { retry_after, message },
        401 => ProviderError::Authentication {
            status,
            detail: message,
        },
        400..=499 if names_the_key => ProviderError::Authentication {
            status,
            detail: message,
        },
        503 | 529 => ProviderError::Overloaded { retry_after, message },
        // A request timeout is the server's condition, not the request's fault.
        408 => ProviderError::Server { status, message },
        400..=499 => ProviderError::Rejected { status, error },
        _ => ProviderError::Server { status, message },
    }
}

/// Reads an error body in OpenAI's shape; other shapes (`{"error": "text"}`, `{"message": ...}`, plain
/// text) are wrapped into it so the client always gets the same shape.
pub(crate) fn parse_error_body(status: u16, body: &[u8]) -> ErrorBody {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<Value>,
        message: Option<String>,
        detail: Option<Value>,
    }
    let default_kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let text_of = |value: &Value| match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(body) {
        match envelope.error {
            Some(Value::Object(object)) => {
                let message = object.get("message").map(text_of).unwrap_or_default();
                let kind = object
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or(default_kind)
                    .to_owned();
                let param = object.get("param").filter(|v| !v.is_null()).map(text_of);
                let code = object.get("code").filter(|v| !v.is_null()).map(text_of);
                return ErrorBody::new(kind, message, param, code);
            }
            Some(Value::String(message)) => return ErrorBody::new(default_kind, message, None, None),
            _ => {}
        }
        if let Some(message) = envelope.message.or_else(|| envelope.detail.as_ref().map(text_of)) {
            return ErrorBody::new(default_kind, message, None, None);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("the upstream answered with status {status}")
    } else {
        text.chars().take(1000).collect()
    };
    ErrorBody::new(default_kind, message, None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_errors_are_classified() {
        let body = br#"{"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#;
        match classify(429, Some(Duration::from_secs(2)), body) {
            ProviderError::RateLimited { retry_after, message } => {
                assert_eq!(retry_after, Some(Duration::from_secs(2)));
                assert_eq!(message, "Rate limit reached");
            }
            other => panic!("{other:?}"),
        }
        let quota = br#"{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}"#;
        assert!(matches!(
            classify(429, None, quota),
            ProviderError::QuotaExhausted { .. }
        ));
        assert!(matches!(
            classify(401, None, b"{}"),
            ProviderError::Authentication { status: 401, .. }
        ));
        assert!(matches!(classify(503, None, b""), ProviderError::Overloaded { .. }));
        assert!(matches!(
            classify(500, None, b"oops"),
            ProviderError::Server { status: 500, .. }
        ));
        let invalid = br#"{"error": {"message": "Invalid value for 'temperature'", "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}}"#;
        match classify(400, None, invalid) {
            ProviderError::Rejected { status, error } => {
                assert_eq!(status, 400);
                assert_eq!(error.error.param.as_deref(), Some("temperature"));
                assert_eq!(error.error.code.as_deref(), Some("invalid_value"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!classify(404, None, b"").is_retryable());
        assert!(classify(502, None, b"").is_retryable());
    }

    #[test]
    fn only_key_problems_are_authentication() {
        // The documented 401s: an incorrect key, a key outside any organisation.
        let incorrect = br#"{"error": {"message": "Incorrect API key provided: sk-abc***xyz. You can find your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#;
        assert!(matches!(
            classify(401, None, incorrect),
            ProviderError::Authentication { status: 401, .. }
        ));
        let no_organization = br#"{"error": {"message": "You must be a member of an organization to use the API. Please contact us through our help center at help.openai.com.", "type": "invalid_request_error", "param": null, "code": null}}"#;
        assert!(matches!(
            classify(401, None, no_organization),
            ProviderError::Authentication { status: 401, .. }
        ));
        // A compatible server refusing the key with a 403 still names it.
        let forbidden_key =
            br#"{"error": {"message": "Invalid API Key", "type": "invalid_request_error", "code": "invalid_api_key"}}"#;
        assert!(matches!(
            classify(403, None, forbidden_key),
            ProviderError::Authentication { status: 403, .. }
        ));
        let deactivated = br#"{"error": {"message": "Your OpenAI account has been deactivated, please check your email for more information.", "type": "invalid_request_error", "param": null, "code": "account_deactivated"}}"#;
        assert!(matches!(
            classify(403, None, deactivated),
            ProviderError::Authentication { status: 403, .. }
        ));
        // Any other 403 is the request's: the client gets the vendor's status and message.
        let region = br#"{"error": {"code": "unsupported_country_region_territory", "message": "Country, region, or territory not supported", "param": null, "type": "request_forbidden"}}"#;
        match classify(403, None, region) {
            ProviderError::Rejected { status: 403, error } => {
                assert_eq!(error.error.message, "Country, region, or territory not supported");
                assert_eq!(
                    error.error.code.as_deref(),
                    Some("unsupported_country_region_territory")
                );
            }
            other => panic!("{other:?}"),
        }
        let model = br#"{"error": {"message": "Project `proj_abc` does not have access to model `o1-pro`", "type": "invalid_request_error", "param": null, "code": "model_not_found"}}"#;
        assert!(matches!(
            classify(403, None, model),
            ProviderError::Rejected { status: 403, .. }
        ));
        // Azure's network rules: the body is `{"error": {"code": "403", "message": ...}}`.
        let azure = br#"{"error": {"code": "403", "message": "Access denied due to Virtual Network/Firewall rules."}}"#;
        assert!(matches!(
            classify(403, None, azure),
            ProviderError::Rejected { status: 403, .. }
        ));
        assert!(matches!(
            classify(403, None, b"Forbidden"),
            ProviderError::Rejected { status: 403, .. }
        ));
    }

    #[test]
    fn foreign_error_shapes_are_wrapped() {
        let ollama = parse_error_body(404, br#"{"error": "model 'llama9' not found"}"#);
        assert_eq!(ollama.error.message, "model 'llama9' not found");
        assert_eq!(ollama.error.kind, "invalid_request_error");
        let fastapi = parse_error_body(422, br#"{"detail": [{"loc": ["body", "messages"]}]}"#);
        assert!(fastapi.error.message.contains("messages"));
        let plain = parse_error_body(502, b"Bad Gateway");
        assert_eq!(plain.error.message, "Bad Gateway");
        assert_eq!(plain.error.kind, "server_error");
        let numeric_code = parse_error_body(400, br#"{"error": {"message": "m", "code": 1234}}"#);
        assert_eq!(numeric_code.error.code.as_deref(), Some("1234"));
    }
}
