//! The SSE parser the adapters share (`sse::SseParser` behind `transport::sse_events`), alone: any
//! bytes, cut into pieces as the input says (see `sluice_fuzz::split_input`). The events must not depend
//! on the cut, must be those a WHATWG parser dispatches for the body's valid UTF-8 prefix, and invalid
//! UTF-8 must end the stream with one error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_fuzz::{cut, drive, reference_events, split_input};
use sluice_providers::internals::Translator;

fuzz_target!(|data: &[u8]| {
    let (lengths, body) = split_input(data);
    let whole = drive(cut(body, &[]), Translator::raw());
    let pieces = drive(cut(body, lengths), Translator::raw());
    assert_eq!(whole, pieces, "cutting the body into pieces changed the events");
    if let Some(at) = whole.iter().position(Result::is_err) {
        assert_eq!(at + 1, whole.len(), "events after an error: {whole:?}");
    }

    let valid = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&body[..e.valid_up_to()]).expect("the valid prefix"),
    };
    // Past the valid prefix comes more text (a WHATWG decoder makes it U+FFFD), so a CR that ends the
    // prefix is a whole line break, not perhaps the first half of a CRLF.
    let expected = if valid.len() < body.len() && valid.ends_with('\r') {
        reference_events(&format!("{valid}\n"))
    } else {
        reference_events(valid)
    };
    let got: Vec<String> = whole
        .iter()
        .filter_map(|item| item.as_ref().ok())
        .map(|event| String::from_utf8(event.data.to_vec()).expect("event data is UTF-8"))
        .collect();
    assert_eq!(got, expected, "the events differ from a WHATWG parser's");
    let errors = whole.iter().filter(|item| item.is_err()).count();
    assert_eq!(errors, usize::from(valid.len() < body.len()), "{whole:?}");
});
