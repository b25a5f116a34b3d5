//! Anthropic error responses and rate-limit headers, classified.
//!
//! Shapes from Anthropic's API reference (platform.claude.com/docs/en/api/errors and
//! .../api/rate-limits): every error body is `{"type": "error", "error": {"type", "message"}, "request_id"}`;
//! the statuses are 400 `invalid_request_error`, 401 `authentication_error`, 402 `billing_error`,
//! 403 `permission_error`, 404 `not_found_error`, 413 `request_too_large`, 429 `rate_limit_error`,
//! 500 `api_error`, 529 `overloaded_error`. A 429 carries `retry-after` (seconds); every answer carries
//! `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`, the resets
//! being RFC 3339 timestamps rather than OpenAI's durations.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;
use sluice_api::ErrorBody;

use crate::ProviderError;
use crate::limits::RateLimitSnapshot;

/// Error bodies are small; anything longer is cut when quoted.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Turns a non-2xx Anthropic response into a classified error.
pub(crate) async fn error_from_response(
    response: http::Response<crate::client::UpstreamBody>,
    idle: Duration,
) -> ProviderError {
    let status = response.status().as_u16();
    let retry = retry_after(response.headers(), SystemTime::now());
    let body = crate::transport::read_body(response, idle, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    classify(status, retry, &body)
}

/// The error object of an Anthropic error body or `error` stream event.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AnthropicError {
    /// `invalid_request_error`, `rate_limit_error`, `overloaded_error`...
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    /// The vendor's explanation.
    #[serde(default)]
    pub(crate) message: String,
    /// Extra detail; a spend limit shows as `{"error_code": "enforced_spend_limit_reached"}`.
    #[serde(default)]
    details: Option<Value>,
}

impl AnthropicError {
    fn is_spend_limit(&self) -> bool {
        self.details
            .as_ref()
            .and_then(|d| d.get("error_code"))
            .and_then(Value::as_str)
            == Some("enforced_spend_limit_reached")
    }
}

/// Classifies an Anthropic error by status and body. Only a 401 or an `authentication_error` (the key is
/// invalid, revoked or its organisation disabled) is the key's problem; a 403 `permission_error` is about
/// what the request asks for (a model, a feature or a file the key may not use) and reaches the client.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> ProviderError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<AnthropicError>,
    }
    let parsed = serde_json::from_slice::<Envelope>(body).ok().and_then(|e| e.error);
    let error = parsed.unwrap_or_else(|| AnthropicError {
        kind: String::new(),
        message: fallback_message(status, body),
        details: None,
    });
    match status {
        429 if error.is_spend_limit() => ProviderError::QuotaExhausted { message: error.message },
        429 => ProviderError::RateLimited {
            retry_after,
            message: error.message,
        },
        // The key's organisation has no credit left: other keys may still work.
        402 => ProviderError::QuotaExhausted { message: error.message },
        401 => ProviderError::Authentication {
            status,
            detail: error.message,
        },
        400..=499 if error.kind == "authentication_error" => ProviderError::Authentication {
            status,
            detail: error.message,
        },
        503 | 529 => ProviderError::Overloaded {
            retry_after,
            message: error.message,
        },
        _ if error.kind == "overloaded_error" => ProviderError::Overloaded {
            retry_after,
            message: error.message,
        },
        // A request timeout is the server's condition, not the request's fault.
        408 => ProviderError::Server {
            status,
            message: error.message,
        },
        400..=499 => {
            let code = (!error.kind.is_empty()).then_some(error.kind);
            ProviderError::Rejected {
                status,
                error: ErrorBody::new("invalid_request_error", error.message, None, code),
            }
        }
        _ => ProviderError::Server {
            status,
            message: error.message,
        },
    }
}

