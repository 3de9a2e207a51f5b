use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

use enc::App;
use enc::auth::Auth;
use enc::router::{access, router as app};
use enc::store::Store;
use enc::store::dynamodb::tables::create_tables;
use enc::store::dynamodb::{DynamoDb, DynamoSettings};
use enc::store::embedded::Embedded;
use enc::store::engine::Engine;

/// The bootstrap secret every test enc accepts as `admin`; test requests carry it unless a
/// test says otherwise.
pub(crate) const ADMIN: &str = "test-bootstrap-secret-not-for-production-use";

/// Identity as the tests configure it: required, with the test bootstrap secret.
pub(crate) fn test_auth() -> Auth {
    Auth::new(true, Some(ADMIN), None, false, access())
}

/// A store of the backend under test, with whatever keeps it alive. The backend is the
/// embedded store unless `ENC_TEST_STORE=dynamodb`, which `scripts/test` sets (with
/// `ENC_TEST_DYNAMODB_ENDPOINT`) for its second pass against DynamoDB Local.
pub(crate) struct TestStore {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) store: Arc<Store>,
    pub(crate) dir: TempDir,
}

pub(crate) fn dynamodb_under_test() -> bool {
    match std::env::var("ENC_TEST_STORE").as_deref() {
        Ok("dynamodb") => true,
        Ok("embedded") | Err(_) => false,
        Ok(other) => panic!("ENC_TEST_STORE={other}: expected embedded or dynamodb"),
    }
}

/// Says that the calling test does not run in this pass, and where it does, past the test
/// harness's capture of `eprintln!` (which shows a passing test's output to no one): the
/// line is in every run's output, so a skip is never silent.
pub(crate) fn skipped(why: &str) {
    use std::io::Write as _;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(
        std::io::stderr().lock(),
        "skipped in this pass: {test}: {why}"
    );
}

/// A table prefix no other test uses.
pub(crate) fn unique_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}-",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// DynamoDB Local's settings for tables with this prefix; calls may take `timeout`.
pub(crate) fn dynamodb_settings(endpoint: &str, prefix: &str, timeout: Duration) -> DynamoSettings {
    DynamoSettings {
        endpoint: Some(endpoint.to_owned()),
        table_prefix: prefix.to_owned(),
        connect_timeout: Duration::from_millis(500),
        operation_timeout: timeout,
        max_attempts: 3,
    }
}

/// Time enough for a setup call while DynamoDB Local warms up next to other tests.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A DynamoDB engine on fresh tables at `endpoint`, whose calls may take `timeout`. The
/// tables are created with setup's own, longer timeout.
pub(crate) async fn dynamodb_store(endpoint: &str, timeout: Duration) -> DynamoDb {
    dynamodb_stores(endpoint, timeout).await.1
}

/// Two DynamoDB engines on the same fresh tables at `endpoint`: one for setup, whose calls
/// may take `SETUP_TIMEOUT`, and one whose calls may take `timeout`.
pub(crate) async fn dynamodb_stores(endpoint: &str, timeout: Duration) -> (DynamoDb, DynamoDb) {
    let prefix = unique_prefix();
    let setup = DynamoDb::connect(&dynamodb_settings(endpoint, &prefix, SETUP_TIMEOUT)).await;
    create_tables(setup.client(), &prefix)
        .await
        .expect("create tables");
    let short = DynamoDb::connect(&dynamodb_settings(endpoint, &prefix, timeout)).await;
    (setup, short)
}

/// The DynamoDB Local endpoint of the DynamoDB pass.
pub(crate) fn dynamodb_endpoint() -> String {
    std::env::var("ENC_TEST_DYNAMODB_ENDPOINT")
        .expect("ENC_TEST_STORE=dynamodb needs ENC_TEST_DYNAMODB_ENDPOINT (scripts/test sets both)")
}

impl TestStore {
    pub(crate) fn over(engine: Arc<dyn Engine>, dir: TempDir) -> Self {
        Self {
            store: Arc::new(Store::new(engine.clone())),
            engine,
            dir,
        }
    }

