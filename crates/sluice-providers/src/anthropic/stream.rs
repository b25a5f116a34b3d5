//! Anthropic SSE streams -> OpenAI `chat.completion.chunk`s, event by event.
//!
//! Shapes from Anthropic's streaming guide (platform.claude.com/docs/en/build-with-claude/streaming): a
//! stream is `message_start`, then per content block `content_block_start`, `content_block_delta`s
//! (`text_delta`, `input_json_delta` with `partial_json`, and kinds chat completions have no place for,
//! such as `thinking_delta`), `content_block_stop`; then `message_delta` (stop reason, cumulative usage)
//! and `message_stop`. `ping` may come anywhere; an `error` event ends the stream; new event types may
//! appear and are skipped.
//!
//! The translation is a pure function of one event and an explicit state, so it is tested on recorded
//! transcripts without a network; [`crate::transport::sse_events`] drives it over a real SSE parser.

use std::collections::VecDeque;

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_api::{ChatCompletionChunk, ChunkChoice, ChunkDelta, Role, TokenUsage};

use super::error::{AnthropicError, classify_stream_error};
use super::response::{AnthropicUsage, arguments_json, finish_reason};
use crate::transport::{Flow, SseTranslator};
use crate::{ProviderError, StreamEvent};

/// What one upstream event means for the client's stream.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Forward this chunk.
    Chunk(StreamEvent),
    /// Forward this last chunk (the usage chunk); the stream is complete.
    Last(StreamEvent),
    /// Nothing to forward.
    Skip,
}

/// A `tool_use` block of the message being streamed.
#[derive(Debug)]
struct ToolBlock {
    /// The block's index among all content blocks.
    block: u32,
    /// The call's index among tool calls only, as OpenAI numbers them.
    call: u32,
    /// The input sent with `content_block_start`, if it was not empty.
    start_input: Option<Value>,
    /// Whether any `input_json_delta` came for it.
    streamed: bool,
}

/// What the translation remembers between events.
#[derive(Debug)]
pub(crate) struct StreamState {
    created: u64,
    /// The message id and model, known from `message_start`.
    id: String,
    model: String,
    started: bool,
    tools: Vec<ToolBlock>,
    usage: AnthropicUsage,
}

impl StreamState {
    /// A state for a stream reported as created at Unix time `created`.
    pub(crate) fn new(created: u64) -> Self {
        Self {
            created,
            id: String::new(),
            model: String::new(),
            started: false,
            tools: Vec::new(),
            usage: AnthropicUsage::default(),
        }
    }

    fn chunk(&self, delta: ChunkDelta, finish_reason: Option<&str>) -> Result<StreamEvent, ProviderError> {
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish_reason.map(str::to_owned),
            }],
            usage: None,
        };
        encode(&chunk, None)
    }

    fn tool_delta(&self, call: Value) -> Result<StreamEvent, ProviderError> {
        let delta = ChunkDelta {
            tool_calls: Some(vec![call]),
            ..ChunkDelta::default()
        };
        self.chunk(delta, None)
    }

    fn tool(&mut self, block: u32) -> Result<&mut ToolBlock, ProviderError> {
        self.tools
            .iter_mut()
            .find(|t| t.block == block)
            .ok_or_else(|| ProviderError::Protocol {
                detail: format!("input_json_delta for content block {block}, which is not a tool_use block"),
            })
    }
}

fn encode(chunk: &ChatCompletionChunk, usage: Option<TokenUsage>) -> Result<StreamEvent, ProviderError> {
    let data = serde_json::to_vec(chunk).map_err(|e| ProviderError::Protocol {
        detail: format!("could not serialise a chunk: {e}"),
    })?;
    Ok(StreamEvent {
        data: data.into(),
        usage,
        usage_only: usage.is_some() && chunk.choices.is_empty(),
        estimated: false,
    })
}

