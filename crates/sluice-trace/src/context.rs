//! The trace a request belongs to: W3C `traceparent` read from the client (or a new trace), the request's
//! own span, and the upstream attempt under way, kept in a task-local for the request's task so the
//! layers below (the router, the HTTP transport) need no extra parameters.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

tokio::task_local! {
    static CURRENT: Arc<RequestTrace>;
}

/// A 16-byte trace id, never all zeros.
pub type TraceId = [u8; 16];
/// An 8-byte span id, never all zeros.
pub type SpanId = [u8; 8];

/// One request's place in a trace.
#[derive(Debug)]
pub struct RequestTrace {
    /// The trace: the client's, or a new one.
    pub trace_id: TraceId,
    /// The client's span, the parent of the request's.
    pub parent: Option<SpanId>,
    /// The request's own span.
    pub span_id: SpanId,
    /// The client's trace flags (sampled is bit 0); `01` for a new trace.
    pub flags: u8,
    /// `chat` or `embeddings` (`gen_ai.operation.name`).
    pub operation: &'static str,
    /// When the request began, in nanoseconds since the Unix epoch.
    pub start: u64,
    /// The upstream attempt under way: the parent `traceparent` names upstream.
    attempt: Mutex<Option<SpanId>>,
}

impl RequestTrace {
    /// A request for `operation` starting now, under the client's `traceparent` header when it is valid,
    /// else in a new trace.
    pub fn start(traceparent: Option<&str>, operation: &'static str) -> Self {
        let parsed = traceparent.and_then(parse_traceparent);
        Self {
            trace_id: parsed.map_or_else(new_trace_id, |p| p.0),
            parent: parsed.map(|p| p.1),
            span_id: new_span_id(),
            flags: parsed.map_or(1, |p| p.2),
            operation,
            start: unix_nanos(),
            attempt: Mutex::new(None),
        }
    }

    /// Whether the trace is sampled: spans are recorded (flags bit 0; a new trace always is).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The `traceparent` to send upstream: the attempt under way as the parent, else the request.
    pub fn upstream_traceparent(&self) -> String {
        let parent = self
            .attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(self.span_id);
        // Written digit by digit: through `format!` and two hex strings this cost about a thousand
        // instructions of every upstream call.
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &parent);
        out.push('-');
        push_hex(&mut out, &[self.flags]);
        out
    }
}

/// One upstream attempt's span: its id and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptSpan {
    /// Its id.
    pub span_id: SpanId,
    /// Nanoseconds since the Unix epoch.
    pub start: u64,
    /// Nanoseconds since the Unix epoch; 0 while under way.
    pub end: u64,
}

impl AttemptSpan {
    /// Marks it ended now.
    pub fn end(&mut self) {
        self.end = unix_nanos();
    }
}

/// Runs `work` as the request `trace`: what it calls sees [`current`].
pub async fn scope<F: std::future::Future>(trace: Arc<RequestTrace>, work: F) -> F::Output {
    CURRENT.scope(trace, work).await
}

/// The request being served by this task, if it is traced.
pub fn current() -> Option<Arc<RequestTrace>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Begins an upstream attempt of the current request (if traced): later `traceparent` headers name it.
pub fn begin_attempt() -> Option<AttemptSpan> {
    CURRENT
        .try_with(|trace| {
            let span = AttemptSpan {
                span_id: new_span_id(),
                start: unix_nanos(),
                end: 0,
            };
            *trace.attempt.lock().unwrap_or_else(PoisonError::into_inner) = Some(span.span_id);
            span
        })
        .ok()
}

/// The `traceparent` header for an upstream call made now, if the request is traced.
pub fn upstream_traceparent() -> Option<String> {
    CURRENT.try_with(|trace| trace.upstream_traceparent()).ok()
}

/// Reads a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`): trace id, parent span id, flags. Version
/// `ff`, all-zero ids and malformed values are refused, as the spec says; a later version's extra fields
/// are ignored.
pub fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, u8)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version.eq_ignore_ascii_case("ff") || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace_id: TraceId = unhex(trace)?;
    let parent: SpanId = unhex(parent)?;
    let [flags]: [u8; 1] = unhex(flags)?;
    (trace_id != [0; 16] && parent != [0; 8]).then_some((trace_id, parent, flags))
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Lowercase hex, as `traceparent` and OTLP/JSON write ids.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends `bytes` in lowercase hex to `out`.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

fn new_trace_id() -> TraceId {
    fastrand::u128(1..).to_be_bytes()
}

fn new_span_id() -> SpanId {
    fastrand::u64(1..).to_be_bytes()
}

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn traceparent_round_trips_and_refuses_what_the_spec_refuses() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (trace, parent, flags) = parse_traceparent(header).unwrap();
        assert_eq!(hex(&trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&parent), "00f067aa0ba902b7");
        assert_eq!(flags, 1);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // A later version may add fields.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some());
    }

    #[tokio::test]
    async fn attempts_become_the_upstream_parent() {
        let trace = Arc::new(RequestTrace::start(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "chat",
        ));
        assert!(upstream_traceparent().is_none(), "no trace outside a request");
        let request_span = hex(&trace.span_id);
        let (before, attempt, after) = scope(Arc::clone(&trace), async {
            let before = upstream_traceparent().unwrap();
            let attempt = begin_attempt().unwrap();
            (before, attempt, upstream_traceparent().unwrap())
        })
        .await;
        assert_eq!(before, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{request_span}-01"));
        assert_eq!(
            after,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", hex(&attempt.span_id))
        );
        assert_eq!(hex(&trace.parent.unwrap()), "00f067aa0ba902b7");
    }
}
