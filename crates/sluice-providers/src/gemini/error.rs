//! Google's error responses, classified.
//!
//! Google answers errors as `{"error": {"code", "message", "status", "details": [...]}}` (a `google.rpc.Status`;
//! some endpoints wrap it in an array). The kind comes from the HTTP status and the canonical `status`:
//! - 429 / `RESOURCE_EXHAUSTED`: rate limited; the retry time is the `retry-after` header if sent, else the
//!   `retryDelay` of the `type.googleapis.com/google.rpc.RetryInfo` detail (a protobuf duration: `"13s"`,
//!   `"0.5s"`). Daily quotas come the same way, with a retry delay of hours.
//! - 503 / `UNAVAILABLE`: overloaded. 500, 504 and other 5xx: server error.
//! - 401 / `UNAUTHENTICATED`, an error whose `google.rpc.ErrorInfo` reason says the key or its project is
//!   unusable ([`KEY_REASONS`]: `API_KEY_INVALID`, a key restricted away from this API, a suspended
//!   consumer, the API disabled in the project...), and a 400 `FAILED_PRECONDITION` (the key's project has
//!   no billing where the free tier is not offered): authentication, a gateway problem the client cannot
//!   fix.
//! - Other 4xx, 403 `PERMISSION_DENIED` included: the request itself was refused (a `fileData.fileUri` the
//!   project does not own, a tuned model it may not use); the vendor's status and message reach the client
//!   in OpenAI's shape.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sluice_api::ErrorBody;

use crate::ProviderError;
use crate::limits::retry_after;
use crate::transport::read_body;

/// Error bodies are small; anything longer is cut when quoted.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// `google.rpc.ErrorInfo` reasons (`google/api/error_reason.proto`) that say the key, or the project and
/// account behind it, is unusable whatever the request.
const KEY_REASONS: &[&str] = &[
    "API_KEY_INVALID",
    "API_KEY_EXPIRED",
    "API_KEY_SERVICE_BLOCKED",
    "API_KEY_HTTP_REFERRER_BLOCKED",
    "API_KEY_IP_ADDRESS_BLOCKED",
    "API_KEY_ANDROID_APP_BLOCKED",
    "API_KEY_IOS_APP_BLOCKED",
    "SERVICE_DISABLED",
    "BILLING_DISABLED",
    "CONSUMER_SUSPENDED",
    "CONSUMER_INVALID",
    "ACCOUNT_STATE_INVALID",
    "CREDENTIALS_MISSING",
];

#[derive(Debug, Default, Deserialize)]
struct GoogleStatus {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    error: GoogleStatus,
}

impl GoogleStatus {
    /// The first detail of a `google.rpc` type, such as `RetryInfo`.
    fn detail(&self, kind: &str) -> Option<&Value> {
        self.details.iter().find(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .and_then(|t| t.strip_prefix("type.googleapis.com/google.rpc."))
                == Some(kind)
        })
    }

    fn retry_delay(&self) -> Option<Duration> {
        let delay = self.detail("RetryInfo")?.get("retryDelay")?.as_str()?;
        parse_protobuf_duration(delay)
    }

    fn reason(&self) -> Option<&str> {
        self.detail("ErrorInfo")?.get("reason")?.as_str()
    }
}

/// A protobuf `Duration` in JSON: seconds with up to nine decimals and an `s`; at most
/// [`crate::limits::MAX_WAIT`] (a daily quota's delay of hours is retried within the hour).
fn parse_protobuf_duration(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    crate::limits::wait_from_secs(seconds)
}

/// Turns a non-2xx Gemini response into a classified error.
pub(crate) async fn error_from_response(
    response: http::Response<crate::client::UpstreamBody>,
    idle: Duration,
) -> ProviderError {
    let status = response.status().as_u16();
    let retry = retry_after(response.headers());
    let body = read_body(response, idle, MAX_ERROR_BYTES).await.unwrap_or_default();
    classify(status, retry, &body)
}

