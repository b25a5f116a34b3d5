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
//!
//! A stream's chunks mostly repeat each other up to the text they carry (`{"id":…,"choices":[{"index":0,
//! "delta":{"content":`): [`ChunkScanner`] keeps the scan's state at the start of each value of the last
//! chunk, and resumes the next chunk's scan from the last of those states that lies within the bytes the
//! two chunks share. The state at a position is a function of the bytes before it alone, so the answer is
//! the same as a scan from the start; for the bench's 190-byte chunks it is a third of the work.

/// What an ordinary chunk tells the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ordinary {
    /// A choice carries a finish reason.
    pub(crate) finished: bool,
}

/// `Some` when `json` is certainly an ordinary chunk (see the module's documentation), `None` when the
/// full probe must decide.
pub(crate) fn ordinary(json: &[u8]) -> Option<Ordinary> {
    ChunkScanner::default().ordinary(json)
}

/// The most value starts kept from one chunk; a chunk's later values are scanned again every time.
const MAX_MARKS: usize = 32;

/// The largest chunk kept to resume the next one from. Text chunks are a few hundred bytes; a larger one
/// (base64 audio, a long tool call's arguments) is not kept, so a stream never holds a copy of an 8 MiB
/// event, and the next chunk is scanned from its start.
const MAX_KEPT_BYTES: usize = 4096;

/// Scans a stream's chunks one after another, each resumed where it stops sharing bytes with the last.
#[derive(Debug, Default)]
pub(crate) struct ChunkScanner {
    /// The last chunk scanned.
    last: Vec<u8>,
    /// The scan's state at the first byte of each of `last`'s values, in order.
    marks: Vec<Mark>,
    /// Where the last scan started.
    #[cfg(test)]
    started_at: usize,
}

impl ChunkScanner {
    /// [`ordinary`], for the next chunk of the stream.
    pub(crate) fn ordinary(&mut self, json: &[u8]) -> Option<Ordinary> {
        let shared = shared_prefix(&self.last, json);
        let resume = self.marks.iter().rposition(|mark| mark.at <= shared);
        let mark = resume.map(|index| self.marks[index]);
        // The marks before the one resumed from hold for this chunk too; the scan records the rest anew.
        self.marks.truncate(resume.unwrap_or(0));
        #[cfg(test)]
        {
            self.started_at = mark.map_or(0, |mark| mark.at);
        }
        let answer = match mark {
            Some(mark) => {
                let mut scan = Scan::resumed(json, &mark, &mut self.marks);
                let expect = Expect::Value {
                    or_close: mark.or_close,
                };
                scan.run(expect, mark.field).map(|()| scan.found)
            }
            None => {
                let mut scan = Scan::new(json, &mut self.marks);
                scan.start().map(|()| scan.found)
            }
        };
        self.last.clear();
        if json.len() <= MAX_KEPT_BYTES {
            self.last.extend_from_slice(json);
        } else {
            self.marks.clear();
            // Let a large buffer go rather than hold it for the rest of the stream.
            self.last.shrink_to(MAX_KEPT_BYTES);
        }
        answer
    }
}

/// The scan's state at the first byte of a value: everything [`Scan::run`] needs to go on from there.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: usize,
    objects: u64,
    depth: u32,
    choices_open: bool,
    seen: [bool; 4],
    finished: bool,
    or_close: bool,
    field: Field,
}

