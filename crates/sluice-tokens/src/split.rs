//! Pre-tokenization: cutting text into the pieces BPE then encodes one by one.
//!
//! OpenAI's encodings cut text with a regular expression before merging bytes. [`Splitter`] runs that
//! expression with `regex-automata` (linear time, but about 80 ns a piece); most prompts are ASCII, and
//! on ASCII the expression reduces to a few byte-class runs, which [`ascii_piece`] scans directly. Any
//! byte at or above 0x80 that could change the answer makes it give up, and the caller asks the regex
//! for that one piece, so the result is the regex's on every input (differential tests below).
//!
//! The two patterns, with `\s+(?!\S)` standing for what the regex emulates with a one-character look-ahead:
//!
//! - cl100k: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|`
//!   `\s*[\r\n]+|\s+(?!\S)|\s+`
//! - o200k: `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|...)?|`
//!   `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|...)?|\p{N}{1,3}|`
//!   ` ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//!
//! Alternatives are tried in order (leftmost-first), so on ASCII: a contraction (cl100k), else a letter
//! run with an optional leading non-letter, non-digit, non-newline character, else one to three digits,
//! else an optional space and a punctuation run with trailing newlines, else whitespace.

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input};

/// The split pattern of an encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// cl100k_base.
    Cl100k,
    /// o200k_base.
    O200k,
}

/// One of OpenAI's letter-run alternatives of o200k (capitals then lowercase, or the reverse), each with
/// its optional contraction.
const O200K_LETTERS: [&str; 2] = [
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
];

/// Which of [`Splitter`]'s patterns stands for `\s+(?!\S)`: it matches one character too many.
const LOOKAHEAD: usize = 1;

/// The whole split expression, for the pieces [`ascii_piece`] leaves. `regex-automata` has no look-ahead,
/// so `\s+(?!\S)` is matched as `\s+\s` (the second of three patterns, tried in order like alternatives)
/// and its last character given back; `\s+$`, which the look-ahead also matches, joins the first.
pub(crate) struct Splitter {
    regex: Regex,
}

impl Splitter {
    /// The expression of `pattern`.
    ///
    /// # Panics
    ///
    /// Never: the expressions are constants, built by the tests.
    #[allow(clippy::expect_used, reason = "constant expressions, built by the tests")]
    pub(crate) fn new(pattern: Pattern) -> Splitter {
        let first = match pattern {
            Pattern::Cl100k => [
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",
                r"[^\r\n\p{L}\p{N}]?\p{L}+",
                r"\p{N}{1,3}",
                r" ?[^\s\p{L}\p{N}]+[\r\n]*",
                r"\s*[\r\n]+",
                r"\s+$",
            ]
            .join("|"),
            Pattern::O200k => [
                O200K_LETTERS[0],
                O200K_LETTERS[1],
                r"\p{N}{1,3}",
                r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
                r"\s*[\r\n]+",
                r"\s+$",
            ]
            .join("|"),
        };
        let regex = Regex::new_many(&[first.as_str(), r"\s+\s", r"\s+"]).expect("a valid split expression");
        Splitter { regex }
    }

    /// The end of the piece of `text` that starts at `start`.
    pub(crate) fn piece_end(&self, text: &str, start: usize) -> usize {
        let rest = &text[start..];
        let Some(found) = self.regex.find(Input::new(rest).anchored(Anchored::Yes)) else {
            // Every character matches some alternative; should none, the rest is one piece.
            return text.len();
        };
        let mut end = found.end();
        if found.pattern().as_usize() == LOOKAHEAD
            && let Some(last) = rest[..end].chars().next_back()
        {
            end -= last.len_utf8();
        }
        start + end
    }
}

// Byte classes. `\s` on ASCII is 0x09..=0x0D and the space (Unicode White_Space); 0x1C..=0x1F are not.
const UPPER: u8 = 1;
const LOWER: u8 = 2;
const LETTER: u8 = UPPER | LOWER;
const DIGIT: u8 = 4;
const SPACE: u8 = 8;
const NEWLINE: u8 = 16;
const PUNCT: u8 = 32;
/// A byte of a multi-byte character: the class is unknown without decoding.
const HIGH: u8 = 64;
/// Past the end of the text.
const END: u8 = 0;

const CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        table[b] = match b as u8 {
            b'A'..=b'Z' => UPPER,
            b'a'..=b'z' => LOWER,
            b'0'..=b'9' => DIGIT,
            b'\r' | b'\n' => SPACE | NEWLINE,
            0x09 | 0x0B | 0x0C | b' ' => SPACE,
            0x80..=0xFF => HIGH,
            _ => PUNCT,
        };
        b += 1;
    }
    table
};

#[inline(always)]
fn class(bytes: &[u8], i: usize) -> u8 {
    match bytes.get(i) {
        Some(&b) => CLASSES[b as usize],
        None => END,
    }
}

/// The end of the run of bytes in `classes` starting at `i`, or `None` when a non-ASCII byte ends it
/// (it might belong to the class).
#[inline(always)]
fn run(bytes: &[u8], mut i: usize, classes: u8) -> Option<usize> {
    loop {
        let c = class(bytes, i);
        if c & classes == 0 {
            return if c & HIGH != 0 { None } else { Some(i) };
        }
        i += 1;
    }
}

/// The end of a run that no non-ASCII character can extend (`[\r\n]*`, `[\r\n/]*`).
#[inline(always)]
fn ascii_run(bytes: &[u8], mut i: usize, set: &[u8]) -> usize {
    while bytes.get(i).is_some_and(|b| set.contains(b)) {
        i += 1;
    }
    i
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `i`: `Some(Some(end))` on a match, `Some(None)` on none, `None`
/// when a non-ASCII byte is in the way (case folding maps `ſ` to `s`).
#[inline]
fn contraction(bytes: &[u8], i: usize) -> Option<Option<usize>> {
    if bytes.get(i) != Some(&b'\'') {
        return Some(None);
    }
    let Some(&first) = bytes.get(i + 1) else {
        return Some(None);
    };
    if first >= 0x80 {
        return None;
    }
    let second = match first.to_ascii_lowercase() {
        b's' | b't' | b'm' | b'd' => return Some(Some(i + 2)),
        b'r' | b'v' => b'e',
        b'l' => b'l',
        _ => return Some(None),
    };
    match bytes.get(i + 2) {
        Some(&b) if b >= 0x80 => None,
        Some(&b) if b.to_ascii_lowercase() == second => Some(Some(i + 3)),
        _ => Some(None),
    }
}

/// `\p{N}{1,3}` at `i`, which holds a digit.
#[inline]
fn digits(bytes: &[u8], i: usize) -> Option<usize> {
    let mut end = i + 1;
    while end < i + 3 {
        let c = class(bytes, end);
        if c & DIGIT == 0 {
            return if c & HIGH != 0 { None } else { Some(end) };
        }
        end += 1;
    }
    Some(end)
}

/// ` ?[^\s\p{L}\p{N}]+` then the tail set, at `i`; `Some(None)` when the alternative does not match.
#[inline]
fn punctuation(bytes: &[u8], i: usize, tail: &[u8]) -> Option<Option<usize>> {
    let start = if bytes[i] == b' ' { i + 1 } else { i };
    let c = class(bytes, start);
    if c & HIGH != 0 {
        return None;
    }
    if c & PUNCT == 0 {
        return Some(None);
    }
    let end = run(bytes, start, PUNCT)?;
    Some(Some(ascii_run(bytes, end, tail)))
}

/// `\s*[\r\n]+|\s+(?!\S)|\s+` at `i`, which holds whitespace.
#[inline]
fn whitespace(bytes: &[u8], i: usize) -> Option<usize> {
    let mut end = i;
    let mut last_newline = None;
    loop {
        let c = class(bytes, end);
        if c & SPACE == 0 {
            if c & HIGH != 0 {
                return None;
            }
            break;
        }
        if c & NEWLINE != 0 {
            last_newline = Some(end);
        }
        end += 1;
    }
    Some(match last_newline {
        // `\s*[\r\n]+`: up to the last newline of the run.
        Some(newline) => newline + 1,
        // `\s+(?!\S)` at the end of the text, or leaving the last space to the next piece.
        None if end == bytes.len() || end - i == 1 => end,
        None => end - 1,
    })
}

/// The end of the piece starting at `i` (an ASCII byte of `bytes`), or `None` when a non-ASCII byte
/// could change it: the caller then asks the full regex.
#[inline]
pub(crate) fn ascii_piece(pattern: Pattern, bytes: &[u8], i: usize) -> Option<usize> {
    let c = class(bytes, i);
    if c & HIGH != 0 || c == END {
        return None;
    }
    // The letter alternatives: a letter, or one non-letter, non-digit, non-newline byte before letters.
    let letters_from = if c & LETTER != 0 {
        Some(i)
    } else if c & (DIGIT | NEWLINE) == 0 {
        let next = class(bytes, i + 1);
        if next & HIGH != 0 {
            return None;
        }
        (next & LETTER != 0).then_some(i + 1)
    } else {
        None
    };
    match pattern {
        Pattern::Cl100k => {
            if let Some(end) = contraction(bytes, i)? {
                return Some(end);
            }
            if let Some(start) = letters_from {
                return run(bytes, start, LETTER);
            }
        }
        Pattern::O200k => {
            if let Some(start) = letters_from {
                // `U*l+` when lowercase follows the capitals, else `U+l*`: either way both runs.
                let upper_end = run(bytes, start, UPPER)?;
                let end = run(bytes, upper_end, LOWER)?;
                return Some(contraction(bytes, end)?.unwrap_or(end));
            }
        }
    }
    if c & DIGIT != 0 {
        return digits(bytes, i);
    }
    let tail: &[u8] = match pattern {
        Pattern::Cl100k => b"\r\n",
        Pattern::O200k => b"\r\n/",
    };
    if let Some(end) = punctuation(bytes, i, tail)? {
        return Some(end);
    }
    whitespace(bytes, i)
}

/// Whether `position` in `text` starts a piece in every text that begins with `text[..=position]` (the
/// character at `position` included), whatever follows, for both patterns. True when:
///
/// - a non-whitespace character is followed by whitespace other than `\r` and `\n`: no alternative matches
///   a non-whitespace character followed by such whitespace (the optional space or prefix character of an
///   alternative comes first, and the whitespace alternatives hold only whitespace);
/// - a newline is followed by a character that is neither whitespace nor `/`: newlines end punctuation
///   pieces (o200k lets `/` follow them) and whitespace pieces, and no letter piece starts with one.
///
/// Every match starting before such a position also ends at or before it, so the pieces before it are
/// decided by `text[..=position]` alone: what a stream counts there never changes.
pub(crate) fn is_settled_boundary(previous: char, next: char) -> bool {
    if next.is_whitespace() {
        // Rust's `char::is_whitespace` is Unicode White_Space, the regex's `\s`.
        !previous.is_whitespace() && next != '\r' && next != '\n'
    } else {
        (previous == '\n' || previous == '\r') && next != '/'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split the counter makes: the ASCII scan, else its own expression.
    fn fast_split(pattern: Pattern, text: &str) -> Vec<String> {
        static SPLITTERS: [std::sync::OnceLock<Splitter>; 2] = [const { std::sync::OnceLock::new() }; 2];
        let splitter = SPLITTERS[pattern as usize].get_or_init(|| Splitter::new(pattern));
        let mut pieces = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let end = match ascii_piece(pattern, text.as_bytes(), i) {
                Some(end) => end,
                None => splitter.piece_end(text, i),
            };
            assert!(end > i, "empty piece at {i} in {text:?}");
            pieces.push(text[i..end].to_owned());
            i = end;
        }
        pieces
    }

    /// The reference: `bpe-openai`'s split, tiktoken's.
    fn regex_split(pattern: Pattern, text: &str) -> Vec<String> {
        let tokenizer = match pattern {
            Pattern::Cl100k => bpe_openai::cl100k_base(),
            Pattern::O200k => bpe_openai::o200k_base(),
        };
        tokenizer.split(text).map(str::to_owned).collect()
    }

    /// Characters that exercise every branch: each ASCII class, contraction letters, and non-ASCII letters,
    /// marks, digits, punctuation and whitespace (including `ſ`, which case-folds to `s`).
    const ALPHABET: &[char] = &[
        'a', 'b', 's', 't', 'r', 'e', 'v', 'l', 'm', 'd', 'S', 'T', 'R', 'E', 'L', 'D', 'A', 'Z', 'x', '0', '1', '9',
        ' ', ' ', ' ', '\t', '\n', '\r', '\x0b', '\x0c', '\x1c', '\x00', '\x7f', '\'', '\'', '/', '.', ',', '!', '-',
        '_', '(', '"', '#', 'é', 'É', 'ſ', 'ǅ', 'ʰ', '中', '\u{301}', '²', '½', '٣', '\u{a0}', '\u{85}', '\u{2028}',
        '\u{3000}', '—', '“', '😀', '\u{200b}',
    ];

    fn random_text(seed: &mut u64, len: usize) -> String {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ALPHABET[(*seed % ALPHABET.len() as u64) as usize]
            })
            .collect()
    }

    #[test]
    fn fast_split_equals_the_regex_on_random_text() {
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        for round in 0..4000 {
            let text = random_text(&mut seed, 1 + round % 40);
            for pattern in [Pattern::Cl100k, Pattern::O200k] {
                assert_eq!(
                    fast_split(pattern, &text),
                    regex_split(pattern, &text),
                    "{pattern:?} {text:?}"
                );
            }
        }
    }

    #[test]
    fn fast_split_equals_the_regex_on_edge_cases() {
        let cases = [
            "",
            " ",
            "  ",
            "\n",
            " \n ",
            "  \n  \n  x",
            "a  b",
            "a \tb",
            "x'S y'RE z'll 'VE 'd's",
            "don't",
            "DON'T",
            "HelloWorld HELLOworld ABc aB",
            "12345 6789 0",
            "a1b2",
            " !!! ?\n\n/ .\r\n",
            "/\n/",
            "  ",
            "\t\tfoo",
            "'",
            "'r",
            "'re",
            "x'",
            "foo\u{a0}bar",
            "  \u{a0}",
            "a\u{301}",
            "A'ſ",
            "a'ſ",
            " 1",
            "  1",
            "\n\n\n",
            "end  ",
            "(word",
            "\x0b\x0c x",
            "\x1c\x1dword",
        ];
        for text in cases {
            for pattern in [Pattern::Cl100k, Pattern::O200k] {
                assert_eq!(
                    fast_split(pattern, text),
                    regex_split(pattern, text),
                    "{pattern:?} {text:?}"
                );
            }
        }
    }

    #[test]
    fn settled_boundaries_never_move_when_text_is_appended() {
        let mut seed = 0xD1B5_4A32_D192_ED03;
        for _ in 0..2000 {
            let text = random_text(&mut seed, 30);
            let chars: Vec<(usize, char)> = text.char_indices().collect();
            for pattern in [Pattern::Cl100k, Pattern::O200k] {
                let full = regex_split(pattern, &text);
                let mut ends = vec![0];
                for piece in &full {
                    ends.push(ends.last().unwrap() + piece.len());
                }
                for pair in chars.windows(2) {
                    let (position, next) = pair[1];
                    if !is_settled_boundary(pair[0].1, next) {
                        continue;
                    }
                    assert!(ends.contains(&position), "{pattern:?} {text:?} at {position}");
                    // The pieces before it are those of the prefix up to and including `next`.
                    let prefix = &text[..position + next.len_utf8()];
                    let before: Vec<_> = regex_split(pattern, prefix)
                        .into_iter()
                        .take_while_inclusive_len(position);
                    let index = ends.iter().position(|&e| e == position).unwrap();
                    let expected = full[..index].to_vec();
                    assert_eq!(before, expected, "{pattern:?} {text:?} at {position}");
                }
            }
        }
    }

    trait TakeLen {
        fn take_while_inclusive_len(self, len: usize) -> Vec<String>;
    }

    impl<I: Iterator<Item = String>> TakeLen for I {
        /// The leading pieces that together cover exactly `len` bytes.
        fn take_while_inclusive_len(self, len: usize) -> Vec<String> {
            let mut covered = 0;
            let mut out = Vec::new();
            for piece in self {
                if covered >= len {
                    break;
                }
                covered += piece.len();
                out.push(piece);
            }
            assert_eq!(covered, len);
            out
        }
    }
}
