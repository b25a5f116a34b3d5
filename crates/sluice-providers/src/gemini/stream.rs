//! Gemini's `streamGenerateContent?alt=sse`, event by event.
//!
//! Each SSE `data:` is a whole `GenerateContentResponse` carrying the new parts of each candidate. The
//! translation is a pure function of one event and a small state ([`step`]), so it is tested on recorded
//! transcripts without a network:
//! - new text becomes a `content` delta and each `functionCall` a complete `tool_calls` delta (Gemini sends
//!   calls whole); a candidate's first delta carries `role: "assistant"`;
//! - a `finishReason` becomes a chunk of its own with the mapped `finish_reason`, as OpenAI sends it;
//! - a prompt blocked before any candidate becomes one `content_filter` chunk;
//! - when the stream ends, one last chunk carries only the usage of the last `usageMetadata` with counts
//!   (`choices: []`, [`StreamEvent::usage_only`]).
//!
//! A Gemini stream has no `[DONE]`: it is whole when every candidate that started has reported its
//! `finishReason` before the connection closed ([`finish`]); otherwise it ends with
//! [`ProviderError::Truncated`].

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::json;
use sluice_api::{ChatCompletionChunk, ChunkChoice, ChunkDelta, Role, TokenUsage};

use super::response::{self, Context, GeminiResponse};
use crate::transport::{Flow, SseTranslator};
use crate::{ProviderError, StreamEvent};

/// What one candidate has shown so far.
#[derive(Debug, Clone, Copy, Default)]
struct CandidateState {
    index: u32,
    role_sent: bool,
    /// How many tool calls it made (the next call's index in its `tool_calls`).
    tool_calls: u32,
    finished: bool,
}

/// What the translation remembers between events.
#[derive(Debug)]
pub(crate) struct StreamState {
    id: Option<String>,
    model: Option<String>,
    fallback_model: String,
    created: u64,
    seed: String,
    candidates: Vec<CandidateState>,
    /// Tool calls of the whole answer, numbering the generated ids.
    next_call: usize,
    usage: Option<TokenUsage>,
}

impl StreamState {
    /// A fresh state for one answer.
    pub(crate) fn new(context: Context<'_>) -> Self {
        Self {
            id: None,
            model: None,
            fallback_model: context.model.to_owned(),
            created: context.created,
            seed: context.seed,
            candidates: Vec::new(),
            next_call: 0,
            usage: None,
        }
    }

    fn candidate(&mut self, index: u32) -> &mut CandidateState {
        let position = match self.candidates.iter().position(|c| c.index == index) {
            Some(position) => position,
            None => {
                self.candidates.push(CandidateState {
                    index,
                    ..CandidateState::default()
                });
                self.candidates.len() - 1
            }
        };
        &mut self.candidates[position]
    }

    /// Whether every candidate that started has finished.
    fn complete(&self) -> bool {
        !self.candidates.is_empty() && self.candidates.iter().all(|c| c.finished)
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<TokenUsage>) -> Result<StreamEvent, ProviderError> {
        let usage_only = choices.is_empty();
        let chunk = ChatCompletionChunk {
            id: self
                .id
                .clone()
                .unwrap_or_else(|| response::completion_id(None, &self.seed)),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone().unwrap_or_else(|| self.fallback_model.clone()),
            choices,
            usage: usage.as_ref().map(TokenUsage::to_openai),
        };
        let data = serde_json::to_vec(&chunk).map_err(|e| ProviderError::Protocol {
            detail: format!("could not serialise a chunk: {e}"),
        })?;
        Ok(StreamEvent {
            data: Bytes::from(data),
            usage,
            usage_only,
            estimated: false,
        })
    }
}

