//! Resident memory and time that loading an encoding costs: VmRSS from `/proc/self/status` before and
//! after loading it and counting a mixed text with it, in a process of its own. `bpe-openai:<encoding>`
//! measures `bpe-openai`'s tokenizer instead (the counter before the compact vocabularies), for comparison.
//!
//! `cargo run --release -p sluice-tokens --example vocab_rss -- o200k_base cl100k_base`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a measuring tool")]

use std::time::Instant;

use sluice_tokens::{EncodingName, count_text};

/// Resident memory in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in kB")
}

fn main() {
    let text = "The quick brown fox's 12345 jumps; Étude naïve café — “quoted” 😀 日本語のテキスト, 中文文本. \
                Ünïcödé \u{a0}spaces\r\n/path/to/file.rs:42 {\"json\": [1, 2]}"
        .repeat(20);
    let start = resident_kib();
    for arg in std::env::args().skip(1) {
        let before = resident_kib();
        let clock = Instant::now();
        let tokens = match arg.strip_prefix("bpe-openai:") {
            Some("o200k_base") => bpe_openai::o200k_base().count(text.as_str()) as u64,
            Some("cl100k_base") => bpe_openai::cl100k_base().count(text.as_str()) as u64,
            Some(other) => panic!("unknown encoding {other}"),
            None => {
                let name: EncodingName = arg.parse().expect("an encoding name");
                name.preload();
                let loaded = resident_kib();
                let ascii = count_text("Hello, world! Plain ASCII text.", name);
                println!(
                    "{arg}: +{:.1} MiB loaded, +{:.1} MiB after an ASCII count ({} tokens)",
                    (loaded - before) as f64 / 1024.0,
                    (resident_kib() - before) as f64 / 1024.0,
                    ascii.tokens
                );
                count_text(&text, name).tokens
            }
        };
        let elapsed = clock.elapsed();
        let after = resident_kib();
        println!(
            "{arg}: +{:.1} MiB resident ({before} -> {after} KiB), loaded and counted in {:.1} ms ({tokens} tokens)",
            (after - before) as f64 / 1024.0,
            elapsed.as_secs_f64() * 1000.0
        );
    }
    println!(
        "total: +{:.1} MiB over {start} KiB",
        (resident_kib() - start) as f64 / 1024.0
    );
}
