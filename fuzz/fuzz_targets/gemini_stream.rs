//! The Gemini stream translator behind the real SSE driver: any bytes, cut into pieces as the input says
//! (see `sluice_fuzz::split_input`). No panic, no endless stream, the same chunks whatever the cut, and
//! every chunk an OpenAI `chat.completion.chunk`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_api::ChatCompletionChunk;
use sluice_fuzz::check_stream;

fuzz_target!(|data: &[u8]| {
    let items = check_stream(data, "gemini");
    for event in items.iter().filter_map(|i| i.as_ref().ok()) {
        let chunk: ChatCompletionChunk = serde_json::from_slice(&event.data).expect("an OpenAI chunk");
        assert_eq!(chunk.object, "chat.completion.chunk");
    }
});
