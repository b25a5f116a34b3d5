//! Chat answers back into the Messages API: complete `chat.completion`s into Anthropic messages, and chat
//! streams (recorded OpenAI, Anthropic and Gemini transcripts, through the adapters' real SSE driver and
//! translators) into Anthropic stream events, the same however the upstream's bytes were cut.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod support;

use bytes::BytesMut;
use serde_json::{Value, json};
use sluice_api::TokenUsage;
use sluice_protocols::messages::{MessagesStream, complete};
use sluice_protocols::{FailureKind, ProtocolError, StreamFailure};
use support::{Event, Step, Vendor, assert_golden, cuts, events, fixture, translate, upstream_steps};

const ID: &str = "msg_0123abcd";

#[test]
fn documented_completions_become_anthropic_messages() {
    let body = complete(&fixture("openai-responses/chat_completion.json"), ID, None).unwrap();
    assert_golden("anthropic-messages/message_text.json", &body);
    let message: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        message,
        json!({
            "id": ID, "type": "message", "role": "assistant", "model": "gpt-4.1-2025-04-14",
            "content": [{"type": "text", "text": "Hello! How can I assist you today?"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 19, "output_tokens": 10, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}
        })
    );
    let body = complete(&fixture("openai-responses/chat_completion_tool_calls.json"), ID, None).unwrap();
    assert_golden("anthropic-messages/message_tool_use.json", &body);
    let message: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(
        message["content"],
        json!([{"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                "input": {"location": "Boston, MA"}}])
    );
}

#[test]
fn stop_reasons_usage_and_odd_arguments() {
    let completion = |finish: &str, message: Value| {
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
               "choices": [{"index": 0, "finish_reason": finish, "message": message}],
               "usage": {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127,
                         "prompt_tokens_details": {"cached_tokens": 100}}})
        .to_string()
    };
    for (finish, stop) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ] {
        let body = complete(
            completion(finish, json!({"role": "assistant", "content": "x"})).as_bytes(),
            ID,
            None,
        )
        .unwrap();
        let message: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(message["stop_reason"], stop, "{finish}");
        // Anthropic's `input_tokens` leaves out what was read from the cache.
        assert_eq!(
            message["usage"],
            json!({"input_tokens": 20, "output_tokens": 7, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 100})
        );
    }
    let refusal = completion("stop", json!({"role": "assistant", "content": null, "refusal": "No."}));
    let message: Value = serde_json::from_slice(&complete(refusal.as_bytes(), ID, None).unwrap()).unwrap();
    assert_eq!(message["stop_reason"], "refusal");
    assert_eq!(message["content"], json!([{"type": "text", "text": "No."}]));
    // Arguments cut short are no JSON object: the input is `{}`; a call without id gets one.
    let cut = completion(
        "length",
        json!({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]}),
    );
    let usage = TokenUsage {
        input: 5,
        cache_read: 6,
        cache_write_5m: 7,
        cache_write_1h: 8,
        output: 9,
        reasoning: 0,
    };
    let message: Value = serde_json::from_slice(&complete(cut.as_bytes(), ID, Some(&usage)).unwrap()).unwrap();
    assert_eq!(
        message["content"],
        json!([{"type": "tool_use", "id": "toolu_0123abcd_0", "name": "f", "input": {}}])
    );
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 5, "output_tokens": 9, "cache_creation_input_tokens": 15,
               "cache_read_input_tokens": 6})
    );
    let err = complete(b"[]", ID, None).unwrap_err();
    assert!(matches!(err, ProtocolError::Answer { .. }));
}

async fn messages_text(vendor: Vendor, pieces: Vec<Vec<u8>>) -> Vec<u8> {
    let steps = upstream_steps(vendor, pieces).await;
    translate(MessagesStream::new(ID, "claude-sonnet-4-5", Some(11)), &steps)
}

