//! Virtual keys: generation, hashing, display prefixes.
//!
//! A key is `sk-sluice-` followed by 32 bytes from the operating system's random source, base62-encoded to a
//! fixed 43 characters. Only its SHA-256 is stored: the key has 256 bits of entropy, so an unsalted fast
//! hash is enough (nothing to brute-force), and it lets the auth cache look keys up by hash in a map.

use std::fmt;

use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// What every virtual key starts with.
pub const KEY_PREFIX: &str = "sk-sluice-";

/// Characters of the random part shown in a key's display prefix.
const SHOWN: usize = 4;

/// Length of the base62 encoding of 32 bytes: 62^43 > 2^256.
const ENCODED_LEN: usize = 43;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The SHA-256 of a virtual key: what the store keeps and what lookups use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Hashes a presented key (whatever it looks like; unknown keys simply match nothing).
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self, StoreError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| StoreError::Corrupt(format!("key hash of {} bytes, expected 32", bytes.len())))
    }
}

impl fmt::Debug for KeyHash {
    // A hash is not a secret, but a short form keeps logs readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Whether `key` has the shape of a virtual key (prefix, length, alphabet), so that auth can refuse
/// anything else without hashing it.
pub fn looks_like_key(key: &str) -> bool {
    key.strip_prefix(KEY_PREFIX)
        .is_some_and(|rest| rest.len() == ENCODED_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A freshly generated key: the plaintext (to show once), its hash and its display prefix.
pub(crate) struct Generated {
    pub(crate) plaintext: SecretString,
    pub(crate) hash: KeyHash,
    pub(crate) prefix: String,
}

/// Generates a key from the operating system's random source.
pub(crate) fn generate() -> Result<Generated, StoreError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
    let encoded = base62(&bytes);
    let plaintext = format!("{KEY_PREFIX}{encoded}");
    let hash = KeyHash::of(&plaintext);
    let prefix = format!("{KEY_PREFIX}{}…", &encoded[..SHOWN]);
    Ok(Generated {
        plaintext: SecretString::from(plaintext),
        hash,
        prefix,
    })
}

/// Base62 of a 256-bit big-endian number, left-padded with `0` to 43 characters.
fn base62(bytes: &[u8; 32]) -> String {
    let mut number = *bytes;
    let mut out = [b'0'; ENCODED_LEN];
    for slot in out.iter_mut().rev() {
        // Long division of the whole number by 62; the remainder is the next digit from the right.
        let mut remainder: u32 = 0;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            remainder = acc % 62;
        }
        *slot = ALPHABET[remainder as usize];
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn base62_is_fixed_width_and_exact() {
        assert_eq!(base62(&[0; 32]), "0".repeat(43));
        let mut one = [0u8; 32];
        one[31] = 61;
        assert_eq!(base62(&one), format!("{}z", "0".repeat(42)));
        one[31] = 62;
        assert_eq!(base62(&one), format!("{}10", "0".repeat(41)));
        // 2^256 - 1 still fits in 43 digits.
        let max = base62(&[0xff; 32]);
        assert_eq!(max.len(), 43);
        assert_ne!(max.as_bytes()[0], b'0');
    }

    #[test]
    fn generated_keys_have_the_shape_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        let key = a.plaintext.expose_secret();
        assert!(looks_like_key(key), "{key}");
        assert_eq!(key.len(), KEY_PREFIX.len() + 43);
        assert_ne!(key, b.plaintext.expose_secret());
        assert_eq!(a.hash, KeyHash::of(key));
        assert!(a.prefix.starts_with(KEY_PREFIX) && a.prefix.ends_with('…'));
        assert!(key.starts_with(a.prefix.trim_end_matches('…')));
    }

    #[test]
    fn shape_check() {
        assert!(!looks_like_key("sk-sluice-dev"));
        assert!(!looks_like_key(&format!("sk-other-{}", "a".repeat(43))));
        assert!(!looks_like_key(&format!("{KEY_PREFIX}{}!", "a".repeat(42))));
        assert!(looks_like_key(&format!("{KEY_PREFIX}{}", "a".repeat(43))));
    }

    #[test]
    fn hash_debug_is_short() {
        assert_eq!(format!("{:?}", KeyHash::of("")), "KeyHash(e3b0c44298fc…)");
    }
}
