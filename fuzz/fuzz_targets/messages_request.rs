//! The Anthropic Messages request as the gateway reads it for non-Anthropic upstreams: any bytes through
//! `messages::parse_request` and `parse_count_tokens`. A refusal names its field and renders in
//! Anthropic's error shape; an accepted request is a chat request the gateway reads back to the same one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice_api::{ChatCompletionRequest, parse_json};
use sluice_fuzz::json_eq;
use sluice_protocols::messages::{parse_count_tokens, parse_request};

fuzz_target!(|data: &[u8]| {
    type Parse = fn(&[u8]) -> Result<ChatCompletionRequest, sluice_protocols::ProtocolError>;
    for (parse, endpoint) in [
        (parse_request as Parse, "messages"),
        (parse_count_tokens as Parse, "count_tokens"),
    ] {
        match parse(data) {
            Ok(request) => {
                let body = serde_json::to_vec(&request).expect("serialisable");
                let back: ChatCompletionRequest = parse_json(&body).expect("the chat request reads back");
                let a = serde_json::to_value(&back).expect("serialisable");
                let b = serde_json::to_value(&request).expect("serialisable");
                assert!(json_eq(&a, &b), "{endpoint}: {}", String::from_utf8_lossy(&body));
                if endpoint == "count_tokens" {
                    assert!(!request.is_stream());
                }
            }
            Err(err) => {
                assert_eq!(err.status(), 400, "{endpoint}: {err:?}");
                let body: Value = serde_json::from_slice(&err.to_anthropic()).expect("JSON");
                assert_eq!(body["type"], "error");
                assert_eq!(body["error"]["type"], "invalid_request_error");
            }
        }
    }
});