/// Checks what every Anthropic stream must be, and returns the message the events add up to (as the
/// Anthropic SDK accumulates it): `message_start` first; blocks numbered from 0, each started, given
/// deltas of its kind and stopped before the next starts; then `message_delta` and `message_stop` last, or
/// an `error` event last.
fn check_stream(events: &[Event]) -> Value {
    for event in events {
        assert_eq!(event.data["type"], event.name.as_str(), "{event:?}");
    }
    assert_eq!(events[0].name, "message_start", "{events:?}");
    let mut message = events[0].data["message"].clone();
    assert_eq!(message["content"], json!([]));
    let mut open: Option<usize> = None;
    let mut json_parts = String::new();
    let last = events.last().unwrap();
    for event in &events[1..] {
        let data = &event.data;
        match event.name.as_str() {
            "content_block_start" => {
                assert_eq!(open, None, "one block at a time");
                let index = message["content"].as_array().unwrap().len();
                assert_eq!(data["index"], index);
                message["content"]
                    .as_array_mut()
                    .unwrap()
                    .push(data["content_block"].clone());
                open = Some(index);
                json_parts.clear();
            }
            "content_block_delta" => {
                let index = open.expect("a delta inside a block");
                assert_eq!(data["index"], index);
                let block = &mut message["content"][index];
                match (block["type"].as_str().unwrap(), data["delta"]["type"].as_str().unwrap()) {
                    ("text", "text_delta") => {
                        let text = format!(
                            "{}{}",
                            block["text"].as_str().unwrap(),
                            data["delta"]["text"].as_str().unwrap()
                        );
                        block["text"] = Value::String(text);
                    }
                    ("tool_use", "input_json_delta") => {
                        json_parts.push_str(data["delta"]["partial_json"].as_str().unwrap())
                    }
                    other => panic!("a delta of the wrong kind: {other:?}"),
                }
            }
            "content_block_stop" => {
                let index = open.take().expect("a stop inside a block");
                assert_eq!(data["index"], index);
                if message["content"][index]["type"] == "tool_use" && !json_parts.is_empty() {
                    message["content"][index]["input"] = serde_json::from_str(&json_parts).unwrap();
                }
            }
            "message_delta" => {
                assert_eq!(open, None, "blocks are stopped before message_delta");
                message["stop_reason"] = data["delta"]["stop_reason"].clone();
                message["usage"] = data["usage"].clone();
            }
            "message_stop" => assert!(std::ptr::eq(event, last), "message_stop is last"),
            "error" => assert!(std::ptr::eq(event, last), "an error is last"),
            other => panic!("unexpected event {other}"),
        }
    }
    if last.name != "error" {
        assert_eq!(last.name, "message_stop");
        assert_eq!(events[events.len() - 2].name, "message_delta");
    }
    message
}

