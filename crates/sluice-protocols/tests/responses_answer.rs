//! Chat answers back into the Responses API: complete `chat.completion`s into `response` objects, and
//! chat streams (recorded OpenAI and Anthropic transcripts, through the adapters' real SSE driver and
//! translators) into Responses stream events, the same however the upstream's bytes were cut.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod support;

use bytes::BytesMut;
use serde_json::{Value, json};
use sluice_api::TokenUsage;
use sluice_protocols::responses::{ResponseEcho, ResponsesStream, complete, parse_request};
use sluice_protocols::{FailureKind, ProtocolError, StreamFailure};
use support::{Event, Step, Vendor, assert_golden, cuts, events, fixture, translate, upstream_steps};

const ID: &str = "resp_0123abcd";
const CREATED: u64 = 1_741_569_952;

fn echo(body: &[u8]) -> ResponseEcho {
    parse_request(body).unwrap().echo
}

fn text_echo() -> ResponseEcho {
    echo(&fixture("openai-responses/text_request.json"))
}

#[test]
fn a_documented_completion_becomes_a_response() {
    let body = complete(
        &fixture("openai-responses/chat_completion.json"),
        &text_echo(),
        ID,
        CREATED,
        None,
    )
    .unwrap();
    assert_golden("openai-responses/response_text.json", &body);
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["model"], "gpt-4.1-2025-04-14");
    assert_eq!(
        response["output"],
        json!([{"id": "msg_0123abcd_0", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                             "text": "Hello! How can I assist you today?"}]}])
    );
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 19, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 10,
               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 29})
    );
    assert_eq!(response["store"], false);
    assert_eq!(response["tools"], json!([]));
    assert_eq!(response["tool_choice"], "auto");
}

#[test]
fn tool_calls_become_function_call_items_and_the_request_is_echoed() {
    let echo = echo(&fixture("openai-responses/function_request.json"));
    let body = complete(
        &fixture("openai-responses/chat_completion_tool_calls.json"),
        &echo,
        ID,
        CREATED,
        None,
    )
    .unwrap();
    assert_golden("openai-responses/response_function_call.json", &body);
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        response["output"],
        json!([{"id": "fc_0123abcd_0", "type": "function_call", "status": "completed",
                "arguments": "{\n\"location\": \"Boston, MA\"\n}", "call_id": "call_abc123",
                "name": "get_current_weather"}])
    );
    assert_eq!(response["tools"][0]["name"], "get_current_weather");
    assert_eq!(response["tools"][0]["type"], "function");
}

#[test]
fn length_cuts_reasoning_refusals_and_the_gateways_usage() {
    let completion = json!({
        "id": "c", "object": "chat.completion", "created": 1, "model": "deepseek-reasoner",
        "choices": [{"index": 0, "finish_reason": "length", "message": {
            "role": "assistant", "content": "The answer is", "reasoning_content": "Let me think."}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
                  "prompt_tokens_details": {"cached_tokens": 64},
                  "completion_tokens_details": {"reasoning_tokens": 30}}
    });
    let body = complete(completion.to_string().as_bytes(), &text_echo(), ID, CREATED, None).unwrap();
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response["status"], "incomplete");
    assert_eq!(response["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert_eq!(
        response["output"][0],
        json!({"id": "rs_0123abcd_0", "type": "reasoning", "summary": [], "status": "completed",
               "content": [{"type": "reasoning_text", "text": "Let me think."}]})
    );
    assert_eq!(response["output"][1]["status"], "incomplete");
    assert_eq!(response["output"][1]["content"][0]["text"], "The answer is");
    assert_eq!(response["usage"]["input_tokens_details"]["cached_tokens"], 64);
    assert_eq!(response["usage"]["output_tokens_details"]["reasoning_tokens"], 30);

    // The gateway's record wins: cache writes count as input tokens.
    let usage = TokenUsage {
        input: 10,
        cache_read: 20,
        cache_write_5m: 30,
        cache_write_1h: 40,
        output: 5,
        reasoning: 2,
    };
    let body = complete(
        completion.to_string().as_bytes(),
        &text_echo(),
        ID,
        CREATED,
        Some(&usage),
    )
    .unwrap();
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 100, "input_tokens_details": {"cached_tokens": 20}, "output_tokens": 5,
               "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 105})
    );

    let refusal = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": null, "refusal": "I can't."}}]});
    let body = complete(refusal.to_string().as_bytes(), &text_echo(), ID, CREATED, None).unwrap();
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        response["output"][0]["content"],
        json!([{"type": "refusal", "refusal": "I can't."}])
    );
    assert_eq!(response["usage"], Value::Null);
}

