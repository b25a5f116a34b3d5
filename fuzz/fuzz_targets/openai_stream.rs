//! The OpenAI-format stream translator behind the real SSE driver: any bytes, cut into pieces as the
//! input says (see `sluice_fuzz::split_input`). No panic, no endless stream, the same chunks whatever the
//! cut, and chunks the server can frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_fuzz::check_stream;

fuzz_target!(|data: &[u8]| {
    check_stream(data, "openai");
});