/// Translates one event's data into the chunks it means, in order.
pub(crate) fn step(data: &str, state: &mut StreamState) -> Result<Vec<StreamEvent>, ProviderError> {
    let data = data.trim();
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let event: GeminiResponse<'_> = serde_json::from_str(data).map_err(|e| ProviderError::Protocol {
        detail: format!("malformed stream event: {e}"),
    })?;
    if let Some(error) = &event.error {
        return Err(super::error::classify_event(error));
    }
    if state.id.is_none() {
        state.id = Some(response::completion_id(event.response_id.as_deref(), &state.seed));
    }
    if state.model.is_none() {
        state.model = event.model_version.as_deref().map(str::to_owned);
    }
    if let Some(meta) = event.usage_metadata.as_ref().filter(|m| m.has_counts()) {
        state.usage = Some(response::usage(meta));
    }

    let mut deltas = Vec::new();
    let mut finishes = Vec::new();
    for (position, candidate) in event.candidates.iter().enumerate() {
        let index = candidate.index.unwrap_or(position as u32);
        if state.candidate(index).finished {
            // Nothing may follow a finish; a server that sends more is ignored rather than trusted.
            continue;
        }
        let mut text = String::new();
        let mut calls = Vec::new();
        for part in candidate.content.iter().flat_map(|c| &c.parts) {
            if let Some(call) = &part.function_call {
                let next = state.candidate(index).tool_calls + calls.len() as u32;
                let call = response::tool_call(part.thought_signature.as_deref(), call, &state.seed, state.next_call);
                state.next_call += 1;
                calls.push(json!({
                    "index": next,
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }));
            } else if let Some(t) = part.answer_text() {
                text.push_str(t);
            }
        }
        let candidate_state = state.candidate(index);
        let role = (!candidate_state.role_sent).then_some(Role::Assistant);
        if !text.is_empty() || !calls.is_empty() {
            candidate_state.role_sent = true;
            candidate_state.tool_calls += calls.len() as u32;
            deltas.push(ChunkChoice {
                index,
                delta: ChunkDelta {
                    role,
                    content: (!text.is_empty()).then_some(text),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                },
                finish_reason: None,
            });
        }
        if let Some(reason) = candidate.finish_reason.as_deref() {
            let role = (!candidate_state.role_sent).then_some(Role::Assistant);
            candidate_state.role_sent = true;
            candidate_state.finished = true;
            let called_tools = candidate_state.tool_calls > 0;
            finishes.push(ChunkChoice {
                index,
                delta: ChunkDelta {
                    content: role.map(|_| String::new()),
                    role,
                    tool_calls: None,
                },
                finish_reason: Some(response::finish_reason(reason, called_tools).to_owned()),
            });
        }
    }
    let blocked = event.prompt_feedback.as_ref().is_some_and(|f| f.block_reason.is_some());
    if event.candidates.is_empty() && blocked && state.candidates.is_empty() {
        let candidate = state.candidate(0);
        candidate.role_sent = true;
        candidate.finished = true;
        finishes.push(ChunkChoice {
            index: 0,
            delta: ChunkDelta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                tool_calls: None,
            },
            finish_reason: Some("content_filter".to_owned()),
        });
    }

    let mut out = Vec::with_capacity(2);
    if !deltas.is_empty() {
        out.push(state.chunk(deltas, None)?);
    }
    if !finishes.is_empty() {
        out.push(state.chunk(finishes, None)?);
    }
    Ok(out)
}

/// What the end of the stream means: the usage chunk of a whole answer, or the error of a cut one.
pub(crate) fn finish(state: &StreamState) -> Result<Option<StreamEvent>, ProviderError> {
    if !state.complete() {
        return Err(ProviderError::Truncated {
            detail: "the Gemini stream ended before every candidate reported a finishReason".to_owned(),
        });
    }
    match state.usage {
        Some(usage) => state.chunk(Vec::new(), Some(usage)).map(Some),
        None => Ok(None),
    }
}

impl SseTranslator for StreamState {
    fn event(&mut self, data: String, out: &mut VecDeque<StreamEvent>) -> Result<Flow, ProviderError> {
        out.extend(step(&data, self)?);
        Ok(Flow::Continue)
    }

