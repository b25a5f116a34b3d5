//! The Responses stream translator behind the OpenAI adapter's real SSE driver: any bytes, cut as the
//! input says (see `sluice_fuzz::split_input`), become chat chunks, and those Responses events. No panic;
//! every event is one `event:` line and one `data:` line of JSON whose `type` is the event's name, numbered
//! from 0; it opens with `response.created` and ends with exactly one terminal event, `response.failed`
//! when the upstream broke or a chunk could not be translated.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_fuzz::{chat_chunks, produced_events};
use sluice_protocols::responses::{ResponsesStream, parse_request};
use sluice_protocols::{FailureKind, StreamFailure};

fuzz_target!(|data: &[u8]| {
    let (chunks, broken) = chat_chunks(data);
    let echo = parse_request(br#"{"model": "m", "input": "hi", "stream": true}"#)
        .expect("a valid request")
        .echo;
    let mut stream = ResponsesStream::new(echo, "resp_f", 1);
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
    assert!(stream.is_ended());
    let events = produced_events(&out);
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i);
    }
    assert_eq!(events.first().map(|e| e.0.as_str()), Some("response.created"));
    let terminal = ["response.completed", "response.incomplete", "response.failed"];
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names.iter().filter(|n| terminal.contains(n)).count(), 1, "{names:?}");
    let last = *names.last().expect("events");
    assert_eq!(last == "response.failed", failed, "{names:?}");
    assert!(terminal.contains(&last));
});
