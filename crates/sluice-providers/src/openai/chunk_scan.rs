//! One pass over a stream chunk's bytes that recognises the ordinary chunk without deserialising it.
//!
//! Every chunk of an OpenAI stream must be checked for three things: a finish reason, a usage report and
//! an error. All but the last one or two chunks carry none of them, yet deserialising each into a probe
//! cost about 4,300 instructions for a chunk of 190 bytes, 15% of a 20-chunk stream; this scan costs about
//! 2,400. It validates the JSON as it goes and answers only when it is sure: a well-formed object whose
//! `usage` and `error` are absent or null and whose choices are objects with a finish reason that is
//! absent, null or a string without escapes. Anything else (a usage report, an error, a duplicate field,
//! an escaped key, a number where a string belongs, malformed JSON) is left to the full probe, so the two
//! always agree: the fuzz target `chunk_scan` checks exactly that.

/// What an ordinary chunk tells the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ordinary {
    /// A choice carries a finish reason.
    pub(crate) finished: bool,
}

/// `Some` when `json` is certainly an ordinary chunk (see the module's documentation), `None` when the
/// full probe must decide.
pub(crate) fn ordinary(json: &[u8]) -> Option<Ordinary> {
    let mut scan = Scan {
        json,
        at: 0,
        objects: 0,
        depth: 0,
        choices_open: false,
        seen: [false; 4],
        found: Ordinary { finished: false },
    };
    scan.run()?;
    Some(scan.found)
}

/// Nesting deeper than this is left to the probe (serde_json stops at 128; the container stack is a `u64`).
const MAX_DEPTH: u32 = 63;

/// What the scan expects next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value, or `]` right after `[`.
    Value {
        or_close: bool,
    },
    /// A key, or `}` right after `{`.
    Key {
        or_close: bool,
    },
    Colon,
    /// `,` or the close of the container the scan is in.
    Next,
}

/// The fields whose values the scan checks; the rest are only validated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Other,
    /// `choices` of the chunk: an array of objects.
    Choices,
    /// `usage` or `error` of the chunk: only null is ordinary.
    MustBeNull,
    /// `finish_reason` of a choice: null or a string without escapes.
    FinishReason,
}

struct Scan<'a> {
    json: &'a [u8],
    at: usize,
    /// Bit `d` set: the container at depth `d + 1` is an object.
    objects: u64,
    /// Containers open; the chunk is at depth 1, its choices array at 2, each choice at 3.
    depth: u32,
    /// The scan is inside the chunk's `choices` array.
    choices_open: bool,
    /// `choices`, `usage`, `error` seen in the chunk, `finish_reason` in the current choice: serde refuses
    /// a field given twice, so the scan leaves such a chunk to it.
    seen: [bool; 4],
    found: Ordinary,
}

