//! Logs, request ids, Prometheus metrics and OpenTelemetry traces.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};

use crate::binary::{Enc, EncData};
use crate::helpers::{TestApp, tool};

/// The value of one sample line of the exposition, e.g. `name{a="b"}`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    TestApp::text(&response)
}

#[tokio::test]
async fn metrics_count_exactly_what_happened() {
    let app = TestApp::new().await;
    for _ in 0..3 {
        app.get("/healthz").await.ok(StatusCode::OK);
    }
    app.env("production", "eu").await;
    app.post(
        "/environment/",
        json!({"environment_name": "production", "puppet_cluster_name": "eu"}),
    )
    .await
    .problem(StatusCode::CONFLICT);
    app.get("/nodes/nobody/classification")
        .await
        .problem(StatusCode::NOT_FOUND);
    app.get("/definitely/not/here")
        .await
        .problem(StatusCode::NOT_FOUND);
    app.post("/metrics-form", json!({"engineer": "a", "customer": "c", "project": "p", "activity_type": "other", "hours": 1}))
        .await
        .ok(StatusCode::CREATED);
    app.post("/metrics-form", json!({"engineer": "a"}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);

    let text = metrics(&app).await;
    let backend = app.backing.store.backend();
    let expected = [
        (r#"http_requests_total{method="GET",route="/healthz",status="200"}"#.to_owned(), 3.0),
        (r#"http_requests_total{method="POST",route="/environment/",status="201"}"#.to_owned(), 1.0),
        (r#"http_requests_total{method="POST",route="/environment/",status="409"}"#.to_owned(), 1.0),
        (r#"http_requests_total{method="GET",route="/nodes/{unique_name}/classification",status="404"}"#.to_owned(), 1.0),
        (r#"http_requests_total{method="GET",route="unmatched",status="404"}"#.to_owned(), 1.0),
        (r#"http_request_duration_seconds_count{method="GET",route="/healthz"}"#.to_owned(), 3.0),
        (r#"classifications_total{outcome="not_found"}"#.to_owned(), 1.0),
        (r#"metrics_form_submissions_total{outcome="saved"}"#.to_owned(), 1.0),
        (r#"metrics_form_submissions_total{outcome="invalid"}"#.to_owned(), 1.0),
        // One commit per write (the refused one too); one snapshot read per classification.
        (format!(r#"store_operation_duration_seconds_count{{backend="{backend}",operation="commit",outcome="ok",record="environment"}}"#), 1.0),
        (format!(r#"store_operation_duration_seconds_count{{backend="{backend}",operation="commit",outcome="refused",record="environment"}}"#), 1.0),
        (format!(r#"store_operation_duration_seconds_count{{backend="{backend}",operation="get",outcome="not_found",record="node"}}"#), 1.0),
        // The scrape itself is the one request in flight.
        ("http_requests_in_flight".to_owned(), 1.0),
        (r#"enc_build_info{git_sha="unknown",version="0.1.0"}"#.to_owned(), 1.0),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&text, &series), Some(value), "{series} in\n{text}");
    }
    // A young process may not have used a whole tick of CPU yet.
    assert!(sample(&text, "process_cpu_seconds_total").is_some_and(|v| v >= 0.0));
    for process in ["process_resident_memory_bytes", "process_open_fds"] {
        assert!(sample(&text, process).is_some_and(|v| v > 0.0), "{process}");
    }
    assert!(text.contains(
        r#"http_request_duration_seconds_bucket{method="GET",route="/healthz",le="0.0001"}"#
    ));
}

#[tokio::test]
async fn the_exposition_passes_promtool() {
    let app = TestApp::new().await;
    app.get("/healthz").await.ok(StatusCode::OK);
    app.get("/nope").await;
    let text = metrics(&app).await;
    let promtool = tool("ENC_TEST_PROMTOOL", "promtool");
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{promtool} (scripts/test installs Debian's prometheus): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn routes(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| {
            l.split("route=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn scanners_cannot_blow_up_label_cardinality() {
    let app = TestApp::new().await;
    app.get("/healthz").await;
    metrics(&app).await; // so that the scrapes themselves are counted before we compare
    let before = routes(&metrics(&app).await);
    let methods = [
        Method::GET,
        Method::POST,
        Method::from_bytes(b"SCAN").unwrap(),
        Method::DELETE,
    ];
    for i in 0..1000u32 {
        let path = format!(
            "/{:x}/{}/wp-admin-{}.php",
            i.wrapping_mul(2_654_435_761),
            i,
            i % 7
        );
        let request = Request::builder()
            .method(methods[i as usize % 4].clone())
            .uri(path)
            .body(Body::empty())
            .unwrap();
        assert!(app.send(request).await.status.is_client_error());
    }
    let text = metrics(&app).await;
    let added: Vec<_> = routes(&text).difference(&before).cloned().collect();
    assert!(added.len() <= 1, "new route labels: {added:?}");
    let methods: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| l.split("method=\"").nth(1)?.split('"').next())
        .collect();
    assert!(methods.len() <= 5, "{methods:?}");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::new().await;
    let kept = app
        .send(
            Request::get("/healthz")
                .header("x-request-id", "abc-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(kept.header("x-request-id"), Some("abc-123"));
    for odd in ["has spaces in it", &"x".repeat(200)] {
        let replaced = app
            .send(
                Request::get("/nodes/x")
                    .header("x-request-id", odd)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        let id = replaced.header("x-request-id").unwrap();
        assert_ne!(id, odd);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
    let a = app
        .get("/nope")
        .await
        .header("x-request-id")
        .unwrap()
        .to_owned();
    let b = app
        .get("/nope")
        .await
        .header("x-request-id")
        .unwrap()
        .to_owned();
    assert_ne!(a, b);
}

#[test]
fn json_logs_carry_one_event_per_request() {
    let data = EncData::new();
    let mut enc = Enc::start_with(
        &data,
        5,
        &[("ENC_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
        true,
    );
    let secret = enc.token("log-reader", &["read"]);
    let (status, _) = enc.send_raw(&format!(
        "GET /nodes/nobody HTTP/1.1\r\nHost: t\r\nx-request-id: log-test-1\r\nAuthorization: Bearer {secret}\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(status, 404);
    enc.terminate();
    assert!(enc.wait(Duration::from_secs(10)).success());
    let logs = enc.logs();
    assert!(!logs.contains(&secret), "secrets are never logged");
    assert!(
        !logs.contains(crate::helpers::ADMIN),
        "secrets are never logged"
    );
    let events: Vec<Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let ours: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "request" && e["request_id"] == "log-test-1")
        .collect();
    assert_eq!(ours.len(), 1, "one event per request: {logs}");
    let event = ours[0];
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["method"], "GET");
    assert_eq!(event["route"], "/nodes/{unique_name}");
    assert_eq!(event["status"], 404);
    assert_eq!(
        event["actor"], "log-reader",
        "the token's name, never its secret"
    );
    assert!(event["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
    let backend = if crate::helpers::dynamodb_under_test() {
        "dynamodb"
    } else {
        "embedded"
    };
    assert_eq!(event["store"], backend);
    assert!(event["timestamp"].is_string());
}

/// A real OTLP/HTTP endpoint: it decodes what it receives as protobuf.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut all = kept.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        all.extend(scope.spans);
                    }
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

fn attribute(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_endpoint_with_parents_and_the_callers_trace() {
    let (endpoint, spans) = otlp_receiver().await;
    // Starting waits on blocking I/O; the receiver keeps running on the other worker.
    let mut enc = tokio::task::spawn_blocking(move || {
        let data = EncData::new();
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "enc-test"),
        ];
        (Enc::start_with(&data, 5, &env, false), data)
    })
    .await
    .unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let (status, body) = enc.0.send_raw(&format!(
        "GET /nodes/web01 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\ntraceparent: 00-{trace_id}-{caller_span}-01\r\nx-request-id: trace-me\r\nConnection: close\r\n\r\n",
        crate::helpers::ADMIN
    ));
    assert_eq!(status, 404, "{body}");
    enc.0.terminate();
    assert!(
        enc.0.wait(Duration::from_secs(10)).success(),
        "spans are flushed at shutdown"
    );

    let spans = spans.lock().unwrap().clone();
    let server = spans
        .iter()
        .find(|s| attribute(s, "request_id") == Some(AnyValue::StringValue("trace-me".into())))
        .unwrap_or_else(|| panic!("no server span among {} spans", spans.len()));
    assert_eq!(server.name, "GET /nodes/{unique_name}");
    assert_eq!(
        hex(&server.trace_id),
        trace_id,
        "the caller's trace continues"
    );
    assert_eq!(hex(&server.parent_span_id), caller_span);
    assert_eq!(
        attribute(server, "http.route"),
        Some(AnyValue::StringValue("/nodes/{unique_name}".into()))
    );
    assert_eq!(
        attribute(server, "http.response.status_code"),
        Some(AnyValue::IntValue(404))
    );
    assert_eq!(
        attribute(server, "http.request.method"),
        Some(AnyValue::StringValue("GET".into()))
    );
    assert!(
        server.events.is_empty(),
        "the request's info event is its log line, not a span event: {:?}",
        server.events
    );
    let store = spans
        .iter()
        .find(|s| s.name == "store.get" && s.parent_span_id == server.span_id)
        .expect("a store span under the request span");
    for span in [server, store] {
        for costly in [
            "code.file.path",
            "code.line.number",
            "code.module.name",
            "thread.id",
            "thread.name",
            "busy_ns",
            "idle_ns",
            "target",
        ] {
            assert_eq!(attribute(span, costly), None, "{} has {costly}", span.name);
        }
    }
    assert_eq!(store.trace_id, server.trace_id);
    assert_eq!(
        attribute(store, "record"),
        Some(AnyValue::StringValue("node".into()))
    );
    assert_eq!(
        attribute(store, "db.collection.name"),
        Some(AnyValue::StringValue("nodes".into()))
    );
    assert_eq!(
        attribute(store, "outcome"),
        Some(AnyValue::StringValue("not_found".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_is_an_error_span_with_its_warning_as_an_event() {
    let (endpoint, spans) = otlp_receiver().await;
    // A DynamoDB store nobody listens for: every store call is unavailable (503, a warning).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut enc = tokio::task::spawn_blocking(move || {
        let data = EncData::new();
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("ENC_STORE", "dynamodb"),
            ("ENC_DYNAMODB_ENDPOINT", nowhere.as_str()),
            ("ENC_DYNAMODB_TIMEOUT_MS", "2000"),
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
            ("AWS_REGION", "us-east-1"),
        ];
        (Enc::start_with(&data, 5, &env, false), data)
    })
    .await
    .unwrap();
    let (status, body) = enc.0.send_raw(&format!(
        "GET /nodes/web01 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nx-request-id: fails\r\nConnection: close\r\n\r\n",
        crate::helpers::ADMIN
    ));
    assert_eq!(status, 503, "{body}");
    enc.0.terminate();
    assert!(enc.0.wait(Duration::from_secs(10)).success());

    let spans = spans.lock().unwrap().clone();
    let server = spans
        .iter()
        .find(|s| attribute(s, "request_id") == Some(AnyValue::StringValue("fails".into())))
        .unwrap_or_else(|| panic!("no server span among {} spans", spans.len()));
    assert_eq!(
        attribute(server, "http.response.status_code"),
        Some(AnyValue::IntValue(503))
    );
    // OTLP's STATUS_CODE_ERROR is 2.
    assert_eq!(
        server.status.as_ref().map(|s| s.code),
        Some(2),
        "{server:?}"
    );
    let [event] = server.events.as_slice() else {
        panic!("one event, the request's warning: {:?}", server.events);
    };
    assert_eq!(event.name, "request");
    let value = |key: &str| {
        event
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.clone())
    };
    assert_eq!(value("level"), Some(AnyValue::StringValue("WARN".into())));
    assert_eq!(value("status"), Some(AnyValue::IntValue(503)));
    assert!(
        matches!(value("error"), Some(AnyValue::StringValue(e)) if e.contains("unavailable")),
        "the cause: {:?}",
        value("error")
    );
    let store = spans
        .iter()
        .find(|s| s.parent_span_id == server.span_id)
        .expect("a store span under the request span");
    assert_eq!(
        attribute(store, "outcome"),
        Some(AnyValue::StringValue("unavailable".into()))
    );
}
