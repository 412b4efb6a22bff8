//! Log output of the operator.
//!
//! `json` (default): one JSON object per line with `ts` (RFC 3339), `level` (lowercase), `msg`,
//! the fields of the enclosing spans (so every line of a canary's tick carries
//! `canary: "podinfo.test"`) and the event's own fields — `jq .msg` reads like the seed.
//! `text`: tracing-subscriber's human-readable format.
//! `flagger demo` sends the same JSON lines to a file ([`init_json_to`]) so its screen stays clean.

use std::io::Write;
use std::sync::Mutex;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::{LogFormat, LogLevel};

/// Libraries whose chatter stays at warn unless the operator runs at trace.
const QUIET: &[&str] = &[
    "kube",
    "hyper",
    "hyper_util",
    "tower",
    "h2",
    "actix_server",
    "rustls",
];

fn filter(level: LogLevel) -> EnvFilter {
    let level = match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    let mut directives = level.to_owned();
    if level != "trace" {
        for lib in QUIET {
            directives.push_str(&format!(",{lib}=warn"));
        }
    }
    EnvFilter::new(directives)
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(level: LogLevel, format: LogFormat) {
    let registry = tracing_subscriber::registry().with(filter(level));
    // An error means a subscriber is already installed (tests); keep that one.
    let _ = match format {
        LogFormat::Json => registry.with(JsonLayer(Stdout)).try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init(),
    };
}

/// Installs a global subscriber that writes JSON lines to `file` (the demo's operator log).
pub fn init_json_to(level: LogLevel, file: std::fs::File) {
    let _ = tracing_subscriber::registry()
        .with(filter(level))
        .with(JsonLayer(Mutex::new(file)))
        .try_init();
}

/// Where JSON lines go.
trait LineSink: Send + Sync + 'static {
    fn write_line(&self, line: &str);
}

struct Stdout;

impl LineSink for Stdout {
    fn write_line(&self, line: &str) {
        // A closed stdout cannot be reported anywhere else.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

impl LineSink for Mutex<std::fs::File> {
    fn write_line(&self, line: &str) {
        let mut file = self.lock().unwrap_or_else(|e| e.into_inner());
        // Nowhere to report a failing log file either.
        let _ = writeln!(file, "{line}");
    }
}

#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.insert(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::from(value));
    }
}

impl Fields {
    fn insert(&mut self, field: &Field, value: Value) {
        // `info!("text")` records the text as `message`; upstream's key is `msg`.
        let name = match field.name() {
            "message" => "msg",
            other => other,
        };
        self.0.insert(name.to_owned(), value);
    }
}

struct JsonLayer<W>(W);

impl<S, W: LineSink> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        line.insert(
            "ts".to_owned(),
            Value::String(jiff::Timestamp::now().to_string()),
        );
        line.insert(
            "level".to_owned(),
            Value::String(event.metadata().level().as_str().to_lowercase()),
        );
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<Fields>() {
                    line.extend(fields.0.clone());
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        line.extend(fields.0);
        line.insert(
            "logger".to_owned(),
            Value::String(event.metadata().target().to_owned()),
        );
        self.0.write_line(&Value::Object(line).to_string());
    }
}
