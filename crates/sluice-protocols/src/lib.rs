//! The inbound protocols other than chat completions, translated to and from OpenAI chat completions,
//! the gateway's lingua franca, as pure functions.
//!
//! Coding agents speak two protocols that are not chat completions: Codex and the newer OpenAI SDK code
//! use the **Responses API** ([`responses`]), Claude Code and the Anthropic SDKs the **Messages API**
//! ([`messages`]). Each is translated into a [`sluice_api::ChatCompletionRequest`], so budgets, failover,
//! tenants and the ledger apply exactly as for chat, and the chat answer is translated back: a complete
//! `chat.completion` body into the protocol's response object, a stream of `chat.completion.chunk`s
//! into the protocol's stream events (server-sent events, with the `event:` names the vendor uses).
//!
//! # What each module translates
//!
//! - [`responses`]: `POST /v1/responses`. `input` (a string or items: messages with `input_text` and
//!   `input_image` parts, `function_call`, `function_call_output`), `instructions`, function `tools`,
//!   `tool_choice`, `text.format` (`text`, `json_object`, `json_schema`) and `text.verbosity`,
//!   `max_output_tokens`, `temperature`, `top_p`, `reasoning.effort` (chat's `reasoning_effort`),
//!   `metadata`, `parallel_tool_calls`, `stream`, `user`, `prompt_cache_key`, `safety_identifier`,
//!   `service_tier`. Back: the `response` object (`message`, `function_call` and `reasoning` output items,
//!   usage with cached and reasoning tokens, `incomplete` on a length cut) and its stream, ended by
//!   `response.completed`, `response.incomplete`, or `response.failed` when the stream broke.
//! - [`messages`]: `POST /v1/messages` and `/v1/messages/count_tokens` for upstreams that are not
//!   Anthropic (to Anthropic the body goes byte for byte: `sluice_providers` has that pass-through). System
//!   prompts, text and image blocks, `tool_use` / `tool_result`, tools, `tool_choice`, `stop_sequences`,
//!   `max_tokens`, `temperature`, `top_p`, `top_k`, `metadata.user_id`, `thinking` (as a reasoning
//!   effort), `stream`. Back: the `message` (blocks, `stop_reason`, usage with cache reads and writes),
//!   its stream ended by `message_stop` or an `error` event, errors in Anthropic's shape with the type
//!   Anthropic uses per status, model id aliases and `GET /v1/models` in Anthropic's format.
//!
//! # What is refused, and why
//!
//! What would change the answer and cannot be expressed in chat completions is refused with a 400 naming
//! the field ([`ProtocolError::param`]), never dropped silently:
//!
//! - stored state: `previous_response_id`, `conversation`, `store: true`, `background: true`, stored
//!   `prompt`s and `item_reference` items (Sluice keeps no conversation state; a client sends the whole
//!   conversation, as Codex does with `store: false`). `store` left out is accepted: it is what the
//!   official SDKs send by default, and nothing is stored;
//! - tools run by the vendor's platform: OpenAI's built-in tools (`web_search`, `file_search`,
//!   `code_interpreter`, `computer_use_preview`, `mcp`, ...) and Anthropic's server tools; and OpenAI's
//!   free-form `custom` tools, whose grammar a chat function tool cannot carry;
//! - content chat completions has no place for: files, images by file id, images inside tool results,
//!   documents, search results;
//! - any top-level field this crate does not know, so a new vendor feature is refused by name rather than
//!   ignored.
//!
//! Options that ask only for more detail than Sluice can give are accepted without effect: Responses'
//! `include` (encrypted reasoning, logprobs of built-in tools' results), `reasoning.summary`,
//! `max_tool_calls` (built-in tools only), `stream_options`; Anthropic's `cache_control` and
//! `service_tier`. Reasoning items a client sends back (Codex does, every turn) and earlier `thinking`
//! blocks are left out of the chat request: they are the model's own earlier output, in a form only the
//! vendor that made it can read.
//!
//! # Streams
//!
//! The stream translators ([`responses::ResponsesStream`], [`messages::MessagesStream`]) are pure state
//! machines: each takes one chunk's JSON (a `StreamEvent`'s data as the adapters emit it) and appends the
//! SSE text to send; `finish` ends a clean stream with the usage (the gateway's record, or the usage
//! chunk's), `fail` ends a broken one with the protocol's error event. Their output does not depend on how
//! the upstream's bytes were cut (tested split at every byte).

pub mod error;
pub mod messages;
pub mod responses;

mod chat;
mod sse;
mod text_or;

pub use error::{FailureKind, ProtocolError, StreamFailure};