// === Wire types ===

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDelta,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: AnthropicError,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct StartMessage {
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

// === Translation ===

/// Translates one event's data.
pub(crate) fn step(data: &str, state: &mut StreamState) -> Result<Step, ProviderError> {
    let data = data.trim();
    if data.is_empty() {
        return Ok(Step::Skip);
    }
    let event: Event = serde_json::from_str(data).map_err(|e| ProviderError::Protocol {
        detail: format!("malformed stream event: {e}"),
    })?;
    let needs_start = !matches!(
        event,
        Event::MessageStart { .. } | Event::Ping | Event::Error { .. } | Event::Unknown
    );
    if needs_start && !state.started {
        return Err(ProviderError::Protocol {
            detail: "a stream event came before message_start".to_owned(),
        });
    }
    match event {
        Event::MessageStart { message } => {
            state.id = message.id;
            state.model = message.model;
            state.started = true;
            if let Some(usage) = message.usage {
                state.usage.update(usage);
            }
            let delta = ChunkDelta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                tool_calls: None,
            };
            state.chunk(delta, None).map(Step::Chunk)
        }
        Event::ContentBlockStart { index, content_block } => match content_block {
            StartBlock::Text { text } if text.is_empty() => Ok(Step::Skip),
            StartBlock::Text { text } => content(state, text),
            StartBlock::ToolUse { id, name, input } => {
                let call = u32::try_from(state.tools.len()).unwrap_or(u32::MAX);
                let start_input = match input {
                    Value::Object(map) if map.is_empty() => None,
                    Value::Null => None,
                    other => Some(other),
                };
                state.tools.push(ToolBlock {
                    block: index,
                    call,
                    start_input,
                    streamed: false,
                });
                state
                    .tool_delta(json!({
                        "index": call,
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""}
                    }))
                    .map(Step::Chunk)
            }
            StartBlock::Other => Ok(Step::Skip),
        },
        Event::ContentBlockDelta { index, delta } => match delta {
            BlockDelta::TextDelta { text } if text.is_empty() => Ok(Step::Skip),
            BlockDelta::TextDelta { text } => content(state, text),
            BlockDelta::InputJsonDelta { partial_json } => {
                let tool = state.tool(index)?;
                tool.streamed = true;
                if partial_json.is_empty() {
                    return Ok(Step::Skip);
                }
                let call = tool.call;
                state
                    .tool_delta(json!({"index": call, "function": {"arguments": partial_json}}))
                    .map(Step::Chunk)
            }
            BlockDelta::Other => Ok(Step::Skip),
        },
        Event::ContentBlockStop { index } => {
            // A tool block whose input came whole with its start, not streamed: send it now.
            let Some(tool) = state.tools.iter_mut().find(|t| t.block == index) else {
                return Ok(Step::Skip);
            };
            match tool.start_input.take() {
                Some(input) if !tool.streamed => {
                    let call = tool.call;
                    state
                        .tool_delta(json!({"index": call, "function": {"arguments": arguments_json(&input)}}))
                        .map(Step::Chunk)
                }
                _ => Ok(Step::Skip),
            }
        }
        Event::MessageDelta { delta, usage } => {
            if let Some(usage) = usage {
                state.usage.update(usage);
            }
            match delta.stop_reason {
                Some(reason) => state
                    .chunk(ChunkDelta::default(), Some(finish_reason(&reason)))
                    .map(Step::Chunk),
                None => Ok(Step::Skip),
            }
        }
        Event::MessageStop => {
            let usage = state.usage.tokens();
            let chunk = ChatCompletionChunk {
                id: std::mem::take(&mut state.id),
                object: "chat.completion.chunk".to_owned(),
                created: state.created,
                model: std::mem::take(&mut state.model),
                choices: Vec::new(),
                usage: Some(usage.to_openai()),
            };
            encode(&chunk, Some(usage)).map(Step::Last)
        }
        Event::Ping | Event::Unknown => Ok(Step::Skip),
        Event::Error { error } => Err(classify_stream_error(error)),
    }
}

fn content(state: &StreamState, text: String) -> Result<Step, ProviderError> {
    let delta = ChunkDelta {
        content: Some(text),
        ..ChunkDelta::default()
    };
    state.chunk(delta, None).map(Step::Chunk)
}

impl SseTranslator for StreamState {
    fn event(&mut self, data: String, out: &mut VecDeque<StreamEvent>) -> Result<Flow, ProviderError> {
        match step(&data, self)? {
            Step::Chunk(event) => out.push_back(event),
            Step::Last(event) => {
                out.push_back(event);
                return Ok(Flow::End);
            }
            Step::Skip => {}
        }
        Ok(Flow::Continue)
    }