#[test]
fn an_answer_that_is_no_completion_is_the_upstreams_fault() {
    for body in [
        &b"{not json"[..],
        br#"{"choices": []}"#,
        br#"{"choices": [{"message": 7}]}"#,
    ] {
        let err = complete(body, &text_echo(), ID, CREATED, None).unwrap_err();
        assert!(matches!(err, ProtocolError::Answer { .. }), "{err:?}");
        assert_eq!(err.status(), 502);
    }
}

/// The Responses SSE text for a vendor's SSE body cut into `pieces`.
async fn responses_text(vendor: Vendor, echo: &ResponseEcho, pieces: Vec<Vec<u8>>) -> Vec<u8> {
    let steps = upstream_steps(vendor, pieces).await;
    translate(ResponsesStream::new(echo.clone(), ID, CREATED), &steps)
}

/// Checks what every Responses stream must be, and returns the final response object: event names equal
/// the data's `type`; sequence numbers count from 0; it opens with `response.created` and
/// `response.in_progress` and ends with exactly one terminal event; every item added is done (unless the
/// stream failed) with the text and arguments its deltas add up to, and is in the final output as done.
fn check_stream(events: &[Event]) -> Value {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.data["type"], event.name.as_str(), "{event:?}");
        assert_eq!(event.data["sequence_number"], i, "{event:?}");
    }
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names[..2], ["response.created", "response.in_progress"]);
    let terminal = ["response.completed", "response.incomplete", "response.failed"];
    let last = events.last().unwrap();
    assert!(terminal.contains(&last.name.as_str()), "{names:?}");
    assert_eq!(names.iter().filter(|n| terminal.contains(n)).count(), 1, "{names:?}");
    let failed = last.name == "response.failed";

    let mut added = Vec::new();
    let mut done = Vec::new();
    let mut text = std::collections::HashMap::<String, String>::new();
    for event in events {
        let data = &event.data;
        match event.name.as_str() {
            "response.output_item.added" => {
                assert_eq!(data["output_index"], added.len(), "{data}");
                assert_eq!(data["item"]["status"], "in_progress", "{data}");
                added.push(data["item"].clone());
            }
            "response.output_item.done" => done.push(data["item"].clone()),
            "response.output_text.delta"
            | "response.function_call_arguments.delta"
            | "response.reasoning_text.delta" => {
                assert_eq!(
                    data["output_index"],
                    added.len() - 1,
                    "deltas go to the open item: {data}"
                );
                let key = data["item_id"].as_str().unwrap().to_owned();
                text.entry(key).or_default().push_str(data["delta"].as_str().unwrap());
            }
            "response.output_text.done" | "response.reasoning_text.done" => {
                assert_eq!(text[data["item_id"].as_str().unwrap()], data["text"].as_str().unwrap());
            }
            "response.function_call_arguments.done" => {
                let streamed = text.get(data["item_id"].as_str().unwrap()).cloned().unwrap_or_default();
                assert_eq!(streamed, data["arguments"].as_str().unwrap());
            }
            _ => {}
        }
    }
    if !failed {
        assert_eq!(added.len(), done.len(), "every item added is done");
    }
    for (added, done) in added.iter().zip(&done) {
        assert_eq!(added["id"], done["id"]);
        assert_eq!(added["type"], done["type"]);
    }
    let response = last.data["response"].clone();
    assert_eq!(response["id"], ID);
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), added.len());
    if !failed {
        assert_eq!(output, &done, "the final output is the items as done");
    }
    response
}