/// Classifies a Gemini error by HTTP status, `retry-after` and body.
pub(crate) fn classify(status: u16, header_retry: Option<Duration>, body: &[u8]) -> ProviderError {
    let google = parse(body);
    let message = google
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| fallback_message(status, body));
    let canonical = google.status.as_deref().unwrap_or_default();
    let retry = header_retry.or_else(|| google.retry_delay());
    match (status, canonical) {
        (429, _) | (_, "RESOURCE_EXHAUSTED") => ProviderError::RateLimited {
            retry_after: retry,
            message,
        },
        (401, _) | (_, "UNAUTHENTICATED") => ProviderError::Authentication {
            status,
            detail: message,
        },
        (400..=499, _) if google.reason().is_some_and(|reason| KEY_REASONS.contains(&reason)) => {
            ProviderError::Authentication {
                status,
                detail: message,
            }
        }
        (400, "FAILED_PRECONDITION") => ProviderError::Authentication {
            status,
            detail: message,
        },
        (503, _) | (_, "UNAVAILABLE") => ProviderError::Overloaded {
            retry_after: retry,
            message,
        },
        // A request timeout is the server's condition, not the request's fault.
        (408, _) => ProviderError::Server { status, message },
        (400..=499, _) => {
            let code = (!canonical.is_empty()).then(|| canonical.to_ascii_lowercase());
            ProviderError::Rejected {
                status,
                error: ErrorBody::new("invalid_request_error", message, None, code),
            }
        }
        _ => ProviderError::Server { status, message },
    }
}

/// Classifies an error reported inside a stream (`{"error": {...}}` as an event).
pub(crate) fn classify_event(error: &Value) -> ProviderError {
    let status = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    let envelope = serde_json::json!({ "error": error });
    classify(status.unwrap_or(500), None, envelope.to_string().as_bytes())
}

fn parse(body: &[u8]) -> GoogleStatus {
    // Some endpoints answer `[{"error": {...}}]`. (Tried by the first byte: serde would also read the array
    // as the struct's fields in order.)
    if body.trim_ascii_start().first() == Some(&b'[') {
        return serde_json::from_slice::<Vec<Envelope>>(body)
            .ok()
            .and_then(|list| list.into_iter().next())
            .map(|e| e.error)
            .unwrap_or_default();
    }
    serde_json::from_slice::<Envelope>(body)
        .map(|e| e.error)
        .unwrap_or_default()
}

