//! The Anthropic Messages pass-through: a client's `/v1/messages` body sent to an upstream that speaks
//! the Messages API natively, byte for byte but the model id, and its answer returned byte for byte, with
//! the usage read out on the way.
//!
//! Re-serialising a Messages body breaks what Claude Code depends on: thinking blocks whose signatures
//! cover their exact text, `cache_control` breakpoints, beta features the gateway does not know. So an
//! adapter that can ([`crate::ChatProvider::messages_passthrough`]) takes the raw body and the client's
//! `anthropic-version` and `anthropic-beta` headers, swaps the model with
//! [`crate::model_field::ModelField`], and hands back the vendor's bytes: a complete body, or the SSE
//! frames of a stream, each frame's bytes untouched (`event:` line included).

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use sluice_api::TokenUsage;

use crate::{BoxFuture, ProviderError, RateLimitSnapshot, UpstreamKey};

/// An adapter whose upstream takes Anthropic Messages bodies as they are.
pub trait MessagesPassthrough: Send + Sync {
    /// Sends `POST /v1/messages` with the client's body (model swapped) and answers with the vendor's
    /// bytes. A stream (the upstream answered `text/event-stream`) comes back as its frames once the
    /// response head arrived; the vendor's `error` event, a stream cut before `message_stop` and an idle
    /// timeout end it with an `Err` item instead of a frame, classified as the Anthropic adapter classifies
    /// them.
    fn messages<'a>(&'a self, call: MessagesCall<'a>) -> BoxFuture<'a, Result<MessagesReply, ProviderError>>;

    /// Sends `POST /v1/messages/count_tokens` the same way and reads `input_tokens` from the answer.
    fn count_tokens<'a>(&'a self, call: MessagesCall<'a>) -> BoxFuture<'a, Result<TokenCount, ProviderError>>;
}

/// One pass-through call.
#[derive(Debug, Clone, Copy)]
pub struct MessagesCall<'a> {
    /// The client's body, exactly as received.
    pub body: &'a Bytes,
    /// The vendor's model id, put in place of the body's `model`.
    pub model: &'a str,
    /// The key to call with.
    pub key: &'a UpstreamKey,
    /// The client's request headers. Only `anthropic-version` (Anthropic's current version when absent)
    /// and `anthropic-beta` (every value) are forwarded.
    pub client_headers: &'a http::HeaderMap,
}

/// A pass-through answer.
#[derive(Debug)]
pub struct MessagesReply {
    /// The answer itself.
    pub body: MessagesBody,
    /// What the vendor said about the key's remaining limits.
    pub limits: RateLimitSnapshot,
}

/// A complete body or a stream of frames.
pub enum MessagesBody {
    /// The vendor's `message` JSON, byte for byte.
    Complete {
        /// The body.
        body: Bytes,
        /// The usage it reports, if it reports one.
        usage: Option<TokenUsage>,
    },
    /// The vendor's SSE frames, byte for byte.
    Stream(FrameStream),
}

impl std::fmt::Debug for MessagesBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessagesBody::Complete { body, usage } => f
                .debug_struct("Complete")
                .field("bytes", &body.len())
                .field("usage", usage)
                .finish(),
            MessagesBody::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// The frames of a passed-through stream. A stream that cannot finish cleanly ends with an `Err` item,
/// so a cut answer never looks complete; one that ends cleanly ends after the `message_stop` frame.
pub type FrameStream = Pin<Box<dyn Stream<Item = Result<RawFrame, ProviderError>> + Send>>;

/// One SSE frame as the vendor sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The frame's bytes, up to and including the blank line that ends it.
    pub bytes: Bytes,
    /// The usage of the call so far, set on the frames that change it (`message_start` with the input
    /// and cache counts, `message_delta` with the cumulative output): the last one seen is the call's
    /// usage, also when the stream breaks later.
    pub usage: Option<TokenUsage>,
}

/// A `count_tokens` answer.
#[derive(Debug)]
pub struct TokenCount {
    /// The vendor's body, byte for byte.
    pub body: Bytes,
    /// Its `input_tokens`.
    pub input_tokens: u64,
    /// What the vendor said about the key's remaining limits.
    pub limits: RateLimitSnapshot,
}
