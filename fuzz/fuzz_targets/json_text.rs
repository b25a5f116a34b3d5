//! The word-at-a-time JSON string escaping (`sluice_api::json_text`) against serde_json's: the same
//! bytes for any text. Any bytes, as UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut ours = String::new();
        sluice_api::json_text::write_escaped(&mut ours, text).unwrap();
        let theirs = serde_json::to_string(text).unwrap();
        assert_eq!(ours, theirs[1..theirs.len() - 1], "escaping differs for {text:?}");
    }
});