    fn close(&mut self, _out: &mut VecDeque<StreamEvent>) -> Result<(), ProviderError> {
        Err(ProviderError::Truncated {
            detail: "the stream ended without message_stop".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;
    use crate::TimeoutPhase;
    use crate::transport::sse_events;
    use std::convert::Infallible;

    /// The "streaming request with tool use" response of Anthropic's streaming guide, as sent on the wire.
    const TOOL_USE_TRANSCRIPT: &str = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        "\n\n",
        "event: ping\n",
        r#"data: {"type": "ping"}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather for San Francisco, CA:"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":0}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisc"}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o, CA\", \"unit\": \"fahrenheit\"}"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":1}"#,
        "\n\n",
        "event: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
        "\n\n",
        "event: message_stop\n",
        r#"data: {"type":"message_stop"}"#,
        "\n\n",
    );

    /// The data lines of a transcript, as a parser would hand them over.
    fn data_lines(transcript: &str) -> Vec<&str> {
        transcript.lines().filter_map(|l| l.strip_prefix("data: ")).collect()
    }

    /// The chunks of a transcript through the pure function, as JSON, with whether the last was final.
    fn translate_all(transcript: &str) -> Vec<Result<StreamEvent, String>> {
        let mut state = StreamState::new(1_700_000_000);
        let mut out = Vec::new();
        for data in data_lines(transcript) {
            match step(data, &mut state) {
                Ok(Step::Chunk(event)) => out.push(Ok(event)),
                Ok(Step::Last(event)) => {
                    out.push(Ok(event));
                    break;
                }
                Ok(Step::Skip) => {}
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    fn json_of(event: &StreamEvent) -> Value {
        serde_json::from_slice(&event.data).unwrap()
    }

    #[test]
    fn recorded_tool_use_stream_translates() {
        let events: Vec<StreamEvent> = translate_all(TOOL_USE_TRANSCRIPT)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let chunks: Vec<Value> = events.iter().map(json_of).collect();
        let head = |delta: Value, finish: Value| {
            json!({
                "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": "claude-opus-4-1-20250805",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                "usage": null
            })
        };
        let expected = vec![
            head(json!({"role": "assistant", "content": ""}), Value::Null),
            head(json!({"content": "Okay"}), Value::Null),
            head(
                json!({"content": ", let's check the weather for San Francisco, CA:"}),
                Value::Null,
            ),
            head(
                json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ),
            head(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
                Value::Null,
            ),
            head(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"San Francisc"}}]}),
                Value::Null,
            ),
            head(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "o, CA\", \"unit\": \"fahrenheit\"}"}}]}),
                Value::Null,
            ),
            head(json!({}), json!("tool_calls")),
            json!({
                "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": "claude-opus-4-1-20250805",
                "choices": [],
                "usage": {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561}
            }),
        ];
        assert_eq!(chunks, expected);
        let (last, rest) = events.split_last().unwrap();
        assert!(last.usage_only);
        assert_eq!(last.usage, Some(TokenUsage::new(472, 89)));
        assert!(rest.iter().all(|e| !e.usage_only && e.usage.is_none()));
        // The streamed arguments put together are the tool input.
        let arguments: String = chunks[4..7]
            .iter()
            .map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        let input: Value = serde_json::from_str(&arguments).unwrap();
        assert_eq!(input, json!({"location": "San Francisco, CA", "unit": "fahrenheit"}));
    }

    #[test]
    fn tool_call_indexes_count_only_tool_blocks() {
        let transcript = concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig\"}}\n\n",
            "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t_a\",\"name\":\"a\",\"input\":{}}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n",
            "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t_b\",\"name\":\"b\",\"input\":{\"q\":1}}}\n\n",
            "data: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
            "data: {\"type\":\"some_future_event\",\"detail\":42}\n\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":30,\"cache_read_input_tokens\":100}}\n\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let chunks: Vec<Value> = translate_all(transcript)
            .iter()
            .map(|e| json_of(e.as_ref().unwrap()))
            .collect();
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0).and_then(|c| c["delta"].get("tool_calls")))
            .collect();
        assert_eq!(calls.len(), 4);
        assert_eq!(calls[0][0]["index"], 0);
        assert_eq!(calls[0][0]["id"], "t_a");
        assert_eq!(calls[1][0], json!({"index": 0, "function": {"arguments": "{}"}}));
        assert_eq!(calls[2][0]["index"], 1);
        assert_eq!(calls[2][0]["function"]["name"], "b");
        // Input that came whole with the block start is sent as one arguments delta at its stop.
        assert_eq!(calls[3][0], json!({"index": 1, "function": {"arguments": "{\"q\":1}"}}));
        let last = chunks.last().unwrap();
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 115, "completion_tokens": 30, "total_tokens": 145,
                   "prompt_tokens_details": {"cached_tokens": 100}})
        );
    }

    #[test]
    fn input_usage_from_message_start_and_cumulative_output_from_message_delta() {
        let transcript = include_str!("../../../../tests/fixtures/anthropic/stream_cache_usage.sse");
        let events: Vec<StreamEvent> = translate_all(transcript).into_iter().map(Result::unwrap).collect();
        let last = events.last().unwrap();
        assert!(last.usage_only);
        let usage = TokenUsage {
            input: 21,
            cache_read: 0,
            cache_write_5m: 0,
            cache_write_1h: 188_086,
            output: 393,
            reasoning: 0,
        };
        assert_eq!(last.usage, Some(usage));
        assert_eq!(
            json_of(last)["usage"],
            json!({"prompt_tokens": 188_107, "completion_tokens": 393, "total_tokens": 188_500})
        );
        // A `message_delta` that repeats the input counts (cumulative, as newer streams send) replaces them.
        let mut state = StreamState::new(0);
        let mut ended = false;
        for data in data_lines(transcript) {
            let data = data.replace(
                r#""usage": {"output_tokens": 393}"#,
                r#""usage": {"input_tokens": 21, "cache_creation_input_tokens": 188086, "cache_read_input_tokens": 0, "output_tokens": 393}"#,
            );
            if let Step::Last(event) = step(&data, &mut state).unwrap() {
                assert_eq!(event.usage, Some(usage));
                ended = true;
            }
        }
        assert!(ended);
    }

    #[test]
    fn error_events_and_protocol_violations_fail() {
        let mut state = StreamState::new(0);
        let overloaded = r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
        assert!(matches!(
            step(overloaded, &mut state),
            Err(ProviderError::Overloaded { .. })
        ));
        let limited = r#"{"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}"#;
        assert!(matches!(
            step(limited, &mut state),
            Err(ProviderError::RateLimited { .. })
        ));
        let api = r#"{"type": "error", "error": {"type": "api_error", "message": "boom"}}"#;
        match step(api, &mut state) {
            Err(ProviderError::Server { message, .. }) => assert_eq!(message, "boom"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            step("{not json", &mut state),
            Err(ProviderError::Protocol { .. })
        ));
        let early = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}"#;
        assert!(matches!(step(early, &mut state), Err(ProviderError::Protocol { .. })));
        assert_eq!(step(" ", &mut state).unwrap(), Step::Skip);
        assert_eq!(step(r#"{"type":"ping"}"#, &mut state).unwrap(), Step::Skip);
        step(
            r#"{"type":"message_start","message":{"id":"m1","model":"m"}}"#,
            &mut state,
        )
        .unwrap();
        let stray =
            r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{"}}"#;
        assert!(matches!(step(stray, &mut state), Err(ProviderError::Protocol { .. })));
    }

    /// Runs a transcript through the real SSE parser and the event driver, fed in the given pieces.
    async fn drive(pieces: Vec<Vec<u8>>) -> Vec<Result<Value, String>> {
        let body = futures_util::stream::iter(pieces.into_iter().map(Ok::<Vec<u8>, Infallible>));
        let mut out = Vec::new();
        let mut stream = sse_events(body, Duration::from_secs(5), StreamState::new(1_700_000_000));
        while let Some(item) = stream.next().await {
            out.push(item.map(|e| json_of(&e)).map_err(|e| format!("{e:?}")));
        }
        out
    }

    #[tokio::test]
    async fn parser_split_at_every_byte_gives_the_same_chunks() {
        // A second transcript with multi-byte characters, so splits also fall inside UTF-8 sequences.
        let unicode = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_u\",\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"¡Olé — ✓ 🎉\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":6}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        for transcript in [TOOL_USE_TRANSCRIPT, unicode] {
            let expected: Vec<Result<Value, String>> = translate_all(transcript)
                .iter()
                .map(|e| Ok(json_of(e.as_ref().unwrap())))
                .collect();
            let bytes = transcript.as_bytes();
            assert_eq!(drive(vec![bytes.to_vec()]).await, expected);
            let one_byte_pieces: Vec<Vec<u8>> = bytes.iter().map(|b| vec![*b]).collect();
            assert_eq!(drive(one_byte_pieces).await, expected, "one byte at a time");
            for at in 1..bytes.len() {
                let pieces = vec![bytes[..at].to_vec(), bytes[at..].to_vec()];
                assert_eq!(drive(pieces).await, expected, "split at byte {at}");
            }
        }
    }

    #[tokio::test]
    async fn a_stream_cut_before_message_stop_is_truncated() {
        let cut = TOOL_USE_TRANSCRIPT.split("event: message_delta").next().unwrap();
        let out = drive(vec![cut.as_bytes().to_vec()]).await;
        let (last, rest) = out.split_last().unwrap();
        assert!(rest.iter().all(Result::is_ok));
        assert!(last.as_ref().unwrap_err().starts_with("Truncated"), "{last:?}");
        // An error event ends the stream with that error and nothing after it.
        let failed = format!(
            "{}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\n{}",
            cut, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        let out = drive(vec![failed.into_bytes()]).await;
        assert!(out.last().unwrap().as_ref().unwrap_err().starts_with("Overloaded"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_times_out() {
        let body = futures_util::stream::pending::<Result<Vec<u8>, Infallible>>();
        let mut stream = sse_events(body, Duration::from_secs(3), StreamState::new(0));
        match stream.next().await {
            Some(Err(ProviderError::Timeout {
                phase: TimeoutPhase::Idle,
                after,
            })) => {
                assert_eq!(after, Duration::from_secs(3));
            }
            other => panic!("{other:?}"),
        }
        assert!(stream.next().await.is_none());
    }
}
