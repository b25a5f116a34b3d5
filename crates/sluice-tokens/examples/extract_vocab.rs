//! Writes `vocab/<encoding>.ranks`, the compact vocabularies `sluice-tokens` compiles in, from the tables of
//! `bpe-openai` (a dev-dependency, whose crate holds OpenAI's tiktoken files): the token bytes in rank
//! order, nothing downloaded. Run from the crate directory after a `bpe-openai` update:
//!
//! `cargo run -p sluice-tokens --example extract_vocab -- crates/sluice-tokens/vocab`
//!
//! The format (read by `src/ranks.rs`): the number of tokens as a little-endian u32, then each token's
//! length as one byte, then every token's bytes back to back, all in rank order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a build tool")]

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "vocab".to_owned()));
    for (name, tokenizer) in [
        ("o200k_base", bpe_openai::o200k_base()),
        ("cl100k_base", bpe_openai::cl100k_base()),
    ] {
        let bpe = &tokenizer.bpe;
        let count = bpe.num_tokens();
        let mut lengths = Vec::with_capacity(count);
        let mut bytes = Vec::new();
        for id in 0..count {
            let token = bpe.token_bytes(u32::try_from(id).unwrap());
            lengths.push(u8::try_from(token.len()).expect("a token longer than 255 bytes"));
            bytes.extend_from_slice(token);
        }
        let mut out = Vec::with_capacity(4 + lengths.len() + bytes.len());
        out.extend_from_slice(&u32::try_from(count).unwrap().to_le_bytes());
        out.extend_from_slice(&lengths);
        out.extend_from_slice(&bytes);
        let path = dir.join(format!("{name}.ranks"));
        std::fs::write(&path, &out).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let longest = lengths.iter().max().copied().unwrap_or(0);
        println!(
            "{}: {count} tokens, {} bytes of tokens, longest {longest}",
            path.display(),
            bytes.len()
        );
    }
}
