//! Chat completions as the translators read them back: a complete `chat.completion` and the
//! `chat.completion.chunk`s of a stream.
//!
//! Read leniently, and borrowing from the bytes where no escape forces a copy: the translators need the
//! text, refusal, tool calls, finish reason and usage of the first choice, and the reasoning text some
//! OpenAI-compatible servers add (`reasoning_content`, as DeepSeek and vLLM send it, or `reasoning`, as
//! OpenRouter does). Everything else is ignored.

use std::borrow::Cow;

use serde::Deserialize;
use sluice_api::{TokenUsage, Usage};

use crate::ProtocolError;

/// A complete `chat.completion` body.
#[derive(Debug, Deserialize)]
pub(crate) struct Completion<'a> {
    #[serde(default, borrow)]
    pub(crate) model: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) choices: Vec<CompletionChoice<'a>>,
    #[serde(default)]
    pub(crate) usage: Option<Usage>,
}

/// One choice of a completion.
#[derive(Debug, Deserialize)]
pub(crate) struct CompletionChoice<'a> {
    #[serde(default)]
    pub(crate) index: u32,
    #[serde(borrow)]
    pub(crate) message: CompletionMessage<'a>,
    #[serde(default, borrow)]
    pub(crate) finish_reason: Option<Cow<'a, str>>,
}

/// The message of a choice.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CompletionMessage<'a> {
    #[serde(default, borrow)]
    pub(crate) content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text_or_other")]
    pub(crate) reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) tool_calls: Option<Vec<CompletionToolCall<'a>>>,
}

impl<'a> CompletionMessage<'a> {
    /// The reasoning text, under whichever name the server used.
    pub(crate) fn reasoning_text(&self) -> Option<&str> {
        self.reasoning_content
            .as_deref()
            .or(self.reasoning.as_deref())
            .filter(|t| !t.is_empty())
    }
}

/// A tool call of a complete message.
#[derive(Debug, Deserialize)]
pub(crate) struct CompletionToolCall<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) function: FunctionCall<'a>,
}

/// The function of a complete tool call.
#[derive(Debug, Deserialize)]
pub(crate) struct FunctionCall<'a> {
    #[serde(default, borrow)]
    pub(crate) name: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) arguments: Cow<'a, str>,
}

/// One `chat.completion.chunk`.
#[derive(Debug, Deserialize)]
pub(crate) struct Chunk<'a> {
    #[serde(default, borrow)]
    pub(crate) model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    pub(crate) usage: Option<Usage>,
}

/// One choice's delta in a chunk.
#[derive(Debug, Deserialize)]
pub(crate) struct ChunkChoice<'a> {
    #[serde(default)]
    pub(crate) index: u32,
    #[serde(default, borrow)]
    pub(crate) delta: Delta<'a>,
    #[serde(default, borrow)]
    pub(crate) finish_reason: Option<Cow<'a, str>>,
}

/// What is new in a chunk.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Delta<'a> {
    #[serde(default, borrow)]
    pub(crate) content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text_or_other")]
    pub(crate) reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

impl<'a> Delta<'a> {
    /// The new reasoning text, under whichever name the server used.
    pub(crate) fn reasoning_text(&self) -> Option<&str> {
        self.reasoning_content
            .as_deref()
            .or(self.reasoning.as_deref())
            .filter(|t| !t.is_empty())
    }
}

/// A fragment of a streamed tool call.
#[derive(Debug, Deserialize)]
pub(crate) struct ToolCallDelta<'a> {
    #[serde(default)]
    pub(crate) index: u32,
    #[serde(default, borrow)]
    pub(crate) id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) function: Option<FunctionDelta<'a>>,
}

/// The function part of a streamed tool call fragment.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    pub(crate) name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) arguments: Option<Cow<'a, str>>,
}

/// A string, or `None` for any other JSON value (some servers send `reasoning` as an object).
fn text_or_other<'de, D>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrOther<'a> {
        Text(#[serde(borrow)] Cow<'a, str>),
        Other(serde::de::IgnoredAny),
    }
    Ok(match TextOrOther::deserialize(deserializer)? {
        TextOrOther::Text(text) => Some(text),
        TextOrOther::Other(_) => None,
    })
}

/// Reads a complete chat completion.
pub(crate) fn read_completion(body: &[u8]) -> Result<Completion<'_>, ProtocolError> {
    serde_json::from_slice(body)
        .map_err(|e| ProtocolError::answer(format!("the completion is not a chat.completion: {e}")))
}

/// Reads one chunk of a stream.
pub(crate) fn read_chunk(data: &[u8]) -> Result<Chunk<'_>, ProtocolError> {
    serde_json::from_slice(data)
        .map_err(|e| ProtocolError::answer(format!("a chunk is not a chat.completion.chunk: {e}")))
}

/// The usage to report: the caller's record when it has one (it may know cache writes the OpenAI usage
/// object cannot carry), else the answer's own.
pub(crate) fn usage_of(given: Option<&TokenUsage>, reported: Option<&Usage>) -> Option<TokenUsage> {
    given.copied().or_else(|| reported.map(TokenUsage::from_openai))
}
