//! The embeddings request as the gateway reads it and sends it on: any bytes through the strict parser;
//! a request it accepts must serialise (as itself and as the OpenAI-format upstream view) to JSON the
//! parser reads back to the same request, and Gemini's translation must give a JSON body or a 400.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice_api::{EmbeddingRequest, UpstreamEmbeddingRequest, parse_json};
use sluice_fuzz::json_eq;
use sluice_providers::ProviderError;
use sluice_providers::internals;

fn same(a: &EmbeddingRequest, b: &EmbeddingRequest) -> bool {
    let a = serde_json::to_value(a).expect("serialisable");
    let b = serde_json::to_value(b).expect("serialisable");
    json_eq(&a, &b)
}

fuzz_target!(|data: &[u8]| {
    let request = match parse_json::<EmbeddingRequest>(data) {
        Ok(request) => request,
        Err(err) => {
            let _ = (err.to_string(), err.param());
            return;
        }
    };
    let _ = (
        request.input.texts(),
        request.input.text_bytes(),
        request.input.is_empty(),
    );

    let body = serde_json::to_vec(&request).expect("serialisable");
    let back: EmbeddingRequest = parse_json(&body).expect("the gateway reads what it writes");
    assert!(same(&back, &request), "round trip: {}", String::from_utf8_lossy(&body));

    let upstream = UpstreamEmbeddingRequest::new(&request, "vendor-model");
    let body = serde_json::to_vec(&upstream).expect("serialisable");
    let back: EmbeddingRequest = parse_json(&body).expect("the upstream body is an embeddings request");
    let mut expected = request.clone();
    expected.model = "vendor-model".to_owned();
    assert!(
        same(&back, &expected),
        "upstream view: {}",
        String::from_utf8_lossy(&body)
    );

    match internals::gemini_embed_request(&request, "models/gemini-embedding") {
        Ok(body) => assert!(serde_json::from_slice::<Value>(&body).expect("JSON").is_object()),
        Err(ProviderError::Rejected { status: 400, .. }) => {}
        Err(other) => panic!("a request refused as anything but the client's error: {other:?}"),
    }
});
