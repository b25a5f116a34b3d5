//! `POST /v1/responses` bodies into chat completions requests: OpenAI's documented examples
//! (`tests/fixtures/openai-responses/`), what Codex sends, and every refusal naming its field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod support;

use serde_json::{Value, json};
use sluice_protocols::ProtocolError;
use sluice_protocols::responses::parse_request;
use support::fixture;

/// The chat request of a Responses body, as JSON.
fn chat(body: &[u8]) -> Value {
    serde_json::to_value(parse_request(body).unwrap().chat).unwrap()
}

fn refused(body: Value) -> ProtocolError {
    parse_request(body.to_string().as_bytes()).unwrap_err()
}

#[test]
fn documented_text_image_and_streaming_examples_translate() {
    assert_eq!(
        chat(&fixture("openai-responses/text_request.json")),
        json!({
            "model": "gpt-4.1",
            "messages": [{"role": "user", "content": "Tell me a three sentence bedtime story about a unicorn."}]
        })
    );
    assert_eq!(
        chat(&fixture("openai-responses/image_request.json"))["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "what is in this image?"},
            {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"}}
        ]}])
    );
    // A stream asks for the usage chunk, which `response.completed` reports; `instructions` is the system
    // message.
    assert_eq!(
        chat(&fixture("openai-responses/stream_request.json")),
        json!({
            "model": "gpt-4.1",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
    assert_eq!(
        chat(&fixture("openai-responses/reasoning_request.json"))["reasoning_effort"],
        "high"
    );
}

#[test]
fn function_tools_and_a_round_trip_translate() {
    let request = chat(&fixture("openai-responses/function_request.json"));
    assert_eq!(request["tool_choice"], "auto");
    assert_eq!(
        request["tools"],
        json!([{"type": "function", "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["location", "unit"]
            }
        }}])
    );
    // The function calling guide's second request: the call and its output, with `store: false`.
    let request = chat(&fixture("openai-responses/function_round_trip_request.json"));
    assert_eq!(
        request["messages"],
        json!([
            {"role": "user", "content": "What's the weather like in Paris today?"},
            {"role": "assistant", "tool_calls": [{"id": "call_12345xyz", "type": "function", "function": {
                "name": "get_weather", "arguments": "{\"latitude\":48.8566,\"longitude\":2.3522}"}}]},
            {"role": "tool", "content": "14.8", "tool_call_id": "call_12345xyz"}
        ])
    );
    assert_eq!(request["tools"][0]["function"]["strict"], true);
    assert!(
        request.get("store").is_none(),
        "nothing about storage reaches the upstream"
    );
}

#[test]
fn json_schema_output_becomes_response_format() {
    let request = chat(&fixture("openai-responses/json_schema_request.json"));
    assert_eq!(
        request["response_format"],
        json!({"type": "json_schema", "json_schema": {
            "name": "calendar_event",
            "strict": true,
            "schema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "date": {"type": "string"},
                    "participants": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["name", "date", "participants"],
                "additionalProperties": false
            }
        }})
    );
    assert_eq!(
        request["messages"][0],
        json!({"role": "system", "content": "Extract the event information."})
    );
    let json_object = chat(br#"{"model": "m", "input": "hi", "text": {"format": {"type": "json_object"}}}"#);
    assert_eq!(json_object["response_format"], json!({"type": "json_object"}));
    let text = chat(br#"{"model": "m", "input": "hi", "text": {"format": {"type": "text"}}}"#);
    assert!(text.get("response_format").is_none());
}

#[test]
fn what_codex_sends_is_accepted() {
    let translated = parse_request(&fixture("openai-responses/codex_request.json")).unwrap();
    let request = serde_json::to_value(&translated.chat).unwrap();
    let messages = request["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    // The reasoning item is left out; the call and its output are a tool call and its result.
    assert_eq!(
        roles,
        ["system", "user", "user", "assistant", "tool", "assistant", "user"]
    );
    assert_eq!(messages[3]["tool_calls"][0]["id"], "call_ls_1");
    assert_eq!(messages[3]["tool_calls"][0]["function"]["name"], "shell");
    assert_eq!(messages[4]["tool_call_id"], "call_ls_1");
    assert_eq!(messages[5]["content"], "There are two entries: Cargo.toml and src.");
    assert_eq!(messages[1]["content"][0]["type"], "text");
    assert_eq!(request["reasoning_effort"], "medium");
    assert_eq!(request["parallel_tool_calls"], false);
    assert_eq!(request["prompt_cache_key"], "0199a3c2-6f1e-7c2b-9a51-1d2e3f4a5b6c");
    assert_eq!(request["verbosity"], "medium");
    assert_eq!(request["stream_options"], json!({"include_usage": true}));
    assert!(request.get("include").is_none() && request.get("store").is_none());
    assert_eq!(translated.echo.model(), "gpt-5-codex");
}

#[test]
fn text_and_calls_of_one_turn_are_one_assistant_message() {
    let request = chat(
        json!({"model": "m", "input": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "Checking both.", "annotations": []}]},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "18C"}]},
            {"type": "function_call_output", "call_id": "c2", "output": "21C"}
        ]})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(
        request["messages"],
        json!([
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "content": [{"type": "text", "text": "18C"}], "tool_call_id": "c1"},
            {"role": "tool", "content": "21C", "tool_call_id": "c2"}
        ])
    );
}

