//! Compact byte-pair vocabularies and tiktoken's merge.
//!
//! A vocabulary is its tokens' bytes in rank order, compiled in (`vocab/*.ranks`, extracted once from
//! `bpe-openai`'s tables by `examples/extract_vocab.rs`), and an open-addressing table from the hash of a
//! token's bytes to its rank and place in those bytes (a `u64` a slot, under two in five slots used):
//! 5.4 MB for o200k_base, where `bpe-openai`'s tables took 66 MB.
//!
//! A piece counts as tiktoken encodes it: start from single bytes and merge the adjacent pair whose
//! concatenation has the lowest rank (the leftmost of equals) until no adjacent pair is a token. Short
//! pieces scan an array as tiktoken does; longer ones keep the pairs in buckets by rank (see
//! [`Ranks::count_large`]), the same merges in the same order without tiktoken's O(n²).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rustc_hash::FxBuildHasher;

// A slot of the table: the token's rank, where its bytes start in the arena, its length, and bits of its
// hash, so that a probe reads the arena only for the right token (almost always) and never reads the
// rank's place in a second table.
const RANK_BITS: u32 = 18;
const RANK_MASK: u64 = (1 << RANK_BITS) - 1;
const OFFSET_SHIFT: u32 = RANK_BITS;
const OFFSET_BITS: u32 = 21;
const LEN_SHIFT: u32 = OFFSET_SHIFT + OFFSET_BITS;
const TAG_SHIFT: u32 = LEN_SHIFT + 8;
/// The length and hash bits of a slot: what a probe compares first.
const CHECK_MASK: u64 = !((1 << LEN_SHIFT) - 1);
/// A free slot. Its rank bits are above every rank, so no token's slot equals it.
const EMPTY: u64 = u64::MAX;
/// No rank: the bytes are not a token.
const NONE: u32 = u32::MAX;
/// Pieces up to this many bytes merge in arrays on the stack; longer ones use the heap.
const SMALL: usize = 64;

/// One encoding's vocabulary: from token bytes to rank.
pub(crate) struct Ranks {
    /// Every token's bytes, in rank order.
    bytes: &'static [u8],
    /// Each token's slot, at the first free one from its hash's home.
    slots: Box<[u64]>,
    /// Shift of the hash that leaves a slot index.
    shift: u32,
    /// Length of the longest token: longer bytes are no token.
    longest: usize,
}

