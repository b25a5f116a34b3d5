//! Counts of recently counted long texts, shared by every thread.
//!
//! Clients send the same texts again and again: a system prompt on every request, and a chat application
//! or a coding agent its whole conversation on every turn, so without a cache counting an agent's session
//! costs the square of its length. Counting costs about 35 instructions a byte of English, hashing a text
//! well under one (below): a hit is tens of times cheaper than counting again, and a miss adds a few
//! percent to the count it precedes (callgrind, 2,000 prompts of 2.3 KB, measured with the SipHash of
//! before: a fourteenth and 6%).
//!
//! A text is known by its length and a 128-bit XXH3 hash under a 192-byte secret drawn at random when
//! the process starts (XXH3's custom-secret mode): two different texts meet by chance once in 2^128
//! lookups. XXH3 is not a cryptographic hash, where the SipHash-1-3 used before is a keyed
//! pseudo-random function; but the hash is paid on every long text of every request, and SipHash cost
//! 2.5 instructions a byte (5.1k for the benchmark's 2 KB prompt, 3.6% of the gateway's work per
//! request) where XXH3 costs a quarter of that (callgrind). To take another text's count, a client
//! would have to find a collision under a secret it never sees, from no hash ever shown, each try a
//! request; and a count taken wrongly misjudges only that request's estimate. Direct-mapped and fixed in
//! size (about 64 KB): a stream of distinct texts only makes misses, each the plain count.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use xxhash_rust::xxh3::xxh3_128_with_secret;

use crate::split::Pattern;

/// Shortest text cached, in bytes: shorter ones cost less to count than the hash, lock and bookkeeping.
pub(crate) const TEXT_MIN: usize = 256;
const SLOTS: usize = 1024;

#[derive(Clone, Copy)]
struct Slot {
    pattern: Option<Pattern>,
    hash: u128,
    len: usize,
    tokens: u64,
}

impl Slot {
    const EMPTY: Slot = Slot {
        pattern: None,
        hash: 0,
        len: 0,
        tokens: 0,
    };

    /// Whether this slot holds the count of the text with `hash` and `len`, in `pattern`'s encoding.
    fn holds(&self, pattern: Pattern, hash: u128, len: usize) -> bool {
        self.pattern == Some(pattern) && self.hash == hash && self.len == len
    }
}

/// One lock per slot: two threads wait on each other only for the same slot, and then not at all (see
/// [`count`]).
static CACHE: [Mutex<Slot>; SLOTS] = [const { Mutex::new(Slot::EMPTY) }; SLOTS];
/// The secret texts are hashed under: 24 words from std's per-process random SipHash keys.
static SECRET: LazyLock<[u8; 192]> = LazyLock::new(|| {
    let keys = RandomState::new();
    let mut secret = [0u8; 192];
    for (i, word) in secret.chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&keys.hash_one(i).to_le_bytes());
    }
    secret
});

static ENABLED: AtomicBool = AtomicBool::new(true);
static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);

/// Long texts found in the cache and long texts counted since the process started, for `/metrics`: how
/// much counting the cache saves on this traffic.
pub fn text_cache_stats() -> (u64, u64) {
    (HITS.load(Ordering::Relaxed), MISSES.load(Ordering::Relaxed))
}

/// Turns the cache on or off for the whole process (on at start). For the benchmarks, which measure
/// counting, not the cache; not an API.
#[doc(hidden)]
pub fn set_text_cache(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether `text` is long enough to cache and the cache is on.
pub(crate) fn applies(text: &str) -> bool {
    text.len() >= TEXT_MIN && ENABLED.load(Ordering::Relaxed)
}

/// Where `text` would be cached, and its hash.
fn locate(text: &str) -> (&'static Mutex<Slot>, u128) {
    let hash = xxh3_128_with_secret(text.as_bytes(), &SECRET[..]);
    (&CACHE[(hash % SLOTS as u128) as usize], hash)
}

/// The tokens `text` was found to have, if it is in the cache.
#[cfg(test)]
fn cached(pattern: Pattern, text: &str) -> Option<u64> {
    let (slot, hash) = locate(text);
    let slot = slot.try_lock().ok()?;
    slot.holds(pattern, hash, text.len()).then_some(slot.tokens)
}

/// The tokens of `text`, from the cache or from `count`, whose answer is then cached. A slot another
/// thread holds is neither read nor written: that count is made again, not waited for.
pub(crate) fn count(pattern: Pattern, text: &str, count: impl FnOnce() -> u64) -> u64 {
    let (slot, hash) = locate(text);
    if let Ok(found) = slot.try_lock()
        && found.holds(pattern, hash, text.len())
    {
        HITS.fetch_add(1, Ordering::Relaxed);
        return found.tokens;
    }
    MISSES.fetch_add(1, Ordering::Relaxed);
    let tokens = count();
    if let Ok(mut slot) = slot.try_lock() {
        *slot = Slot {
            pattern: Some(pattern),
            hash,
            len: text.len(),
            tokens,
        };
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_text_is_answered_from_the_cache_and_only_for_its_pattern() {
        let text = format!("{} a text only this test counts", "x".repeat(TEXT_MIN));
        assert_eq!(cached(Pattern::O200k, &text), None);
        let mut counts = 0;
        let mut counted = || {
            counts += 1;
            41
        };
        assert_eq!(count(Pattern::O200k, &text, &mut counted), 41);
        assert_eq!(count(Pattern::O200k, &text, &mut counted), 41);
        assert_eq!(counts, 1, "the second count came from the cache");
        // Other tests count too: the process's counters only grow.
        let (hits, misses) = text_cache_stats();
        assert!(hits >= 1 && misses >= 1, "{hits} hits, {misses} misses");
        assert_eq!(cached(Pattern::O200k, &text), Some(41));
        assert_eq!(
            cached(Pattern::Cl100k, &text),
            None,
            "another encoding's count is not this one's"
        );
        // One byte changed at the end: another text, counted afresh.
        let other = format!("{}!", &text[..text.len() - 1]);
        assert_eq!(cached(Pattern::O200k, &other), None);
    }
}
