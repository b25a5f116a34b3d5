//! JSON string escaping eight bytes at a time.
//!
//! serde_json looks at every byte of a string it writes through a table, about eight instructions a
//! byte: for a chat request's messages that was a tenth of the gateway's work per request, and it grows
//! with the prompt (a coding agent resends its whole conversation every turn). Long message texts are
//! therefore escaped here, finding the bytes that need escaping a word at a time, and handed to
//! serde_json as ready-made JSON ([`JsonText`]). The escapes are serde_json's own, so the bytes written
//! are the same.

use std::fmt;

use serde::ser::{Error as _, Serialize, SerializeStruct as _, Serializer};

/// Strings shorter than this are left to serde_json: their copy would cost more than it saves.
const OWN_ESCAPING_FROM: usize = 128;

/// A string serialised through [`write_escaped`] when it is long.
///
/// Long strings are written as serde_json's `RawValue` writes itself, which only serde_json's
/// serializers (`to_vec`, `to_writer`, `to_value`) understand; the wire types are never serialised by
/// anything else.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonText<'a>(pub(crate) &'a str);

impl Serialize for JsonText<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.0;
        if text.len() < OWN_ESCAPING_FROM {
            return serializer.serialize_str(text);
        }
        let mut json = String::with_capacity(text.len() + 2);
        write_quoted(&mut json, text).map_err(S::Error::custom)?;
        // What `RawValue::serialize` does, without `RawValue::from_string`, which parses the text again
        // to check that it is JSON: 4.7k instructions for the benchmark's 2 KB prompt, a thirtieth of
        // the gateway's work per request (callgrind), for text `write_quoted` made JSON by construction.
        // Should serde_json ever rename its token, the bytes written change and the tests below fail.
        let mut raw = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        raw.serialize_field(RAW_VALUE_TOKEN, json.as_str())?;
        raw.end()
    }
}

/// The struct and field name by which serde_json's serializers know a `RawValue` and write its one
/// field's text as it is (serde_json's `raw.rs`).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Writes `text` as a JSON string, quotes included, escaped as [`write_escaped`] escapes it.
pub fn write_quoted<W: fmt::Write + ?Sized>(out: &mut W, text: &str) -> fmt::Result {
    out.write_char('"')?;
    write_escaped(out, text)?;
    out.write_char('"')
}

/// Writes `text` as the inside of a JSON string, escaped exactly as serde_json escapes it: `\"`, `\\`,
/// `\b`, `\f`, `\n`, `\r`, `\t`, and other control characters as `\u00xx`.
pub fn write_escaped<W: fmt::Write + ?Sized>(out: &mut W, text: &str) -> fmt::Result {
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(at) = next_special(bytes, start) {
        out.write_str(&text[start..at])?;
        let byte = bytes[at];
        match byte {
            b'"' => out.write_str("\\\"")?,
            b'\\' => out.write_str("\\\\")?,
            b'\x08' => out.write_str("\\b")?,
            b'\x0c' => out.write_str("\\f")?,
            b'\n' => out.write_str("\\n")?,
            b'\r' => out.write_str("\\r")?,
            b'\t' => out.write_str("\\t")?,
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let escape = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ];
                // Six ASCII bytes.
                out.write_str(std::str::from_utf8(&escape).map_err(|_| fmt::Error)?)?;
            }
        }
        // The escaped bytes are ASCII, so the next slice starts on a character boundary.
        start = at + 1;
    }
    out.write_str(&text[start..])
}

/// Bytes tested at once by [`next_special`]'s first pass.
const BLOCK: usize = 64;