#[tokio::test]
async fn a_recorded_text_stream_translates_the_same_however_it_is_cut() {
    let echo = echo(&fixture("openai-responses/stream_request.json"));
    let transcript = fixture("openai-responses/chat_stream_text.sse");
    let whole = responses_text(Vendor::OpenAi, &echo, vec![transcript.clone()]).await;
    assert_golden("openai-responses/stream_text.sse", &whole);
    let events = events(&whole);
    let response = check_stream(&events);
    assert_eq!(response["status"], "completed");
    assert_eq!(response["instructions"], "You are a helpful assistant.");
    assert_eq!(
        response["output"][0]["content"][0]["text"],
        "Hello! How can I assist you today?"
    );
    assert_eq!(response["usage"]["total_tokens"], 29);
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "response.output_text.delta").count(),
        9,
        "one delta per content chunk"
    );
    for pieces in cuts(&transcript) {
        assert_eq!(responses_text(Vendor::OpenAi, &echo, pieces).await, whole);
    }
}

#[tokio::test]
async fn a_recorded_tool_call_stream_translates_the_same_however_it_is_cut() {
    let echo = echo(&fixture("openai-responses/function_request.json"));
    let transcript = fixture("openai-responses/chat_stream_tool_calls.sse");
    let whole = responses_text(Vendor::OpenAi, &echo, vec![transcript.clone()]).await;
    assert_golden("openai-responses/stream_function_call.sse", &whole);
    let response = check_stream(&events(&whole));
    assert_eq!(
        response["output"],
        json!([{"id": "fc_0123abcd_0", "type": "function_call", "status": "completed",
                "arguments": "{\"location\":\"Paris, France\"}", "call_id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                "name": "get_weather"}])
    );
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 64, "input_tokens_details": {"cached_tokens": 32}, "output_tokens": 16,
               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 80})
    );
    for pieces in cuts(&transcript) {
        assert_eq!(responses_text(Vendor::OpenAi, &echo, pieces).await, whole);
    }
}

#[tokio::test]
async fn an_anthropic_stream_reaches_a_responses_client() {
    // Anthropic's documented tool-use stream, through the Anthropic adapter's translator, then this one.
    let echo = echo(&fixture("openai-responses/function_request.json"));
    let transcript = fixture("anthropic/stream_tool_use.sse");
    let whole = responses_text(Vendor::Anthropic, &echo, vec![transcript.clone()]).await;
    let response = check_stream(&events(&whole));
    assert_eq!(response["model"], "claude-opus-4-1-20250805");
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), 2);
    assert_eq!(
        output[0]["content"][0]["text"],
        "Okay, let's check the weather for San Francisco, CA:"
    );
    assert_eq!(output[1]["call_id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    let arguments: Value = serde_json::from_str(output[1]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        arguments,
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    assert_eq!(response["usage"]["input_tokens"], 472);
    assert_eq!(response["usage"]["output_tokens"], 89);
    for pieces in cuts(&transcript) {
        assert_eq!(responses_text(Vendor::Anthropic, &echo, pieces).await, whole);
    }
}

#[tokio::test]
async fn a_cut_stream_ends_with_response_failed_never_completed() {
    let echo = echo(&fixture("openai-responses/stream_request.json"));
    let transcript = fixture("openai-responses/chat_stream_text.sse");
    let text = String::from_utf8(transcript).unwrap();
    // Cut after the third content chunk: no finish reason, no [DONE].
    let cut: String = text.split_inclusive("\n\n").take(4).collect();
    let whole = responses_text(Vendor::OpenAi, &echo, vec![cut.clone().into_bytes()]).await;
    let events = events(&whole);
    let response = check_stream(&events);
    assert_eq!(events.last().unwrap().name, "response.failed");
    assert_eq!(response["status"], "failed");
    assert_eq!(response["error"]["code"], "server_error");
    assert_eq!(
        response["error"]["message"],
        "the upstream connection closed before the answer was complete"
    );
    assert_eq!(response["output"][0]["status"], "incomplete");
    assert_eq!(response["output"][0]["content"][0]["text"], "Hello! How");
    for pieces in cuts(cut.as_bytes()) {
        assert_eq!(responses_text(Vendor::OpenAi, &echo, pieces).await, whole);
    }

    // An upstream that fails before any chunk still gets a well-formed stream, rate limits by their code.
    let steps = [Step::Failed(FailureKind::RateLimited, "slow down".to_owned())];
    let out = translate(ResponsesStream::new(echo.clone(), ID, CREATED), &steps);
    let events = support::events(&out);
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["response.created", "response.in_progress", "response.failed"]);
    assert_eq!(events[2].data["response"]["error"]["code"], "rate_limit_exceeded");
    assert_eq!(events[2].data["response"]["model"], "gpt-4.1");
}

