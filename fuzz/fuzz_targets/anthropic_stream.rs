//! The Anthropic stream translator behind the real SSE driver: any bytes, cut into pieces as the input
//! says (see `sluice_fuzz::split_input`). No panic, no endless stream, the same chunks whatever the cut,
//! every chunk an OpenAI `chat.completion.chunk`, and a stream that ends without error ends with usage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_api::ChatCompletionChunk;
use sluice_fuzz::check_stream;

fuzz_target!(|data: &[u8]| {
    let items = check_stream(data, "anthropic");
    for event in items.iter().filter_map(|i| i.as_ref().ok()) {
        let chunk: ChatCompletionChunk = serde_json::from_slice(&event.data).expect("an OpenAI chunk");
        assert_eq!(chunk.object, "chat.completion.chunk");
    }
    if let Some(Ok(last)) = items.last() {
        assert!(
            last.usage_only,
            "a stream that ends cleanly ends with the usage chunk: {items:?}"
        );
    }
});
