//! The chat request as the gateway reads it and sends it on: any bytes through the strict parser; a
//! request it accepts must serialise (as itself and as the OpenAI-format upstream view) to JSON that the
//! parser reads back to the same request, and the Anthropic and Gemini translations must either give a
//! JSON body or refuse the request as the client's error (a 400), never fail otherwise or panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice_api::{ChatCompletionRequest, StreamOptions, UpstreamChatRequest, parse_json};
use sluice_fuzz::json_eq;
use sluice_providers::ProviderError;
use sluice_providers::internals;

fn same(a: &ChatCompletionRequest, b: &ChatCompletionRequest) -> bool {
    let a = serde_json::to_value(a).expect("serialisable");
    let b = serde_json::to_value(b).expect("serialisable");
    json_eq(&a, &b)
}

fn check_translation(vendor: &str, result: Result<Vec<u8>, ProviderError>) {
    match result {
        Ok(body) => {
            let value: Value = serde_json::from_slice(&body).expect("a JSON body");
            assert!(value.is_object(), "{vendor}: {value}");
        }
        Err(ProviderError::Rejected { status: 400, .. }) => {}
        Err(other) => panic!("{vendor}: a request refused as anything but the client's error: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let request = match parse_json::<ChatCompletionRequest>(data) {
        Ok(request) => request,
        Err(err) => {
            let _ = (err.to_string(), err.param());
            return;
        }
    };
    let _ = (
        request.is_stream(),
        request.wants_stream_usage(),
        request.completion_cap(),
    );
    for message in &request.messages {
        let _ = message.content.as_ref().map(|c| c.text());
    }

    let body = serde_json::to_vec(&request).expect("serialisable");
    let back: ChatCompletionRequest = parse_json(&body).expect("the gateway reads what it writes");
    assert!(
        same(&back, &request),
        "round trip changed the request: {}",
        String::from_utf8_lossy(&body)
    );

    for stream_usage in [false, true] {
        let upstream = UpstreamChatRequest::new(&request, "vendor-model", stream_usage);
        let body = serde_json::to_vec(&upstream).expect("serialisable");
        let back: ChatCompletionRequest = parse_json(&body).expect("the upstream body is a chat request");
        let mut expected = request.clone();
        expected.model = "vendor-model".to_owned();
        expected.stream_options = match (&request.stream_options, request.is_stream() && stream_usage) {
            (options, true) => Some(StreamOptions {
                include_usage: Some(true),
                extra: options.as_ref().map(|o| o.extra.clone()).unwrap_or_default(),
            }),
            (Some(options), false) => Some(StreamOptions {
                include_usage: Some(options.include_usage.unwrap_or(false)),
                extra: options.extra.clone(),
            }),
            (None, false) => None,
        };
        assert!(
            same(&back, &expected),
            "upstream view: {}",
            String::from_utf8_lossy(&body)
        );
    }

    for drop_unsupported in [false, true] {
        check_translation(
            "anthropic",
            internals::anthropic_request(&request, "claude-model", Some(1024), drop_unsupported),
        );
        check_translation(
            "gemini",
            internals::gemini_request(&request, Some(1024), drop_unsupported),
        );
    }
});
