//! What vendors say about a key's limits in their response headers.
//!
//! Every wait read from a vendor is clamped to [`MAX_WAIT`]: a vendor (or whatever answers in its place)
//! can send any number, and a key cooling down for `1e19` seconds would overflow the router's deadline
//! arithmetic, and in any case never come back.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::AsHeaderName;

/// The longest wait the gateway takes from a vendor: `retry-after`, reset headers and retry delays beyond it
/// are read as this. A daily quota then shows as a key retried every hour, which costs one refused call.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// A wait of `secs` seconds as a vendor gave it, at most [`MAX_WAIT`]; none for a negative or NaN count.
pub(crate) fn wait_from_secs(secs: f64) -> Option<Duration> {
    if secs.is_nan() {
        return None;
    }
    Duration::try_from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())).ok()
}

/// A key's remaining budget and reset times as the vendor reported them on one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitSnapshot {
    /// Requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// Tokens left in the current window.
    pub remaining_tokens: Option<u64>,
    /// Time until the request window resets.
    pub reset_requests: Option<Duration>,
    /// Time until the token window resets.
    pub reset_tokens: Option<Duration>,
}

impl RateLimitSnapshot {
    /// Reads OpenAI's `x-ratelimit-*` headers (also sent by Azure, Groq and most compatible servers).
    ///
    /// One pass over the header names, comparing them as bytes: looking each of the four up by its `&str`
    /// name checked and hashed that name first, about 450 instructions a lookup on every answer
    /// (callgrind). Only the names found are looked up, by the name in hand.
    pub fn from_openai_headers(headers: &HeaderMap) -> Self {
        let mut snapshot = Self::default();
        for name in headers.keys() {
            let Some(which) = name.as_str().strip_prefix("x-ratelimit-") else {
                continue;
            };
            let value = || header_str(headers, name);
            match which {
                "remaining-requests" => snapshot.remaining_requests = value().and_then(|v| v.parse().ok()),
                "remaining-tokens" => snapshot.remaining_tokens = value().and_then(|v| v.parse().ok()),
                "reset-requests" => snapshot.reset_requests = value().and_then(parse_go_duration),
                "reset-tokens" => snapshot.reset_tokens = value().and_then(parse_go_duration),
                _ => {}
            }
        }
        snapshot
    }
}

fn header_str(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The retry time a vendor gave on a 429 or 503: `retry-after-ms`, then `retry-after` (seconds or an HTTP
/// date), then the later of OpenAI's reset headers; at most [`MAX_WAIT`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = header_str(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && let Some(retry) = wait_from_secs(ms / 1000.0)
    {
        return Some(retry);
    }
    if let Some(value) = header_str(headers, "retry-after") {
        if let Ok(secs) = value.parse::<f64>() {
            if let Some(retry) = wait_from_secs(secs) {
                return Some(retry);
            }
        } else if let Ok(when) = httpdate::parse_http_date(value) {
            return Some(until(when, SystemTime::now()));
        }
    }
    let snapshot = RateLimitSnapshot::from_openai_headers(headers);
    match (snapshot.reset_requests, snapshot.reset_tokens) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The wait from `now` until `when`: zero when it has passed, at most [`MAX_WAIT`].
pub(crate) fn until(when: SystemTime, now: SystemTime) -> Duration {
    when.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_WAIT)
}

/// Parses OpenAI's reset durations, which use Go's format: `1s`, `6m0s`, `20ms`, `1h2m3.5s`; at most
/// [`MAX_WAIT`].
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" | "" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    wait_from_secs(total)
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

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_go_duration("2m3.5s"), Some(Duration::from_secs_f64(123.5)));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(MAX_WAIT));
        assert_eq!(parse_go_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("3parsecs"), None);
        assert_eq!(parse_go_duration("99999999h"), Some(MAX_WAIT));
    }

    #[test]
    fn vendor_waits_are_at_most_an_hour() {
        // Far past what a `Duration` holds, or what `Instant + Duration` can add without overflowing.
        for (name, value) in [
            ("retry-after", "1e19"),
            ("retry-after", "1e300"),
            ("retry-after", "inf"),
            ("retry-after-ms", "1e19"),
            ("x-ratelimit-reset-requests", "99999999999999999999s"),
            ("x-ratelimit-reset-tokens", "876000h"),
        ] {
            assert_eq!(
                retry_after(&headers(&[(name, value)])),
                Some(MAX_WAIT),
                "{name}: {value}"
            );
        }
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3599")])),
            Some(Duration::from_secs(3599))
        );
        let far = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(86_400 * 365));
        assert_eq!(retry_after(&headers(&[("retry-after", &far)])), Some(MAX_WAIT));
        // Nonsense is no wait at all, not a panic.
        for value in ["-5", "NaN", "-1e19"] {
            assert_eq!(retry_after(&headers(&[("retry-after", value)])), None, "{value}");
        }
        let snapshot =
            RateLimitSnapshot::from_openai_headers(&headers(&[("x-ratelimit-reset-tokens", "10000000000000000000s")]));
        assert_eq!(snapshot.reset_tokens, Some(MAX_WAIT));
    }

    #[test]
    fn retry_after_prefers_milliseconds_then_seconds_then_resets() {
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1500"), ("retry-after", "9")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "9")])),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            retry_after(&headers(&[
                ("x-ratelimit-reset-requests", "2s"),
                ("x-ratelimit-reset-tokens", "7s")
            ])),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(&headers(&[])), None);
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let got = retry_after(&headers(&[("retry-after", &date)])).unwrap();
        assert!(
            got <= Duration::from_secs(30) && got >= Duration::from_secs(28),
            "{got:?}"
        );
    }

    #[test]
    fn snapshot_reads_remaining_and_resets() {
        let snap = RateLimitSnapshot::from_openai_headers(&headers(&[
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6ms"),
        ]));
        assert_eq!(snap.remaining_requests, Some(59));
        assert_eq!(snap.remaining_tokens, Some(149_984));
        assert_eq!(snap.reset_requests, Some(Duration::from_secs(1)));
        assert_eq!(snap.reset_tokens, Some(Duration::from_millis(6)));
    }

    #[test]
    fn snapshot_reads_each_names_first_value_and_nothing_else() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", " 7 "),
            ("x-ratelimit-remaining-requests", "8"),
            ("x-ratelimit-remaining-tokens", "many"),
            ("x-ratelimit-remaining-tokens", "9"),
            ("x-ratelimit-reset-requests-extra", "5s"),
            ("x-ratelimit-reset-tokens", "2m0s"),
            ("retry-after", "3"),
        ] {
            headers.append(name, value.parse().unwrap());
        }
        let snap = RateLimitSnapshot::from_openai_headers(&headers);
        assert_eq!(
            snap,
            RateLimitSnapshot {
                remaining_requests: Some(7),
                // The first value is not a number: none, as `HeaderMap::get` would have read it.
                remaining_tokens: None,
                reset_requests: None,
                reset_tokens: Some(Duration::from_secs(120)),
            }
        );
        assert_eq!(
            RateLimitSnapshot::from_openai_headers(&HeaderMap::new()),
            RateLimitSnapshot::default()
        );
    }
}