#[test]
fn settings_map_to_their_chat_names() {
    let request = chat(
        json!({
            "model": "m", "input": "hi", "max_output_tokens": 300, "temperature": 0.2, "top_p": 0.9,
            "metadata": {"team": "search"}, "parallel_tool_calls": true, "user": "u-1", "store": false,
            "safety_identifier": "h-1", "service_tier": "flex", "prompt_cache_retention": "24h",
            "truncation": "disabled", "include": ["message.output_text.logprobs"], "max_tool_calls": 3,
            "reasoning": {"effort": "low", "summary": "detailed"}, "previous_response_id": null,
            "tool_choice": {"type": "function", "name": "f"},
            "tools": [{"type": "function", "name": "f", "parameters": null, "strict": null}]
        })
        .to_string()
        .as_bytes(),
    );
    assert_eq!(
        request,
        json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 300, "temperature": 0.2, "top_p": 0.9,
            "metadata": {"team": "search"}, "parallel_tool_calls": true, "user": "u-1",
            "safety_identifier": "h-1", "service_tier": "flex", "prompt_cache_retention": "24h",
            "reasoning_effort": "low",
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "tools": [{"type": "function", "function": {"name": "f"}}]
        })
    );
}

#[test]
fn conversation_state_is_refused_with_a_clear_400() {
    for (field, value) in [
        ("previous_response_id", json!("resp_abc123")),
        ("store", json!(true)),
        ("conversation", json!("conv_1")),
    ] {
        let mut body = json!({"model": "m", "input": "Tell me more about that."});
        body[field] = value;
        let err = refused(body);
        assert_eq!(err.status(), 400);
        assert_eq!(err.param(), Some(field));
        assert!(err.to_string().contains("Sluice keeps no conversation state"), "{err}");
        assert_eq!(err.to_openai().error.code.as_deref(), Some("unsupported_parameter"));
    }
    // What the official SDK sends when `store` is not given: nothing, and that is accepted.
    assert!(parse_request(br#"{"model": "m", "input": "hi"}"#).is_ok());
    assert!(parse_request(br#"{"model": "m", "input": "hi", "store": null}"#).is_ok());
    let err = refused(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}));
    assert_eq!(err.param(), Some("input[0].type"));
    assert!(err.to_string().contains("no conversation state"), "{err}");
    assert_eq!(
        refused(json!({"model": "m", "input": "x", "background": true})).param(),
        Some("background")
    );
}

#[test]
fn what_chat_cannot_express_is_refused_naming_the_field() {
    let cases = [
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]}),
            "tools[1].type",
            "web_search",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}}]}),
            "tools[0].type",
            "free-form",
        ),
        (
            json!({"model": "m", "input": "x", "tool_choice": {"type": "file_search"}}),
            "tool_choice.type",
            "file_search",
        ),
        (
            json!({"model": "m", "input": "x", "tool_choice": "sometimes"}),
            "tool_choice",
            "sometimes",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
            "input[0].content[0].type",
            "input_file",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1", "detail": "auto"}]}]}),
            "input[0].content[0].file_id",
            "file",
        ),
        (
            json!({"model": "m", "input": [{"type": "web_search_call", "id": "ws_1"}]}),
            "input[0].type",
            "web_search_call",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": "data:,"}]}]}),
            "input[0].output[0].type",
            "input_image",
        ),
        (
            json!({"model": "m", "input": "x", "truncation": "auto"}),
            "truncation",
            "truncation",
        ),
        (
            json!({"model": "m", "input": "x", "top_logprobs": 3}),
            "top_logprobs",
            "Log probabilities",
        ),
        (
            json!({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}}),
            "prompt",
            "prompt",
        ),
        (
            json!({"model": "m", "input": "x", "context_management": [{"type": "compaction"}]}),
            "context_management",
            "context_management",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
            "input[0].call_id",
            "call_id",
        ),
        (
            json!({"model": "m", "input": [{"role": "wizard", "content": "x"}]}),
            "input[0].role",
            "wizard",
        ),
        (
            json!({"model": "m", "input": [{"role": "user"}]}),
            "input[0].content",
            "content",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}),
            "text.format.name",
            "name",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "grammar"}}}),
            "text.format.type",
            "grammar",
        ),
        (json!({"model": "m"}), "input", "input"),
        (json!({"model": "m", "input": []}), "input", "input"),
    ];
    for (body, param, mention) in cases {
        let err = refused(body.clone());
        assert_eq!(err.status(), 400, "{body}");
        assert_eq!(err.param(), Some(param), "{body}: {err}");
        assert!(err.to_string().contains(mention), "{body}: {err}");
        let openai = err.to_openai();
        assert_eq!(openai.error.kind, "invalid_request_error");
        assert_eq!(openai.error.param.as_deref(), Some(param));
    }
}

#[test]
fn malformed_bodies_name_the_path() {
    let cases: [(&[u8], &str); 5] = [
        (br#"{"input": "x"}"#, "body"),
        (br#"{"model": "m", "input": 7}"#, "input"),
        (
            br#"{"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": 3}]}]}"#,
            "input[0].content[0].text",
        ),
        (br#"{"model": "m", "input": "x", "tools": [{"name": "f"}]}"#, "tools[0]"),
        (
            br#"{"model": "m", "input": "x", "text": {"format": {"type": "text"}, "colour": 1}}"#,
            "text.colour",
        ),
    ];
    for (body, param) in cases {
        let err = parse_request(body).unwrap_err();
        assert!(matches!(err, ProtocolError::Parse(_)), "{err:?}");
        assert_eq!(err.param(), Some(param), "{}: {err}", String::from_utf8_lossy(body));
    }
    let err = parse_request(b"{\"model\": \"m\",\n oops}").unwrap_err();
    assert_eq!(err.param(), None);
    assert!(err.to_string().contains("line 2"), "{err}");
}