#[tokio::test]
async fn recorded_openai_streams_translate_the_same_however_they_are_cut() {
    for (transcript, golden) in [
        (
            "openai-responses/chat_stream_text.sse",
            "anthropic-messages/stream_text.sse",
        ),
        (
            "openai-responses/chat_stream_tool_calls.sse",
            "anthropic-messages/stream_tool_use.sse",
        ),
    ] {
        let transcript = fixture(transcript);
        let whole = messages_text(Vendor::OpenAi, vec![transcript.clone()]).await;
        assert_golden(golden, &whole);
        check_stream(&events(&whole));
        for pieces in cuts(&transcript) {
            assert_eq!(messages_text(Vendor::OpenAi, pieces).await, whole, "{golden}");
        }
    }
    let text = check_stream(&events(
        &messages_text(Vendor::OpenAi, vec![fixture("openai-responses/chat_stream_text.sse")]).await,
    ));
    assert_eq!(
        text["content"],
        json!([{"type": "text", "text": "Hello! How can I assist you today?"}])
    );
    assert_eq!(text["stop_reason"], "end_turn");
    assert_eq!(text["model"], "gpt-4o-mini");
    assert_eq!(
        text["usage"],
        json!({"input_tokens": 19, "output_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );
    let tool = check_stream(&events(
        &messages_text(
            Vendor::OpenAi,
            vec![fixture("openai-responses/chat_stream_tool_calls.sse")],
        )
        .await,
    ));
    assert_eq!(
        tool["content"],
        json!([{"type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather",
                "input": {"location": "Paris, France"}}])
    );
    assert_eq!(tool["stop_reason"], "tool_use");
    assert_eq!(tool["usage"]["input_tokens"], 32);
    assert_eq!(tool["usage"]["cache_read_input_tokens"], 32);
}

#[tokio::test]
async fn gemini_streams_reach_an_anthropic_client() {
    let transcript = fixture("gemini/stream.sse");
    let whole = messages_text(Vendor::Gemini, vec![transcript.clone()]).await;
    let message = check_stream(&events(&whole));
    assert_eq!(message["stop_reason"], "end_turn");
    assert!(message["content"][0]["text"].as_str().unwrap().len() > 10, "{message}");
    assert!(message["usage"]["output_tokens"].as_u64().unwrap() > 0, "{message}");
    for pieces in cuts(&transcript) {
        assert_eq!(messages_text(Vendor::Gemini, pieces).await, whole);
    }
}

#[tokio::test]
async fn an_anthropic_stream_round_trips_through_chat() {
    // Anthropic -> chat chunks (the Anthropic adapter) -> Anthropic again: the same message.
    let transcript = fixture("anthropic/stream_tool_use.sse");
    let whole = messages_text(Vendor::Anthropic, vec![transcript.clone()]).await;
    let message = check_stream(&events(&whole));
    assert_eq!(
        message["content"],
        json!([
            {"type": "text", "text": "Okay, let's check the weather for San Francisco, CA:"},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
             "input": {"location": "San Francisco, CA", "unit": "fahrenheit"}}
        ])
    );
    assert_eq!(message["id"], ID);
    assert_eq!(message["model"], "claude-opus-4-1-20250805");
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["usage"]["input_tokens"], 472);
    assert_eq!(message["usage"]["output_tokens"], 89);
}

#[tokio::test]
async fn a_broken_stream_ends_with_an_anthropic_error_event() {
    let transcript = String::from_utf8(fixture("openai-responses/chat_stream_text.sse")).unwrap();
    let cut: String = transcript.split_inclusive("\n\n").take(4).collect();
    let whole = messages_text(Vendor::OpenAi, vec![cut.clone().into_bytes()]).await;
    let events = events(&whole);
    let message = check_stream(&events);
    assert_eq!(message["content"][0]["text"], "Hello! How");
    let last = events.last().unwrap();
    assert_eq!(
        last.data,
        json!({"type": "error", "error": {"type": "api_error",
               "message": "the upstream connection closed before the answer was complete"}})
    );
    assert!(!events.iter().any(|e| e.name == "message_stop"));
    for pieces in cuts(cut.as_bytes()) {
        assert_eq!(messages_text(Vendor::OpenAi, pieces).await, whole);
    }
    // An overload before anything was sent: the error event alone.
    let steps = [Step::Failed(FailureKind::Overloaded, "Overloaded".to_owned())];
    let out = translate(MessagesStream::new(ID, "m", None), &steps);
    assert_eq!(
        &out[..],
        b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
    );
}

#[test]
fn message_start_uses_the_gateways_prompt_count_and_the_end_its_usage() {
    let mut stream = MessagesStream::new(ID, "claude-sonnet-4-5", Some(42));
    let mut out = BytesMut::new();
    let chunk = br#"{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}"#;
    stream.chunk(chunk, &mut out).unwrap();
    let usage = TokenUsage {
        input: 40,
        cache_write_5m: 2,
        output: 1,
        ..TokenUsage::default()
    };
    stream.finish(Some(&usage), &mut out).unwrap();
    let events = events(&out.split());
    assert_eq!(
        events[0].data["message"]["usage"],
        json!({"input_tokens": 42, "output_tokens": 0})
    );
    assert_eq!(events[0].data["message"]["model"], "claude-sonnet-4-5");
    let message = check_stream(&events);
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 40, "output_tokens": 1, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 0})
    );
    assert!(stream.is_ended());
    stream.chunk(chunk, &mut out).unwrap();
    stream.fail(
        StreamFailure {
            kind: FailureKind::Upstream,
            message: "late",
        },
        &mut out,
    );
    assert!(out.is_empty(), "nothing after the end");

    let mut stream = MessagesStream::new(ID, "m", None);
    assert!(matches!(
        stream.chunk(b"[1,2]", &mut out),
        Err(ProtocolError::Answer { .. })
    ));
    assert!(out.is_empty());
    // Text, then tool call 0 going on after it: refused whole, before anything of the chunk is sent.
    let call = br#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{"}}]}}]}"#;
    stream.chunk(call, &mut out).unwrap();
    let before = out.len();
    let mixed =
        br#"{"choices":[{"index":0,"delta":{"content":"x","tool_calls":[{"index":0,"function":{"arguments":"}"}}]}}]}"#;
    assert!(matches!(
        stream.chunk(mixed, &mut out),
        Err(ProtocolError::Answer { .. })
    ));
    assert_eq!(out.len(), before);
    stream.fail(
        StreamFailure {
            kind: FailureKind::Upstream,
            message: "cut",
        },
        &mut out,
    );
    let message = check_stream(&support::events(&out));
    assert_eq!(
        message["content"].as_array().unwrap().len(),
        1,
        "no text block was started"
    );
}