/// Classifies the `error` event of a stream that had already started.
pub(crate) fn classify_stream_error(error: AnthropicError) -> ProviderError {
    match error.kind.as_str() {
        "overloaded_error" => ProviderError::Overloaded {
            retry_after: None,
            message: error.message,
        },
        "rate_limit_error" => ProviderError::RateLimited {
            retry_after: None,
            message: error.message,
        },
        _ => ProviderError::Server {
            status: 500,
            message: if error.message.is_empty() {
                format!("the upstream stream failed: {}", error.kind)
            } else {
                error.message
            },
        },
    }
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

// === Rate-limit headers ===

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header_str(headers, name).and_then(|v| v.parse().ok())
}

/// Time from `now` until the RFC 3339 timestamp in header `name`, at most [`crate::limits::MAX_WAIT`].
fn header_reset(headers: &HeaderMap, name: &str, now: SystemTime) -> Option<Duration> {
    let when = parse_rfc3339(header_str(headers, name)?)?;
    Some(crate::limits::until(when, now))
}

/// The limits Anthropic reported on one response. `tokens` is the most restrictive token limit in
/// effect; the input and output limits stand in when it is absent.
pub(crate) fn rate_limit_snapshot(headers: &HeaderMap, now: SystemTime) -> RateLimitSnapshot {
    let remaining_tokens = header_u64(headers, "anthropic-ratelimit-tokens-remaining").or_else(|| {
        let input = header_u64(headers, "anthropic-ratelimit-input-tokens-remaining");
        let output = header_u64(headers, "anthropic-ratelimit-output-tokens-remaining");
        match (input, output) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    });
    let reset_tokens = header_reset(headers, "anthropic-ratelimit-tokens-reset", now).or_else(|| {
        let input = header_reset(headers, "anthropic-ratelimit-input-tokens-reset", now);
        let output = header_reset(headers, "anthropic-ratelimit-output-tokens-reset", now);
        match (input, output) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    });
    RateLimitSnapshot {
        remaining_requests: header_u64(headers, "anthropic-ratelimit-requests-remaining"),
        remaining_tokens,
        reset_requests: header_reset(headers, "anthropic-ratelimit-requests-reset", now),
        reset_tokens,
    }
}

/// The retry time of a 429 or 529: `retry-after` (or `-ms`, or an HTTP date) when sent; else the latest
/// reset among the exhausted limits; else the latest reset of any limit.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(retry) = crate::limits::retry_after(headers) {
        return Some(retry);
    }
    const LIMITS: [&str; 4] = ["requests", "tokens", "input-tokens", "output-tokens"];
    let mut exhausted: Option<Duration> = None;
    let mut any: Option<Duration> = None;
    for limit in LIMITS {
        let Some(reset) = header_reset(headers, &format!("anthropic-ratelimit-{limit}-reset"), now) else {
            continue;
        };
        any = Some(any.map_or(reset, |a| a.max(reset)));
        if header_u64(headers, &format!("anthropic-ratelimit-{limit}-remaining")) == Some(0) {
            exhausted = Some(exhausted.map_or(reset, |e| e.max(reset)));
        }
    }
    exhausted.or(any)
}

