//! A server-sent events parser for upstream streams: linear in its input, bounded in what it holds.
//!
//! It reads the event stream format (WHATWG HTML, "Server-sent events") as far as the adapters need it:
//! lines end with CRLF, LF or CR; a line starting with `:` is a comment; `data` lines add to the event's
//! data, joined with line breaks; a blank line dispatches the event if it has data; other fields (`event`,
//! `id`, `retry`) are read and ignored, since every vendor's translator works from the data alone. One
//! byte order mark is skipped at the start. Text must be UTF-8.
//!
//! Two departures from the format, both on the side of caution:
//! - A CR that is the last byte read so far waits for the next byte (it may be the first half of a CRLF),
//!   so a CR that is the very last byte of a stream does not end its line. The format would dispatch an
//!   event closed that way; a stream ends with its vendor's end marker or is reported incomplete anyway.
//! - A line longer than [`MAX_EVENT_BYTES`], or an event whose data grows past it, ends the stream with
//!   an error instead of being held in memory without bound.
//!
//! Each byte is looked at a constant number of times: a line that arrives whole inside one read is parsed
//! where it lies, and only the unfinished line at the end of a read is copied, once. (eventsource-stream,
//! used before, re-parsed its whole buffer for every read and copied the rest of it for every line:
//! quadratic in the lines held in one read.)

use std::collections::VecDeque;

use crate::ProviderError;

/// The longest line, and the largest event's data, accepted from an upstream: 8 MiB. Vendors' stream
/// events are a few kilobytes; the largest documented ones carry an image as base64 inside one event
/// (Gemini's image output), a few megabytes. Past this the stream is cut with an error rather than held.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// The UTF-8 byte order mark, which the format allows once at the start of a stream.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// The parser's state between reads.
#[derive(Debug)]
pub(crate) struct SseParser {
    /// The unfinished line carried over from earlier reads (and, at the start, bytes that may be a mark).
    line: Vec<u8>,
    /// The data of the event being read: its `data` lines joined by line breaks.
    data: String,
    /// The event being read has a `data` line (perhaps empty).
    has_data: bool,
    /// The start of the stream has not yet been told apart from a byte order mark.
    at_start: bool,
    /// The last byte read was a CR ending `line`: a LF right after it belongs to the same line break.
    after_cr: bool,
    max: usize,
}

