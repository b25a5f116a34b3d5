//! A failed upstream response (status, headers, body) as each vendor of the registry reads it: the error
//! classification and the rate-limit headers. Input: two bytes of status (300 to 599), then header lines
//! `name: value` up to a blank line, then the body. No panic, and the kind follows the status.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluice_providers::{ProviderError, VENDORS};

fuzz_target!(|data: &[u8]| {
    let Some((status, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let status = 300 + u16::from_be_bytes(*status) % 300;
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => (&[][..], rest),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    for vendor in VENDORS {
        let (error, limits) = vendor.upstream_error(status, &headers, body);
        if let ProviderError::Rejected { status: rejected, .. } = &error {
            assert!((400..500).contains(rejected), "{vendor:?} {status}: {error:?}");
        }
        // Every wait a vendor gives is at most an hour.
        let waits = [error.retry_after(), limits.reset_requests, limits.reset_tokens];
        assert!(
            waits.into_iter().flatten().all(|wait| wait <= sluice_providers::limits::MAX_WAIT),
            "{vendor:?} {status}: {error:?} {limits:?}"
        );
        let _ = error.to_string();
    }
});