impl Ranks {
    /// Reads a vocabulary in the format `examples/extract_vocab.rs` writes: the number of tokens (u32,
    /// little-endian), each token's length (a byte), then the tokens' bytes, in rank order.
    ///
    /// # Panics
    ///
    /// If `data` is not in that format: the files are compiled in and read by the tests.
    #[allow(
        clippy::expect_used,
        reason = "the vocabularies are compiled in and checked by the tests"
    )]
    pub(crate) fn new(data: &'static [u8]) -> Ranks {
        let (count, rest) = data.split_first_chunk::<4>().expect("a token count");
        let count = u32::from_le_bytes(*count) as usize;
        let (lengths, bytes) = rest.split_at_checked(count).expect("a length for every token");
        assert!(count < RANK_MASK as usize, "too many tokens for a slot");
        assert!(bytes.len() < 1 << OFFSET_BITS, "too many bytes for a slot");
        let size = (count * 5 / 2).next_power_of_two().max(2);
        let mut ranks = Ranks {
            bytes,
            slots: vec![EMPTY; size].into_boxed_slice(),
            shift: 64 - size.trailing_zeros(),
            longest: lengths.iter().copied().max().map_or(0, usize::from),
        };
        let mut offset = 0;
        for (rank, &len) in lengths.iter().enumerate() {
            let token = &bytes[offset..offset + usize::from(len)];
            let hash = hash(token);
            let mut index = (hash >> ranks.shift) as usize;
            while ranks.slots[index] != EMPTY {
                index = (index + 1) & (size - 1);
            }
            ranks.slots[index] = check(hash, token.len()) | (offset as u64) << OFFSET_SHIFT | rank as u64;
            offset += usize::from(len);
        }
        assert_eq!(offset, bytes.len(), "the tokens' bytes");
        ranks
    }

    /// The rank of the token `bytes`, or [`NONE`] when they are no token.
    #[inline]
    fn rank_or_none(&self, bytes: &[u8]) -> u32 {
        let len = bytes.len();
        if len <= 8 {
            let key = pack(bytes);
            self.probe(short_hash(key, len), len, |token| pack(token) == key)
        } else if len <= self.longest {
            self.probe(long_hash(bytes), len, |token| token == bytes)
        } else {
            NONE
        }
    }

    /// The rank of the token of length `len` and hash `hash` for which `matches` holds, or [`NONE`].
    #[inline(always)]
    fn probe(&self, hash: u64, len: usize, matches: impl Fn(&[u8]) -> bool) -> u32 {
        let check = check(hash, len);
        let mut index = (hash >> self.shift) as usize;
        loop {
            let slot = self.slots[index];
            if slot == EMPTY {
                return NONE;
            }
            if slot & CHECK_MASK == check {
                let offset = (slot >> OFFSET_SHIFT) as usize & ((1 << OFFSET_BITS) - 1);
                if matches(&self.bytes[offset..offset + len]) {
                    return (slot & RANK_MASK) as u32;
                }
            }
            index = (index + 1) & (self.slots.len() - 1);
        }
    }

    /// Whether `bytes` are one token.
    #[inline]
    pub(crate) fn is_token(&self, bytes: &[u8]) -> bool {
        self.rank_or_none(bytes) != NONE
    }

    /// Whether the `len` bytes (1 to 8) in `key`, little-endian with zeros above them, are one token: the
    /// counter's common case, read from the text in one load.
    #[inline]
    pub(crate) fn is_short_token(&self, key: u64, len: usize) -> bool {
        self.probe(short_hash(key, len), len, |token| pack(token) == key) != NONE
    }

    /// The number of tokens tiktoken encodes `piece` (one piece of the split) to.
    pub(crate) fn count(&self, piece: &[u8]) -> u64 {
        match piece.len() {
            0 | 1 => piece.len() as u64,
            len if len <= SMALL => self.count_small(piece),
            _ => self.count_large(piece),
        }
    }

    /// Like [`Ranks::count`], but `None` when the count is over `limit`; a piece too long to fit is
    /// answered without merging (no token is longer than the longest), so the work is about that of
    /// `limit` tokens.
    pub(crate) fn count_till(&self, piece: &[u8], limit: u64) -> Option<u64> {
        let most_bytes = limit.saturating_mul(self.longest as u64);
        if piece.len() as u64 > most_bytes {
            return None;
        }
        Some(self.count(piece)).filter(|&count| count <= limit)
    }

    /// tiktoken's merge over arrays: `start[i]` is where part `i` starts, `rank[i]` the rank of parts `i`
    /// and `i + 1` together.
    fn count_small(&self, piece: &[u8]) -> u64 {
        let len = piece.len();
        let mut start = [0u8; SMALL + 1];
        let mut rank = [NONE; SMALL + 1];
        for (i, slot) in start.iter_mut().enumerate().take(len + 1) {
            *slot = i as u8;
        }
        for (i, slot) in rank.iter_mut().enumerate().take(len - 1) {
            *slot = self.rank_or_none(&piece[i..i + 2]);
        }
        let mut parts = len;
        loop {
            let mut best = NONE;
            let mut at = 0;
            for (i, &r) in rank[..parts - 1].iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == NONE {
                return parts as u64;
            }
            // Parts `at` and `at + 1` become one: drop the start of `at + 1` and its pair.
            start.copy_within(at + 2..=parts, at + 1);
            rank.copy_within(at + 2..parts, at + 1);
            parts -= 1;
            let bounds = |i: usize, j: usize| &piece[start[i] as usize..start[j] as usize];
            rank[at] = if at + 2 <= parts {
                self.rank_or_none(bounds(at, at + 2))
            } else {
                NONE
            };
            if at > 0 {
                rank[at - 1] = self.rank_or_none(bounds(at - 1, at + 1));
            }
        }
    }

    /// The same merges, in the same order, for long pieces: parts are a linked list by start, and the
    /// pairs waiting to merge sit in buckets by rank, the ranks in a min-heap. The lowest rank's bucket is
    /// sorted by start and merged left to right: merging a pair never makes another pair of its own rank
    /// (a part's pair only ever grows, and no two tokens share a rank), so the bucket's order holds until a
    /// merge makes a pair of a lower rank, which then goes first. An entry whose part's pair no longer has
    /// the bucket's rank is skipped. A run of one repeated byte (100k spaces) merges a few bucketfuls, not
    /// a heap operation per merge.
    fn count_large(&self, piece: &[u8]) -> u64 {
        let len = piece.len();
        // Past the last part: `len`; before the first: `u32::MAX`.
        let mut next: Vec<u32> = (1..=len as u32).collect();
        let mut prev: Vec<u32> = (0..len as u32).map(|i| i.wrapping_sub(1)).collect();
        let mut rank = vec![NONE; len];
        let mut waiting = Waiting::default();
        for (i, slot) in rank.iter_mut().enumerate().take(len - 1) {
            *slot = self.rank_or_none(&piece[i..i + 2]);
            waiting.add(*slot, i);
        }
        let mut parts = len as u64;
        while let Some((r, mut bucket)) = waiting.lowest() {
            let mut lower = false;
            while !lower && let Some(at) = bucket.starts.get(bucket.taken).map(|&at| at as usize) {
                bucket.taken += 1;
                if rank[at] != r {
                    continue;
                }
                let gone = next[at] as usize;
                let after = next[gone] as usize;
                rank[gone] = NONE;
                next[at] = after as u32;
                if after < len {
                    prev[after] = at as u32;
                }
                parts -= 1;
                rank[at] = if after < len {
                    self.rank_or_none(&piece[at..next[after] as usize])
                } else {
                    NONE
                };
                waiting.add(rank[at], at);
                lower |= rank[at] < r;
                if at > 0 {
                    let before = prev[at] as usize;
                    rank[before] = self.rank_or_none(&piece[before..after]);
                    waiting.add(rank[before], before);
                    lower |= rank[before] < r;
                }
            }
            if bucket.taken < bucket.starts.len() {
                waiting.put_back(r, bucket);
            }
        }
        parts
    }
}