impl SseParser {
    pub(crate) fn new() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }

    pub(crate) fn with_limit(max: usize) -> Self {
        Self {
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            at_start: true,
            after_cr: false,
            max,
        }
    }

    /// Reads `bytes`, appending the data of every event they complete to `out`. After an error the
    /// parser must not be fed again; the events appended before it are good.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], out: &mut VecDeque<String>) -> Result<(), ProviderError> {
        if self.at_start {
            // A mark may arrive cut into pieces: hold the first bytes until they are told apart from one.
            let wanted = (BOM.len() - self.line.len()).min(bytes.len());
            self.line.extend_from_slice(&bytes[..wanted]);
            bytes = &bytes[wanted..];
            if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
                return Ok(());
            }
            self.at_start = false;
            let held = std::mem::take(&mut self.line);
            let held = held.strip_prefix(BOM).unwrap_or(&held);
            self.scan(held, out)?;
        }
        self.scan(bytes, out)
    }

    /// The stream ended: an unfinished line or event is dropped, as the format says, but text that is not
    /// UTF-8 is still reported.
    pub(crate) fn finish(&mut self) -> Result<(), ProviderError> {
        let line = std::mem::take(&mut self.line);
        match std::str::from_utf8(&line) {
            Ok(_) => Ok(()),
            // The stream stopped inside a character: it was cut.
            Err(e) if e.error_len().is_none() => Err(ProviderError::Truncated {
                detail: "the event stream ended inside a UTF-8 character".to_owned(),
            }),
            Err(_) => Err(not_utf8()),
        }
    }

    fn scan(&mut self, mut bytes: &[u8], out: &mut VecDeque<String>) -> Result<(), ProviderError> {
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
            self.line_done(&[], out)?;
        }
        while let Some(end) = memchr::memchr2(b'\r', b'\n', bytes) {
            let (piece, rest) = bytes.split_at(end);
            if rest == b"\r" {
                // Perhaps the first half of a CRLF: the line ends at the next read.
                self.carry(piece)?;
                self.after_cr = true;
                return Ok(());
            }
            self.line_done(piece, out)?;
            bytes = &rest[if rest.starts_with(b"\r\n") { 2 } else { 1 }..];
        }
        self.carry(bytes)
    }

    /// Keeps the start of an unfinished line.
    fn carry(&mut self, piece: &[u8]) -> Result<(), ProviderError> {
        if self.line.len() + piece.len() > self.max {
            return Err(too_large("line", self.max));
        }
        self.line.extend_from_slice(piece);
        Ok(())
    }

    /// A line ended with `piece`: the carried start (if any) and `piece` are the whole line.
    fn line_done(&mut self, piece: &[u8], out: &mut VecDeque<String>) -> Result<(), ProviderError> {
        if self.line.is_empty() {
            return self.line(piece, out);
        }
        self.carry(piece)?;
        let line = std::mem::take(&mut self.line);
        let result = self.line(&line, out);
        // The buffer is kept for the next unfinished line.
        self.line = line;
        self.line.clear();
        result
    }

    fn line(&mut self, line: &[u8], out: &mut VecDeque<String>) -> Result<(), ProviderError> {
        if line.len() > self.max {
            return Err(too_large("line", self.max));
        }
        // simdutf8 checks the data lines in about three quarters of std's instructions (callgrind, the
        // bench's 20-chunk stream: 3.1k against 4.3k).
        let line = simdutf8::basic::from_utf8(line).map_err(|_| not_utf8())?;
        if line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                out.push_back(std::mem::take(&mut self.data));
            }
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        // memchr rather than `split_once(':')`, whose char searcher cost about 150 instructions a line.
        let (field, value) = match memchr::memchr(b':', line.as_bytes()) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        if field == "data" {
            if self.data.len() + value.len() + 1 > self.max {
                return Err(too_large("event", self.max));
            }
            if self.has_data {
                self.data.push('\n');
                self.data.push_str(value);
            } else {
                // Most events are one line: sized exactly, the string becomes the event's `Bytes` without
                // a shared header allocated for its spare capacity.
                self.data.reserve_exact(value.len());
                self.data.push_str(value);
                self.has_data = true;
            }
        }
        Ok(())
    }
}

fn too_large(what: &str, max: usize) -> ProviderError {
    ProviderError::Protocol {
        detail: format!("an event stream {what} is larger than {max} bytes"),
    }
}

