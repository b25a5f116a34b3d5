//! The Messages pass-through's stream driver: any bytes, cut as the input says (see
//! `sluice_fuzz::split_input`), become the vendor's SSE frames. No panic, no endless stream, the same
//! frames and error whatever the cut, an error only last, and the frames put together are the body's
//! bytes from its start, untouched.
#![no_main]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;
use sluice_fuzz::{cut, split_input};
use sluice_providers::internals;

fn frames(pieces: Vec<Bytes>) -> Vec<Result<(Bytes, Option<sluice_api::TokenUsage>), String>> {
    let body = futures_util::stream::iter(pieces.into_iter().map(Ok::<Bytes, Infallible>));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    runtime.block_on(async move {
        internals::passthrough_frames(body, Duration::from_secs(3600))
            .map(|item| item.map(|f| (f.bytes, f.usage)).map_err(|e| format!("{e:?}")))
            .collect()
            .await
    })
}

fuzz_target!(|data: &[u8]| {
    let (lengths, body) = split_input(data);
    let whole = frames(cut(body, &[]));
    let pieces = frames(cut(body, lengths));
    assert_eq!(whole, pieces, "cutting the body into pieces changed the frames");
    if let Some(at) = whole.iter().position(Result::is_err) {
        assert_eq!(at + 1, whole.len(), "frames after an error");
    }
    let joined: Vec<u8> = whole.iter().filter_map(|f| f.as_ref().ok()).flat_map(|(b, _)| b.to_vec()).collect();
    assert!(body.starts_with(&joined), "the frames are the body's bytes");
    for (bytes, _) in whole.iter().filter_map(|f| f.as_ref().ok()) {
        assert!(bytes.ends_with(b"\n") || bytes.ends_with(b"\r"), "a frame ends with its blank line");
    }
});
