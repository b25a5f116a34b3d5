//! The gateway's log lines: text, or JSON objects one per line.
//!
//! JSON lines have the shape of `tracing-subscriber`'s JSON format with flattened event fields and the
//! current span: `{"timestamp", "level", <the event's fields, "message" first>, "target", "span": {<the
//! span's fields>, "name"}}`. They are written by [`JsonLines`] rather than by that format, which parses
//! the current span's stored JSON fields back into a map for every line it writes: for the access line
//! of each request that was a tenth of the gateway's instructions. Here the stored fields are copied as
//! they are. Events bridged from the `log` crate still go through `tracing-subscriber`'s own format.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Datelike, Timelike, Utc};
use sluice_api::json_text::write_quoted;
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber: `level` unless `RUST_LOG` says otherwise, JSON lines or text, to
/// standard error.
///
/// PostgreSQL's notices are left out unless `RUST_LOG` asks for them: sqlx logs each at info, and every
/// start's migration check draws one ("relation \"_sqlx_migrations\" already exists, skipping"), printed
/// before a CLI command's own output. Asking the server not to send them (`client_min_messages` in the
/// startup packet) would make connections through PgBouncer fail, which refuses unknown startup options.
pub fn init(level: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    const NOTICES: &str = "sqlx::postgres::notice=warn";
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},{NOTICES}")))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{NOTICES}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.fmt_fields(SpanFields).event_format(JsonLines::new()).init();
    } else {
        builder.init();
    }
}

/// The JSON line format (see the module docs).
pub struct JsonLines {
    /// For events bridged from the `log` crate, whose level and target are in their fields.
    bridged: Format<Json>,
}

impl JsonLines {
    fn new() -> Self {
        Self {
            bridged: Format::default()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
        }
    }
}