    pub(crate) async fn new() -> Self {
        if !dynamodb_under_test() {
            return Self::embedded();
        }
        let engine = dynamodb_store(&dynamodb_endpoint(), Duration::from_secs(10)).await;
        Self::over(Arc::new(engine), tempfile::tempdir().expect("temp dir"))
    }

    pub(crate) fn embedded() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Arc::new(Embedded::open(dir.path()).expect("open store"));
        Self::over(engine, dir)
    }
}

/// A request with any method, content type (or none) and body, for malformed-input tests.
pub(crate) fn raw(
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    builder.body(body.into()).unwrap()
}

pub(crate) struct TestApp {
    pub(crate) router: Router,
    pub(crate) backing: TestStore,
    /// The bearer token requests carry when they carry none of their own.
    pub(crate) bearer: Option<String>,
}

pub(crate) struct TestResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl TestResponse {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and the problem+json shape, returning the problem.
    #[track_caller]
    pub(crate) fn problem(&self, status: StatusCode) -> Value {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let problem = self.json();
        assert_eq!(problem["status"], status.as_u16());
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:enc:problem:"),
            "{problem}"
        );
        assert!(!problem["title"].as_str().unwrap().is_empty());
        assert!(!problem["detail"].as_str().unwrap().is_empty());
        problem
    }

    /// Asserts a 422 naming exactly these fields, in order.
    #[track_caller]
    pub(crate) fn invalid_fields(&self) -> Vec<String> {
        let problem = self.problem(StatusCode::UNPROCESSABLE_ENTITY);
        problem["errors"]
            .as_array()
            .expect("errors array")
            .iter()
            .map(|e| {
                assert!(!e["message"].as_str().unwrap().is_empty());
                e["field"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[track_caller]
    pub(crate) fn ok(&self, status: StatusCode) -> Value {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

impl TestApp {
    pub(crate) async fn new() -> Self {
        Self::on(TestStore::new().await)
    }

    pub(crate) fn on(backing: TestStore) -> Self {
        let state = App::new(backing.engine.clone()).with_auth(test_auth());
        Self::with_state(state, backing)
    }

    pub(crate) fn with_state(state: App, backing: TestStore) -> Self {
        Self {
            router: app(state.into()),
            backing,
            bearer: Some(ADMIN.to_owned()),
        }
    }

    /// The same app, its requests carrying `bearer` (or nothing).
    pub(crate) fn as_caller(&self, bearer: Option<&str>) -> TestApp {
        TestApp {
            router: self.router.clone(),
            backing: TestStore {
                engine: self.backing.engine.clone(),
                store: self.backing.store.clone(),
                dir: tempfile::tempdir().expect("temp dir"),
            },
            bearer: bearer.map(str::to_owned),
        }
    }

    /// A token with these scopes, made through the API; its secret.
    pub(crate) async fn token(&self, name: &str, scopes: &[&str]) -> String {
        let made = self
            .as_caller(Some(ADMIN))
            .post("/tokens", json!({"name": name, "scopes": scopes}))
            .await
            .ok(StatusCode::CREATED);
        made["token"].as_str().unwrap().to_owned()
    }

    /// An app that allows these origins cross-origin requests.
    pub(crate) async fn with_cors(origins: &[&str]) -> Self {
        let backing = TestStore::new().await;
        let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
        let state = App::new(backing.engine.clone())
            .with_cors_origins(&origins)
            .unwrap()
            .with_auth(test_auth());
        Self::with_state(state, backing)
    }

    /// POSTs a urlencoded form.
    pub(crate) async fn post_form(&self, uri: &str, fields: &[(&str, &str)]) -> TestResponse {
        let body = serde_urlencoded::to_string(fields).unwrap();
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(request).await
    }

    pub(crate) fn text(response: &TestResponse) -> String {
        String::from_utf8(response.body.to_vec()).unwrap()
    }

    /// Sends the request, with this app's bearer token unless it has an `Authorization`.
    pub(crate) async fn send(&self, mut request: Request<Body>) -> TestResponse {
        if let Some(bearer) = &self.bearer
            && !request.headers().contains_key(header::AUTHORIZATION)
        {
            let value = format!("Bearer {bearer}").parse().unwrap();
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub(crate) async fn request(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(tag) = if_match {
            builder = builder.header(header::IF_MATCH, tag);
        }
        let body = match body {
            Some(json) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).unwrap()).await
    }

    pub(crate) async fn get(&self, uri: &str) -> TestResponse {
        self.request(Method::GET, uri, None, None).await
    }

    pub(crate) async fn post(&self, uri: &str, body: Value) -> TestResponse {
        self.request(Method::POST, uri, Some(&body), None).await
    }

    pub(crate) async fn put(&self, uri: &str, body: Value, if_match: Option<&str>) -> TestResponse {
        self.request(Method::PUT, uri, Some(&body), if_match).await
    }

    pub(crate) async fn delete(&self, uri: &str, if_match: Option<&str>) -> TestResponse {
        self.request(Method::DELETE, uri, None, if_match).await
    }

    pub(crate) async fn env(&self, name: &str, cluster: &str) -> Value {
        self.post(
            "/environment/",
            json!({"environment_name": name, "puppet_cluster_name": cluster}),
        )
        .await
        .ok(StatusCode::CREATED)
    }

    pub(crate) async fn group(&self, body: Value) -> Value {
        self.post("/nodegroup/", body).await.ok(StatusCode::CREATED)
    }

    pub(crate) async fn node(&self, name: &str, group: Option<&str>) -> Value {
        self.post(
            "/nodes/",
            json!({
                "unique_name": name,
                "node_group_name": group,
                "environment_name": "production",
                "puppet_cluster_name": "eu",
            }),
        )
        .await
        .ok(StatusCode::CREATED)
    }

    /// Every item of a listing, following cursors.
    pub(crate) async fn all(&self, collection: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut uri = format!("{collection}?limit=1000");
        loop {
            let page = self.get(&uri).await.ok(StatusCode::OK);
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => uri = format!("{collection}?limit=1000&cursor={cursor}"),
                None => return items,
            }
        }
    }

    /// Everything stored, to show that a refused request changed nothing.
    pub(crate) async fn dump(&self) -> Value {
        json!({
            "environments": self.all("/environment").await,
            "node_groups": self.all("/nodegroup").await,
            "nodes": self.all("/nodes").await,
            "changes": self.all("/changes").await,
        })
    }
}

/// An external program the tests use: `$var` when set (scripts/test sets it), else `default`.
pub(crate) fn tool(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Parses YAML the way a YAML 1.1 reader does (PyYAML, the rules Puppet's Ruby parser
/// follows) and returns it as JSON. Ruby object tags, as in Puppet's own output, load as
/// plain mappings.
pub(crate) fn yaml_1_1(yaml: &str) -> Value {
    const SCRIPT: &str = r#"
import json, sys, yaml
class Loader(yaml.SafeLoader):
    pass
Loader.add_multi_constructor("!ruby/", lambda loader, suffix, node: loader.construct_mapping(node, deep=True))
print(json.dumps(yaml.load(sys.stdin, Loader=Loader)))
"#;
    python(SCRIPT, yaml)
}

/// Runs `script` with the test Python (`.cache/venv`, with the tools of
/// `scripts/requirements-test.txt`), `input` on its stdin; what it prints, as JSON.
pub(crate) fn python(script: &str, input: &str) -> Value {
    use std::io::Write;
    let python = tool("ENC_TEST_PYTHON", "python3");
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} (scripts/test installs its tools): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{python} failed: {}\n{input}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Parses YAML with Ruby's Psych, as Puppet does (`safe_load`), and returns it as JSON.
pub(crate) fn psych(yaml: &str) -> Result<Value, String> {
    ruby(
        "puts JSON.generate(YAML.safe_load($stdin.read, permitted_classes: [Symbol], aliases: false))",
        &[],
        yaml,
    )
}

/// Runs Ruby (Debian's, with Psych 4: what Puppet 7 parses with) on `input`; its output as JSON.
pub(crate) fn ruby(script: &str, requires: &[&str], input: &str) -> Result<Value, String> {
    use std::io::Write;
    let mut command = std::process::Command::new(tool("ENC_TEST_RUBY", "ruby"));
    command.args(["-ryaml", "-rjson"]);
    for library in requires {
        command.arg(format!("-r{library}"));
    }
    let mut child = command
        .args(["-e", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("ruby (scripts/test installs it): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}
