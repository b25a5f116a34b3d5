//! Server-sent events cut into whole frames with their bytes untouched, for pass-through streams.
//!
//! The adapters' SSE driver (`transport::sse_events`) parses events into their data, losing the bytes; a
//! pass-through must forward every byte as the vendor sent it (`event:` lines, spacing, line endings).
//! So a body is cut into frames: each frame is the bytes up to and including the blank line that ends an
//! event, so that the frames put together are the body. Lines end with `\n`, `\r\n` or `\r`, as the SSE
//! format allows; a `\r` as the last byte read waits for the next byte, which may make it `\r\n`.

use bytes::{Bytes, BytesMut};

/// Cuts a body fed piece by piece into frames.
#[derive(Debug, Default)]
pub(crate) struct FrameSplitter {
    buf: BytesMut,
    /// How far `buf` has been scanned.
    scanned: usize,
    /// Whether the scan is at the start of a line (a frame starts at the start of a line).
    line_start: bool,
}

impl FrameSplitter {
    pub(crate) fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            line_start: true,
        }
    }

    /// Adds the next piece of the body.
    pub(crate) fn push(&mut self, piece: &[u8]) {
        self.buf.extend_from_slice(piece);
    }

    /// The next whole frame, if the body read so far holds one.
    pub(crate) fn next_frame(&mut self) -> Option<Bytes> {
        while let Some(&byte) = self.buf.get(self.scanned) {
            let terminator = match byte {
                b'\n' => 1,
                b'\r' => match self.buf.get(self.scanned + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // Maybe the first half of `\r\n`: wait for the next byte.
                    None => return None,
                },
                _ => {
                    self.line_start = false;
                    self.scanned += 1;
                    continue;
                }
            };
            self.scanned += terminator;
            if self.line_start {
                // A blank line: the frame ends here.
                let frame = self.buf.split_to(self.scanned).freeze();
                self.scanned = 0;
                return Some(frame);
            }
            self.line_start = true;
        }
        None
    }

    /// The bytes left when the body ended: an unfinished frame, if any.
    pub(crate) fn rest(&self) -> &[u8] {
        &self.buf
    }
}

/// The `event:` name and the joined `data:` lines of a frame, as the SSE format reads them.
pub(crate) fn fields(frame: &[u8]) -> (Option<&[u8]>, Vec<u8>) {
    let mut event = None;
    let mut data: Vec<u8> = Vec::new();
    let mut seen_data = false;
    for line in frame.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)) {
        for line in line.split(|b| *b == b'\r') {
            let (field, value) = match line.iter().position(|b| *b == b':') {
                Some(0) | None => continue,
                Some(at) => {
                    let value = &line[at + 1..];
                    (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
                }
            };
            match field {
                b"event" => event = Some(value),
                b"data" => {
                    if seen_data {
                        data.push(b'\n');
                    }
                    seen_data = true;
                    data.extend_from_slice(value);
                }
                _ => {}
            }
        }
    }
    (event, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(pieces: &[&[u8]]) -> (Vec<Bytes>, Vec<u8>) {
        let mut splitter = FrameSplitter::new();
        let mut out = Vec::new();
        for piece in pieces {
            splitter.push(piece);
            while let Some(frame) = splitter.next_frame() {
                out.push(frame);
            }
        }
        (out, splitter.rest().to_vec())
    }

    #[test]
    fn frames_keep_every_byte_whatever_the_cut() {
        let body: &[u8] =
            b"event: a\ndata: {\"x\":1}\n\n: comment\r\ndata: 2\r\n\r\nevent: c\rdata: 3\r\r\ndata: 4\n\ndata: cut";
        let (whole, rest) = frames(&[body]);
        let expected: Vec<&[u8]> = vec![
            b"event: a\ndata: {\"x\":1}\n\n",
            b": comment\r\ndata: 2\r\n\r\n",
            b"event: c\rdata: 3\r\r\n",
            b"data: 4\n\n",
        ];
        assert_eq!(whole, expected);
        assert_eq!(rest, b"data: cut");
        let bytes: Vec<&[u8]> = body.iter().map(std::slice::from_ref).collect();
        assert_eq!(frames(&bytes), (whole.clone(), rest.clone()), "one byte at a time");
        for at in 1..body.len() {
            assert_eq!(
                frames(&[&body[..at], &body[at..]]),
                (whole.clone(), rest.clone()),
                "cut at {at}"
            );
        }
    }

    #[test]
    fn fields_are_read_as_the_sse_format_reads_them() {
        let (event, data) = fields(b"event: message_delta\ndata: {\"a\":\ndata:1}\n: c\nid: 7\n\n");
        assert_eq!(event, Some(&b"message_delta"[..]));
        assert_eq!(data, b"{\"a\":\n1}");
        let (event, data) = fields(b"event:ping\r\ndata:  x\r\n\r\n");
        assert_eq!(event, Some(&b"ping"[..]));
        assert_eq!(data, b" x");
        assert_eq!(fields(b"\n"), (None, Vec::new()));
    }
}
