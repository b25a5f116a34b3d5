//! Compact byte-pair vocabularies and tiktoken's merge.
//!
//! A vocabulary is its tokens' bytes in rank order, compiled in (`vocab/*.ranks`, extracted once from
//! `bpe-openai`'s tables by `examples/extract_vocab.rs`), where each token starts (a `u32` a token), and an
//! open-addressing table from the hash of a token's bytes to its rank (a `u32` a slot, under two in five
//! slots used): about 4 MB for o200k_base, where `bpe-openai`'s tables took 69 MB.
//!
//! A piece counts as tiktoken encodes it: start from single bytes and merge the adjacent pair whose
//! concatenation has the lowest rank (the leftmost of equals) until no adjacent pair is a token. Short
//! pieces scan an array as tiktoken does; longer ones keep the pairs in a heap, O(n log n) rather than
//! tiktoken's O(n²), with the same merges in the same order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Bits of a slot that hold the rank; the rest hold bits of the hash, so that a probe rarely reads the
/// token's bytes for nothing.
const RANK_BITS: u32 = 18;
const RANK_MASK: u32 = (1 << RANK_BITS) - 1;
/// A free slot. Its rank bits are above every rank, so no token's slot equals it.
const EMPTY: u32 = u32::MAX;
/// No rank: the bytes are not a token.
const NONE: u32 = u32::MAX;
/// Pieces up to this many bytes merge in arrays on the stack; longer ones use the heap.
const SMALL: usize = 64;

/// One encoding's vocabulary: token bytes to rank, rank to token bytes.
pub(crate) struct Ranks {
    /// Every token's bytes, in rank order.
    bytes: &'static [u8],
    /// Where each token starts in `bytes`, and then where the last one ends.
    starts: Box<[u32]>,
    /// Rank and hash bits of each token, at the first free slot from its hash's home.
    slots: Box<[u32]>,
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
        assert!(count < RANK_MASK as usize, "too many tokens for a slot");
        let (lengths, bytes) = rest.split_at_checked(count).expect("a length for every token");
        let mut starts = Vec::with_capacity(count + 1);
        let mut end = 0u32;
        for &length in lengths {
            starts.push(end);
            end += u32::from(length);
        }
        starts.push(end);
        assert_eq!(end as usize, bytes.len(), "the tokens' bytes");
        let size = (count * 5 / 2).next_power_of_two().max(2);
        let mut ranks = Ranks {
            bytes,
            starts: starts.into_boxed_slice(),
            slots: vec![EMPTY; size].into_boxed_slice(),
            shift: 64 - size.trailing_zeros(),
            longest: lengths.iter().copied().max().map_or(0, usize::from),
        };
        for rank in 0..count as u32 {
            let token = ranks.token(rank);
            let hash = hash(token);
            let mut index = (hash >> ranks.shift) as usize;
            while ranks.slots[index] != EMPTY {
                index = (index + 1) & (size - 1);
            }
            ranks.slots[index] = tag(hash) | rank;
        }
        ranks
    }

    /// The bytes of the token of rank `rank`.
    #[inline(always)]
    fn token(&self, rank: u32) -> &'static [u8] {
        let rank = rank as usize;
        &self.bytes[self.starts[rank] as usize..self.starts[rank + 1] as usize]
    }

    /// The rank of the token `bytes`, or [`NONE`] when they are no token.
    #[inline]
    fn rank_or_none(&self, bytes: &[u8]) -> u32 {
        if bytes.len() > self.longest {
            return NONE;
        }
        let hash = hash(bytes);
        let tag = tag(hash);
        let mut index = (hash >> self.shift) as usize;
        loop {
            let slot = self.slots[index];
            if slot == EMPTY {
                return NONE;
            }
            if slot & !RANK_MASK == tag {
                let rank = slot & RANK_MASK;
                if self.token(rank) == bytes {
                    return rank;
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

    /// The same merges with the pairs in a min-heap of (rank, start), the leftmost lowest first: parts
    /// are a linked list by start, and a heap entry whose rank is no longer its part's is skipped (a
    /// part's pair only ever grows, and no two tokens share a rank, so a stale rank never comes back).
    fn count_large(&self, piece: &[u8]) -> u64 {
        let len = piece.len();
        // Past the last part: `len`; before the first: `u32::MAX`.
        let mut next: Vec<u32> = (1..=len as u32).collect();
        let mut prev: Vec<u32> = (0..len as u32).map(|i| i.wrapping_sub(1)).collect();
        let mut rank = vec![NONE; len];
        let mut heap = Vec::with_capacity(len);
        for i in 0..len - 1 {
            rank[i] = self.rank_or_none(&piece[i..i + 2]);
            if rank[i] != NONE {
                heap.push(Reverse(entry(rank[i], i)));
            }
        }
        let mut heap = BinaryHeap::from(heap);
        let mut parts = len as u64;
        while let Some(Reverse(top)) = heap.pop() {
            let (r, at) = ((top >> 32) as u32, top as u32 as usize);
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
            if rank[at] != NONE {
                heap.push(Reverse(entry(rank[at], at)));
            }
            if at > 0 {
                let before = prev[at] as usize;
                rank[before] = self.rank_or_none(&piece[before..after]);
                if rank[before] != NONE {
                    heap.push(Reverse(entry(rank[before], before)));
                }
            }
        }
        parts
    }
}

/// A heap entry: rank first, then start, in one integer.
#[inline(always)]
fn entry(rank: u32, start: usize) -> u64 {
    u64::from(rank) << 32 | start as u64
}

/// The hash bits a slot keeps beside the rank.
#[inline(always)]
fn tag(hash: u64) -> u32 {
    hash as u32 & !RANK_MASK
}

/// A hash of `bytes`: eight bytes at a time, each folded in with a 128-bit multiply.
#[inline(always)]
fn hash(bytes: &[u8]) -> u64 {
    const K0: u64 = 0x9E37_79B9_7F4A_7C15;
    const K1: u64 = 0xA076_1D64_78BD_642F;
    #[inline(always)]
    fn fold(a: u64, b: u64) -> u64 {
        let product = u128::from(a) * u128::from(b);
        product as u64 ^ (product >> 64) as u64
    }
    let len = bytes.len();
    let mut state = (len as u64) ^ K0;
    let mut rest = bytes;
    while rest.len() > 8 {
        if let Some((word, tail)) = rest.split_first_chunk::<8>() {
            state = fold(state ^ u64::from_le_bytes(*word), K1);
            rest = tail;
        }
    }
    // The last up to eight bytes, read whole where possible (overlapping what came before).
    let last = if let Some(word) = bytes.last_chunk::<8>() {
        u64::from_le_bytes(*word)
    } else if let (Some(head), Some(tail)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        u64::from(u32::from_le_bytes(*head)) | u64::from(u32::from_le_bytes(*tail)) << 32
    } else if len > 0 {
        u64::from(bytes[0]) | u64::from(bytes[len / 2]) << 8 | u64::from(bytes[len - 1]) << 16
    } else {
        0
    };
    fold(state ^ last, K1)
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
            assert_eq!(ranks.starts.len() - 1, bpe.num_tokens());
            for rank in 0..bpe.num_tokens() as u32 {
                assert_eq!(ranks.token(rank), bpe.token_bytes(rank), "token {rank}");
                assert_eq!(ranks.rank_or_none(bpe.token_bytes(rank)), rank, "token {rank}");
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
