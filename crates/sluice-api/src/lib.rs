//! OpenAI wire types: the lingua franca of Sluice.
//!
//! Every other crate speaks these types. Provider adapters translate vendor formats to and from them;
//! nothing else knows a vendor's format. Fields the gateway does not need to understand are kept in an
//! `extra` map on each type so that they pass through to the upstream untouched.

pub mod chat;
pub mod embeddings;
pub mod error;
pub mod json_text;
pub mod models;
pub mod parse;
pub mod usage;

pub use chat::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Choice, ChunkChoice, ChunkDelta,
    CompletionTokensDetails, ContentPart, Extra, FunctionCall, FunctionDefinition, ImageUrl, MessageContent,
    PromptTokensDetails, ResponseMessage, Role, Stop, StreamOptions, Tool, ToolCall, ToolChoice, UpstreamChatRequest,
    Usage,
};
pub use embeddings::{
    Embedding, EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, UpstreamEmbeddingRequest,
};
pub use error::{ErrorBody, ErrorObject};
pub use models::{Model, ModelList};
pub use parse::{ParseError, from_json_bytes, parse_json};
pub use usage::{MAX_REQUEST_TOKENS, TokenUsage, UsageSource};