    /// Gemini streams have no end marker: the close is the end, whole if every candidate finished.
    fn close(&mut self, out: &mut VecDeque<StreamEvent>) -> Result<(), ProviderError> {
        out.extend(finish(self)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use futures_util::StreamExt;

    use serde_json::Value;

    use super::*;

    fn chunk_json(event: &StreamEvent) -> Value {
        serde_json::from_slice(&event.data).unwrap()
    }

    fn state() -> StreamState {
        StreamState::new(Context {
            model: "gemini-2.5-flash",
            created: 1_700_000_000,
            seed: "seed".to_owned(),
        })
    }

    /// A text answer as `streamGenerateContent?alt=sse` sends it (the shape of Google's reference: every
    /// event a GenerateContentResponse, usage counts on the last, a signature on an empty final part).
    const TEXT_TRANSCRIPT: &str = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Bonjour\"}],\"role\": \"model\"}}],",
        "\"usageMetadata\": {\"trafficType\": \"ON_DEMAND\"},\"modelVersion\": \"gemini-2.5-flash\",",
        "\"responseId\": \"tTCwacuE\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" \u{e0} vous \u{2014} \\\"cit\u{e9}\\\"\"}],",
        "\"role\": \"model\"}}],\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"tTCwacuE\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\",\"thoughtSignature\": \"AY89a18i/w+=\"}],",
        "\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,",
        "\"candidatesTokenCount\": 6,\"totalTokenCount\": 14,\"thoughtsTokenCount\": 0},",
        "\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"tTCwacuE\"}\r\n\r\n",
    );

    /// A parallel function call answer from a thinking model.
    const TOOL_TRANSCRIPT: &str = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"get_weather\",",
        "\"args\": {\"city\": \"Paris\"}},\"thoughtSignature\": \"CiQBc2ln\"},{\"functionCall\": {\"name\": ",
        "\"get_weather\",\"args\": {\"city\": \"Rome\"}}}],\"role\": \"model\"},\"index\": 0}],",
        "\"modelVersion\": \"gemini-3-flash\"}\n\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\"}],\"role\": \"model\"},",
        "\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 30,",
        "\"candidatesTokenCount\": 20,\"thoughtsTokenCount\": 12,\"cachedContentTokenCount\": 10,",
        "\"totalTokenCount\": 62},\"modelVersion\": \"gemini-3-flash\"}\n\n",
    );

