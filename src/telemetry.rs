//! Logs, traces and per-request observation.
//!
//! Logs are human text or one JSON object per line, filtered by `RUST_LOG`. Traces go over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, and cost
//! nothing otherwise (spans exist only for the exporter; log lines do not carry them). Every
//! request gets an id, a server span, metrics and one log event.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use self::prometheus::{Metrics, UNMATCHED};
use crate::config::LogFormat;

mod json;
mod logs;
pub mod prometheus;

/// A static name: a name made from a `&str` is copied on every insert.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest incoming request id kept; longer or odd ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// What was set up; shut it down to flush the spans and log lines still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Writes the log lines: dropping it writes what is left.
    _logs: logs::Flusher,
}

impl Telemetry {
    /// Whether spans are exported, so incoming `traceparent` headers matter.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("enc: flushing traces failed: {e}");
        }
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

fn tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "enc".to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build(),
        )
        .with_resource(resource)
        .build())
}

/// `OTEL_TRACES_EXPORTER=none`: spans are made as with an exporter, and dropped (what
/// tracing costs without the collector; the benchmark runs so).
fn traces_without_exporter() -> bool {
    std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none")
}

/// The tracer of enc's spans, once spans are exported.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracer of enc's spans, if spans are exported (or made and dropped).
pub fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// The context a span of the current request's work starts in: the request's span, or an
/// empty context (a new trace) outside requests.
pub fn request_context() -> opentelemetry::Context {
    REQUEST
        .try_with(|r| r.trace.clone())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Makes warn and error events logged while a request is answered events of its span, with
/// their message as the name and their fields as attributes.
struct SpanEvents;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let _ = REQUEST.try_with(|r| {
            let Some(trace) = &r.trace else { return };
            let mut fields = EventFields {
                name: String::new(),
                attributes: vec![KeyValue::new("level", event.metadata().level().as_str())],
            };
            event.record(&mut fields);
            trace.span().add_event(fields.name, fields.attributes);
        });
    }
}

struct EventFields {
    name: String,
    attributes: Vec<KeyValue>,
}

impl tracing::field::Visit for EventFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.name = value.to_owned(),
            name => self.attributes.push(KeyValue::new(name, value.to_owned())),
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Sets up logging, and with `traces` and an OTLP endpoint configured, span export.
pub fn init(format: LogFormat, traces: bool) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = if traces && traces_without_exporter() {
        Some(SdkTracerProvider::builder().build())
    } else if traces && otlp_configured() {
        match tracer_provider() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("enc: OpenTelemetry export is off: {e}");
                None
            }
        }
    } else {
        None
    };
    // RUST_LOG filters the logs only: quieting them must not switch tracing off. Spans are
    // made with OpenTelemetry's API (`request_span`, the store's), not as `tracing` spans that
    // every layer would see on each poll; warn and error events of a request become events
    // of its span (`SpanEvents`): the one info event per request is the log line, and the
    // span already has its method, route, status and request id.
    let events = provider.as_ref().map(|p| {
        let _ = TRACER.set(p.tracer("enc"));
        SpanEvents.with_filter(Targets::new().with_target("enc", Level::WARN))
    });
    // Log lines go to stderr from a thread of their own, so a request never waits for a write.
    let (writer, logs) = logs::to(std::io::stderr());
    // Colour only for a person at a terminal (and not with NO_COLOR): a file or a log
    // driver gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(writer);
    let registry = tracing_subscriber::registry().with(events);
    let result = match format {
        LogFormat::Text => registry.with(fmt.with_filter(filter)).try_init(),
        LogFormat::Json => registry
            .with(fmt.event_format(json::Json).with_filter(
                tracing_subscriber::filter::FilterExt::and(
                    filter,
                    tracing_subscriber::filter::filter_fn(|m| m.is_event()),
                ),
            ))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("enc: logging was already set up: {e}");
    }
    Telemetry {
        provider,
        _logs: logs,
    }
}

/// A duration in milliseconds to the microsecond (`0.418`, not `0.41781799999999997`).
fn duration_ms(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_nanos() as f64 / 1000.0).round() / 1000.0
}