fn not_utf8() -> ProviderError {
    ProviderError::Protocol {
        detail: "the event stream is not valid UTF-8".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `body` dispatches fed in pieces of `size` bytes, and the error if any.
    fn parse(body: &[u8], size: usize, max: usize) -> (Vec<String>, Option<ProviderError>) {
        let mut parser = SseParser::with_limit(max);
        let mut out = VecDeque::new();
        for piece in body.chunks(size.max(1)) {
            if let Err(err) = parser.feed(piece, &mut out) {
                return (out.into(), Some(err));
            }
        }
        let error = parser.finish().err();
        (out.into(), error)
    }

    #[test]
    fn events_are_the_same_however_the_body_is_cut() {
        let body = "\u{feff}: comment\r\nevent: e\rid: 1\nretry: 10\ndata\ndata:x\ndata:  two spaces\r\n\r\n\
                    data: a\ndata: b\n\nunknown: y\n\ndata: é\r\n\r\ndata: last\r";
        for size in [1, 2, 3, 5, 7, body.len()] {
            let (events, error) = parse(body.as_bytes(), size, MAX_EVENT_BYTES);
            assert_eq!(events, ["\nx\n two spaces", "a\nb", "é"], "pieces of {size}");
            assert!(error.is_none(), "{error:?}");
        }
    }

    #[test]
    fn a_line_or_an_event_past_the_limit_ends_the_stream() {
        let long_line = format!("data: {}\n\n", "x".repeat(100));
        for size in [1, 16, long_line.len()] {
            let (events, error) = parse(format!("data: ok\n\n{long_line}").as_bytes(), size, 64);
            assert_eq!(events, ["ok"]);
            assert!(
                matches!(&error, Some(ProviderError::Protocol { detail }) if detail.contains("line is larger than 64")),
                "{error:?}"
            );
        }
        // Short lines, one event too big.
        let many: String = (0..20).map(|_| "data: 0123456789\n").collect();
        let (events, error) = parse(format!("{many}\n").as_bytes(), 7, 64);
        assert!(events.is_empty());
        assert!(
            matches!(&error, Some(ProviderError::Protocol { detail }) if detail.contains("event is larger than 64")),
            "{error:?}"
        );
    }

    #[test]
    fn text_that_is_not_utf8_ends_the_stream_after_the_events_before_it() {
        let (events, error) = parse(b"data: a\n\ndata: b\xff\n\ndata: c\n\n", 4, MAX_EVENT_BYTES);
        assert_eq!(events, ["a"]);
        assert!(matches!(error, Some(ProviderError::Protocol { .. })), "{error:?}");
        // A CR before the bad text is a whole line break (nothing after it can make it a CRLF): the empty
        // line it ends dispatches the event, as a WHATWG parser reading U+FFFD after it would.
        for size in [1, 2, 16] {
            let (events, error) = parse(b"data: a\n\r\xff\n", size, MAX_EVENT_BYTES);
            assert_eq!(events, ["a"], "pieces of {size}");
            assert!(matches!(error, Some(ProviderError::Protocol { .. })), "{error:?}");
        }
        let (events, error) = parse(b"data: a\n\ndata: \xe2\x82", 3, MAX_EVENT_BYTES);
        assert_eq!(events, ["a"]);
        assert!(matches!(error, Some(ProviderError::Truncated { .. })), "{error:?}");
    }

    /// The data a WHATWG parser dispatches for `text` (as `fuzz/src/lib.rs` has it, a CR as the very last
    /// byte included).
    fn reference(text: &str) -> Vec<String> {
        let mut rest = text.strip_prefix('\u{feff}').unwrap_or(text);
        let (mut events, mut data) = (Vec::new(), String::new());
        while let Some(end) = rest.find(['\r', '\n']) {
            let (line, after) = (&rest[..end], &rest[end..]);
            if after == "\r" {
                break;
            }
            rest = &after[if after.starts_with("\r\n") { 2 } else { 1 }..];
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    events.push(std::mem::take(&mut data));
                }
            } else if !line.starts_with(':') {
                let (field, value) = line
                    .split_once(':')
                    .map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
                if field == "data" {
                    data.push_str(value);
                    data.push('\n');
                }
            }
        }
        events
    }

    #[test]
    fn random_bodies_cut_at_random_give_the_reference_events() {
        let mut rng = fastrand::Rng::with_seed(13);
        let atoms = [
            "data", "data:", ": ", " ", "x", "é", "\r", "\n", "\r\n", "event: e", "id", ":", "\u{feff}",
        ];
        for _ in 0..2000 {
            let body: String = (0..rng.usize(0..40))
                .map(|_| atoms[rng.usize(0..atoms.len())])
                .collect();
            let size = rng.usize(1..8);
            let (events, error) = parse(body.as_bytes(), size, MAX_EVENT_BYTES);
            assert!(error.is_none(), "{body:?}: {error:?}");
            assert_eq!(events, reference(&body), "{body:?} in pieces of {size}");
        }
    }

    /// eventsource-stream, used before, took 1.85 s for 1 MiB of short events in one read (a release build
    /// on this machine; this parser 6.7 ms): its work was quadratic. Linear work stays far below a second
    /// even in an unoptimised test build.
    #[test]
    fn many_short_lines_in_one_read_parse_in_linear_time() {
        let line = "data: {\"a\":1}\n\n";
        let body = line.repeat((1 << 20) / line.len());
        let started = std::time::Instant::now();
        let (events, error) = parse(body.as_bytes(), body.len(), MAX_EVENT_BYTES);
        let took = started.elapsed();
        assert!(error.is_none());
        assert_eq!(events.len(), body.len() / line.len());
        assert!(
            took < std::time::Duration::from_secs(1),
            "1 MiB of short lines took {took:?}"
        );
    }
}
