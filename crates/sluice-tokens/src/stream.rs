//! Completion tokens counted from streamed text, for vendors that send no usage.

use crate::encoding::{Encoding, Exactness, TokenCount, vocab};
use crate::split::is_settled_boundary;

/// Counts the tokens of a completion from its text deltas as they stream.
///
/// A token can span two deltas (`"Hel"`, `"lo"`), so deltas are not counted one by one. The counter keeps
/// the text since the last *settled* position, one where a piece starts whatever text comes next (a
/// non-space character followed by a space or tab, or a newline followed by a non-space character; see
/// `split::is_settled_boundary`), and counts everything before it once. So [`push`](Self::push) is linear
/// in the delta plus the text it settles, a stream costs about what counting its whole text once costs,
/// and [`tokens`](Self::tokens) counts only the unsettled tail: usually a word, at worst the text since the
/// last space or newline (a long run of CJK text without either).
#[derive(Debug, Clone)]
pub struct CompletionCounter {
    encoding: Encoding,
    settled: u64,
    tail: String,
}

impl CompletionCounter {
    /// A counter for text in `encoding`.
    pub fn new(encoding: impl Into<Encoding>) -> Self {
        CompletionCounter {
            encoding: encoding.into(),
            settled: 0,
            tail: String::new(),
        }
    }

    /// Adds the next text delta of the completion.
    pub fn push(&mut self, delta: &str) {
        if delta.is_empty() {
            return;
        }
        // Scan from the last character already held, which may settle a position at the delta's start.
        let scan_from = self.tail.char_indices().next_back().map_or(0, |(i, _)| i);
        self.tail.push_str(delta);
        let mut previous: Option<char> = None;
        let mut settled_at = None;
        for (i, next) in self.tail[scan_from..].char_indices() {
            if let Some(previous) = previous
                && is_settled_boundary(previous, next)
            {
                settled_at = Some(scan_from + i);
            }
            previous = Some(next);
        }
        let Some(boundary) = settled_at else {
            return;
        };
        // `end == boundary`: a settled position is always the end of a piece.
        let (tokens, end) = vocab(self.encoding.name).count_until(&self.tail, boundary);
        self.settled += tokens;
        if end == self.tail.len() {
            self.tail.clear();
        } else {
            self.tail.drain(..end);
        }
    }

    /// The tokens of all the text pushed so far.
    pub fn tokens(&self) -> u64 {
        self.settled + vocab(self.encoding.name).count(&self.tail)
    }

    /// [`tokens`](Self::tokens) with its exactness, that of the encoding.
    pub fn count(&self) -> TokenCount {
        TokenCount {
            tokens: self.tokens(),
            exactness: self.encoding.exactness,
        }
    }

    /// Whether the counter's encoding is the model's own (else its count is an estimate).
    pub fn exactness(&self) -> Exactness {
        self.encoding.exactness
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{EncodingName, count_text};

    const TEXTS: &[&str] = &[
        "Hello, world! This is a streamed completion, with don't and it's; numbers 1234567 and   spaces.",
        "  \n  \n\nLeading whitespace\r\n\r\nand CRLF lines/paths a/b\n/c  \t\tend  ",
        "日本語のテキストです。改行なしで長く続く文章。 Then English. Ünïcödé naïve café — “quotes” 😀😀",
        "fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "\u{a0}\u{a0} \u{3000}x\u{2028}y \n\u{85}z",
    ];

    fn chunks(text: &str, size: usize) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let mut end = (start + size).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            out.push(&text[start..end]);
            start = end;
        }
        out
    }

    #[test]
    fn streamed_counts_equal_the_whole_text_at_every_split() {
        for name in EncodingName::ALL {
            for text in TEXTS {
                let whole = count_text(text, name).tokens;
                for size in [1, 2, 3, 5, 8, 13, 64] {
                    let mut counter = CompletionCounter::new(name);
                    let mut so_far = String::new();
                    for chunk in chunks(text, size) {
                        counter.push(chunk);
                        so_far.push_str(chunk);
                        assert_eq!(counter.tokens(), count_text(&so_far, name).tokens, "{name} {so_far:?}");
                    }
                    assert_eq!(counter.tokens(), whole, "{name} {text:?} by {size}");
                }
                // Two deltas, split at every character boundary.
                for cut in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                    let mut counter = CompletionCounter::new(name);
                    counter.push(&text[..cut]);
                    counter.push(&text[cut..]);
                    assert_eq!(counter.tokens(), whole, "{name} {text:?} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn the_tail_stays_short_on_ordinary_text() {
        let mut counter = CompletionCounter::new(EncodingName::O200kBase);
        for _ in 0..1000 {
            counter.push("some words, ");
        }
        assert!(counter.tail.len() < 16, "{:?}", counter.tail);
        assert_eq!(
            counter.tokens(),
            count_text(&"some words, ".repeat(1000), EncodingName::O200kBase).tokens
        );
    }

    #[test]
    fn estimates_stay_estimates() {
        let encoding = Encoding::for_model("gemini-2.5-pro", EncodingName::O200kBase);
        let mut counter = CompletionCounter::new(encoding);
        counter.push("hello");
        assert!(counter.count().is_estimate());
        assert_eq!(counter.exactness(), Exactness::Estimate);
    }
}
