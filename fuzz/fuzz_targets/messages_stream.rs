//! The Anthropic stream translator behind the OpenAI adapter's real SSE driver: any bytes, cut as the
//! input says, become chat chunks, and those Anthropic events. No panic; every event is one `event:` line
//! and one `data:` line of JSON whose `type` is the event's name; it opens with `message_start` (unless
//! the stream broke before it) and ends with `message_stop`, or with an `error` event when the upstream
//! broke or a chunk could not be translated; blocks open and close in order.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_fuzz::{chat_chunks, produced_events};
use sluice_protocols::messages::MessagesStream;
use sluice_protocols::{FailureKind, StreamFailure};

fuzz_target!(|data: &[u8]| {
    let (chunks, broken) = chat_chunks(data);
    let mut stream = MessagesStream::new("msg_f", "claude", Some(3));
    let mut out = BytesMut::new();
    let mut failed = broken.is_some();
    for chunk in &chunks {
        let before = out.len();
        if let Err(err) = stream.chunk(chunk, &mut out) {
            assert_eq!(out.len(), before, "an error appends nothing");
            let message = err.to_string();
            stream.fail(StreamFailure { kind: FailureKind::Upstream, message: &message }, &mut out);
            failed = true;
            break;
        }
    }
    match &broken {
        Some(message) => stream.fail(StreamFailure { kind: FailureKind::Upstream, message }, &mut out),
        None => stream.finish(None, &mut out).expect("finish"),
    }
    let events = produced_events(&out);
    let mut open: Option<u64> = None;
    let mut next_block = 0u64;
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        match name.as_str() {
            "message_start" => assert_eq!(i, 0),
            "content_block_start" => {
                assert_eq!(open, None);
                assert_eq!(data["index"], next_block);
                open = Some(next_block);
                next_block += 1;
            }
            "content_block_delta" => assert_eq!(data["index"].as_u64(), open),
            "content_block_stop" => assert_eq!(data["index"].as_u64(), open.take()),
            "message_delta" => assert_eq!(open, None),
            "message_stop" | "error" => assert_eq!(i + 1, events.len(), "the end is last"),
            other => panic!("unexpected event {other}"),
        }
    }
    let last = events.last().map(|e| e.0.as_str());
    assert_eq!(last == Some("error"), failed, "{events:?}");
    if !failed {
        assert_eq!(last, Some("message_stop"));
    }
});
