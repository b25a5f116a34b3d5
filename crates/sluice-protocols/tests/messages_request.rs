//! Anthropic `POST /v1/messages` bodies into chat completions requests for non-Anthropic upstreams:
//! Anthropic's documented examples (`tests/fixtures/anthropic/`, `tests/fixtures/anthropic-messages/`),
//! and every refusal in Anthropic's error shape naming its field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod support;

use serde_json::{Value, json};
use sluice_protocols::ProtocolError;
use sluice_protocols::messages::{parse_count_tokens, parse_request};
use support::fixture;

fn chat(body: &[u8]) -> Value {
    serde_json::to_value(parse_request(body).unwrap()).unwrap()
}

fn refused(body: Value) -> ProtocolError {
    parse_request(body.to_string().as_bytes()).unwrap_err()
}

#[test]
fn documented_basic_system_and_vision_requests_translate() {
    assert_eq!(
        chat(&fixture("anthropic/messages_request.json")),
        json!({
            "model": "claude-sonnet-4-5-20250929",
            "messages": [{"role": "user", "content": "Hello, world"}],
            "max_completion_tokens": 1024
        })
    );
    let request = chat(&fixture("anthropic-messages/system_blocks_request.json"));
    assert_eq!(
        request["messages"][0],
        json!({"role": "system", "content": [
            {"type": "text", "text": "You are an AI assistant tasked with analyzing literary works. Your goal is to provide insightful commentary on themes, characters, and writing style.\n"},
            {"type": "text", "text": "<the entire contents of Pride and Prejudice>"}
        ]}),
        "cache_control is a hint for Anthropic and is left out"
    );
    assert_eq!(
        chat(&fixture("anthropic/vision_request.json"))["messages"],
        json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}},
            {"type": "text", "text": "Describe this image."}
        ]}])
    );
}

#[test]
fn documented_tool_use_and_tool_result_translate() {
    let request = chat(&fixture("anthropic/tool_use_request.json"));
    assert_eq!(
        request["tools"],
        json!([{"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
                "required": ["location"]
            }
        }}])
    );
    let request = chat(&fixture("anthropic/tool_result_request.json"));
    assert_eq!(
        request["messages"],
        json!([
            {"role": "user", "content": "What's the weather like in San Francisco?"},
            {"role": "assistant", "content": "I'll check the current weather in San Francisco for you.",
             "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function", "function": {
                "name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"}}]},
            {"role": "tool", "content": "15 degrees", "tool_call_id": "toolu_01A09q90qw90lq917835lq9"}
        ])
    );
}

#[test]
fn thinking_becomes_a_reasoning_effort_and_signed_blocks_are_left_out() {
    let request = chat(&fixture("anthropic-messages/thinking_request.json"));
    assert_eq!(request["reasoning_effort"], "medium");
    assert_eq!(request["max_completion_tokens"], 16000);
    let request = chat(&fixture("anthropic-messages/thinking_tool_result_request.json"));
    let assistant = &request["messages"][1];
    assert_eq!(
        assistant["content"],
        "I can help you get the current weather information for Paris. Let me check that for you"
    );
    assert_eq!(
        assistant["tool_calls"][0]["function"]["arguments"],
        "{\"location\":\"Paris\"}"
    );
    assert!(!request.to_string().contains("signature"), "{request}");
    assert_eq!(request["messages"][2]["content"], "Current temperature: 88°F");
    for (budget, effort) in [
        (1024, "low"),
        (4095, "low"),
        (4096, "medium"),
        (16383, "medium"),
        (31999, "high"),
    ] {
        let body = json!({"model": "m", "max_tokens": 40000, "messages": [{"role": "user", "content": "x"}],
                          "thinking": {"type": "enabled", "budget_tokens": budget}});
        assert_eq!(
            chat(body.to_string().as_bytes())["reasoning_effort"],
            effort,
            "{budget}"
        );
    }
    for kind in ["disabled", "adaptive"] {
        let body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
                          "thinking": {"type": kind}});
        assert!(chat(body.to_string().as_bytes()).get("reasoning_effort").is_none());
    }
    // `output_config.effort` says it directly, and wins.
    let body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
                      "thinking": {"type": "enabled", "budget_tokens": 2000},
                      "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}}});
    let request = chat(body.to_string().as_bytes());
    assert_eq!(request["reasoning_effort"], "high");
    assert_eq!(
        request["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": true}})
    );
}