/// A UUIDv7 for a request that brought no id: its time, then 74 random bits from this
/// thread's generator (`Uuid::now_v7` takes a process-wide lock and a system call for each).
fn new_request_id() -> HeaderValue {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &rand::random()).into_uuid();
    let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
        .expect("a uuid is a header value")
}

/// An incoming request id worth keeping: short, of plain characters.
fn usable_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let value = headers.get(REQUEST_ID)?;
    let text = value.to_str().ok()?;
    let plain =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '+' | '=');
    ((1..=MAX_REQUEST_ID).contains(&text.len()) && text.chars().all(plain)).then(|| value.clone())
}

thread_local! {
    /// Each matched route, and the span name of each method on it, as they were first made
    /// on this thread (routes are a few dozen, methods eight): a request span would otherwise
    /// copy both into new strings on every request.
    static SPAN_NAMES: RefCell<HashMap<&'static str, Vec<(&'static str, &'static str)>>> =
        RefCell::default();
}

/// The route as a `&'static str`, and the span name of `method` (a `method_label`) on it.
fn span_names(method: &'static str, route: &str) -> (&'static str, &'static str) {
    SPAN_NAMES.with_borrow_mut(|kept| {
        if let Some((route, names)) = kept.get_key_value(route)
            && let Some((_, name)) = names.iter().find(|(m, _)| *m == method)
        {
            return (*route, *name);
        }
        let route: &'static str = match kept.get_key_value(route) {
            Some((route, _)) => route,
            None => Box::leak(route.into()),
        };
        let name: &'static str = Box::leak(format!("{method} {route}").into_boxed_str());
        kept.entry(route).or_default().push((method, name));
        (route, name)
    })
}

/// Method names as labels: the standard ones, and `other` for anything a client invents.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Why a request failed, for its log event: set by the error that answered it.
#[derive(Debug, Clone)]
pub struct Failure {
    level: Level,
    cause: String,
}

impl Failure {
    /// A fault of enc's (500).
    pub fn error(cause: String) -> Self {
        Self {
            level: Level::ERROR,
            cause,
        }
    }

    /// Something enc depends on failed (503).
    pub fn warn(cause: String) -> Self {
        Self {
            level: Level::WARN,
            cause,
        }
    }
}

/// Keeps `http_requests_in_flight` right even when a request is dropped half way.
struct InFlight(::prometheus::IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the task answering a request knows of it.
struct InRequest {
    /// The context holding the request's span, when spans are exported.
    trace: Option<opentelemetry::Context>,
}

tokio::task_local! {
    static REQUEST: InRequest;
}

/// The actor of a request, for its log event: put in the answer's extensions by whoever
/// identified the caller.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// The error and every cause under it, for one log field.
pub fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The server span of a request, as a child of the caller's `traceparent` when `propagate`,
/// in the context its work's spans start in.
fn request_span(
    tracer: &SdkTracer,
    propagate: bool,
    headers: &HeaderMap,
    attributes: Vec<KeyValue>,
    name: &'static str,
) -> opentelemetry::Context {
    let parent = if propagate {
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
    } else {
        opentelemetry::Context::new()
    };
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    parent.with_span(span)
}

/// What observing requests needs of the app.
#[derive(Clone, Copy)]
pub struct Observer<'a> {
    pub metrics: &'a Metrics,
    /// Whether an incoming `traceparent` parents the request's span.
    pub trace_context: bool,
    /// The store's name, for the log line.
    pub store: &'static str,
}