/// The starts of pairs of one rank, those before `taken` merged or skipped.
#[derive(Default)]
struct Bucket {
    starts: Vec<u32>,
    taken: usize,
    /// Whether `starts[taken..]` ascend.
    sorted: bool,
}

/// Pairs waiting to merge, by rank.
#[derive(Default)]
struct Waiting {
    buckets: HashMap<u32, Bucket, FxBuildHasher>,
    ranks: BinaryHeap<Reverse<u32>>,
}

impl Waiting {
    /// Adds the pair starting at `start`, of rank `rank` (nothing when that is [`NONE`]).
    #[inline]
    fn add(&mut self, rank: u32, start: usize) {
        if rank == NONE {
            return;
        }
        let bucket = self.buckets.entry(rank).or_insert_with(|| {
            self.ranks.push(Reverse(rank));
            Bucket {
                sorted: true,
                ..Bucket::default()
            }
        });
        if bucket.starts.last().is_some_and(|&last| last as usize > start) {
            bucket.sorted = false;
        }
        bucket.starts.push(start as u32);
    }

    /// Takes out the bucket of the lowest rank, its waiting starts in ascending order.
    fn lowest(&mut self) -> Option<(u32, Bucket)> {
        let Reverse(rank) = self.ranks.pop()?;
        let mut bucket = self.buckets.remove(&rank)?;
        if !bucket.sorted {
            bucket.starts[bucket.taken..].sort_unstable();
            bucket.sorted = true;
        }
        Some((rank, bucket))
    }

