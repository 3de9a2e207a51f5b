//! JSON log lines, written straight into the line buffer: the same objects as
//! tracing-subscriber's flattened JSON format (`timestamp`, `level`, the event's fields in
//! order, `target`), without its serde round trip, its UTF-8 check of every piece written, a
//! fresh string for the timestamp and another for every formatted field. It was a sixth of
//! the instructions of a request (`scripts/bench`, measured with callgrind).

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The format of `ENC_LOG_FORMAT=json`.
pub(super) struct Json;

thread_local! {
    /// The line being made: written whole here, then handed to the writer in one piece.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        LINE.with(|kept| {
            // A fresh line only for an event logged while a field of another was formatted.
            let (mut kept, mut fresh) = (kept.try_borrow_mut(), String::new());
            let line = match &mut kept {
                Ok(kept) => {
                    kept.clear();
                    &mut **kept
                }
                Err(_) => &mut fresh,
            };
            write_line(line, event)?;
            writer.write_str(line)
        })
    }
}

fn write_line(out: &mut String, event: &Event<'_>) -> fmt::Result {
    // Events of the `log` crate carry their origin in fields; this is what they say.
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    out.push_str("{\"timestamp\":\"");
    timestamp(out, std::time::SystemTime::now())?;
    out.push_str("\",\"level\":\"");
    out.push_str(meta.level().as_str());
    out.push('"');
    let mut fields = Fields {
        out,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    out.push_str(",\"target\":");
    string(out, meta.target());
    out.push_str("}\n");
    Ok(())
}

/// Writes each field as `,"name":value`.
struct Fields<'a> {
    out: &'a mut String,
    result: fmt::Result,
}

impl Fields<'_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_ok() {
            self.out.push(',');
            string(self.out, field.name());
            self.out.push(':');
            self.result = value(self.out);
        }
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.push('"');
            write!(Escaped(out), "{value:?}")?;
            out.push('"');
            Ok(())
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| {
            string(out, value);
            Ok(())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| {
            out.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |out| {
            if value.is_finite() {
                out.push_str(ryu::Buffer::new().format_finite(value));
            } else {
                // What serde_json writes for a number JSON cannot hold.
                out.push_str("null");
            }
            Ok(())
        });
    }
}

/// A JSON string, quoted.
fn string(out: &mut String, text: &str) {
    out.push('"');
    escape(out, text);
    out.push('"');
}

/// What JSON writes in a string for each byte: 0 for the byte itself, else the letter after
/// the backslash (`u`: `\u00XX`). Quotes, backslashes and control characters, as serde_json.
static ESCAPES: [u8; 256] = {
    let mut table = [0; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// `text` as the inside of a JSON string.
fn escape(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut plain = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape = ESCAPES[byte as usize];
        if escape == 0 {
            continue;
        }
        out.push_str(&text[plain..at]);
        out.push('\\');
        out.push(escape as char);
        if escape == b'u' {
            out.push_str("00");
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 0xf) as usize] as char);
        }
        plain = at + 1;
    }
    out.push_str(&text[plain..]);
}

/// Escapes what is formatted into it (a `Debug` value) as the inside of a JSON string.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape(self.0, text);
        Ok(())
    }
}