/// The first byte at or after `from` that JSON requires escaped: a control character, `"` or `\`.
///
/// A whole block is tested first, with no early exit inside it, which the compiler turns into vector
/// compares (SSE2 on any x86-64): 44 instructions in the loop for 64 bytes, 34 of them run per block under
/// callgrind, where testing them a word at a time took about 120. Only a block that holds such a byte is
/// searched word by word.
fn next_special(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let (blocks, tail) = rest.as_chunks::<BLOCK>();
    let mut offset = from;
    for block in blocks {
        if has_special(block) {
            return first_special(block).map(|at| offset + at);
        }
        offset += BLOCK;
    }
    first_special(tail).map(|at| offset + at)
}

/// Whether `block` holds a byte that JSON requires escaped.
#[inline]
fn has_special(block: &[u8; BLOCK]) -> bool {
    block.iter().fold(false, |found, &b| found | is_special(b))
}

/// Whether JSON requires `b` escaped: a control character, `"` or `\`. Without short-circuits, so that a
/// fold over a block stays vector compares.
#[inline]
fn is_special(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// The first byte of `bytes` that JSON requires escaped, eight bytes at a time.
fn first_special(bytes: &[u8]) -> Option<usize> {
    let (words, tail) = bytes.as_chunks::<8>();
    for (index, word) in words.iter().enumerate() {
        let bits = special_bits(u64::from_le_bytes(*word));
        if bits != 0 {
            // The lowest flagged byte is a true one.
            return Some(index * 8 + bits.trailing_zeros() as usize / 8);
        }
    }
    tail.iter().position(|&b| is_special(b)).map(|at| words.len() * 8 + at)
}

/// The high bit of each byte of `x` that is below 0x20, `"` or `\`, the lowest set bit exact: a byte
/// below 0x20 borrows when 0x20 is taken from it, and `"` and `\` are the bytes that become zero when
/// xored with themselves and then borrow when 1 is taken. A borrow only carries into the bytes above a
/// true match, so bits above the lowest may be false; bytes of 0x80 and above never match. Scanners of
/// JSON strings use it to skip to the string's end or next escape, eight bytes at a time.
#[inline]
pub fn special_bits(x: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    (x.wrapping_sub(ONES * 0x20) | quote.wrapping_sub(ONES) | backslash.wrapping_sub(ONES)) & !x & HIGHS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        write_escaped(&mut out, text).unwrap();
        out
    }

    fn serde_escaped(text: &str) -> String {
        let json = serde_json::to_string(text).unwrap();
        json[1..json.len() - 1].to_owned()
    }

    #[test]
    fn escapes_as_serde_json_does_at_every_position_of_a_word() {
        let specials = [
            "\"", "\\", "\n", "\r", "\t", "\x08", "\x0c", "\x00", "\x1f", "\x7f", "é", "€", "𝄞", "/",
        ];
        // Lengths across one and two whole blocks, so that both passes find every kind of byte.
        for len in (0..40).chain(BLOCK - 4..BLOCK + 4).chain(2 * BLOCK - 4..2 * BLOCK + 4) {
            for special in specials {
                for at in 0..=len {
                    let text = format!("{}{special}{}", "a".repeat(at), "b".repeat(len - at));
                    assert_eq!(escaped(&text), serde_escaped(&text), "{text:?}");
                }
            }
        }
        let every_byte: String = (0u8..0x80).map(char::from).collect();
        assert_eq!(escaped(&every_byte), serde_escaped(&every_byte));
        assert_eq!(escaped(&every_byte.repeat(3)), serde_escaped(&every_byte.repeat(3)));
    }

    #[test]
    fn long_texts_serialise_as_serde_json_would() {
        let texts = [
            "short".to_owned(),
            "a plain long prompt, nothing to escape. ".repeat(20),
            "line one\nline \"two\"\t\\ and a bell \x07, é and 𝄞\r\n".repeat(12),
        ];
        for text in &texts {
            let ours = serde_json::to_vec(&JsonText(text)).unwrap();
            assert_eq!(ours, serde_json::to_vec(text).unwrap());
            assert_eq!(
                serde_json::to_value(JsonText(text)).unwrap(),
                serde_json::Value::from(text.as_str())
            );
        }
    }
}