/// Every request: an id (kept from `x-request-id` or made), a server span (child of an
/// incoming `traceparent`), metrics by matched route, one log event, the id on the response;
/// `answer` makes the response.
pub async fn observe<F>(
    observer: Observer<'_>,
    mut request: Request,
    answer: impl FnOnce(Request) -> F,
) -> Response
where
    F: Future<Output = Response>,
{
    let started = Instant::now();
    let id = usable_request_id(request.headers()).unwrap_or_else(new_request_id);
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let request_id = id.to_str().unwrap_or_default();
    let method = method_label(request.method());
    // Kept as they came (shared, not copied): the request itself is gone when they are logged.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let uri = request.uri().clone();
    let path = uri.path();
    let trace = tracer().map(|tracer| {
        // Room for the status code set at the end: growing the list then would move it to a
        // new allocation, often freed by the other worker thread (a contended malloc arena).
        let mut attributes = Vec::with_capacity(5);
        let (route, name) = span_names(method, route);
        attributes.extend([
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route),
            KeyValue::new("url.path", path.to_owned()),
            KeyValue::new("request_id", request_id.to_owned()),
        ]);
        request_span(
            tracer,
            observer.trace_context,
            request.headers(),
            attributes,
            name,
        )
    });
    let current = InRequest { trace };

    observer.metrics.http_in_flight.inc();
    let in_flight = InFlight(observer.metrics.http_in_flight.clone());
    let mut run = std::pin::pin!(REQUEST.scope(current, answer(request)));
    let mut response = run.as_mut().await;
    let current = run.as_mut().take_value();
    let current_trace = current.as_ref().and_then(|c| c.trace.clone());
    drop(in_flight);

    let status = response.status();
    let elapsed = started.elapsed();
    observer
        .metrics
        .answered(method, route, status, elapsed.as_secs_f64());
    let extensions = response.extensions();
    let actor = extensions.get::<Actor>().map(|a| a.0.as_str());
    let failure = extensions.get::<Failure>();
    let error = failure.map(|f| f.cause.as_str());
    // One event per request, at the level of what went wrong, with the cause if any.
    macro_rules! request_event {
        ($level:ident) => {
            tracing::$level!(
                method,
                actor,
                route,
                path,
                status = status.as_u16(),
                duration_ms = duration_ms(elapsed),
                request_id,
                store = observer.store,
                error,
                "request"
            )
        };
    }
    let event = || match failure.map(|f| f.level) {
        Some(Level::ERROR) => request_event!(error),
        Some(_) => request_event!(warn),
        None => request_event!(info),
    };
    match current {
        // In the request's scope again, so that the warning is an event of its span too.
        Some(current) if failure.is_some() => REQUEST.sync_scope(current, event),
        _ => event(),
    }
    if let Some(trace) = current_trace {
        let span = trace.span();
        // As an integer attribute, as the HTTP semantic conventions have it.
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_status(opentelemetry::trace::Status::error(""));
        }
        span.end();
    }
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_str(id).unwrap());
        h
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert!(usable_request_id(&headers("abc-123_x.y:z")).is_some());
        assert!(usable_request_id(&headers("Root=1-5f84c7a5-6c4e1b2f3a9d8e7c6b5a4f3e")).is_some());
        assert!(usable_request_id(&headers(&"a".repeat(129))).is_none());
        assert!(usable_request_id(&headers("has space")).is_none());
        assert!(usable_request_id(&headers("<script>")).is_none());
        assert!(usable_request_id(&HeaderMap::new()).is_none());
    }

    #[test]
    fn span_names_are_made_once_per_route_and_method() {
        let (route, name) = span_names("GET", "/nodes/{unique_name}");
        assert_eq!(
            (route, name),
            ("/nodes/{unique_name}", "GET /nodes/{unique_name}")
        );
        let (again, same) = span_names("GET", &String::from("/nodes/{unique_name}"));
        assert!(std::ptr::eq(route, again) && std::ptr::eq(name, same));
        let (other_route, put) = span_names("PUT", "/nodes/{unique_name}");
        assert!(std::ptr::eq(route, other_route));
        assert_eq!(put, "PUT /nodes/{unique_name}");
        assert_eq!(
            span_names("other", UNMATCHED),
            (UNMATCHED, "other unmatched")
        );
    }

    #[test]
    fn durations_are_logged_to_the_microsecond() {
        use std::time::Duration;
        assert_eq!(duration_ms(Duration::from_nanos(417_818)), 0.418);
        assert_eq!(duration_ms(Duration::from_nanos(417_418)), 0.417);
        assert_eq!(duration_ms(Duration::from_millis(1500)), 1500.0);
    }

    #[test]
    fn odd_methods_share_a_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
