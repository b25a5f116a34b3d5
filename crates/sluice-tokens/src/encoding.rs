//! Encodings, which model uses which, and counting plain text.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::ranks::Ranks;
use crate::split::{self, Pattern, Splitter};
use crate::text_cache;

/// A byte-pair encoding whose vocabulary ships inside the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncodingName {
    /// `o200k_base`: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, the o-series.
    O200kBase,
    /// `cl100k_base`: gpt-4, gpt-3.5-turbo, the text-embedding-3 and ada-002 embeddings.
    Cl100kBase,
}

impl EncodingName {
    /// Every encoding, in a stable order.
    pub const ALL: [EncodingName; 2] = [EncodingName::O200kBase, EncodingName::Cl100kBase];

    /// The name tiktoken uses: `o200k_base` or `cl100k_base`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EncodingName::O200kBase => "o200k_base",
            EncodingName::Cl100kBase => "cl100k_base",
        }
    }

    /// Loads the vocabulary now rather than on the first count (10 to 30 ms and 4 to 9 MiB
    /// each), for example at start for the encodings the configured models use.
    pub fn preload(self) {
        vocab(self);
    }

    /// Whether the vocabulary is loaded, so that counting does not first block to load it.
    pub fn is_loaded(self) -> bool {
        cell(self).get().is_some()
    }
}

