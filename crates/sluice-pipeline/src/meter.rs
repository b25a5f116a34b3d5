//! The one place a stream's usage is read: as its chunks pass to the client, the usage they report is
//! kept; when the stream ends, breaks or is dropped, it settles the key's reservation, the tenant's, and
//! writes the ledger entry, all with that one usage. A stream whose vendor reports none (some
//! OpenAI-compatible servers), or that ends before its report, is counted from the text that passed
//! through, marked estimated.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use sluice_api::{TokenUsage, UsageSource};
use sluice_providers::{EventStream, ProviderError, StreamEvent};
use sluice_router::KeySettlement;

use crate::ledger::Entry;
use crate::tally::CompletionTally;

/// What settling needs, held until the stream is over.
struct Open {
    key: KeySettlement,
    entry: Entry,
}

/// A stream of an answer's chunks that meters itself; see the module docs.
pub struct Metered {
    events: EventStream,
    open: Option<Open>,
    /// The usage reported, and whether the vendor reported it (rather than the gateway's count).
    usage: Option<(TokenUsage, UsageSource)>,
    tally: CompletionTally,
    prompt_tokens: u64,
    pending_error: Option<ProviderError>,
    /// The inner stream has ended; it must not be polled again.
    ended: bool,
    /// The request's span, current when the stream was made: the body is read after the handler
    /// returned, outside it, and the settling and the ledger entry log in it.
    span: tracing::Span,
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered")
            .field("usage", &self.usage)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Metered {
    pub(crate) fn new(
        events: EventStream,
        key: KeySettlement,
        entry: Entry,
        encoding: sluice_tokens::Encoding,
        prompt_tokens: u64,
    ) -> Self {
        Self {
            events,
            open: Some(Open { key, entry }),
            usage: None,
            tally: CompletionTally::new(encoding),
            prompt_tokens,
            pending_error: None,
            ended: false,
            span: tracing::Span::current(),
        }
    }

    /// The span of the request this stream answers, for what is logged about it as it is read.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The usage known so far, if any.
    pub fn usage(&self) -> Option<&TokenUsage> {
        self.usage.as_ref().map(|(usage, _)| usage)
    }

    /// Settles everything with the usage known, or counted, and writes the ledger entry with `status`.
    fn finish(&mut self, status: u16) {
        let Some(Open { key, mut entry }) = self.open.take() else {
            return;
        };
        let (usage, source) = match self.usage {
            Some(known) => known,
            None => (self.counted(), UsageSource::Estimated),
        };
        let _entered = self.span.enter();
        key.settle(Some(&usage), source == UsageSource::Vendor);
        entry.observe(usage, source);
        entry.finish(status);
    }

    /// Settles a stream that broke after its first chunk: the client got an error event (a 502).
    fn broken(&mut self, err: &ProviderError) {
        if let Some(open) = &mut self.open {
            open.entry.fail(err.kind());
        }
        self.finish(502);
    }

    /// The gateway's own count: the prompt as counted before sending, the completion from the text that
    /// passed through.
    fn counted(&mut self) -> TokenUsage {
        let encoding = self.tally.encoding();
        let tally = std::mem::replace(&mut self.tally, CompletionTally::new(encoding));
        TokenUsage::new(
            self.prompt_tokens,
            if tally.is_empty() { 0 } else { tally.finish().tokens },
        )
    }

    /// The gateway's own usage chunk, when the vendor sent none and there is something to count, so the
    /// client that asked for usage gets it too.
    fn estimated_usage(&mut self) -> Option<StreamEvent> {
        if self.usage.is_some() || self.tally.is_empty() {
            return None;
        }
        let encoding = self.tally.encoding();
        let counted = std::mem::replace(&mut self.tally, CompletionTally::new(encoding)).finish();
        let usage = TokenUsage::new(self.prompt_tokens, counted.tokens);
        self.usage = Some((usage, UsageSource::Estimated));
        let chunk = serde_json::json!({
            "id": counted.id,
            "object": "chat.completion.chunk",
            "created": counted.created,
            "model": counted.model,
            "choices": [],
            "usage": usage.to_openai(),
        });
        Some(StreamEvent {
            data: serde_json::to_vec(&chunk).map(bytes::Bytes::from).unwrap_or_default(),
            usage: Some(usage),
            usage_only: true,
            estimated: true,
        })
    }
}

impl Stream for Metered {
    type Item = Result<StreamEvent, ProviderError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(err) = self.pending_error.take() {
            self.ended = true;
            self.broken(&err);
            return Poll::Ready(Some(Err(err)));
        }
        if self.ended {
            self.finish(200);
            return Poll::Ready(None);
        }
        match self.events.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(event))) => {
                if !event.usage_only
                    && let Some(open) = &mut self.open
                {
                    open.entry.log_chunk(&event.data);
                }
                match event.usage {
                    Some(usage) => {
                        let source = if event.estimated {
                            UsageSource::Estimated
                        } else {
                            UsageSource::Vendor
                        };
                        self.usage = Some((usage.clamped(), source));
                        self.tally.clear();
                    }
                    None if self.usage.is_none() => self.tally.push(&event.data),
                    None => {}
                }
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(Some(Err(err))) => {
                self.ended = true;
                match self.estimated_usage() {
                    Some(usage) => {
                        self.pending_error = Some(err);
                        Poll::Ready(Some(Ok(usage)))
                    }
                    None => {
                        self.broken(&err);
                        Poll::Ready(Some(Err(err)))
                    }
                }
            }
            Poll::Ready(None) => {
                self.ended = true;
                match self.estimated_usage() {
                    Some(usage) => Poll::Ready(Some(Ok(usage))),
                    None => {
                        self.finish(200);
                        Poll::Ready(None)
                    }
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (499, nginx's "client closed"). What the vendor
        // generated until then is billed, and counted here.
        self.finish(499);
    }
}
