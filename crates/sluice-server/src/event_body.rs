//! An event stream's body: the frames that are ready together leave as one HTTP chunk.
//!
//! An upstream's events often arrive several to a read (a fast model, a proxy that buffers, the end of
//! an answer with its usage), and every body frame costs hyper a chunk header and a copy, and the body's
//! layers a poll each: for a 20-event stream that arrived in one read this was about a tenth of the
//! gateway's work per stream. Nothing waits here: a frame goes out as soon as the next one is not ready.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http_body::{Body, Frame, SizeHint};

/// A chunk stops taking frames once it holds this many bytes, well under hyper's write buffer.
const CHUNK_MAX: usize = 16 * 1024;

/// Where an event stream's frames come from: each is written straight into the chunk being built, so a
/// frame costs no buffer of its own.
pub(crate) trait Frames {
    /// Appends the next frame to `chunk` and answers `Ready(true)`, or `Ready(false)` at the end; appends
    /// nothing when `Pending`.
    fn poll_append(&mut self, cx: &mut Context<'_>, chunk: &mut BytesMut) -> Poll<bool>;
}

/// The frames of a stream of ready-made ones, copied into the chunk.
pub(crate) struct StreamFrames<S>(Pin<Box<S>>);

impl<S> StreamFrames<S> {
    pub(crate) fn new(frames: S) -> Self {
        Self(Box::pin(frames))
    }
}

impl<S: Stream<Item = Result<Bytes, Infallible>>> Frames for StreamFrames<S> {
    fn poll_append(&mut self, cx: &mut Context<'_>, chunk: &mut BytesMut) -> Poll<bool> {
        match std::task::ready!(self.0.poll_next_unpin(cx)) {
            Some(Ok(frame)) => {
                chunk.extend_from_slice(&frame);
                Poll::Ready(true)
            }
            None => Poll::Ready(false),
        }
    }
}

/// The frames of `F` as a body, those ready at the same poll joined into one chunk.
pub(crate) struct ReadyFrames<F> {
    frames: F,
    ended: bool,
}

impl<F> ReadyFrames<F> {
    pub(crate) fn new(frames: F) -> Self {
        Self { frames, ended: false }
    }
}

impl<F: Frames + Unpin> Body for ReadyFrames<F> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // Empty until the first frame: nothing is allocated for a poll that finds none.
        let mut chunk = BytesMut::new();
        if !std::task::ready!(this.frames.poll_append(cx, &mut chunk)) {
            this.ended = true;
            return Poll::Ready(None);
        }
        // Room for what the thread's last chunk held, so a chunk of many frames grows once rather than
        // doubling its way up from the first frame's size.
        thread_local!(static LAST_LEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
        chunk.reserve(LAST_LEN.get().min(CHUNK_MAX).saturating_sub(chunk.len()));
        while chunk.len() < CHUNK_MAX {
            match this.frames.poll_append(cx, &mut chunk) {
                Poll::Ready(true) => {}
                Poll::Ready(false) => {
                    this.ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        LAST_LEN.set(chunk.len());
        Poll::Ready(Some(Ok(Frame::data(chunk.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::stream;

    use super::*;

    /// The body's next frame's data; `None` at its end.
    async fn next<B: Body<Data = Bytes, Error = Infallible> + Unpin>(body: &mut B) -> Option<Bytes> {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        Some(frame.unwrap().into_data().unwrap())
    }

    fn frame(text: &str) -> Result<Bytes, Infallible> {
        Ok(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// The chunks a body gives, each as text.
    async fn chunks<B: Body<Data = Bytes, Error = Infallible> + Unpin>(mut body: B) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(data) = next(&mut body).await {
            out.push(String::from_utf8(data.to_vec()).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn frames_ready_together_leave_as_one_chunk() {
        let body = ReadyFrames::new(StreamFrames::new(stream::iter(["a", "b", "c"].map(frame))));
        assert_eq!(chunks(body).await, ["abc"]);
    }

    #[tokio::test]
    async fn a_frame_leaves_as_soon_as_the_next_is_not_ready() {
        // The channel's sender is polled by nobody: each frame is ready only once sent, and the body must
        // hand over what it has rather than wait for the next.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, Infallible>>();
        let mut body = ReadyFrames::new(StreamFrames::new(channel_frames(rx)));
        tx.send(frame("one")).unwrap();
        tx.send(frame("two")).unwrap();
        let first = next(&mut body).await.unwrap();
        assert_eq!(&first[..], b"onetwo");
        tx.send(frame("three")).unwrap();
        let second = next(&mut body).await.unwrap();
        assert_eq!(&second[..], b"three");
        drop(tx);
        assert!(next(&mut body).await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn a_chunk_stops_growing_at_its_limit() {
        let polled = Arc::new(AtomicUsize::new(0));
        let counter = polled.clone();
        let big = "x".repeat(CHUNK_MAX / 2 + 1);
        let frames = stream::iter(0..5).map(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok::<_, Infallible>(Bytes::from(big.clone()))
        });
        let sizes: Vec<usize> = chunks(ReadyFrames::new(StreamFrames::new(frames)))
            .await
            .iter()
            .map(String::len)
            .collect();
        // Two frames pass the limit, so each chunk holds two, and the fifth leaves alone.
        assert_eq!(sizes, [CHUNK_MAX + 2, CHUNK_MAX + 2, CHUNK_MAX / 2 + 1]);
        assert_eq!(polled.load(Ordering::Relaxed), 5);
    }

    fn channel_frames(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Result<Bytes, Infallible>>,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> {
        stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
