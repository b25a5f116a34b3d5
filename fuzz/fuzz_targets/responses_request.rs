//! The Responses API request as the gateway reads it: any bytes through `responses::parse_request`. A
//! refusal names its field and renders as an OpenAI error; an accepted request is a chat request the
//! gateway reads back to the same request, and its echo makes a response object out of a completion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice_api::{ChatCompletionRequest, parse_json};
use sluice_fuzz::json_eq;
use sluice_protocols::responses::{complete, parse_request};

const COMPLETION: &[u8] = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

fuzz_target!(|data: &[u8]| {
    let request = match parse_request(data) {
        Ok(request) => request,
        Err(err) => {
            assert_eq!(err.status(), 400, "{err:?}");
            let body = err.to_openai();
            assert_eq!(body.error.param.as_deref(), err.param());
            let _ = serde_json::to_vec(&body).expect("serialisable");
            return;
        }
    };
    let body = serde_json::to_vec(&request.chat).expect("serialisable");
    let back: ChatCompletionRequest = parse_json(&body).expect("the chat request reads back");
    let a = serde_json::to_value(&back).expect("serialisable");
    let b = serde_json::to_value(&request.chat).expect("serialisable");
    assert!(json_eq(&a, &b), "{}", String::from_utf8_lossy(&body));
    assert!(!request.chat.messages.is_empty());
    assert_eq!(request.echo.model(), request.chat.model);
    let response = complete(COMPLETION, &request.echo, "resp_f", 1, None).expect("a response");
    let response: Value = serde_json::from_slice(&response).expect("JSON");
    assert_eq!(response["object"], "response");
});