impl Scan<'_> {
    fn run(&mut self) -> Option<()> {
        self.space();
        // The chunk itself is an object (serde would also take an array for the probe's struct).
        if self.json.get(self.at) != Some(&b'{') {
            return None;
        }
        let mut expect = Expect::Value { or_close: false };
        let mut field = Field::Other;
        loop {
            self.space();
            let &byte = self.json.get(self.at)?;
            expect = match expect {
                Expect::Value { or_close } => {
                    if or_close && byte == b']' {
                        self.close(false)?
                    } else {
                        self.value(byte, std::mem::replace(&mut field, Field::Other))?
                    }
                }
                Expect::Key { or_close } => {
                    if or_close && byte == b'}' {
                        self.close(true)?
                    } else {
                        field = self.key(byte)?;
                        Expect::Colon
                    }
                }
                Expect::Colon => {
                    (byte == b':').then_some(())?;
                    self.at += 1;
                    Expect::Value { or_close: false }
                }
                Expect::Next => match byte {
                    b',' => {
                        self.at += 1;
                        if self.in_object() {
                            Expect::Key { or_close: false }
                        } else {
                            Expect::Value { or_close: false }
                        }
                    }
                    b'}' | b']' => self.close(byte == b'}')?,
                    _ => return None,
                },
            };
            if self.depth == 0 {
                // The chunk is closed: only whitespace may follow.
                self.space();
                return (self.at == self.json.len()).then_some(());
            }
        }
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.objects & (1 << (self.depth - 1)) != 0
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.json.get(self.at) {
            self.at += 1;
        }
    }

    fn open(&mut self, object: bool) -> Option<Expect> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.at += 1;
        self.objects = (self.objects & !(1 << self.depth)) | (u64::from(object) << self.depth);
        self.depth += 1;
        Some(if object {
            Expect::Key { or_close: true }
        } else {
            Expect::Value { or_close: true }
        })
    }

    /// Closes the innermost container with `}` (`object`) or `]`.
    fn close(&mut self, object: bool) -> Option<Expect> {
        if self.in_object() != object {
            return None;
        }
        self.at += 1;
        self.depth -= 1;
        // Back in the chunk: the choices array, if that was it, is closed.
        if self.depth == 1 {
            self.choices_open = false;
        }
        Some(Expect::Next)
    }

    /// A key, the scan at its first byte; which field its value is.
    fn key(&mut self, byte: u8) -> Option<Field> {
        (byte == b'"').then_some(())?;
        let start = self.at + 1;
        // An escaped key could spell a field serde would decode: left to it.
        if self.string()? {
            return None;
        }
        let key = &self.json[start..self.at - 1];
        let (field, seen) = match (self.depth, key) {
            (1, b"choices") => (Field::Choices, 0),
            (1, b"usage") => (Field::MustBeNull, 1),
            (1, b"error") => (Field::MustBeNull, 2),
            (3, b"finish_reason") if self.choices_open => (Field::FinishReason, 3),
            _ => return Some(Field::Other),
        };
        if std::mem::replace(&mut self.seen[seen], true) {
            return None;
        }
        Some(field)
    }

    /// A value, the scan at its first byte, for `field`.
    fn value(&mut self, byte: u8, field: Field) -> Option<Expect> {
        match field {
            Field::Choices => {
                (byte == b'[').then_some(())?;
                self.choices_open = true;
                return self.open(false);
            }
            Field::MustBeNull => return self.literal(b"null"),
            Field::FinishReason if byte == b'"' => {
                self.found.finished = true;
                return if self.string()? { None } else { Some(Expect::Next) };
            }
            Field::FinishReason => return self.literal(b"null"),
            Field::Other => {}
        }
        if self.choices_open && self.depth == 2 {
            // A choice: an object, whose finish reason is its own.
            (byte == b'{').then_some(())?;
            self.seen[3] = false;
            return self.open(true);
        }
        match byte {
            b'"' => self.string().map(|_| Expect::Next),
            b'{' => self.open(true),
            b'[' => self.open(false),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<Expect> {
        let rest = self.json.get(self.at..)?;
        rest.starts_with(word).then(|| {
            self.at += word.len();
            Expect::Next
        })
    }

    /// A string, the scan at its opening quote; whether it holds an escape.
    fn string(&mut self) -> Option<bool> {
        self.at += 1;
        let mut escaped = false;
        loop {
            // Eight plain bytes at a time: the input is a `str`, so multi-byte characters are whole.
            while let Some(word) = self.json.get(self.at..self.at + 8) {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(word);
                let special = sluice_api::json_text::special_bits(u64::from_le_bytes(bytes));
                if special != 0 {
                    // The lowest flagged byte is a true one.
                    self.at += (special.trailing_zeros() / 8) as usize;
                    break;
                }
                self.at += 8;
            }
            let &byte = self.json.get(self.at)?;
            self.at += 1;
            match byte {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match *self.json.get(self.at)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.json.get(self.at + 1..self.at + 5)?;
                            hex.iter().all(u8::is_ascii_hexdigit).then_some(())?;
                            self.at += 5;
                        }
                        _ => return None,
                    }
                }
                // A control character, which JSON does not allow unescaped.
                0..=0x1f => return None,
                _ => {}
            }
        }
    }

    /// A number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<Expect> {
        if self.json.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match *self.json.get(self.at)? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.json.get(self.at) == Some(&b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.json.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.json.get(self.at) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        // `01` or `1x`: what follows a number must end it.
        match self.json.get(self.at) {
            Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') => None,
            _ => Some(Expect::Next),
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.json.get(self.at) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(json: &str) -> Option<Ordinary> {
        ordinary(json.as_bytes())
    }

    #[test]
    fn ordinary_chunks_are_recognised() {
        let middle = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"Hi \"there\"\n\u00e9"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        assert_eq!(scanned(middle), Some(Ordinary { finished: false }));
        let last = r#" { "choices" : [ { "delta" : { } , "finish_reason" : "stop" } ] , "n" : [ -0.5e+3 , true , false , [ ] , { } ] } "#;
        assert_eq!(scanned(last), Some(Ordinary { finished: true }));
        assert_eq!(scanned(r#"{"choices":[]}"#), Some(Ordinary { finished: false }));
    }

    #[test]
    fn anything_unusual_is_left_to_the_probe() {
        for json in [
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#,
            r#"{"error":{"message":"overloaded"}}"#,
            r#"{"choices":[],"choices":[]}"#,
            r#"{"choices":[{"finish_reason":null,"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"finish_reason":"st\u006fp"}]}"#,
            r#"{"choices":[{"finish_reason":1}]}"#,
            r#"{"choices":null}"#,
            r#"{"choices":[1]}"#,
            r#"{"us\u0061ge":{"prompt_tokens":1}}"#,
            r#"[]"#,
            r#"{not json"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":"\x"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":tru}"#,
            r#"{"a":1} x"#,
            r#"{"a":1,}"#,
        ] {
            assert_eq!(scanned(json), None, "{json}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(scanned(&deep), None);
    }
}