    /// Runs a transcript through the pure translation, event by event.
    fn translate(transcript: &str) -> Result<Vec<Value>, ProviderError> {
        let mut state = state();
        let mut out = Vec::new();
        for block in transcript.split("\n\n") {
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    out.extend(step(data, &mut state)?.iter().map(chunk_json));
                }
            }
        }
        out.extend(finish(&state)?.iter().map(chunk_json));
        Ok(out)
    }

    /// Runs byte chunks through the real SSE parser and the stream driver.
    async fn drive(chunks: Vec<Vec<u8>>) -> Vec<Result<StreamEvent, String>> {
        let bytes = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
        crate::transport::sse_events(bytes, Duration::from_secs(5), state())
            .map(|r| r.map_err(|e| format!("{e:?}")))
            .collect()
            .await
    }

    #[test]
    fn a_text_stream_translates_to_openai_chunks() {
        let chunks = translate(TEXT_TRANSCRIPT).unwrap();
        let head = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-tTCwacuE", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": "gemini-2.5-flash", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                "usage": null})
        };
        assert_eq!(
            chunks,
            vec![
                head(json!({"role": "assistant", "content": "Bonjour"}), Value::Null),
                head(json!({"content": " \u{e0} vous \u{2014} \"cit\u{e9}\""}), Value::Null),
                head(json!({}), json!("stop")),
                json!({"id": "chatcmpl-tTCwacuE", "object": "chat.completion.chunk", "created": 1_700_000_000,
                    "model": "gemini-2.5-flash", "choices": [],
                    "usage": {"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14}}),
            ]
        );
    }

    #[test]
    fn a_tool_call_stream_translates_with_indices_ids_and_finish() {
        let chunks = translate(TOOL_TRANSCRIPT).unwrap();
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "tool_calls": [
                {"index": 0, "id": "call_seed_0__ts_CiQBc2ln", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"index": 1, "id": "call_seed_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]})
        );
        assert_eq!(chunks[0]["id"], json!("chatcmpl-seed"));
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], json!("tool_calls"));
        assert_eq!(
            chunks[2]["usage"],
            json!({"prompt_tokens": 30, "completion_tokens": 32, "total_tokens": 62,
                "prompt_tokens_details": {"cached_tokens": 10},
                "completion_tokens_details": {"reasoning_tokens": 12}})
        );
    }

    #[test]
    fn usage_only_marks_the_last_chunk() {
        let mut state = state();
        let mut events = Vec::new();
        for block in TEXT_TRANSCRIPT.split("\r\n\r\n").filter(|b| !b.is_empty()) {
            events.extend(step(block.trim_start_matches("data: "), &mut state).unwrap());
        }
        assert!(events.iter().all(|e| !e.usage_only && e.usage.is_none()));
        let last = finish(&state).unwrap().unwrap();
        assert!(last.usage_only);
        assert_eq!(last.usage, Some(TokenUsage::new(8, 6)));
    }

    #[test]
    fn a_stream_without_finish_reason_is_truncated() {
        let cut = TEXT_TRANSCRIPT
            .split("\r\n\r\n")
            .take(2)
            .collect::<Vec<_>>()
            .join("\r\n\r\n");
        assert!(matches!(translate(&cut), Err(ProviderError::Truncated { .. })));
        assert!(matches!(finish(&state()), Err(ProviderError::Truncated { .. })));
    }

    #[test]
    fn a_blocked_prompt_streams_one_content_filter_chunk() {
        let chunks = translate(
            "data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"}, \"usageMetadata\": \
             {\"promptTokenCount\": 5, \"totalTokenCount\": 5}}\n\n",
        )
        .unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            chunks[0]["choices"],
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}])
        );
        assert_eq!(chunks[1]["usage"]["prompt_tokens"], json!(5));
    }

    #[test]
    fn errors_and_garbage_inside_the_stream_fail_it() {
        let overloaded = "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\", \
                          \"status\": \"UNAVAILABLE\"}}\n\n";
        assert!(matches!(translate(overloaded), Err(ProviderError::Overloaded { .. })));
        assert!(matches!(
            step("{not json", &mut state()),
            Err(ProviderError::Protocol { .. })
        ));
        assert!(step("  ", &mut state()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_sse_parser_gives_the_same_chunks_at_every_split() {
        for transcript in [TEXT_TRANSCRIPT, TOOL_TRANSCRIPT] {
            let bytes = transcript.as_bytes();
            let whole = drive(vec![bytes.to_vec()]).await;
            let expected: Vec<Value> = translate(transcript).unwrap();
            let got: Vec<Value> = whole.iter().map(|r| chunk_json(r.as_ref().unwrap())).collect();
            assert_eq!(got, expected, "the driver agrees with the pure translation");
            for split in 1..bytes.len() {
                let parts = vec![bytes[..split].to_vec(), bytes[split..].to_vec()];
                assert_eq!(drive(parts).await, whole, "split at byte {split}");
            }
            let single_bytes = bytes.iter().map(|b| vec![*b]).collect();
            assert_eq!(drive(single_bytes).await, whole, "one byte at a time");
        }
    }

    #[tokio::test]
    async fn the_driver_reports_a_cut_stream_after_its_chunks() {
        let cut = TEXT_TRANSCRIPT
            .split("\r\n\r\n")
            .take(2)
            .collect::<Vec<_>>()
            .join("\r\n\r\n")
            + "\r\n\r\n";
        let events = drive(vec![cut.into_bytes()]).await;
        assert_eq!(events.len(), 3);
        assert!(events[..2].iter().all(Result::is_ok));
        assert!(
            events[2].as_ref().unwrap_err().starts_with("Truncated"),
            "{:?}",
            events[2]
        );
    }
}
