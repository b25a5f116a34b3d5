//! The scan that recognises an ordinary OpenAI stream chunk without deserialising it, against serde_json:
//! whenever the scan answers, the full probe must read the same chunk (no usage, no error, the same
//! finish). Each line is a chunk, scanned also as the next chunk of a stream, resumed from the line
//! before: it must answer as a scan of that line alone. Any bytes, as UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_providers::internals::openai_chunk_scan_agrees;

fuzz_target!(|data: &[u8]| {
    if let Ok(json) = std::str::from_utf8(data) {
        assert!(openai_chunk_scan_agrees(json), "the scans and the probe disagree on {json:?}");
    }
});
