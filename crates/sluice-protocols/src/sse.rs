//! Server-sent event framing for the stream translators: `event: <name>\ndata: <json>\n\n`.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use crate::ProtocolError;

/// Appends one event named `name` with `data` serialised as JSON on one `data:` line (serde_json escapes
/// every control character, so the JSON has no line break). On a serialisation error nothing is appended.
pub(crate) fn write_event<T: Serialize>(out: &mut BytesMut, name: &str, data: &T) -> Result<(), ProtocolError> {
    let start = out.len();
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    if let Err(err) = serde_json::to_writer(out.writer(), data) {
        out.truncate(start);
        return Err(ProtocolError::answer(format!(
            "could not serialise the `{name}` event: {err}"
        )));
    }
    out.put_slice(b"\n\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_one_data_line() {
        let mut out = BytesMut::new();
        write_event(&mut out, "ping", &serde_json::json!({"type": "ping", "text": "a\nb\r"})).unwrap();
        assert_eq!(
            &out[..],
            b"event: ping\ndata: {\"text\":\"a\\nb\\r\",\"type\":\"ping\"}\n\n"
        );
    }
}