impl<S> FormatEvent<S, SpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.fields().field("log.target").is_some() {
            return self.bridged.format_event(ctx, writer, event);
        }
        writer.write_str("{\"timestamp\":\"")?;
        writer.write_str(std::str::from_utf8(&timestamp(Utc::now())).unwrap_or_default())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        FieldWriter::write(&mut writer, false, |v| event.record(v))?;
        writer.write_str(",\"target\":")?;
        write_quoted(&mut writer, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            let extensions = span.extensions();
            // The span's fields as `SpanFields` stored them: a JSON object, `{}` when there are none.
            let stored = extensions
                .get::<FormattedFields<SpanFields>>()
                .map_or("{}", |f| f.fields.as_str());
            let inner = stored
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .unwrap_or("")
                .trim();
            writer.write_str(",\"span\":{")?;
            if !inner.is_empty() {
                writer.write_str(inner)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            write_quoted(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// `now` as RFC 3339 in UTC with microseconds, `2026-12-05T13:04:05.123456Z`, digit by digit on the
/// stack: through `write!` and its padding the timestamp cost a third of a line's formatting.
fn timestamp(now: DateTime<Utc>) -> [u8; 27] {
    // Years past 9999 keep their last four digits; the gateway will not see them.
    let year = now.year().clamp(0, 9999).unsigned_abs();
    let micros = now.timestamp_subsec_micros().min(999_999);
    let fields = [
        (year, 4, b'-'),
        (now.month(), 2, b'-'),
        (now.day(), 2, b'T'),
        (now.hour(), 2, b':'),
        (now.minute(), 2, b':'),
        (now.second(), 2, b'.'),
        (micros, 6, b'Z'),
    ];
    let mut out = [0u8; 27];
    let mut at = 0;
    for (mut value, width, after) in fields {
        for digit in out[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
        out[at + width] = after;
        at += width + 1;
    }
    out
}

/// A span's fields as the JSON object its lines show, written as they are recorded (`tracing-subscriber`'s
/// `JsonFields` collects them in a map of JSON values first).
pub struct SpanFields;

impl<'w> FormatFields<'w> for SpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        fn object(writer: &mut Writer<'_>, fields: &impl RecordFields) -> fmt::Result {
            writer.write_char('{')?;
            FieldWriter::write(writer, true, |v| fields.record(v))?;
            writer.write_char('}')
        }
        // Staged on the stack, then copied into the span's empty string at once: one allocation of the
        // right size where the string grew four or five times. Fields too long for the stage are
        // written directly.
        let mut stage = Stage::default();
        match object(&mut Writer::new(&mut stage), &fields) {
            Ok(()) => writer.write_str(stage.as_str()),
            Err(_) => object(&mut writer, &fields),
        }
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &Record<'_>) -> fmt::Result {
        // A field recorded after the span was made goes at the end of its object (recorded twice, it
        // appears twice: JSON readers take the last).
        let first = matches!(current.fields.as_str(), "" | "{}");
        if first {
            current.fields.clear();
            current.fields.push('{');
        } else {
            current.fields.pop();
        }
        let mut writer = current.as_writer();
        FieldWriter::write(&mut writer, first, |v| fields.record(v))?;
        writer.write_char('}')
    }
}

/// A few hundred bytes of text on the stack; a write that does not fit fails.
struct Stage {
    bytes: [u8; 512],
    len: usize,
}

impl Default for Stage {
    fn default() -> Self {
        Self {
            bytes: [0; 512],
            len: 0,
        }
    }
}

impl Stage {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so the bytes are UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for Stage {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes each field as `"name":value`, after a comma unless it is the object's first.
struct FieldWriter<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl FieldWriter<'_, '_> {
    /// Writes the fields `record` visits into `out`; `first` when nothing comes before them in their
    /// object.
    fn write(out: &mut Writer<'_>, first: bool, record: impl FnOnce(&mut dyn Visit)) -> fmt::Result {
        let mut visitor = FieldWriter {
            out,
            first,
            result: Ok(()),
        };
        record(&mut visitor);
        visitor.result
    }

    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            let first = std::mem::replace(&mut self.first, false);
            self.result = (if first { Ok(()) } else { self.out.write_char(',') })
                .and_then(|()| write_quoted(self.out, field.name()))
                .and_then(|()| self.out.write_char(':'))
                .and_then(|()| value(self.out));
        }
    }
}

impl Visit for FieldWriter<'_, '_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    // Integers by itoa: `write!` goes through the formatting machinery for every status code.
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no infinities or NaN; serde_json writes them as null too.
        if value.is_finite() {
            self.field(field, |w| write!(w, "{value}"));
        } else {
            self.field(field, |w| w.write_str("null"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| write_quoted(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// Text written into a JSON string: quotes, backslashes and control characters escaped, as serde_json
/// escapes them.
struct Escaped<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        sluice_api::json_text::write_escaped(self.0, s)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What `tracing-subscriber`'s JSON format writes and what `JsonLines` writes, for the same events.
    fn both(emit: impl Fn()) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
        let stock = Lines::default();
        let ours = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(stock.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        tracing::subscriber::with_default(subscriber, &emit);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .fmt_fields(SpanFields)
            .event_format(JsonLines::new())
            .finish();
        tracing::subscriber::with_default(subscriber, &emit);
        let parse = |lines: &Lines| -> Vec<serde_json::Value> {
            let bytes = lines.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
                .collect()
        };
        (parse(&stock), parse(&ours))
    }

    fn without_timestamps(mut lines: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
        for line in &mut lines {
            let stamp = line.as_object_mut().unwrap().remove("timestamp").unwrap();
            let stamp = stamp.as_str().unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && stamp.ends_with('Z') && stamp.len() == 27,
                "{stamp}"
            );
        }
        lines
    }

    #[test]
    fn lines_match_the_stock_json_format() {
        let (stock, ours) = both(|| {
            tracing::info!(status = 200u16, latency = %"4 ms", caller = Some("k1"), "finished processing request");
            let span = tracing::info_span!("request", method = %"POST", path = "/v1/chat", request_id = "r\"1");
            let _entered = span.enter();
            tracing::warn!(
                error = ?std::io::Error::other("line\nbreak \u{1} \\ \"quoted\""),
                ratio = 0.25,
                big = u128::MAX,
                negative = -3i64,
                least = i64::MIN,
                most = u64::MAX,
                flag = true,
                off = false,
                "upstream failed: {}",
                "tab\there"
            );
            let inner = tracing::info_span!("attempt", provider = tracing::field::Empty);
            let _inner = inner.enter();
            tracing::error!("inside a span without fields");
            inner.record("provider", "openai");
            inner.record("provider", "azure");
            tracing::info!(n = 1, "after a field was recorded twice");
        });
        assert_eq!(stock.len(), 4, "{stock:?}");
        assert_eq!(without_timestamps(ours), without_timestamps(stock));
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
        for text in [
            "2026-12-05T13:04:05.123456Z",
            "0001-01-01T00:00:00.000000Z",
            "9999-12-31T23:59:59.999999Z",
        ] {
            assert_eq!(std::str::from_utf8(&timestamp(at(text))).unwrap(), text);
        }
        // A leap second's extra nanoseconds stay within the six digits.
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        assert_eq!(&timestamp(leap), b"2016-12-31T23:59:59.999999Z");
    }

    #[test]
    fn span_fields_too_long_for_the_stage_are_written_whole() {
        let long = "x".repeat(2000);
        let (stock, ours) = both(|| {
            let span = tracing::info_span!("request", path = long.as_str(), request_id = "r1");
            let _entered = span.enter();
            tracing::info!("inside a span with a long field");
        });
        assert_eq!(ours[0]["span"]["path"], long.as_str());
        assert_eq!(without_timestamps(ours), without_timestamps(stock));
    }
}
