//! An upstream's chat chunks as the event stream of the protocol the client speaks (Responses or
//! Messages), through that protocol's translator, one chunk at a time.

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sluice_api::TokenUsage;
use sluice_pipeline::Metered;
use sluice_protocols::messages::MessagesStream;
use sluice_protocols::responses::ResponsesStream;
use sluice_protocols::{FailureKind, ProtocolError, StreamFailure};

use crate::answer;

/// What the stream loop needs of a protocol's translator: both of `sluice_protocols`' have it.
pub(crate) trait StreamTranslator: Send + 'static {
    fn chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError>;
    fn finish(&mut self, usage: Option<&TokenUsage>, out: &mut BytesMut) -> Result<(), ProtocolError>;
    fn fail(&mut self, failure: StreamFailure<'_>, out: &mut BytesMut);
}

impl StreamTranslator for ResponsesStream {
    fn chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
        ResponsesStream::chunk(self, data, out)
    }
    fn finish(&mut self, usage: Option<&TokenUsage>, out: &mut BytesMut) -> Result<(), ProtocolError> {
        ResponsesStream::finish(self, usage, out)
    }
    fn fail(&mut self, failure: StreamFailure<'_>, out: &mut BytesMut) {
        ResponsesStream::fail(self, failure, out);
    }
}

impl StreamTranslator for MessagesStream {
    fn chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
        MessagesStream::chunk(self, data, out)
    }
    fn finish(&mut self, usage: Option<&TokenUsage>, out: &mut BytesMut) -> Result<(), ProtocolError> {
        MessagesStream::finish(self, usage, out)
    }
    fn fail(&mut self, failure: StreamFailure<'_>, out: &mut BytesMut) {
        MessagesStream::fail(self, failure, out);
    }
}

/// The chat chunks of `events` through `translator`: each chunk's events sent as they are made (a chunk
/// that makes none sends nothing), the protocol's end with the recorded usage when the upstream ended,
/// or its error event when the upstream broke or sent a chunk that cannot be translated. Dropping the
/// stream (the client left) drops `events`, which records what was billed and cancels the upstream.
pub(crate) fn translate<T: StreamTranslator>(
    events: Box<Metered>,
    translator: T,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    futures_util::stream::unfold(Some((events, translator)), move |state| async move {
        let (mut events, mut translator) = state?;
        let mut out = BytesMut::new();
        loop {
            match events.next().await {
                Some(Ok(event)) => {
                    if let Err(err) = translator.chunk(&event.data, &mut out) {
                        events
                            .span()
                            .in_scope(|| tracing::warn!(error = %err, "a chunk could not be translated"));
                        let failure = StreamFailure {
                            kind: FailureKind::Upstream,
                            message: "The upstream sent a chunk the gateway could not translate; the answer \
                                      is incomplete.",
                        };
                        translator.fail(failure, &mut out);
                        return Some((Ok(out.freeze()), None));
                    }
                    if !out.is_empty() {
                        return Some((Ok(out.freeze()), Some((events, translator))));
                    }
                }
                Some(Err(err)) => {
                    answer::log_broken(&events, &err);
                    let (kind, message) = answer::stream_failure(&err);
                    translator.fail(
                        StreamFailure {
                            kind,
                            message: &message,
                        },
                        &mut out,
                    );
                    return Some((Ok(out.freeze()), None));
                }
                None => {
                    if let Err(err) = translator.finish(events.usage(), &mut out) {
                        events
                            .span()
                            .in_scope(|| tracing::warn!(error = %err, "the stream's end could not be translated"));
                    }
                    return Some((Ok(out.freeze()), None));
                }
            }
        }
    })
}
