//! An answer in OpenAI's format: a `chat.completion`, or the `chat.completion.chunk`s of a stream.

use serde_json::json;
use sluice_api::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, Choice, ChunkChoice, ChunkDelta, FunctionCall,
    ResponseMessage, Role, ToolCall,
};

use crate::{SimAnswer, SimReply, SimToolCall};

impl SimAnswer {
    /// The id OpenAI-format faces give the answer's tool call.
    pub fn openai_tool_call_id(&self) -> String {
        format!("call_sim{:08}", self.serial)
    }

    fn openai_tool_call(&self, call: &SimToolCall) -> ToolCall {
        ToolCall {
            id: self.openai_tool_call_id(),
            kind: "function".to_owned(),
            function: FunctionCall {
                name: call.name.clone(),
                arguments: call.arguments_json(),
            },
        }
    }

    /// The answer as a non-streaming completion. (The request is read for nothing any more: the answer
    /// knows its finish reason; the parameter stays for callers.)
    pub fn completion(&self, _request: &ChatCompletionRequest) -> ChatCompletionResponse {
        let (content, tool_calls) = match &self.reply {
            SimReply::Text(pieces) => (Some(pieces.concat()), None),
            SimReply::ToolCall(call) => (None, Some(vec![self.openai_tool_call(call)])),
        };
        ChatCompletionResponse {
            id: self.id.clone(),
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: Role::Assistant,
                    content,
                    tool_calls,
                    refusal: None,
                },
                finish_reason: Some(self.finish.openai().to_owned()),
                logprobs: None,
            }],
            usage: Some(self.usage().to_openai()),
            extra: Default::default(),
        }
    }

    /// The answer as stream chunks: the role, one chunk per token (for a tool call: its name, then its
    /// arguments in pieces), the finish reason, and the usage chunk when `include_usage` is set.
    pub fn chunks(&self, request: &ChatCompletionRequest, include_usage: bool) -> Vec<ChatCompletionChunk> {
        self.stream_chunks(request, include_usage)
            .into_iter()
            .map(|(chunk, _)| chunk)
            .collect()
    }

    /// [`SimAnswer::chunks`], each with the visible tokens generated once it is sent.
    pub fn stream_chunks(
        &self,
        _request: &ChatCompletionRequest,
        include_usage: bool,
    ) -> Vec<(ChatCompletionChunk, u64)> {
        let chunk = |delta: ChunkDelta, finish: Option<&str>| ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(str::to_owned),
            }],
            usage: None,
        };
        let mut chunks = Vec::with_capacity(self.completion_tokens() as usize + 3);
        match &self.reply {
            SimReply::Text(pieces) => {
                chunks.push((
                    chunk(
                        ChunkDelta {
                            role: Some(Role::Assistant),
                            content: Some(String::new()),
                            tool_calls: None,
                        },
                        None,
                    ),
                    0,
                ));
                for (i, piece) in pieces.iter().enumerate() {
                    let delta = ChunkDelta {
                        content: Some(piece.to_string()),
                        ..ChunkDelta::default()
                    };
                    chunks.push((chunk(delta, None), self.tokens_through(i + 1)));
                }
            }
            SimReply::ToolCall(call) => {
                let head = ChunkDelta {
                    role: Some(Role::Assistant),
                    content: None,
                    tool_calls: Some(vec![json!({
                        "index": 0,
                        "id": self.openai_tool_call_id(),
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""}
                    })]),
                };
                chunks.push((chunk(head, None), 0));
                for (i, piece) in call.argument_pieces().into_iter().enumerate() {
                    let delta = ChunkDelta {
                        tool_calls: Some(vec![json!({"index": 0, "function": {"arguments": piece}})]),
                        ..ChunkDelta::default()
                    };
                    chunks.push((chunk(delta, None), self.tokens_through(i + 1)));
                }
            }
        }
        let all = self.completion_tokens();
        chunks.push((chunk(ChunkDelta::default(), Some(self.finish.openai())), all));
        if include_usage {
            let usage = ChatCompletionChunk {
                choices: Vec::new(),
                usage: Some(self.usage().to_openai()),
                ..chunk(ChunkDelta::default(), None)
            };
            chunks.push((usage, all));
        }
        chunks
    }
}
