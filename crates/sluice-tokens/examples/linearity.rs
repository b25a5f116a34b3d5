//! The *Linearity* table of `docs/benchmarks.md`: wall time of `count_text`, best of 5, for each hostile
//! input at 10k, 100k and 1M characters, o200k_base / cl100k_base.
//!
//! `cargo run --profile bench -p sluice-tokens --example linearity`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a measuring tool")]

use std::time::{Duration, Instant};

use sluice_tokens::{EncodingName, count_text};

fn random_unicode(chars: usize) -> String {
    let mut seed = 0x0123_4567_89AB_CDEFu64;
    std::iter::from_fn(|| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Some(char::from_u32((seed % 0x11_0000) as u32))
    })
    .flatten()
    .take(chars)
    .collect()
}

/// Makes an input of about the given number of characters.
type Make = fn(usize) -> String;

fn best_of_5(text: &str, name: EncodingName) -> Duration {
    (0..5)
        .map(|_| {
            let clock = Instant::now();
            std::hint::black_box(count_text(std::hint::black_box(text), name));
            clock.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let inputs: [(&str, Make); 7] = [
        ("`a` repeated", |n| "a".repeat(n)),
        ("spaces", |n| " ".repeat(n)),
        ("space, tab, no-break space, newline", |n| " \t\u{a0}\n".repeat(n / 4)),
        ("random Unicode (chars)", random_unicode),
        ("digits", |n| "1234567890".repeat(n / 10)),
        ("`!?` repeated", |n| "!?".repeat(n / 2)),
        ("`AbCdEf` repeated", |n| "AbCdEf".repeat(n / 6)),
    ];
    for name in EncodingName::ALL {
        name.preload();
    }
    println!("| input | 10k | 100k | 1M |\n| --- | --- | --- | --- |");
    for (label, make) in inputs {
        let cells: Vec<String> = [10_000, 100_000, 1_000_000]
            .into_iter()
            .map(|n| {
                let text = make(n);
                let [o200k, cl100k] = EncodingName::ALL.map(|name| best_of_5(&text, name).as_secs_f64() * 1e3);
                format!("{o200k:.2} / {cl100k:.2} ms")
            })
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
}