    /// Returns a bucket [`Waiting::lowest`] took out, with starts still waiting.
    fn put_back(&mut self, rank: u32, bucket: Bucket) {
        self.ranks.push(Reverse(rank));
        self.buckets.insert(rank, bucket);
    }
}

/// The length and hash bits of a slot for bytes of length `len` (at most 255) and hash `hash`.
#[inline(always)]
fn check(hash: u64, len: usize) -> u64 {
    (len as u64) << LEN_SHIFT | hash << TAG_SHIFT
}

/// Up to eight bytes as one integer, little-endian with zeros above them.
#[inline(always)]
fn pack(bytes: &[u8]) -> u64 {
    let len = bytes.len();
    if let Some(word) = bytes.first_chunk::<8>() {
        u64::from_le_bytes(*word)
    } else if let (Some(head), Some(tail)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        // The two halves overlap by 8 - len bytes, the same bytes in the same places.
        u64::from(u32::from_le_bytes(*head)) | u64::from(u32::from_le_bytes(*tail)) << (8 * (len - 4))
    } else if len > 0 {
        u64::from(bytes[0])
            | u64::from(bytes[len / 2]) << (8 * (len / 2))
            | u64::from(bytes[len - 1]) << (8 * (len - 1))
    } else {
        0
    }
}

const K0: u64 = 0x9E37_79B9_7F4A_7C15;
const K1: u64 = 0xA076_1D64_78BD_642F;

/// The high and low halves of `a * b`, folded.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    product as u64 ^ (product >> 64) as u64
}

/// The hash of at most eight bytes, [`pack`]ed in `key`.
#[inline(always)]
fn short_hash(key: u64, len: usize) -> u64 {
    fold((len as u64) ^ K0 ^ key, K1)
}

/// The hash of more than eight bytes: eight at a time, each folded in with a 128-bit multiply, the
/// last eight read whole (overlapping what came before).
#[inline(always)]
fn long_hash(bytes: &[u8]) -> u64 {
    let mut state = (bytes.len() as u64) ^ K0;
    let mut rest = bytes;
    while rest.len() > 8 {
        if let Some((word, tail)) = rest.split_first_chunk::<8>() {
            state = fold(state ^ u64::from_le_bytes(*word), K1);
            rest = tail;
        }
    }
    let last = bytes.last_chunk::<8>().map_or(0, |word| u64::from_le_bytes(*word));
    fold(state ^ last, K1)
}