thread_local! {
    /// The last second this thread wrote a timestamp for, and its text up to the seconds.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber writes it:
/// `2026-12-03T07:36:17.099234Z`. The date and time of day are formatted once a second.
fn timestamp(out: &mut impl fmt::Write, now: std::time::SystemTime) -> fmt::Result {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let second = since.as_secs() as i64;
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let at = chrono::DateTime::from_timestamp(second, 0).unwrap_or_default();
            cached.1.clear();
            write!(cached.1, "{}", at.format("%Y-%m-%dT%H:%M:%S"))?;
            cached.0 = second;
        }
        out.write_str(&cached.1)
    })?;
    write!(out, ".{:06}Z", since.subsec_micros())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::{Value, json};
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// What a subscriber with this format wrote.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Each line written, as written and as parsed.
    fn lines(log: impl FnOnce()) -> Vec<(String, Value)> {
        let sink = Sink::default();
        let writer = sink.clone();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(Json)
            .with_writer(move || writer.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        parsed(&sink)
    }

    /// The lines tracing-subscriber's own JSON format writes, as enc had it before.
    fn their_lines(log: impl FnOnce()) -> Vec<(String, Value)> {
        let sink = Sink::default();
        let writer = sink.clone();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(move || writer.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        parsed(&sink)
    }

    fn parsed(sink: &Sink) -> Vec<(String, Value)> {
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n'), "one line per event: {text:?}");
        text.lines()
            .map(|line| {
                let parsed = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                (line.to_owned(), parsed)
            })
            .collect()
    }

    #[test]
    fn an_event_is_one_json_object_with_its_fields_in_order() {
        let actor: Option<&str> = None;
        let logged = lines(|| {
            tracing::info!(
                method = "GET",
                actor,
                status = 404u16,
                offset = -3i64,
                duration_ms = 0.25,
                odd = f64::NAN,
                ok = true,
                route = %"/nodes/{unique_name}",
                error = ?Some("a \"quoted\"\nline\twith \\ and \u{1} and é"),
                "request"
            )
        });
        assert_eq!(logged.len(), 1);
        let (text, line) = &logged[0];
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut in_order = keys.clone();
        in_order.sort_by_key(|key| text.find(&format!("\"{key}\":")).unwrap());
        assert_eq!(
            in_order,
            [
                "timestamp",
                "level",
                "message",
                "method",
                "status",
                "offset",
                "duration_ms",
                "odd",
                "ok",
                "route",
                "error",
                "target"
            ],
            "the fields in order, an absent one left out"
        );
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "request");
        assert_eq!(line["status"], 404);
        assert_eq!(line["offset"], -3);
        assert_eq!(line["duration_ms"], 0.25);
        assert_eq!(line["odd"], Value::Null);
        assert_eq!(line["ok"], true);
        assert_eq!(line["route"], "/nodes/{unique_name}");
        assert_eq!(
            line["error"],
            json!("Some(\"a \\\"quoted\\\"\\nline\\twith \\\\ and \\u{1} and é\")")
        );
        assert_eq!(line["target"], module_path!());
    }

    /// Events of every kind of field, and one from the `log` crate.
    fn events() {
        let actor: Option<&str> = None;
        tracing::info!(
            method = "GET",
            actor,
            status = 200u16,
            duration_ms = 1.5e-7,
            "request"
        );
        tracing::warn!(error = %"a \"cause\"\n", big = u64::MAX, small = i64::MIN, "store unavailable");
        tracing::error!(bytes = &b"\x00\xff"[..], flag = false, huge = 1e300, "odd");
        let answer = 42;
        tracing_log::format_trace(
            &log::Record::builder()
                .args(format_args!("from log: {answer}"))
                .level(log::Level::Info)
                .target("aws_smithy")
                .module_path_static(Some("aws_smithy::client"))
                .file_static(Some("client.rs"))
                .line(Some(7))
                .build(),
        )
        .unwrap();
    }

    #[test]
    fn lines_are_those_of_tracing_subscribers_json_format() {
        let ours = lines(events);
        let theirs = their_lines(events);
        assert_eq!(ours.len(), 4);
        assert_eq!(ours.len(), theirs.len());
        for ((our_text, mut ours), (their_text, mut theirs)) in ours.into_iter().zip(theirs) {
            assert!(
                ours["timestamp"].as_str().is_some_and(|t| t.len() == 27),
                "{our_text}"
            );
            ours["timestamp"] = Value::Null;
            theirs["timestamp"] = Value::Null;
            assert_eq!(ours, theirs, "\nours:   {our_text}\ntheirs: {their_text}");
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let text = "quote \" backslash \\ newline \n tab \t nul \0 bell \u{7} backspace \u{8} form feed \u{c} escape \u{1b} unit \u{1f} del \u{7f} é ✓";
        let mut ours = String::new();
        string(&mut ours, text);
        assert_eq!(ours, serde_json::to_string(text).unwrap());
    }

    #[test]
    fn special_characters_are_escaped_wherever_they_fall() {
        let specials = [
            '"', '\\', '\n', '\0', '\u{1f}', ' ', '\u{7f}', 'é', '✓', '~',
        ];
        for special in specials {
            for len in 0..20 {
                for at in 0..=len {
                    let mut text: String = "abcdefghijklmnopqrstu".chars().take(len).collect();
                    text.insert(at, special);
                    let mut ours = String::new();
                    string(&mut ours, &text);
                    assert_eq!(ours, serde_json::to_string(&text).unwrap(), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut written = String::new();
        for micros in [
            1_764_747_377_099_234u64,
            1_764_747_377_999_999,
            1_764_747_378_000_001,
        ] {
            written.clear();
            timestamp(&mut written, UNIX_EPOCH + Duration::from_micros(micros)).unwrap();
            let expected = chrono::DateTime::from_timestamp_micros(micros as i64)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            assert_eq!(written, expected);
        }
        assert_eq!(written, "2025-12-03T07:36:18.000001Z");
    }
}