fn fallback_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("the upstream answered with status {status}")
    } else {
        text.chars().take(1000).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 429 as the Gemini API sends it (quota details, help link, retry delay).
    const RATE_LIMITED: &str = r#"{
      "error": {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
          {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"}, "quotaValue": "10"}]},
          {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
          {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "22s"}
        ]
      }
    }"#;

    #[test]
    fn rate_limits_carry_the_retry_delay() {
        match classify(429, None, RATE_LIMITED.as_bytes()) {
            ProviderError::RateLimited { retry_after, message } => {
                assert_eq!(retry_after, Some(Duration::from_secs(22)));
                assert!(message.starts_with("You exceeded your current quota"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // The header wins over the body.
        match classify(429, Some(Duration::from_secs(3)), RATE_LIMITED.as_bytes()) {
            ProviderError::RateLimited { retry_after, .. } => assert_eq!(retry_after, Some(Duration::from_secs(3))),
            other => panic!("{other:?}"),
        }
        let fractional = r#"{"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.5s"}]}}"#;
        assert_eq!(
            classify(429, None, fractional.as_bytes()).retry_after(),
            Some(Duration::from_millis(500))
        );
        let wrapped = format!("[{RATE_LIMITED}]");
        assert_eq!(
            classify(429, None, wrapped.as_bytes()).retry_after(),
            Some(Duration::from_secs(22))
        );
        assert!(matches!(
            classify(429, None, b"Too Many Requests"),
            ProviderError::RateLimited { retry_after: None, .. }
        ));
    }

    #[test]
    fn protobuf_durations() {
        assert_eq!(parse_protobuf_duration("13s"), Some(Duration::from_secs(13)));
        assert_eq!(
            parse_protobuf_duration("1.000340s"),
            Some(Duration::from_micros(1_000_340))
        );
        assert_eq!(parse_protobuf_duration("13"), None);
        assert_eq!(parse_protobuf_duration("-1s"), None);
        assert_eq!(parse_protobuf_duration("86400s"), Some(crate::limits::MAX_WAIT));
        assert_eq!(parse_protobuf_duration("1e300s"), Some(crate::limits::MAX_WAIT));
    }

    #[test]
    fn key_problems_are_authentication() {
        // The troubleshooting page's invalid key.
        let invalid_key = r#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID", "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"}},
            {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
            "message": "API key not valid. Please pass a valid API key."}]}}"#;
        assert!(matches!(
            classify(400, None, invalid_key.as_bytes()),
            ProviderError::Authentication { status: 400, .. }
        ));
        let unauthenticated = r#"{"error": {"code": 401, "message": "Request had invalid authentication credentials.",
            "status": "UNAUTHENTICATED"}}"#;
        assert!(matches!(
            classify(401, None, unauthenticated.as_bytes()),
            ProviderError::Authentication { status: 401, .. }
        ));
        // A key restricted away from the Gemini API, and a project with the API disabled: 403s about the key.
        for reason in ["API_KEY_SERVICE_BLOCKED", "SERVICE_DISABLED", "CONSUMER_SUSPENDED"] {
            let blocked = format!(
                r#"{{"error": {{"code": 403, "message": "Requests to this API are blocked.", "status": "PERMISSION_DENIED",
                "details": [{{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "{reason}",
                "domain": "googleapis.com"}}]}}}}"#
            );
            assert!(
                matches!(
                    classify(403, None, blocked.as_bytes()),
                    ProviderError::Authentication { status: 403, .. }
                ),
                "{reason}"
            );
        }
        let region = r#"{"error": {"code": 400, "message": "User location is not supported for the API use.", "status": "FAILED_PRECONDITION"}}"#;
        assert!(matches!(
            classify(400, None, region.as_bytes()),
            ProviderError::Authentication { status: 400, .. }
        ));
    }

    #[test]
    fn other_permission_errors_are_the_request_s() {
        // A file the project does not own (the client's `image_url` became `fileData.fileUri`).
        let file = r#"{"error": {"code": 403, "message": "You do not have permission to access the File abc123 or it may not exist.",
            "status": "PERMISSION_DENIED"}}"#;
        match classify(403, None, file.as_bytes()) {
            ProviderError::Rejected { status, error } => {
                assert_eq!(status, 403);
                assert_eq!(error.error.code.as_deref(), Some("permission_denied"));
                assert!(
                    error.error.message.contains("permission to access the File"),
                    "{error:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let tuned = r#"{"error": {"code": 403, "message": "Permission denied on resource tunedModels/my-model.",
            "status": "PERMISSION_DENIED", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED", "domain": "generativelanguage.googleapis.com"}]}}"#;
        assert!(matches!(
            classify(403, None, tuned.as_bytes()),
            ProviderError::Rejected { status: 403, .. }
        ));
        // The same inside a stream.
        let event: Value = serde_json::from_str(
            r#"{"code": 403, "message": "You do not have permission to access the File abc123 or it may not exist.", "status": "PERMISSION_DENIED"}"#,
        )
        .unwrap();
        assert!(matches!(
            classify_event(&event),
            ProviderError::Rejected { status: 403, .. }
        ));
    }

    #[test]
    fn server_side_failures_are_retryable() {
        let overloaded = r#"{"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}"#;
        match classify(503, Some(Duration::from_secs(1)), overloaded.as_bytes()) {
            ProviderError::Overloaded { retry_after, message } => {
                assert_eq!(retry_after, Some(Duration::from_secs(1)));
                assert_eq!(message, "The model is overloaded. Please try again later.");
            }
            other => panic!("{other:?}"),
        }
        let internal =
            r#"{"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}}"#;
        assert!(matches!(
            classify(500, None, internal.as_bytes()),
            ProviderError::Server { status: 500, .. }
        ));
        let deadline = r#"{"error": {"code": 504, "message": "Deadline expired", "status": "DEADLINE_EXCEEDED"}}"#;
        assert!(matches!(
            classify(504, None, deadline.as_bytes()),
            ProviderError::Server { status: 504, .. }
        ));
        assert!(matches!(
            classify(502, None, b""),
            ProviderError::Server { status: 502, .. }
        ));
    }

    #[test]
    fn invalid_requests_reach_the_client_in_openai_shape() {
        let invalid = r#"{"error": {"code": 400, "message": "* GenerateContentRequest.contents: contents is not specified\n",
            "status": "INVALID_ARGUMENT"}}"#;
        match classify(400, None, invalid.as_bytes()) {
            ProviderError::Rejected { status, error } => {
                assert_eq!(status, 400);
                assert_eq!(error.error.kind, "invalid_request_error");
                assert_eq!(error.error.code.as_deref(), Some("invalid_argument"));
                assert!(error.error.message.contains("contents is not specified"));
            }
            other => panic!("{other:?}"),
        }
        let missing = r#"{"error": {"code": 404, "message": "models/gemini-9 is not found for API version v1beta", "status": "NOT_FOUND"}}"#;
        let error = classify(404, None, missing.as_bytes());
        assert!(!error.is_retryable());
        assert!(matches!(error, ProviderError::Rejected { status: 404, .. }));
    }

    #[test]
    fn errors_inside_streams_are_classified_by_their_code() {
        let event: Value =
            serde_json::from_str(r#"{"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}"#)
                .unwrap();
        assert!(matches!(classify_event(&event), ProviderError::Overloaded { .. }));
        let event: Value = serde_json::from_str(r#"{"message": "boom"}"#).unwrap();
        assert!(matches!(
            classify_event(&event),
            ProviderError::Server { status: 500, .. }
        ));
    }
}