#[test]
fn every_setting_maps_to_its_chat_name() {
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 512, "stream": true,
        "system": "Be brief.", "stop_sequences": ["\n\nHuman:"], "temperature": 0.3, "top_p": 0.8, "top_k": 40,
        "metadata": {"user_id": "user-7"}, "service_tier": "auto", "cache_control": {"type": "ephemeral"},
        "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": true},
        "tools": [{"type": "custom", "name": "lookup", "input_schema": {"type": "object"}, "strict": true,
                   "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                                         {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": "Looking."},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "is_error": true, "content": [{"type": "text", "text": "timed out"}]},
                {"type": "text", "text": "try again"}
            ]}
        ]
    });
    assert_eq!(
        chat(body.to_string().as_bytes()),
        json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "text", "text": "look"}
                ]},
                {"role": "assistant", "content": "Looking."},
                {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
                {"role": "tool", "content": "Error: timed out", "tool_call_id": "t1"},
                {"role": "user", "content": [{"type": "text", "text": "try again"}]}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_completion_tokens": 512,
            "temperature": 0.3, "top_p": 0.8, "top_k": 40,
            "stop": ["\n\nHuman:"],
            "user": "user-7",
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "parallel_tool_calls": false
        })
    );
    for (kind, mode) in [("auto", "auto"), ("any", "required"), ("none", "none")] {
        let body = json!({"model": "m", "max_tokens": 1, "messages": [], "tool_choice": {"type": kind}});
        assert_eq!(chat(body.to_string().as_bytes())["tool_choice"], mode);
    }
}

#[test]
fn count_tokens_needs_no_max_tokens_and_never_streams() {
    let request = parse_count_tokens(&fixture("anthropic-messages/count_tokens_request.json")).unwrap();
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"model": "claude-sonnet-4-5", "messages": [
            {"role": "system", "content": "You are a scientist"},
            {"role": "user", "content": "Hello, Claude"}
        ]})
    );
    let err = parse_request(&fixture("anthropic-messages/count_tokens_request.json")).unwrap_err();
    assert_eq!(err.param(), Some("max_tokens"));
    assert_eq!(err.to_string(), "max_tokens: Field required");
}

#[test]
fn what_chat_cannot_express_is_refused_in_anthropics_shape() {
    let err = parse_request(&fixture("anthropic-messages/web_search_request.json")).unwrap_err();
    assert_eq!(err.param(), Some("tools[0].type"));
    assert!(err.to_string().contains("web_search_20250305"), "{err}");
    let user =
        |content: Value| json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": content}]});
    let cases = [
        (
            user(json!([{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}])),
            "messages[0].content[0].type",
            "document",
        ),
        (
            user(json!([{"type": "image", "source": {"type": "file", "file_id": "file_1"}}])),
            "messages[0].content[0].source.type",
            "file",
        ),
        (
            user(json!([{"type": "image", "source": {"type": "base64", "data": "AAA"}}])),
            "messages[0].content[0].source.media_type",
            "Field required",
        ),
        (
            user(
                json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]}]),
            ),
            "messages[0].content[0].content[0].type",
            "tool result",
        ),
        (
            user(json!([{"type": "tool_result", "content": "x"}])),
            "messages[0].content[0].tool_use_id",
            "messages.0.content.0.tool_use_id: Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]}),
            "messages[0].content[0].type",
            "server_tool_use",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}),
            "messages[0].role",
            "system",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "messages": [], "system": [{"type": "image", "source": {"type": "url", "url": "u"}}]}),
            "system[0].type",
            "image",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "messages": [], "container": "c_1"}),
            "container",
            "non-Anthropic",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "messages": [], "mcp_servers": [{"type": "url"}]}),
            "mcp_servers",
            "mcp_servers",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "messages": [], "tools": [{"name": "f"}]}),
            "tools[0].input_schema",
            "Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "messages": [], "tool_choice": {"type": "tool"}}),
            "tool_choice.name",
            "Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 10, "messages": [], "thinking": {"type": "enabled"}}),
            "thinking.budget_tokens",
            "Field required",
        ),
        (
            json!({"model": "m", "max_tokens": 0, "messages": []}),
            "max_tokens",
            "at least 1",
        ),
    ];
    for (body, param, mention) in cases {
        let err = refused(body.clone());
        assert_eq!(err.status(), 400, "{body}");
        assert_eq!(err.param(), Some(param), "{body}: {err}");
        assert!(err.to_string().contains(mention), "{body}: {err}");
        let anthropic: Value = serde_json::from_slice(&err.to_anthropic()).unwrap();
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "invalid_request_error");
        assert_eq!(anthropic["error"]["message"], err.to_string());
    }
}

#[test]
fn malformed_bodies_name_the_path() {
    let cases: [(&[u8], &str); 4] = [
        (br#"{"model": "m", "max_tokens": 1}"#, "body"),
        (br#"{"model": "m", "max_tokens": "ten", "messages": []}"#, "max_tokens"),
        (br#"{"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}"#, "messages[0].content[0].text"),
        (br#"{"model": "m", "max_tokens": 1, "messages": [], "metadata": {"user_id": "u", "team": "x"}}"#, "metadata.team"),
    ];
    for (body, param) in cases {
        let err = parse_request(body).unwrap_err();
        assert!(matches!(err, ProtocolError::Parse(_)), "{err:?}");
        assert_eq!(err.param(), Some(param), "{}: {err}", String::from_utf8_lossy(body));
        let anthropic: Value = serde_json::from_slice(&err.to_anthropic()).unwrap();
        assert_eq!(anthropic["error"]["type"], "invalid_request_error");
    }
}
