//! Token counting as OpenAI bills it: which encoding a model uses, how many tokens a chat prompt costs,
//! and how many a streamed completion produced when the vendor sends no usage.
//!
//! - [`for_model`] maps a vendor model id to its encoding: `o200k_base` for gpt-4o, gpt-4.1, gpt-5 and the
//!   o-series, `cl100k_base` for gpt-4 and gpt-3.5, and a configurable fallback for every other vendor's
//!   models, whose counts are then marked [`Exactness::Estimate`]. Each count says whether it is exact
//!   ([`TokenCount`]), so the usage ledger can record estimates as such.
//! - [`count_chat`] counts a prompt by the rules of OpenAI's cookbook (per-message overhead, names, reply
//!   priming, tools, images by detail and size); [`count_text`] counts plain text.
//! - [`CompletionCounter`] counts streamed text deltas, tokens that span deltas once.
//! - Bounded work on any input: counting is linear in the input whatever it holds; [`count_chat_with_limit`]
//!   and [`fits`] stop once past a limit; [`upper_bound`] bounds a prompt without tokenizing (a token is at
//!   least a byte); [`count_chat_offloaded`] moves large prompts off the async executor to a bounded pool.
//!
//! Tokenization is tiktoken's byte-pair merge over compact vocabularies compiled in (`vocab/*.ranks`,
//! extracted from `bpe-openai`'s tables, which the tests compare with; nothing is downloaded), with an
//! ASCII fast path for splitting text into pieces and a lookup for pieces that are one token; counts are
//! identical to tiktoken's. Long texts' counts are cached (`text_cache.rs`): system prompts and
//! conversations come back on every request and every turn. Each vocabulary loads on first use, once
//! (about 8 MiB resident for o200k_base; [`EncodingName::preload`] loads it earlier).
//! Measurements and the reasons for the choice: `docs/benchmarks.md`, "Token counting".

mod chat;
mod encoding;
pub mod image;
mod offload;
mod ranks;
mod split;
mod stream;
mod text_cache;

pub use chat::{count_chat, count_chat_with_limit, fits, upper_bound};
pub use encoding::{
    Encoding, EncodingName, Exactness, TokenCount, UnknownEncoding, count_text, count_text_with_limit, for_model,
};
pub use offload::{INLINE_MAX, blocking_permits, count_chat_offloaded, count_offloaded, counting_stats};
pub use stream::CompletionCounter;
pub use text_cache::{set_text_cache, text_cache_stats};