/// Parses an RFC 3339 timestamp (`2025-08-21T12:40:59Z`, `2025-08-21T12:40:59.5+02:00`).
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(text).ok().map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn at(text: &str) -> SystemTime {
        parse_rfc3339(text).unwrap()
    }

    #[test]
    fn rfc3339_timestamps_parse() {
        let epoch = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(epoch(at("1970-01-01T00:00:00Z")), Duration::ZERO);
        assert_eq!(epoch(at("2025-08-21T12:40:59Z")), Duration::from_secs(1_755_780_059));
        assert_eq!(epoch(at("2024-02-29T00:00:00Z")), Duration::from_secs(1_709_164_800));
        assert_eq!(
            epoch(at("2025-08-21T14:40:59.25+02:00")),
            Duration::from_secs_f64(1_755_780_059.25)
        );
        assert_eq!(
            epoch(at("2025-08-21T07:40:59-05:00")),
            Duration::from_secs(1_755_780_059)
        );
        for bad in [
            "",
            "soon",
            "2025-08-21",
            "2025-13-01T00:00:00Z",
            "2025-08-21T12:40:59",
            "2025-08-21T12:40:59.",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn documented_error_bodies_are_classified() {
        // The shape from the errors page: a top-level `error` object with `type` and `message`.
        let body = |kind: &str, message: &str| {
            format!(
                r#"{{"type":"error","error":{{"type":"{kind}","message":"{message}"}},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}}"#
            )
        };
        match classify(
            400,
            None,
            body("invalid_request_error", "max_tokens: Field required").as_bytes(),
        ) {
            ProviderError::Rejected { status, error } => {
                assert_eq!(status, 400);
                assert_eq!(error.error.message, "max_tokens: Field required");
                assert_eq!(error.error.kind, "invalid_request_error");
                assert_eq!(error.error.code.as_deref(), Some("invalid_request_error"));
            }
            other => panic!("{other:?}"),
        }
        match classify(404, None, body("not_found_error", "model: claude-nope").as_bytes()) {
            ProviderError::Rejected { status: 404, error } => {
                assert_eq!(error.error.code.as_deref(), Some("not_found_error"));
                assert_eq!(error.error.message, "model: claude-nope");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(413, None, body("request_too_large", "too big").as_bytes()),
            ProviderError::Rejected { status: 413, .. }
        ));
        match classify(
            429,
            Some(Duration::from_secs(7)),
            body("rate_limit_error", "slow down").as_bytes(),
        ) {
            ProviderError::RateLimited { retry_after, message } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert_eq!(message, "slow down");
            }
            other => panic!("{other:?}"),
        }
        let spend = br#"{"type":"error","error":{"type":"rate_limit_error","message":"spend limit","details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        assert!(matches!(
            classify(429, None, spend),
            ProviderError::QuotaExhausted { .. }
        ));
        assert!(matches!(
            classify(402, None, body("billing_error", "no credit").as_bytes()),
            ProviderError::QuotaExhausted { .. }
        ));
        match classify(
            529,
            Some(Duration::from_secs(3)),
            body("overloaded_error", "Overloaded").as_bytes(),
        ) {
            ProviderError::Overloaded { retry_after, message } => {
                assert_eq!(retry_after, Some(Duration::from_secs(3)));
                assert_eq!(message, "Overloaded");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify(503, None, b""), ProviderError::Overloaded { .. }));
        assert!(matches!(
            classify(401, None, body("authentication_error", "invalid x-api-key").as_bytes()),
            ProviderError::Authentication { status: 401, .. }
        ));
        assert!(matches!(
            classify(403, None, body("authentication_error", "key disabled").as_bytes()),
            ProviderError::Authentication { status: 403, .. }
        ));
        // A permission error is about the request: the client gets the vendor's 403 and message.
        let denied = body(
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        );
        match classify(403, None, denied.as_bytes()) {
            ProviderError::Rejected { status: 403, error } => {
                assert_eq!(
                    error.error.message,
                    "Your API key does not have permission to use the specified resource."
                );
                assert_eq!(error.error.code.as_deref(), Some("permission_error"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(403, None, b"<html>Forbidden</html>"),
            ProviderError::Rejected { status: 403, .. }
        ));
        match classify(500, None, body("api_error", "Internal server error").as_bytes()) {
            ProviderError::Server { status: 500, message } => assert_eq!(message, "Internal server error"),
            other => panic!("{other:?}"),
        }
        match classify(502, None, b"<html>Bad Gateway</html>") {
            ProviderError::Server { status: 502, message } => assert_eq!(message, "<html>Bad Gateway</html>"),
            other => panic!("{other:?}"),
        }
        assert!(classify(504, None, b"").is_retryable());
        assert!(!classify(400, None, b"").is_retryable());
    }

    #[test]
    fn stream_error_events_are_classified() {
        let error = |kind: &str| AnthropicError {
            kind: kind.to_owned(),
            message: "m".to_owned(),
            details: None,
        };
        assert!(matches!(
            classify_stream_error(error("overloaded_error")),
            ProviderError::Overloaded { retry_after: None, .. }
        ));
        assert!(matches!(
            classify_stream_error(error("rate_limit_error")),
            ProviderError::RateLimited { retry_after: None, .. }
        ));
        assert!(matches!(
            classify_stream_error(error("api_error")),
            ProviderError::Server { status: 500, .. }
        ));
    }

    #[test]
    fn retry_after_prefers_the_header_then_exhausted_resets() {
        let now = at("2025-08-21T12:40:00Z");
        assert_eq!(
            retry_after(&headers(&[("retry-after", "12")]), now),
            Some(Duration::from_secs(12))
        );
        // No retry-after: the reset of the limit that ran out, not of the one with room left.
        let map = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:05Z"),
            ("anthropic-ratelimit-tokens-remaining", "4000"),
            ("anthropic-ratelimit-tokens-reset", "2025-08-21T12:40:50Z"),
        ]);
        assert_eq!(retry_after(&map, now), Some(Duration::from_secs(5)));
        // Nothing says which ran out: the latest reset.
        let map = headers(&[
            ("anthropic-ratelimit-input-tokens-reset", "2025-08-21T12:40:30Z"),
            ("anthropic-ratelimit-output-tokens-reset", "2025-08-21T12:40:20Z"),
        ]);
        assert_eq!(retry_after(&map, now), Some(Duration::from_secs(30)));
        // A reset in the past means now.
        let map = headers(&[("anthropic-ratelimit-requests-reset", "2025-08-21T12:39:00Z")]);
        assert_eq!(retry_after(&map, now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers(&[]), now), None);
        // A reset years away is an hour; so is a `retry-after` past what a deadline can hold.
        let map = headers(&[
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "9999-12-31T23:59:59Z"),
        ]);
        assert_eq!(retry_after(&map, now), Some(crate::limits::MAX_WAIT));
        assert_eq!(
            rate_limit_snapshot(&map, now).reset_tokens,
            Some(crate::limits::MAX_WAIT)
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1e19")]), now),
            Some(crate::limits::MAX_WAIT)
        );
    }

    #[test]
    fn snapshot_reads_anthropic_headers() {
        let now = at("2025-08-21T12:40:58Z");
        // Headers as recorded from a real response.
        let snap = rate_limit_snapshot(
            &headers(&[
                ("anthropic-ratelimit-input-tokens-remaining", "80000"),
                ("anthropic-ratelimit-input-tokens-reset", "2025-08-21T12:40:59Z"),
                ("anthropic-ratelimit-output-tokens-remaining", "16000"),
                ("anthropic-ratelimit-output-tokens-reset", "2025-08-21T12:41:00Z"),
                ("anthropic-ratelimit-requests-remaining", "999"),
                ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
                ("anthropic-ratelimit-tokens-remaining", "96000"),
                ("anthropic-ratelimit-tokens-reset", "2025-08-21T12:40:59Z"),
            ]),
            now,
        );
        assert_eq!(snap.remaining_requests, Some(999));
        assert_eq!(snap.remaining_tokens, Some(96_000));
        assert_eq!(snap.reset_requests, Some(Duration::from_secs(1)));
        assert_eq!(snap.reset_tokens, Some(Duration::from_secs(1)));
        let partial = rate_limit_snapshot(
            &headers(&[
                ("anthropic-ratelimit-input-tokens-remaining", "800"),
                ("anthropic-ratelimit-output-tokens-remaining", "160"),
                ("anthropic-ratelimit-output-tokens-reset", "2025-08-21T12:41:00Z"),
            ]),
            now,
        );
        assert_eq!(partial.remaining_tokens, Some(160));
        assert_eq!(partial.reset_tokens, Some(Duration::from_secs(2)));
        assert_eq!(partial.remaining_requests, None);
    }
}
