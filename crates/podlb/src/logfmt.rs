//! Log output: `PODLB_LOG_FORMAT=json` writes one JSON object a line (for
//! log collectors), anything else (or unset) the human text format.
//!
//! A JSON line holds `timestamp` (RFC 3339, UTC), `level`, `target`,
//! `message`, every field of the event at the top level (a field named like
//! one of those four is written as `field.<name>`), and `spans` (the names
//! of the spans it happened in, outermost first) when there are any.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The environment variable choosing the format.
pub const FORMAT_ENV: &str = "PODLB_LOG_FORMAT";

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// From the value of [`FORMAT_ENV`]: `json`, or text (also for an
    /// unknown value: logging must not stop podlb from starting).
    pub fn from_env_value(v: Option<&str>) -> LogFormat {
        match v.map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// The keys of a line that fields must not overwrite.
const RESERVED: [&str; 5] = ["timestamp", "level", "target", "message", "spans"];

/// Formats an event as one JSON object.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonFormat;

/// Collects an event's fields into a JSON object.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, v: Value) {
        let name = field.name();
        let key = if name == "message" || !RESERVED.contains(&name) {
            name.to_string()
        } else {
            format!("field.{name}")
        };
        self.0.insert(key, v);
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(ts));
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        event.record(&mut Fields(&mut line));
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope.from_root().map(|s| s.name().into()).collect();
            line.insert("spans".into(), Value::Array(spans));
        }
        writeln!(w, "{}", Value::Object(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_format_comes_from_the_environment() {
        assert_eq!(LogFormat::from_env_value(None), LogFormat::Text);
        assert_eq!(LogFormat::from_env_value(Some("json")), LogFormat::Json);
        assert_eq!(LogFormat::from_env_value(Some(" JSON\n")), LogFormat::Json);
        assert_eq!(LogFormat::from_env_value(Some("text")), LogFormat::Text);
        assert_eq!(LogFormat::from_env_value(Some("yaml")), LogFormat::Text);
    }

    #[test]
    fn one_json_object_a_line_with_every_field() {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .event_format(JsonFormat)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("reload");
            let _g = span.enter();
            let e = std::io::Error::other("no such file");
            tracing::warn!(path = "/etc/podlb/podlb.toml", n = 3u64, ok = false, level = "x", error = %e, "config \"bad\"");
            tracing::info!("second");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let l = &lines[0];
        assert_eq!(l["level"], "WARN");
        assert_eq!(l["target"], module_path!());
        assert_eq!(l["message"], "config \"bad\"");
        assert_eq!(l["path"], "/etc/podlb/podlb.toml");
        assert_eq!(l["n"], 3);
        assert_eq!(l["ok"], false);
        assert_eq!(l["error"], "no such file");
        // A field may not pass for the line's own level.
        assert_eq!(l["field.level"], "x");
        assert_eq!(l["spans"], serde_json::json!(["reload"]));
        let ts = l["timestamp"].as_str().unwrap();
        assert!(ts.len() >= 20 && ts.ends_with('Z'), "{ts}");
        assert_eq!(lines[1]["message"], "second");
    }
}