/// The hash of `bytes` [`Ranks::rank_or_none`] looks them up by.
#[inline(always)]
fn hash(bytes: &[u8]) -> u64 {
    if bytes.len() <= 8 {
        short_hash(pack(bytes), bytes.len())
    } else {
        long_hash(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encodings() -> [(&'static [u8], &'static bpe_openai::Tokenizer); 2] {
        [
            (include_bytes!("../vocab/o200k_base.ranks"), bpe_openai::o200k_base()),
            (include_bytes!("../vocab/cl100k_base.ranks"), bpe_openai::cl100k_base()),
        ]
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn the_compiled_vocabularies_are_bpe_openais() {
        for (data, reference) in encodings() {
            let ranks = Ranks::new(data);
            let bpe = &reference.bpe;
            assert_eq!(
                u32::from_le_bytes(data[..4].try_into().unwrap()) as usize,
                bpe.num_tokens()
            );
            let bytes: usize = (0..bpe.num_tokens()).map(|id| bpe.token_bytes(id as u32).len()).sum();
            assert_eq!(ranks.bytes.len(), bytes);
            for rank in 0..bpe.num_tokens() as u32 {
                let token = bpe.token_bytes(rank);
                assert_eq!(ranks.rank_or_none(token), rank, "token {rank}");
                if token.len() <= 8 {
                    let mut word = [0u8; 8];
                    word[..token.len()].copy_from_slice(token);
                    assert!(
                        ranks.is_short_token(u64::from_le_bytes(word), token.len()),
                        "token {rank}"
                    );
                    word[token.len() - 1] ^= 0x80;
                    let other = &word[..token.len()];
                    assert_eq!(
                        ranks.is_short_token(u64::from_le_bytes(word), token.len()),
                        ranks.is_token(other)
                    );
                }
            }
            assert_eq!(ranks.rank_or_none(b""), NONE);
            assert_eq!(ranks.rank_or_none(&[b'a'; 300]), NONE);
        }
    }

    #[test]
    fn merges_count_as_bpe_openai_on_random_bytes() {
        // Bytes drawn from a few tokens' bytes so that pieces merge deep; lengths on both sides of SMALL.
        let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
        for (data, reference) in encodings() {
            let ranks = Ranks::new(data);
            let bpe = &reference.bpe;
            for round in 0..3000 {
                let alphabet: Vec<u8> = (0..1 + round % 6).map(|_| rng.next() as u8).collect();
                let words: Vec<&[u8]> = (0..1 + round % 5)
                    .map(|_| bpe.token_bytes(rng.below(bpe.num_tokens()) as u32))
                    .collect();
                let len = 2 + rng.below(if round % 10 == 0 { 400 } else { 80 });
                let mut piece = Vec::with_capacity(len);
                while piece.len() < len {
                    if rng.below(2) == 0 {
                        piece.extend_from_slice(words[rng.below(words.len())]);
                    } else {
                        piece.push(alphabet[rng.below(alphabet.len())]);
                    }
                }
                let expected = bpe.count(&piece) as u64;
                assert_eq!(ranks.count(&piece), expected, "{piece:?}");
                if piece.len() <= SMALL {
                    assert_eq!(ranks.count_large(&piece), expected, "{piece:?}");
                }
                assert_eq!(ranks.count_till(&piece, expected), Some(expected));
                assert_eq!(ranks.count_till(&piece, expected - 1), None);
            }
        }
    }

    #[test]
    fn counts_equal_bpe_openais_on_varied_text() {
        use crate::{EncodingName, count_text};

        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let samples = [
            "The quick brown fox's 12345 jumps; over\n\n  the lazy dog.",
            "Étude: naïve café — “quoted” 😀 日本語のテキスト, 中文文本. Ünïcödé   \u{a0}spaces\r\n",
            "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
            "антидизестаблишментарианизм ἀρχὴ ἥμισυ παντός ١٢٣٤٥ ½ ²",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "\u{301}\u{301}\u{301}",
        ];
        let mut texts: Vec<String> = samples.iter().map(|s| (*s).to_owned()).collect();
        for round in 0..400 {
            // Random code points anywhere in Unicode, then mixes of the samples' characters.
            texts.push(
                (0..1 + round % 200)
                    .filter_map(|_| char::from_u32(rng.below(0x11_0000) as u32))
                    .collect(),
            );
            let pool: Vec<char> = samples.concat().chars().collect();
            texts.push((0..1 + round % 300).map(|_| pool[rng.below(pool.len())]).collect());
        }
        // Long letter runs: pieces far past SMALL bytes.
        texts.push("ab".repeat(3000));
        texts.push("Supercalifragilistic".repeat(100));
        texts.push("日本語".repeat(500));
        texts.push("a".repeat(5000));
        texts.push(" ".repeat(5000) + "x");
        texts.push("!?".repeat(2000));
        texts.push("\u{301}".repeat(2000));
        for name in EncodingName::ALL {
            let reference = match name {
                EncodingName::O200kBase => bpe_openai::o200k_base(),
                EncodingName::Cl100kBase => bpe_openai::cl100k_base(),
            };
            for text in &texts {
                assert_eq!(
                    count_text(text, name).tokens,
                    reference.count(text.as_str()) as u64,
                    "{name} {text:?}"
                );
            }
        }
    }
}