/// How many leading bytes `a` and `b` share.
fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut at = 0;
    while at + 8 <= n {
        let word = |s: &[u8]| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
        let differ = word(a) ^ word(b);
        if differ != 0 {
            return at + (differ.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + a[at..n].iter().zip(&b[at..n]).take_while(|(x, y)| x == y).count()
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Where the scan records a [`Mark`] at each value, up to [`MAX_MARKS`].
    marks: &'a mut Vec<Mark>,
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

impl<'a> Scan<'a> {
    fn new(json: &'a [u8], marks: &'a mut Vec<Mark>) -> Self {
        Scan {
            json,
            marks,
            at: 0,
            objects: 0,
            depth: 0,
            choices_open: false,
            seen: [false; 4],
            found: Ordinary { finished: false },
        }
    }

    /// A scan of `json` in the state `mark` was taken in, `json` having the same bytes before it.
    fn resumed(json: &'a [u8], mark: &Mark, marks: &'a mut Vec<Mark>) -> Self {
        Scan {
            json,
            marks,
            at: mark.at,
            objects: mark.objects,
            depth: mark.depth,
            choices_open: mark.choices_open,
            seen: mark.seen,
            found: Ordinary {
                finished: mark.finished,
            },
        }
    }

    /// Scans from the start of the chunk.
    fn start(&mut self) -> Option<()> {
        self.space();
        // The chunk itself is an object (serde would also take an array for the probe's struct).
        if self.json.get(self.at) != Some(&b'{') {
            return None;
        }
        self.run(Expect::Value { or_close: false }, Field::Other)
    }

    /// Scans on from where `expect` and `field` say the scan is, to the end of the chunk.
    fn run(&mut self, mut expect: Expect, mut field: Field) -> Option<()> {
        loop {
            self.space();
            let &byte = self.json.get(self.at)?;
            expect = match expect {
                Expect::Value { or_close } => {
                    if or_close && byte == b']' {
                        self.close(false)?
                    } else {
                        self.mark(or_close, field);
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

    /// Records the state at the first byte of a value inside the chunk (not the chunk's own: a scan
    /// from the start checks that it is an object).
    fn mark(&mut self, or_close: bool, field: Field) {
        if self.depth > 0 && self.marks.len() < MAX_MARKS {
            self.marks.push(Mark {
                at: self.at,
                objects: self.objects,
                depth: self.depth,
                choices_open: self.choices_open,
                seen: self.seen,
                finished: self.found.finished,
                or_close,
                field,
            });
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

    #[test]
    fn a_scan_resumed_from_the_last_chunk_answers_as_a_scan_from_the_start() {
        let first = r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#;
        let text = r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#;
        let mut scanner = ChunkScanner::default();
        for (last, next) in [
            (first, text),
            (text, text),
            // The next chunk differs inside a value, inside a key, at its end, or is cut short.
            (
                text,
                r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi\"x\""},"finish_reason":null}],"usage":null}"#,
            ),
            (
                text,
                r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],"usage":null}"#,
            ),
            (
                text,
                r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":{"total_tokens":3}}"#,
            ),
            (
                text,
                r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null,"usage":null}"#,
            ),
            (
                text,
                r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]"#,
            ),
            (text, r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}"#),
            (
                text,
                r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null},{"finish_reason":"length"}],"usage":null}"#,
            ),
            (r#"{"a":1,"choices":[]}"#, r#"{"a":12,"choices":[]}"#),
            (r#"{"a":1,"choices":[]}"#, r#"{"a":1.,"choices":[]}"#),
            (r#"{"a":[1,2],"choices":[]}"#, r#"{"a":[],"choices":[]}"#),
            (r#"{"a":[],"choices":[]}"#, r#"{"a":[1],"choices":[]}"#),
            (
                r#"{"choices":[{"finish_reason":"stop"}]}"#,
                r#"{"choices":[{"finish_reason":null}]}"#,
            ),
            (text, "[]"),
            (text, r#"[{"choices":[]}]"#),
            (text, r#" {"choices":[]}"#),
        ] {
            scanner.ordinary(last.as_bytes());
            assert_eq!(
                scanner.ordinary(next.as_bytes()),
                ordinary(next.as_bytes()),
                "{last} then {next}"
            );
        }
    }

    #[test]
    fn a_chunk_that_repeats_the_last_one_is_scanned_from_where_they_differ() {
        let mut scanner = ChunkScanner::default();
        let one = br#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#;
        let two =
            br#"{"id":"c1","choices":[{"index":0,"delta":{"content":"there"},"finish_reason":null}],"usage":null}"#;
        let text_at = one.len() - r#""Hi"},"finish_reason":null}],"usage":null}"#.len();
        assert_eq!(scanner.ordinary(one), Some(Ordinary { finished: false }));
        assert_eq!(scanner.started_at, 0);
        assert_eq!(scanner.ordinary(two), Some(Ordinary { finished: false }));
        assert_eq!(scanner.started_at, text_at, "resumed at the text's value");
        assert_eq!(shared_prefix(one, two), text_at + 1);
        // A chunk that shares nothing is scanned from its start.
        assert_eq!(
            scanner.ordinary(br#" {"choices":[]}"#),
            Some(Ordinary { finished: false })
        );
        assert_eq!(scanner.started_at, 0);
    }

    #[test]
    fn a_large_chunk_is_not_kept() {
        let mut scanner = ChunkScanner::default();
        let large = format!(
            r#"{{"choices":[{{"delta":{{"content":"{}"}}}}]}}"#,
            "a".repeat(MAX_KEPT_BYTES)
        );
        assert_eq!(scanner.ordinary(large.as_bytes()), Some(Ordinary { finished: false }));
        assert!(scanner.last.is_empty() && scanner.marks.is_empty());
        assert!(scanner.last.capacity() <= MAX_KEPT_BYTES);
        // The same chunk again is scanned from its start, with the same answer.
        assert_eq!(scanner.ordinary(large.as_bytes()), Some(Ordinary { finished: false }));
        assert_eq!(scanner.started_at, 0);
    }
}
