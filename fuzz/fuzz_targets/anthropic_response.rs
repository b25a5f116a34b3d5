//! Anthropic's complete Messages body -> the OpenAI `chat.completion` the client gets: any bytes. No
//! panic; an answer is a completion the gateway can read back, whose usage is the OpenAI shape of the
//! usage by category the adapter reports; a refusal is a protocol error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_api::{ChatCompletionResponse, TokenUsage};
use sluice_providers::ProviderError;
use sluice_providers::internals;

fuzz_target!(|data: &[u8]| {
    match internals::anthropic_response(data) {
        Ok((body, usage)) => {
            let completion: ChatCompletionResponse = serde_json::from_slice(&body).expect("an OpenAI completion");
            assert_eq!(completion.usage, usage.as_ref().map(TokenUsage::to_openai));
            assert_eq!(completion.choices.len(), 1);
        }
        Err(ProviderError::Protocol { .. }) => {}
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
});