impl fmt::Display for EncodingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`EncodingName::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encoding `{0}`: expected o200k_base or cl100k_base")]
pub struct UnknownEncoding(pub String);

impl FromStr for EncodingName {
    type Err = UnknownEncoding;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        EncodingName::ALL
            .into_iter()
            .find(|encoding| encoding.as_str() == name)
            .ok_or_else(|| UnknownEncoding(name.to_owned()))
    }
}

/// Whether a count is the vendor's own or an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exactness {
    /// The vendor's tokenizer and counting rules: the count is what the vendor bills.
    Exact,
    /// Another tokenizer or an approximated rule: close, not what the vendor bills. Store and show it as
    /// an estimate.
    Estimate,
}

impl Exactness {
    /// Whether this is [`Exactness::Exact`].
    pub const fn is_exact(self) -> bool {
        matches!(self, Exactness::Exact)
    }

    /// Exact only when both are.
    #[must_use]
    pub const fn and(self, other: Exactness) -> Exactness {
        match (self, other) {
            (Exactness::Exact, Exactness::Exact) => Exactness::Exact,
            _ => Exactness::Estimate,
        }
    }
}

/// The encoding counts use for one model, and whether they are exact for it.
///
/// Count functions take `impl Into<Encoding>`: an [`EncodingName`] alone counts as exact, and the tuple
/// [`for_model`] returns carries the model's exactness along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Encoding {
    /// Which vocabulary and split pattern.
    pub name: EncodingName,
    /// Whether counts with it are the model vendor's own.
    pub exactness: Exactness,
}

impl Encoding {
    /// The encoding for the vendor model id `model`: see [`for_model`].
    pub fn for_model(model: &str, fallback: EncodingName) -> Self {
        for_model(model, fallback).into()
    }
}

impl From<EncodingName> for Encoding {
    fn from(name: EncodingName) -> Self {
        Encoding {
            name,
            exactness: Exactness::Exact,
        }
    }
}

impl From<(EncodingName, Exactness)> for Encoding {
    fn from((name, exactness): (EncodingName, Exactness)) -> Self {
        Encoding { name, exactness }
    }
}

/// Model families of OpenAI, by id prefix, most specific first.
const FAMILIES: &[(&str, EncodingName)] = &[
    ("gpt-4o", EncodingName::O200kBase),
    ("chatgpt-4o", EncodingName::O200kBase),
    ("gpt-4.1", EncodingName::O200kBase),
    ("gpt-4.5", EncodingName::O200kBase),
    ("gpt-5", EncodingName::O200kBase),
    ("gpt-oss", EncodingName::O200kBase),
    ("o1", EncodingName::O200kBase),
    ("o3", EncodingName::O200kBase),
    ("o4", EncodingName::O200kBase),
    ("codex-mini", EncodingName::O200kBase),
    ("gpt-4", EncodingName::Cl100kBase),
    ("gpt-3.5", EncodingName::Cl100kBase),
    // Azure OpenAI spells it without the dot.
    ("gpt-35", EncodingName::Cl100kBase),
    ("text-embedding-3", EncodingName::Cl100kBase),
    ("text-embedding-ada-002", EncodingName::Cl100kBase),
    ("davinci-002", EncodingName::Cl100kBase),
    ("babbage-002", EncodingName::Cl100kBase),
];

/// The encoding of the vendor model id `model` and whether counts with it are exact.
///
/// OpenAI's families (case-insensitive, after an `ft:` fine-tune prefix and any `vendor/` prefix) get their
/// own encoding, exact: `o200k_base` for gpt-4o, chatgpt-4o, gpt-4.1, gpt-4.5, gpt-5, gpt-oss and the
/// o-series (o1, o3, o4-mini), `cl100k_base` for gpt-4, gpt-3.5-turbo and the text-embedding-3 and ada-002
/// embeddings. A prefix matches the whole id or up to a non-alphanumeric character, so `gpt-4o-mini` is
/// gpt-4o, `gpt-4-turbo` is gpt-4 and `o1x` is nothing. Every other model (claude-*, gemini-*, llama,
/// mistral...) gets `fallback`, as an estimate.
pub fn for_model(model: &str, fallback: EncodingName) -> (EncodingName, Exactness) {
    let model = model.rsplit('/').next().unwrap_or(model);
    let model = strip_prefix_ignore_case(model, "ft:").unwrap_or(model);
    for &(family, encoding) in FAMILIES {
        if let Some(rest) = strip_prefix_ignore_case(model, family)
            && !rest.starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            return (encoding, Exactness::Exact);
        }
    }
    (fallback, Exactness::Estimate)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// A number of tokens and whether it is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenCount {
    /// How many tokens.
    pub tokens: u64,
    /// Whether the vendor would count the same.
    pub exactness: Exactness,
}

impl TokenCount {
    /// Whether the count is an estimate, as the usage ledger records it.
    pub const fn is_estimate(&self) -> bool {
        !self.exactness.is_exact()
    }
}

/// The number of tokens `text` encodes to, as tiktoken's `len(encoding.encode(text))` (special tokens
/// such as `<|endoftext|>` count as ordinary text). Linear in the length of `text` whatever it holds.
pub fn count_text(text: &str, encoding: impl Into<Encoding>) -> TokenCount {
    let encoding = encoding.into();
    TokenCount {
        tokens: vocab(encoding.name).count(text),
        exactness: encoding.exactness,
    }
}

/// Like [`count_text`], but stops as soon as the count exceeds `limit` and then answers `None`: the cost is
/// about that of counting `limit` tokens, however long `text` is.
pub fn count_text_with_limit(text: &str, encoding: impl Into<Encoding>, limit: u64) -> Option<TokenCount> {
    let encoding = encoding.into();
    Some(TokenCount {
        tokens: vocab(encoding.name).count_till(text, limit)?,
        exactness: encoding.exactness,
    })
}

// === impl Vocab ===

/// A loaded encoding: its vocabulary ([`Ranks`], a few MB) and its split expression.
pub(crate) struct Vocab {
    ranks: Ranks,
    /// Built on the first piece the ASCII scan leaves to it: English-only traffic never pays for it.
    splitter: OnceLock<Splitter>,
    pattern: Pattern,
}

static O200K: OnceLock<Vocab> = OnceLock::new();
static CL100K: OnceLock<Vocab> = OnceLock::new();

fn cell(name: EncodingName) -> &'static OnceLock<Vocab> {
    match name {
        EncodingName::O200kBase => &O200K,
        EncodingName::Cl100kBase => &CL100K,
    }
}

/// The vocabulary of `name`, loaded on first use, once.
pub(crate) fn vocab(name: EncodingName) -> &'static Vocab {
    cell(name).get_or_init(|| {
        let (data, pattern): (&'static [u8], _) = match name {
            EncodingName::O200kBase => (include_bytes!("../vocab/o200k_base.ranks"), Pattern::O200k),
            EncodingName::Cl100kBase => (include_bytes!("../vocab/cl100k_base.ranks"), Pattern::Cl100k),
        };
        Vocab {
            ranks: Ranks::new(data),
            splitter: OnceLock::new(),
            pattern,
        }
    })
}

impl Vocab {
    /// The end of the piece of `text` starting at `start`, a piece boundary.
    #[inline]
    fn piece_end(&self, text: &str, start: usize) -> usize {
        let end = match split::ascii_piece(self.pattern, text.as_bytes(), start) {
            Some(end) => end,
            None => self
                .splitter
                .get_or_init(|| Splitter::new(self.pattern))
                .piece_end(text, start),
        };
        // Every alternative matches at least one character; should one not, the rest is one piece.
        if end > start { end } else { text.len() }
    }

    /// Whether `text[start..end]` is one token.
    #[inline(always)]
    fn is_single(&self, text: &[u8], start: usize, end: usize) -> bool {
        let len = end - start;
        match text[start..].first_chunk::<8>() {
            // Eight bytes from the piece's start, those past its end masked off.
            Some(word) if len <= 8 => self
                .ranks
                .is_short_token(u64::from_le_bytes(*word) & (u64::MAX >> (64 - 8 * len)), len),
            _ => self.ranks.is_token(&text[start..end]),
        }
    }

    /// Tokens of the piece `text[start..end]`.
    #[inline]
    fn tokens_at(&self, text: &[u8], start: usize, end: usize) -> u64 {
        if self.is_single(text, start, end) {
            1
        } else {
            let piece = &text[start..end];
            piece_cache::count(self.pattern, piece, || self.ranks.count(piece))
        }
    }

    /// Tokens of the pieces of `text` up to `boundary`, a piece boundary, and where they end (`boundary`
    /// itself unless it was not one).
    pub(crate) fn count_until(&self, text: &str, boundary: usize) -> (u64, usize) {
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut total = 0;
        while start < boundary {
            let end = self.piece_end(text, start);
            total += self.tokens_at(bytes, start, end);
            start = end;
        }
        (total, start)
    }

    /// Tokens in `text`; long texts through [`text_cache`].
    pub(crate) fn count(&self, text: &str) -> u64 {
        if text_cache::applies(text) {
            text_cache::count(self.pattern, text, || self.count_pieces(text))
        } else {
            self.count_pieces(text)
        }
    }

    /// Tokens in `text`, piece by piece.
    fn count_pieces(&self, text: &str) -> u64 {
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut total = 0;
        while start < text.len() {
            let end = self.piece_end(text, start);
            total += self.tokens_at(bytes, start, end);
            start = end;
        }
        total
    }

    /// Tokens in `text` if at most `limit`. A text longer than `limit` bytes is not looked up in
    /// [`text_cache`]: hashing it would cost its whole length, where this stops after `limit` tokens.
    pub(crate) fn count_till(&self, text: &str, limit: u64) -> Option<u64> {
        // Tokens never outnumber bytes: past this, no check can fail.
        if text.len() as u64 <= limit {
            return Some(self.count(text));
        }
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut total = 0u64;
        while start < text.len() {
            let end = self.piece_end(text, start);
            total += if end - start <= piece_cache::KEY_MAX || self.is_single(bytes, start, end) {
                self.tokens_at(bytes, start, end)
            } else {
                self.ranks.count_till(&bytes[start..end], limit - total)?
            };
            if total > limit {
                return None;
            }
            start = end;
        }
        Some(total)
    }
}

/// Counts of recent multi-token pieces, per thread.
///
/// About one English piece in thirty is several tokens (" conspicuously"), and running BPE on one costs a
/// table lookup per pair and per merge, ten or more times a single lookup; the same words recur within a prompt and across requests (system
/// prompts). Direct-mapped and fixed in size: a hostile stream of distinct pieces only makes misses, each
/// the plain BPE count.
mod piece_cache {
    use std::cell::RefCell;
    use std::hash::BuildHasher;

    use rustc_hash::FxBuildHasher;

    use crate::split::Pattern;

    /// Longest piece cached, in bytes; longer ones are rare and cost more than a miss anyway.
    pub(crate) const KEY_MAX: usize = 32;
    const SLOTS: usize = 1024;

    #[derive(Clone, Copy)]
    struct Slot {
        pattern: Option<Pattern>,
        len: u8,
        tokens: u8,
        key: [u8; KEY_MAX],
    }

    const EMPTY: Slot = Slot {
        pattern: None,
        len: 0,
        tokens: 0,
        key: [0; KEY_MAX],
    };

    thread_local! {
        // About 36 KB for each thread that counts.
        static CACHE: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
    }

    /// The tokens of `piece`, from the cache or from `count`.
    #[inline]
    pub(crate) fn count(pattern: Pattern, piece: &[u8], count: impl FnOnce() -> u64) -> u64 {
        if piece.len() > KEY_MAX {
            return count();
        }
        let index = FxBuildHasher.hash_one(piece) as usize % SLOTS;
        CACHE.with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return count();
            };
            if cache.is_empty() {
                cache.resize(SLOTS, EMPTY);
            }
            let slot = &mut cache[index];
            if slot.pattern == Some(pattern) && &slot.key[..slot.len as usize] == piece {
                return u64::from(slot.tokens);
            }
            let tokens = count();
            // A piece of at most KEY_MAX bytes has at most KEY_MAX tokens.
            if let Ok(small) = u8::try_from(tokens) {
                slot.pattern = Some(pattern);
                slot.len = piece.len() as u8;
                slot.tokens = small;
                slot.key[..piece.len()].copy_from_slice(piece);
            }
            tokens
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_map_to_their_family_encoding() {
        let exact_o200k = [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4o-2024-08-06",
            "chatgpt-4o-latest",
            "gpt-4.1",
            "gpt-4.1-nano",
            "gpt-4.5-preview",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5.1",
            "o1",
            "o1-mini",
            "o3",
            "o3-mini-2025-01-31",
            "o4-mini",
            "GPT-4O",
            "ft:gpt-4o-mini-2024-07-18:acme::abc123",
            "openai/gpt-4o",
        ];
        for model in exact_o200k {
            assert_eq!(
                for_model(model, EncodingName::Cl100kBase),
                (EncodingName::O200kBase, Exactness::Exact),
                "{model}"
            );
        }
        let exact_cl100k = [
            "gpt-4",
            "gpt-4-0613",
            "gpt-4-turbo",
            "gpt-4-32k",
            "gpt-3.5-turbo",
            "gpt-3.5-turbo-0125",
            "gpt-35-turbo",
            "text-embedding-3-small",
            "text-embedding-3-large",
            "text-embedding-ada-002",
            "ft:gpt-3.5-turbo-0125:acme::x",
        ];
        for model in exact_cl100k {
            assert_eq!(
                for_model(model, EncodingName::O200kBase),
                (EncodingName::Cl100kBase, Exactness::Exact),
                "{model}"
            );
        }
        let others = [
            "claude-sonnet-4-5",
            "claude-3-5-haiku-20241022",
            "gemini-2.5-flash",
            "llama-3.1-70b",
            "mistral-large-latest",
            "o1x",
            "gpt-4oo",
            "",
        ];
        for model in others {
            for fallback in EncodingName::ALL {
                assert_eq!(for_model(model, fallback), (fallback, Exactness::Estimate), "{model}");
            }
        }
    }

    #[test]
    fn encoding_names_parse_and_print() {
        for name in EncodingName::ALL {
            assert_eq!(name.as_str().parse::<EncodingName>(), Ok(name));
            assert_eq!(name.to_string(), name.as_str());
        }
        let err = "p50k_base".parse::<EncodingName>().unwrap_err();
        assert!(err.to_string().contains("p50k_base"), "{err}");
    }

    #[test]
    fn counts_match_the_cookbook_examples() {
        // "tiktoken is great!" is 6 tokens in o200k_base; the notebook's comparisons for the others.
        let cases = [
            ("tiktoken is great!", 6, 6),
            ("antidisestablishmentarianism", 6, 6),
            ("2 + 2 = 4", 7, 7),
            ("お誕生日おめでとう", 9, 8),
        ];
        for (text, cl100k, o200k) in cases {
            assert_eq!(count_text(text, EncodingName::Cl100kBase).tokens, cl100k, "{text}");
            assert_eq!(count_text(text, EncodingName::O200kBase).tokens, o200k, "{text}");
        }
    }

    #[test]
    fn exactness_follows_the_encoding() {
        let estimate = Encoding::for_model("claude-sonnet-4-5", EncodingName::O200kBase);
        assert!(count_text("hello", estimate).is_estimate());
        assert!(!count_text("hello", EncodingName::O200kBase).is_estimate());
        assert_eq!(Exactness::Exact.and(Exactness::Estimate), Exactness::Estimate);
        assert_eq!(Exactness::Exact.and(Exactness::Exact), Exactness::Exact);
    }

    #[test]
    fn the_fast_path_counts_as_bpe_openai_does() {
        let text = "The quick brown fox's 12345 jumps; over\n\n  the lazy dog.\tÉtude: naïve café — “quoted” 😀 \
                    日本語のテキスト, 中文文本. Ünïcödé   \u{a0}spaces\r\n/path/to/file.rs:42 {\"json\": [1, 2]}";
        for name in EncodingName::ALL {
            let reference = match name {
                EncodingName::O200kBase => bpe_openai::o200k_base(),
                EncodingName::Cl100kBase => bpe_openai::cl100k_base(),
            };
            for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                let prefix = &text[..end];
                assert_eq!(
                    count_text(prefix, name).tokens,
                    reference.count(prefix) as u64,
                    "{name} {prefix:?}"
                );
            }
        }
    }

    #[test]
    fn limits_stop_early_and_agree_with_the_full_count() {
        let text = "word ".repeat(1000);
        for name in EncodingName::ALL {
            let full = count_text(&text, name).tokens;
            assert_eq!(count_text_with_limit(&text, name, full).map(|c| c.tokens), Some(full));
            assert_eq!(count_text_with_limit(&text, name, full - 1), None);
            assert_eq!(count_text_with_limit(&text, name, 10), None);
            let long = "a".repeat(50_000);
            assert_eq!(count_text_with_limit(&long, name, 100), None);
            let exact = count_text(&long, name).tokens;
            assert_eq!(count_text_with_limit(&long, name, exact).map(|c| c.tokens), Some(exact));
        }
    }

    #[test]
    fn hostile_inputs_finish() {
        // Inputs that make naive BPE or the fast splitter's give-ups quadratic: they must simply complete
        // (their speed is measured in benches/count.rs, not asserted here).
        let mut seed = 0x0123_4567_89AB_CDEFu64;
        let random: String = std::iter::from_fn(|| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            Some(char::from_u32((seed % 0x11_0000) as u32))
        })
        .flatten()
        .take(50_000)
        .collect();
        let inputs = [
            "a".repeat(200_000),
            " ".repeat(200_000),
            " ".repeat(100_000) + "\u{a0}x",
            "\n ".repeat(100_000),
            " \t \u{a0}\n".repeat(40_000),
            "!?".repeat(100_000),
            "A".repeat(100_000) + "é",
            "1".repeat(100_000),
            "'s".repeat(100_000),
            "\u{301}".repeat(50_000),
            random,
        ];
        for text in &inputs {
            for name in EncodingName::ALL {
                let count = count_text(text, name).tokens;
                assert!(count > 0 && count <= text.len() as u64);
                assert_eq!(count_text_with_limit(text, name, count).map(|c| c.tokens), Some(count));
                assert_eq!(count_text_with_limit(text, name, count / 2), None);
            }
        }
    }

    #[test]
    fn tokens_never_outnumber_bytes() {
        // The bound `fits` and `upper_bound` rely on: every token of a byte-level BPE is at least one byte.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..300 {
            let text: String = (0..64)
                .filter_map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from_u32((seed % 0x11_0000) as u32)
                })
                .collect();
            for name in EncodingName::ALL {
                assert!(count_text(&text, name).tokens <= text.len() as u64);
            }
        }
        for text in ["", "a", " ", "\u{10ffff}", "é", "\n\n\n"] {
            for name in EncodingName::ALL {
                assert!(count_text(text, name).tokens <= text.len() as u64, "{text:?}");
            }
        }
    }
}