#[test]
fn reasoning_refusals_and_length_cuts_stream_as_openai_sends_them() {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-reasoner",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let steps: Vec<Step> = [
        chunk(
            json!({"role": "assistant", "content": null, "reasoning_content": ""}),
            Value::Null,
        ),
        chunk(json!({"reasoning_content": "Think"}), Value::Null),
        chunk(json!({"reasoning_content": "ing."}), Value::Null),
        chunk(json!({"content": "Sure"}), Value::Null),
        chunk(json!({"refusal": "But no."}), Value::Null),
        chunk(json!({}), json!("length")),
    ]
    .into_iter()
    .map(|c| Step::Chunk(c.into()))
    .collect();
    let out = translate(ResponsesStream::new(text_echo(), ID, CREATED), &steps);
    let events = events(&out);
    let response = check_stream(&events);
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.reasoning_text.delta",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.content_part.added",
            "response.refusal.delta",
            "response.refusal.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.incomplete",
        ]
    );
    assert_eq!(response["status"], "incomplete");
    assert_eq!(response["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(
        response["output"][1]["content"],
        json!([{"type": "output_text", "annotations": [], "logprobs": [], "text": "Sure"},
               {"type": "refusal", "refusal": "But no."}])
    );
    assert_eq!(response["output"][1]["status"], "incomplete");
    assert_eq!(events[14].data["content_index"], 1);
    assert_eq!(response["usage"], Value::Null, "no usage chunk, no usage given");
}

#[test]
fn the_gateways_usage_wins_and_nothing_follows_the_end() {
    let mut stream = ResponsesStream::new(text_echo(), ID, CREATED);
    let mut out = BytesMut::new();
    let chunk = br#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}"#;
    stream.chunk(chunk, &mut out).unwrap();
    let usage = TokenUsage {
        input: 3,
        cache_read: 4,
        output: 2,
        ..TokenUsage::default()
    };
    stream.finish(Some(&usage), &mut out).unwrap();
    assert!(stream.is_ended());
    let events = events(&out.split());
    let response = check_stream(&events);
    assert_eq!(response["usage"]["input_tokens"], 7);
    assert_eq!(response["usage"]["input_tokens_details"]["cached_tokens"], 4);
    stream.chunk(chunk, &mut out).unwrap();
    stream.finish(None, &mut out).unwrap();
    stream.fail(
        StreamFailure {
            kind: FailureKind::Upstream,
            message: "late",
        },
        &mut out,
    );
    assert!(out.is_empty(), "nothing after the end");
}

#[test]
fn an_untranslatable_chunk_is_an_error_and_appends_nothing() {
    let mut stream = ResponsesStream::new(text_echo(), ID, CREATED);
    let mut out = BytesMut::new();
    assert!(matches!(
        stream.chunk(b"{oops", &mut out),
        Err(ProtocolError::Answer { .. })
    ));
    assert!(out.is_empty());
    // Tool call 0 going on after tool call 1 began cannot be streamed as OpenAI streams items.
    let call = |index: u32, id: &str| {
        format!(
            r#"{{"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":{index},"id":"{id}","function":{{"name":"f","arguments":"{{"}}}}]}}}}]}}"#
        )
    };
    stream.chunk(call(0, "a").as_bytes(), &mut out).unwrap();
    stream.chunk(call(1, "b").as_bytes(), &mut out).unwrap();
    let before = out.len();
    assert!(matches!(
        stream.chunk(call(0, "").as_bytes(), &mut out),
        Err(ProtocolError::Answer { .. })
    ));
    assert_eq!(out.len(), before);
    // Nothing of the refused chunk was taken in: the failure that ends the stream is consistent with what
    // was sent (sequence numbers without a gap, the open call cut).
    stream.fail(
        StreamFailure {
            kind: FailureKind::Upstream,
            message: "cut",
        },
        &mut out,
    );
    let response = check_stream(&events(&out));
    assert_eq!(response["status"], "failed");
    assert_eq!(response["output"][1]["status"], "incomplete");
    assert_eq!(response["output"][1]["arguments"], "{");
}
