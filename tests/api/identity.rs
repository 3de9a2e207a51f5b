//! Identity and access: every route by every kind of caller, tokens, and what never leaks.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use enc::auth::Needs;
use enc::auth::secret::{Secret, sha256_hex};
use enc::domain::{Scope, Token, TokenName};

use crate::helpers::{ADMIN, TestApp, TestResponse};

/// A request that the operation answers with success when the caller may make it, and the
/// requests (as administrator) that make it possible.
struct Case {
    setup: Vec<(Method, String, Value)>,
    uri: String,
    body: Option<Body>,
    content_type: Option<&'static str>,
    success: StatusCode,
}

fn json_case(uri: &str, body: Option<Value>, success: StatusCode) -> Case {
    Case {
        setup: Vec::new(),
        uri: uri.to_owned(),
        content_type: body.as_ref().map(|_| "application/json"),
        body: body.map(|b| Body::from(b.to_string())),
        success,
    }
}

fn unique() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The case for each documented operation; `None` for one this test does not know, which
/// fails the test: every new route gets its row here.
fn case(method: &Method, path: &str) -> Option<Case> {
    // A collection answers at both spellings: the same case, asked at the other one.
    const COLLECTIONS: [&str; 4] = ["/environment", "/nodegroup", "/nodes", "/tokens"];
    let bare = path.strip_suffix('/').unwrap_or(path);
    if COLLECTIONS.contains(&bare) {
        let other = if path.ends_with('/') {
            bare.to_owned()
        } else {
            format!("{bare}/")
        };
        if let Some(mut known) = known_case(method, &other) {
            known.uri = known.uri.replacen(&other, path, 1);
            return Some(known);
        }
    }
    known_case(method, path)
}

fn known_case(method: &Method, path: &str) -> Option<Case> {
    let u = unique();
    let ok = StatusCode::OK;
    let made = StatusCode::CREATED;
    let gone = StatusCode::NO_CONTENT;
    let seen = StatusCode::SEE_OTHER;
    let admin_post = |uri: &str, body: Value| vec![(Method::POST, uri.to_owned(), body)];
    let node = |name: &str| json!({"unique_name": name, "node_group_name": "base", "environment_name": "production", "puppet_cluster_name": "eu"});
    Some(match (method.as_str(), path) {
        ("GET", "/environment") => json_case("/environment", None, ok),
        ("POST", "/environment/") => json_case(
            "/environment/",
            Some(json!({"environment_name": format!("env_{u}"), "puppet_cluster_name": "eu"})),
            made,
        ),
        ("GET", "/environment/{environment_name}/{puppet_cluster_name}") => {
            json_case("/environment/production/eu", None, ok)
        }
        ("DELETE", "/environment/{environment_name}/{puppet_cluster_name}") => Case {
            setup: admin_post(
                "/environment/",
                json!({"environment_name": format!("del_{u}"), "puppet_cluster_name": "eu"}),
            ),
            ..json_case(&format!("/environment/del_{u}/eu"), None, gone)
        },
        ("GET", "/nodegroup") => json_case("/nodegroup", None, ok),
        ("POST", "/nodegroup/") => {
            json_case("/nodegroup/", Some(json!({"name": format!("g{u}")})), made)
        }
        ("GET", "/nodegroup/{node_group_name}") => json_case("/nodegroup/base", None, ok),
        ("PUT", "/nodegroup/{node_group_name}") => json_case(
            "/nodegroup/base",
            Some(json!({"parameters": {"round": u}})),
            ok,
        ),
        ("DELETE", "/nodegroup/{node_group_name}") => Case {
            setup: admin_post("/nodegroup/", json!({"name": format!("d{u}")})),
            ..json_case(&format!("/nodegroup/d{u}"), None, gone)
        },
        ("GET", "/nodes") => json_case("/nodes", None, ok),
        ("POST", "/nodes/") => json_case("/nodes/", Some(node(&format!("n{u}"))), made),
        ("GET", "/nodes/{unique_name}") => json_case("/nodes/web01", None, ok),
        ("PUT", "/nodes/{unique_name}") => json_case("/nodes/web01", Some(node("web01")), ok),
        ("DELETE", "/nodes/{unique_name}") => Case {
            setup: admin_post("/nodes/", node(&format!("d{u}"))),
            ..json_case(&format!("/nodes/d{u}"), None, gone)
        },
        ("GET", "/nodes/{unique_name}/classification") => {
            json_case("/nodes/web01/classification", None, ok)
        }
        ("POST", "/nodegroup/{node_group_name}/pin") => json_case(
            "/nodegroup/base/pin",
            Some(json!({"nodes": [format!("p{u}")]})),
            ok,
        ),
        ("POST", "/nodegroup/{node_group_name}/unpin") => json_case(
            "/nodegroup/base/unpin",
            Some(json!({"nodes": [format!("p{u}")]})),
            ok,
        ),
        ("POST", "/commands/unpin-from-all") => json_case(
            "/commands/unpin-from-all",
            Some(json!({"nodes": [format!("p{u}")]})),
            ok,
        ),
        ("POST", "/nodes/{unique_name}/classification") => json_case(
            "/nodes/web01/classification",
            Some(json!({"facts": {"round": u}})),
            ok,
        ),
        ("GET", "/nodegroup/{node_group_name}/nodes") => {
            json_case("/nodegroup/base/nodes", None, ok)
        }
        ("GET", "/classes/{class_name}/nodes") => json_case("/classes/ntp/nodes", None, ok),
        ("GET", "/rule-views") => json_case("/rule-views", None, ok),
        ("GET", "/nodes/{unique_name}/facts") => json_case("/nodes/web01/facts", None, ok),
        ("GET", "/nodes/{unique_name}/history") => json_case("/nodes/web01/history", None, ok),
        ("GET", "/nodegroup/{node_group_name}/history") => {
            json_case("/nodegroup/base/history", None, ok)
        }
        ("GET", "/environment/{environment_name}/{puppet_cluster_name}/history") => {
            json_case("/environment/production/eu/history", None, ok)
        }
        ("GET", "/changes") => json_case("/changes?kind=node", None, ok),
        ("GET", "/export") => json_case("/export", None, ok),
        ("POST", "/import") => json_case("/import?dry_run=true", Some(json!({"files": {}})), ok),
        ("GET", "/nodes/{unique_name}/classification/diff") => json_case(
            "/nodes/web01/classification/diff?from=2020-01-01T00:00:00Z",
            None,
            ok,
        ),
        ("POST", "/nodes/{unique_name}/history/{version}/restore") => Case {
            setup: admin_post("/nodes/", node(&format!("r{u}"))),
            ..json_case(&format!("/nodes/r{u}/history/1/restore"), None, ok)
        },
        ("POST", "/nodegroup/{node_group_name}/history/{version}/restore") => Case {
            setup: admin_post("/nodegroup/", json!({"name": format!("r{u}")})),
            ..json_case(&format!("/nodegroup/r{u}/history/1/restore"), None, ok)
        },
        (
            "POST",
            "/environment/{environment_name}/{puppet_cluster_name}/history/{version}/restore",
        ) => Case {
            setup: admin_post(
                "/environment/",
                json!({"environment_name": format!("r{u}"), "puppet_cluster_name": "eu"}),
            ),
            ..json_case(&format!("/environment/r{u}/eu/history/1/restore"), None, ok)
        },
        ("GET", "/tokens") => json_case("/tokens", None, ok),
        ("POST", "/tokens") => json_case(
            "/tokens",
            Some(json!({"name": format!("m{u}"), "scopes": ["read"]})),
            made,
        ),
        ("GET", "/tokens/{name}") => json_case("/tokens/scope-read", None, ok),
        ("DELETE", "/tokens/{name}") => Case {
            setup: admin_post(
                "/tokens",
                json!({"name": format!("r{u}"), "scopes": ["read"]}),
            ),
            ..json_case(&format!("/tokens/r{u}"), None, gone)
        },
        ("GET", "/metrics-form") => json_case("/metrics-form", None, ok),
        ("POST", "/metrics-form") => json_case(
            "/metrics-form",
            Some(
                json!({"engineer": "e", "customer": "c", "project": "p", "activity_type": "other", "hours": 1}),
            ),
            made,
        ),
        ("GET", "/metrics-form/entries") => json_case("/metrics-form/entries", None, ok),
        ("GET", "/metrics-form/entries.csv") => json_case("/metrics-form/entries.csv", None, ok),
        ("GET", "/metrics-form/summary") => json_case("/metrics-form/summary", None, ok),
        ("GET", "/metrics-form/report") => json_case("/metrics-form/report", None, ok),
        ("GET", "/sign-in") => json_case("/sign-in", None, ok),
        ("POST", "/sign-in") => Case {
            setup: Vec::new(),
            uri: "/sign-in".into(),
            body: Some(Body::from(format!("token={ADMIN}"))),
            content_type: Some("application/x-www-form-urlencoded"),
            success: seen,
        },
        ("POST", "/sign-out") => json_case("/sign-out", None, seen),
        ("GET", "/healthz") => json_case("/healthz", None, ok),
        ("GET", "/readyz") => json_case("/readyz", None, ok),
        ("GET", "/metrics") => json_case("/metrics", None, ok),
        _ => return None,
    })
}

async fn seeded() -> TestApp {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.group(json!({"name": "base"})).await;
    app.node("web01", Some("base")).await;
    app
}

/// Sends the case's request carrying `authorization` (a whole header value), after its setup.
async fn attempt(
    app: &TestApp,
    method: &Method,
    case: Case,
    authorization: Option<&str>,
) -> TestResponse {
    let (response, _) = attempt_watching(app, method, case, authorization, false).await;
    response
}

/// As `attempt`; with `watch`, also whether the request changed anything stored.
async fn attempt_watching(
    app: &TestApp,
    method: &Method,
    case: Case,
    authorization: Option<&str>,
    watch: bool,
) -> (TestResponse, bool) {
    for (m, uri, body) in case.setup {
        let as_admin = app.as_caller(Some(ADMIN));
        let response = as_admin.request(m, &uri, Some(&body), None).await;
        assert!(
            response.status.is_success(),
            "setup {uri}: {}",
            response.status
        );
    }
    let before = if watch { Some(app.dump().await) } else { None };
    let mut request = Request::builder().method(method.clone()).uri(&case.uri);
    if let Some(content_type) = case.content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let request = request.body(case.body.unwrap_or_else(Body::empty)).unwrap();
    let response = app.as_caller(None).send(request).await;
    let changed = match before {
        Some(before) => app.dump().await != before,
        None => false,
    };
    (response, changed)
}

/// A token stored as it would be, expired an hour ago: its secret.
async fn expired_token(app: &TestApp) -> String {
    let name = TokenName::parse("expired").unwrap();
    let secret = Secret::generate(&name);
    let token = Token {
        name,
        scopes: BTreeSet::from([Scope::Admin]),
        description: None,
        expires_at: Some(enc::domain::now() - chrono::Duration::hours(1)),
        created_by: "test".into(),
        last_used_at: None,
        secret_sha256: sha256_hex(secret.expose()),
        clusters: None,
    };
    app.backing.store.create_token(token, "test").await.unwrap();
    secret.into_string()
}

/// Waits for a token's use, written in the background, to be recorded.
async fn last_use_recorded(app: &TestApp, name: &str) {
    let mut used = Value::Null;
    for _ in 0..50 {
        used = app.get(&format!("/tokens/{name}")).await.ok(StatusCode::OK);
        if used["last_used_at"].is_string() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the use of {name} was never recorded: {used}");
}

#[tokio::test]
async fn every_route_by_every_kind_of_caller() {
    let app = seeded().await;
    let mut holders = Vec::new();
    for scope in Scope::ALL {
        let name = format!("scope-{}", scope.as_str().replace(':', "-"));
        holders.push((scope, app.token(&name, &[scope.as_str()]).await));
    }
    let revoked = app.token("revoked", &["admin"]).await;
    app.delete("/tokens/revoked", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    let unknown = Secret::generate(&TokenName::parse("nobody").unwrap()).into_string();
    let expired = expired_token(&app).await;
    let invalid = [
        ("no identity", None),
        ("a malformed header", Some("Bearer".to_owned())),
        ("another scheme", Some(format!("Basic {ADMIN}"))),
        (
            "a malformed token",
            Some("Bearer not-an-enc-token".to_owned()),
        ),
        ("an unknown token", Some(format!("Bearer {unknown}"))),
        ("an expired token", Some(format!("Bearer {expired}"))),
        ("a revoked token", Some(format!("Bearer {revoked}"))),
    ];

    let access = enc::router::access();
    let mut operations: Vec<_> = access
        .operations()
        .map(|(m, p, n)| (m.clone(), p.to_owned(), n))
        .collect();
    operations.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
    assert!(operations.len() >= 31, "{operations:?}");
    let document = app.get("/api-docs/openapi.json").await.ok(StatusCode::OK);
    // Each operation, with a collection's two spellings as one.
    let one = |method: &Method, path: &str| {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        (method.to_string(), path.to_owned())
    };
    let mut checked = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["security"].is_array(),
                "{method} {path} declares no scope"
            );
            let method: Method = method.to_uppercase().parse().unwrap();
            let declared = access.needs(&method, path).expect("in the access table");
            assert!(
                case(&method, path).is_some(),
                "{method} {path} has no row in this matrix"
            );
            checked.insert(one(&method, path));

            let writes = method != Method::GET;
            for (what, authorization) in &invalid {
                let row = case(&method, path).unwrap();
                let watch = writes && declared != Needs::Nothing;
                let (response, changed) =
                    attempt_watching(&app, &method, row, authorization.as_deref(), watch).await;
                match declared {
                    Needs::Scope(_) | Needs::Either(..) => {
                        response.problem(StatusCode::UNAUTHORIZED);
                        assert_eq!(
                            response.header("www-authenticate"),
                            Some("Bearer realm=\"enc\""),
                            "{method} {path} with {what}"
                        );
                        assert!(
                            !changed,
                            "refused {method} {path} with {what} changed nothing"
                        );
                    }
                    Needs::Nothing => {
                        let wanted = case(&method, path).unwrap().success;
                        assert_eq!(
                            response.status, wanted,
                            "{method} {path} (open) with {what}"
                        );
                    }
                }
            }
            for (scope, secret) in &holders {
                let case = case(&method, path).unwrap();
                let success = case.success;
                // A row that previews a write (`?dry_run=true`) needs only `plan`.
                let query = case.uri.split_once('?').map(|(_, q)| q);
                let declared = access.needs_asked(&method, path, query).unwrap();
                let response =
                    attempt(&app, &method, case, Some(&format!("Bearer {secret}"))).await;
                let allowed = declared.granted_by(*scope);
                if allowed {
                    assert_eq!(
                        response.status,
                        success,
                        "{method} {path} with {scope}: {}",
                        String::from_utf8_lossy(&response.body)
                    );
                } else {
                    let problem = response.problem(StatusCode::FORBIDDEN);
                    assert!(
                        problem["detail"]
                            .as_str()
                            .unwrap()
                            .contains(&declared.to_string()),
                        "{problem}"
                    );
                }
            }
        }
    }
    let table: BTreeSet<_> = operations.iter().map(|(m, p, _)| one(m, p)).collect();
    assert_eq!(checked, table, "the document and the access table agree");
    // HEAD is answered by the GET handler, so it needs what GET needs.
    for uri in ["/nodes/web01", "/tokens", "/metrics-form/entries.csv"] {
        let head = app
            .as_caller(None)
            .request(Method::HEAD, uri, None, None)
            .await;
        assert_eq!(head.status, StatusCode::UNAUTHORIZED, "HEAD {uri}");
    }
    // A method a route does not have is 405 whoever asks, never a way around the table.
    for (path, uri) in [
        ("/nodes/{unique_name}", "/nodes/web01"),
        ("/tokens", "/tokens"),
    ] {
        for method in [Method::PATCH, Method::PUT] {
            if access
                .operations()
                .any(|(m, p, _)| *m == method && p == path)
            {
                continue;
            }
            let response = app
                .as_caller(None)
                .request(method.clone(), uri, None, None)
                .await;
            assert_eq!(
                response.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri}"
            );
        }
    }
}

#[tokio::test]
async fn tokens_show_their_secret_once_and_stop_at_once() {
    let app = TestApp::new().await;
    let made = app
        .post(
            "/tokens",
            json!({"name": "ci-deploy", "scopes": ["write", "read"], "description": "CI", "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(made.header("location"), Some("/tokens/ci-deploy"));
    assert_eq!(made.header("cache-control"), Some("no-store"));
    let made = made.ok(StatusCode::CREATED);
    let secret = made["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("enc_ci-deploy_"), "{secret}");
    assert_eq!(made["scopes"], json!(["read", "write"]));
    assert_eq!(made["created_by"], "bootstrap");
    assert_eq!(made["expires_at"], "2099-01-01T00:00:00Z");
    assert!(made.get("secret_sha256").is_none());

    let shown = app.get("/tokens/ci-deploy").await.ok(StatusCode::OK);
    let listed = app.get("/tokens").await.ok(StatusCode::OK);
    for view in [&shown, &listed] {
        assert!(!view.to_string().contains(&secret), "{view}");
        assert!(!view.to_string().contains(&sha256_hex(&secret)), "{view}");
    }
    assert!(shown.get("token").is_none());

    let caller = app.as_caller(Some(&secret));
    let created = caller
        .post(
            "/environment/",
            json!({"environment_name": "production", "puppet_cluster_name": "eu"}),
        )
        .await
        .ok(StatusCode::CREATED);
    assert_eq!(
        created["updated_by"], "ci-deploy",
        "writes record their actor"
    );
    // The use is recorded in the background, at most once a minute.
    last_use_recorded(&app, "ci-deploy").await;

    for (body, field) in [
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "x", "scopes": ["root"]}), "scopes.0"),
        (json!({"name": "X Y", "scopes": ["read"]}), "name"),
        (
            json!({"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "scopes": ["read"], "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "scopes": ["read"], "secret": "mine"}),
            "secret",
        ),
    ] {
        assert_eq!(app.post("/tokens", body).await.invalid_fields(), [field]);
    }
    app.post("/tokens", json!({"name": "ci-deploy", "scopes": ["read"]}))
        .await
        .problem(StatusCode::CONFLICT);

    app.delete("/tokens/ci-deploy", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    caller.get("/nodes").await.problem(StatusCode::UNAUTHORIZED);
    app.get("/tokens/ci-deploy")
        .await
        .problem(StatusCode::NOT_FOUND);
}

/// The classification and the node check a stored token in their own store read (one call
/// per agent run): still nothing is said about the node, the query or the name before the
/// token is good.
#[tokio::test]
async fn a_classification_checks_its_token_before_it_says_anything() {
    let app = seeded().await;
    let classify = app.token("puppet-eu", &["classify"]).await;
    let recorder = app.token("recorder", &["activities:write"]).await;
    let revoked = app.token("gone", &["classify"]).await;
    app.delete("/tokens/gone", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    let unknown = Secret::generate(&TokenName::parse("nobody").unwrap()).into_string();
    let expired = expired_token(&app).await;
    let swap = if classify.ends_with('A') { 'B' } else { 'A' };
    let wrong = format!("{}{swap}", &classify[..classify.len() - 1]);
    let uris = [
        "/nodes/web01/classification",
        "/nodes/missing/classification",
        "/nodes/web01/classification?format=xml",
        "/nodes/web01/classification?bogus=1",
        "/nodes/a%20b/classification",
        "/nodes/%FF/classification",
        "/nodes/web01",
        "/nodes/missing",
        "/nodes/a%20b",
        "/nodes/%FF",
    ];
    for secret in [&unknown, &expired, &revoked, &wrong] {
        for uri in uris {
            let response = app.as_caller(Some(secret)).get(uri).await;
            response.problem(StatusCode::UNAUTHORIZED);
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer realm=\"enc\""),
                "{uri}"
            );
        }
    }
    for uri in uris {
        let problem = app
            .as_caller(Some(&recorder))
            .get(uri)
            .await
            .problem(StatusCode::FORBIDDEN);
        let needed = if uri.contains("/classification") {
            "classify"
        } else {
            "read"
        };
        assert!(
            problem["detail"].as_str().unwrap().contains(needed),
            "{problem}"
        );
    }
    let puppet = app.as_caller(Some(&classify));
    let answer = puppet
        .get("/nodes/web01/classification")
        .await
        .ok(StatusCode::OK);
    assert_eq!(answer["environment"], "production");
    puppet
        .get("/nodes/missing/classification")
        .await
        .problem(StatusCode::NOT_FOUND);
    puppet
        .get("/nodes/web01/classification?format=xml")
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert_eq!(
        puppet
            .get("/nodes/a%20b/classification")
            .await
            .invalid_fields(),
        ["unique_name"]
    );
    // The node itself needs `read`, which `classify` does not grant.
    puppet
        .get("/nodes/web01")
        .await
        .problem(StatusCode::FORBIDDEN);
    let reader = app.as_caller(Some(&app.token("reader", &["read"]).await));
    assert_eq!(
        reader.get("/nodes/web01").await.ok(StatusCode::OK)["unique_name"],
        "web01"
    );
    reader
        .get("/nodes/missing")
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(
        reader.get("/nodes/a%20b").await.invalid_fields(),
        ["unique_name"]
    );
    puppet
        .get("/nodes/%FF/classification")
        .await
        .problem(StatusCode::BAD_REQUEST);
    reader
        .get("/nodes/%FF")
        .await
        .problem(StatusCode::BAD_REQUEST);
    // Counted and recorded as any other use of a token.
    let metrics = app.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    for outcome in ["ok", "unknown", "expired", "forbidden"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("auth_requests_total{{outcome=\"{outcome}\"}}"))),
            "{outcome}: {text}"
        );
    }
    last_use_recorded(&app, "puppet-eu").await;
    // Revoked at once, even right after a good answer.
    app.delete("/tokens/puppet-eu", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    puppet
        .get("/nodes/web01/classification")
        .await
        .problem(StatusCode::UNAUTHORIZED);
}

/// An app made without its auth declares no route's needs: it refuses every request but the
/// unmatched, rather than guessing what a route needs.
#[tokio::test]
async fn an_app_without_its_auth_refuses_every_route() {
    let backing = crate::helpers::TestStore::new().await;
    let state = enc::App::new(backing.engine.clone());
    let app = TestApp::with_state(state, backing);
    for uri in ["/nodes", "/healthz", "/nodegroup"] {
        app.get(uri).await.problem(StatusCode::FORBIDDEN);
    }
}

/// A handler of a route whose token check is left to it, that forgets to check: nothing it
/// made goes out, whatever the token.
#[tokio::test]
async fn an_answer_made_without_checking_a_deferred_token_never_leaves() {
    let backing = crate::helpers::TestStore::new().await;
    let state: enc::AppState = enc::App::new(backing.engine.clone())
        .with_auth(crate::helpers::test_auth())
        .into();
    let forgetful = axum::Router::new()
        .route(
            "/nodes/{unique_name}/classification",
            axum::routing::get(|| async { "classes for anyone" }),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            |axum::extract::State(state): axum::extract::State<enc::AppState>,
             request: axum::extract::Request,
             next: axum::middleware::Next| async move {
                enc::auth::authorize(&state.auth, state.ground(), request, next).await
            },
        ))
        .with_state(state);
    let app = TestApp {
        router: forgetful,
        backing,
        bearer: None,
    };
    let name = TokenName::parse("reader").unwrap();
    let secret = Secret::generate(&name);
    let token = Token {
        name,
        scopes: [Scope::Read].into(),
        description: None,
        expires_at: None,
        created_by: "test".into(),
        last_used_at: None,
        secret_sha256: sha256_hex(secret.expose()),
        clusters: None,
    };
    app.backing.store.create_token(token, "test").await.unwrap();
    let secret = secret.into_string();
    // Not seen yet: checked by authorize itself (its record alone), so the handler answers.
    let first = app
        .as_caller(Some(&secret))
        .get("/nodes/web01/classification")
        .await;
    assert_eq!(first.status, StatusCode::OK);
    // Seen good: left to the handler, which forgets; what it made never leaves.
    let response = app
        .as_caller(Some(&secret))
        .get("/nodes/web01/classification")
        .await;
    assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!String::from_utf8_lossy(&response.body).contains("classes"));
    // The bootstrap token is checked by authorize itself, so the handler answers.
    let response = app
        .as_caller(Some(ADMIN))
        .get("/nodes/web01/classification")
        .await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn cross_site_form_posts_are_refused() {
    let app = TestApp::new().await;
    let form = "engineer=e&customer=Evil&project=p&activity_type=other&hours=1";
    let post = |headers: &[(&'static str, &'static str)]| {
        let mut request = Request::post("/metrics-form")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::HOST, "enc.example.com");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Body::from(form)).unwrap()
    };
    for hostile in [
        &[("sec-fetch-site", "cross-site")][..],
        &[("sec-fetch-site", "same-site")],
        &[("origin", "https://evil.example.net")],
        &[("origin", "null")],
    ] {
        app.send(post(hostile)).await.problem(StatusCode::FORBIDDEN);
    }
    let customers = app
        .get("/metrics-form/entries?customer=Evil")
        .await
        .ok(StatusCode::OK);
    assert_eq!(customers["items"], json!([]));
    for same in [
        &[("sec-fetch-site", "same-origin")][..],
        &[("origin", "http://enc.example.com")],
        &[],
    ] {
        assert_eq!(app.send(post(same)).await.status, StatusCode::SEE_OTHER);
    }
    let signing_in = Request::post("/sign-in")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(format!("token={ADMIN}")))
        .unwrap();
    app.send(signing_in).await.problem(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_session_cookie_counts_only_on_the_forms_pages() {
    let app = TestApp::new().await;
    let secret = app
        .token("dana", &["activities:write", "activities:read", "admin"])
        .await;
    let signed_in = app
        .as_caller(None)
        .send(
            Request::post("/sign-in")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={secret}")))
                .unwrap(),
        )
        .await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    let cookie = signed_in.header("set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |uri: &str, site: Option<&'static str>| {
        let mut request = Request::get(uri).header(header::COOKIE, &session);
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        request.body(Body::empty()).unwrap()
    };
    let anonymous = app.as_caller(None);
    // The cookie holds a random id, never the token, nor anything of it.
    let id = session.strip_prefix("enc_session=").unwrap();
    assert_ne!(id, secret);
    assert!(
        !id.starts_with("enc_") && !secret.contains(id) && id.len() >= 43,
        "{id}"
    );
    assert_eq!(
        anonymous
            .send(with_cookie("/metrics-form/report", None))
            .await
            .status,
        StatusCode::OK
    );
    anonymous
        .send(with_cookie("/metrics-form/entries", Some("cross-site")))
        .await
        .problem(StatusCode::UNAUTHORIZED);
    // The JSON API never takes the cookie, though the token could do everything.
    for uri in ["/nodes", "/tokens", "/environment"] {
        anonymous
            .send(with_cookie(uri, None))
            .await
            .problem(StatusCode::UNAUTHORIZED);
    }
    // Without a session, a browser asking for a page is sent to sign in.
    let page = Request::get("/metrics-form/report")
        .header(header::ACCEPT, "text/html")
        .body(Body::empty())
        .unwrap();
    let redirected = anonymous.send(page).await;
    assert_eq!(redirected.status, StatusCode::SEE_OTHER);
    assert_eq!(redirected.header("location"), Some("/sign-in"));
    let out = anonymous
        .send(Request::post("/sign-out").body(Body::empty()).unwrap())
        .await;
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
}

/// Signs in with `secret` on the sign-in page: the `enc_session=<id>` pair of the cookie, or
/// the status the page answered.
async fn sign_in(app: &TestApp, secret: &str) -> Result<String, StatusCode> {
    let signed_in = app
        .as_caller(None)
        .send(
            Request::post("/sign-in")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={secret}")))
                .unwrap(),
        )
        .await;
    if signed_in.status != StatusCode::SEE_OTHER {
        return Err(signed_in.status);
    }
    let cookie = signed_in.header("set-cookie").unwrap();
    Ok(cookie.split(';').next().unwrap().to_owned())
}

/// `GET uri` with the session cookie `pair` (`enc_session=<id>`) and nothing else.
async fn with_session(app: &TestApp, pair: &str, uri: &str) -> TestResponse {
    let request = Request::get(uri)
        .header(header::COOKIE, pair)
        .body(Body::empty())
        .unwrap();
    app.as_caller(None).send(request).await
}

#[tokio::test]
async fn a_session_is_kept_server_side_and_ends_at_sign_out_revocation_and_idleness() {
    let app = TestApp::new().await;
    // A token without the form's scopes starts no session.
    let reader = app.token("reader", &["read"]).await;
    assert_eq!(sign_in(&app, &reader).await, Err(StatusCode::UNAUTHORIZED));

    // Sign-out ends the session itself: the same cookie, replayed, is refused.
    let dana = app.token("dana", &["activities:read", "write"]).await;
    let pair = sign_in(&app, &dana).await.unwrap();
    let entries = with_session(&app, &pair, "/metrics-form/entries").await;
    assert_eq!(
        entries.status,
        StatusCode::OK,
        "{}",
        TestApp::text(&entries)
    );
    // The session grants the form's scopes only: `activities:read`, not `activities:write`.
    let post = Request::post("/metrics-form")
        .header(header::COOKIE, &pair)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"customer": "C", "project": "P", "activity_type": "support", "hours": 1})
                .to_string(),
        ))
        .unwrap();
    assert_eq!(
        app.as_caller(None).send(post).await.status,
        StatusCode::FORBIDDEN
    );
    // Its use counts as the token's.
    last_use_recorded(&app, "dana").await;
    let out = app
        .as_caller(None)
        .send(
            Request::post("/sign-out")
                .header(header::COOKIE, &pair)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    with_session(&app, &pair, "/metrics-form/entries")
        .await
        .problem(StatusCode::UNAUTHORIZED);

    // Revoking the token ends its sessions.
    let pair = sign_in(&app, &dana).await.unwrap();
    assert_eq!(
        with_session(&app, &pair, "/metrics-form/entries")
            .await
            .status,
        StatusCode::OK
    );
    app.delete("/tokens/dana", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    with_session(&app, &pair, "/metrics-form/entries")
        .await
        .problem(StatusCode::UNAUTHORIZED);
    // A token made again under the same name is another token: the old session stays ended.
    app.token("dana", &["activities:read"]).await;
    with_session(&app, &pair, "/metrics-form/entries")
        .await
        .problem(StatusCode::UNAUTHORIZED);

    // Idle past an hour, or past its end, a session is over.
    use enc::store::sessions::{Session, session_name};
    let eve = app.token("eve", &["activities:read"]).await;
    let token = app
        .backing
        .store
        .get_token(&TokenName::parse("eve").unwrap())
        .await
        .unwrap();
    let now = enc::domain::now();
    for (id, seen, expires, good) in [
        (
            "fresh-session-id-0000000000000000000000000000",
            0,
            3600,
            true,
        ),
        (
            "idle-session-id-00000000000000000000000000000",
            2 * 3600,
            3600,
            false,
        ),
        (
            "ended-session-id-0000000000000000000000000000",
            0,
            -1,
            false,
        ),
    ] {
        let session = Session {
            name: session_name(&sha256_hex(id)),
            actor: "eve".into(),
            token: Some(token.item.name.clone()),
            token_sha256: Some(token.item.secret_sha256.clone()),
            scopes: [Scope::ActivitiesRead].into(),
            started_at: now - chrono::Duration::seconds(seen),
            ends_at: now + chrono::Duration::seconds(expires),
            seen_at: now - chrono::Duration::seconds(seen),
        };
        app.backing.store.create_session(session).await.unwrap();
        let status = with_session(&app, &format!("enc_session={id}"), "/metrics-form/entries")
            .await
            .status;
        assert_eq!(status == StatusCode::OK, good, "{id}: {status}");
    }
    drop(eve);
}

#[tokio::test]
async fn what_was_saved_is_shown_only_to_who_may_see_it() {
    let app = TestApp::new().await;
    let saved = app
        .post(
            "/metrics-form",
            json!({"engineer": "alice", "customer": "Secret Co", "project": "p", "activity_type": "other", "hours": 1}),
        )
        .await
        .ok(StatusCode::CREATED);
    assert_eq!(saved["recorded_by"], "bootstrap");
    let uri = format!("/metrics-form?saved={}", saved["id"].as_str().unwrap());
    let anonymous = TestApp::text(&app.as_caller(None).get(&uri).await);
    assert!(
        !anonymous.contains("Secret Co"),
        "the open page shows nothing stored"
    );
    let admin = TestApp::text(&app.get(&uri).await);
    assert!(admin.contains("Secret Co"));
}

/// Every stored byte, as text: the redb file, or every item of this enc's DynamoDB tables.
async fn stored_bytes(data: &crate::binary::EncData) -> String {
    if !crate::helpers::dynamodb_under_test() {
        let file = std::fs::read(data.dir().join("enc.redb")).unwrap();
        return String::from_utf8_lossy(&file).into_owned();
    }
    let engine = crate::helpers::dynamodb_store(
        &crate::helpers::dynamodb_endpoint(),
        std::time::Duration::from_secs(10),
    )
    .await;
    let client = engine.client();
    let mut all = String::new();
    for table in enc::store::dynamodb::tables::tables() {
        let name = table.name(data.table_prefix());
        let items = client.scan().table_name(&name).send().await.unwrap();
        all.push_str(&format!("{:?}", items.items()));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_never_logged_shown_counted_or_stored() {
    use crate::binary::{Enc, EncData};
    let data = EncData::new();
    let (secret, answers, logs) = {
        let data = &data;
        tokio::task::block_in_place(|| {
            let mut enc = Enc::start_with(
                data,
                5,
                &[("ENC_LOG_FORMAT", "json"), ("RUST_LOG", "debug")],
                true,
            );
            let body = json!({"name": "leaky", "scopes": ["read", "write"]}).to_string();
            let (status, made) = enc.http("POST", "/tokens", Some(&body));
            assert_eq!(status, 201);
            let secret = serde_json::from_str::<Value>(&made).unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned();
            let mut answers = Vec::new();
            let env =
                json!({"environment_name": "production", "puppet_cluster_name": "eu"}).to_string();
            answers.push(enc.http_as(Some(&secret), "POST", "/environment/", Some(&env)));
            answers.push(enc.http_as(Some(&secret), "GET", "/environment", None));
            answers.push(enc.http_as(Some(&secret), "GET", "/tokens", None));
            answers.push(enc.http_as(Some(&format!("{secret}x")), "GET", "/nodes", None));
            answers.push(enc.http("GET", "/tokens", None));
            answers.push(enc.http("GET", "/tokens/leaky", None));
            std::thread::sleep(std::time::Duration::from_millis(300));
            answers.push(enc.http("GET", "/metrics", None));
            assert_eq!(answers[0].0, 201);
            assert_eq!(answers[2].0, 403, "{:?}", answers[2]);
            assert_eq!(answers[3].0, 401);
            enc.terminate();
            assert!(enc.wait(std::time::Duration::from_secs(10)).success());
            (secret, answers, enc.logs())
        })
    };
    // The 256 random bits: the last 43 characters (which may hold '_').
    let random = &secret[secret.len() - 43..];
    for (status, body) in &answers {
        assert!(
            !body.contains(random),
            "a {status} answer shows the secret: {body}"
        );
    }
    assert!(
        logs.contains("\"actor\":\"leaky\""),
        "the logs name the token"
    );
    assert!(!logs.contains(random), "the logs hold the secret");
    let stored = stored_bytes(&data).await;
    assert!(!stored.contains(random), "the store holds the secret");
    assert!(
        stored.contains(&sha256_hex(&secret)),
        "the store holds the secret's hash"
    );
}

#[test]
fn a_first_start_makes_one_admin_token_for_the_newcomer() {
    use crate::binary::{Enc, EncData};
    use std::os::unix::fs::{PermissionsExt, symlink};
    let data = EncData::without_bootstrap();
    let file = data.dir().join("admin-token");
    // A link planted where the secret goes, to a file its planter can read: not followed.
    let planted = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(planted.path(), "planted").unwrap();
    std::fs::create_dir_all(data.dir()).unwrap();
    std::fs::set_permissions(data.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink(planted.path(), &file).unwrap();
    let mut enc = Enc::start_with(&data, 5, &[], true);
    assert_eq!(std::fs::read_to_string(planted.path()).unwrap(), "planted");
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(
        meta.file_type().is_file(),
        "a file of its own, not the link"
    );
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "only its owner may read it"
    );
    let secret = std::fs::read_to_string(&file)
        .expect("the admin token file")
        .trim()
        .to_owned();
    assert!(secret.starts_with("enc_admin_"), "{secret}");
    // The data directory and the store in it are their owner's only.
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.dir()), 0o700, "the data directory was narrowed");
    if !crate::helpers::dynamodb_under_test() {
        assert_eq!(mode(&data.dir().join("enc.redb")), 0o600);
    }
    let (status, listed) = enc.http_as(Some(&secret), "GET", "/tokens", None);
    assert_eq!(status, 200, "{listed}");
    assert!(listed.contains("\"name\":\"admin\""));
    assert_eq!(enc.http_as(None, "GET", "/tokens", None).0, 401);
    // stderr (CloudWatch in AWS) names the file, never the secret.
    let logs = enc.logs_with("admin-token");
    assert!(logs.contains(&file.display().to_string()), "{logs}");
    assert!(!logs.contains(&secret), "the secret is in the logs: {logs}");
    enc.terminate();
    assert!(enc.wait(std::time::Duration::from_secs(10)).success());

    let mut again = Enc::start_with(&data, 5, &[("RUST_LOG", "info")], true);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        secret,
        "kept"
    );
    assert_eq!(again.http_as(Some(&secret), "GET", "/tokens", None).0, 200);
    // Every token deleted (the admin deletes itself): the store had tokens, so a restart is
    // not a first start, and makes none.
    let (status, answer) = again.http_as(Some(&secret), "DELETE", "/tokens/admin", None);
    assert_eq!(status, 204, "{answer}");
    again.terminate();
    assert!(again.wait(std::time::Duration::from_secs(10)).success());
    // Every line it logged: the reader has reached the end of its stderr.
    let logs = again.logs();
    assert!(logs.contains("listening"), "{logs}");
    assert!(!logs.contains("enc_admin_"), "no second token: {logs}");

    let mut emptied = Enc::start_with(&data, 5, &[("RUST_LOG", "info")], true);
    assert_eq!(
        emptied.http_as(Some(&secret), "GET", "/tokens", None).0,
        401
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        secret,
        "no new secret was written"
    );
    emptied.terminate();
    assert!(emptied.wait(std::time::Duration::from_secs(10)).success());
    let logs = emptied.logs();
    assert!(logs.contains("there were some"), "it says why: {logs}");
}

#[test]
fn identity_switched_off_says_so() {
    use crate::binary::{Enc, EncData};
    let data = EncData::without_bootstrap();
    let mut enc = Enc::start_with(&data, 5, &[("ENC_AUTH", "off"), ("RUST_LOG", "warn")], true);
    let (status, ready) = enc.http_as(None, "GET", "/readyz", None);
    assert_eq!(status, 200);
    assert!(ready.contains("ENC_AUTH=off"), "{ready}");
    let env = json!({"environment_name": "production", "puppet_cluster_name": "eu"}).to_string();
    assert_eq!(
        enc.http_as(None, "POST", "/environment/", Some(&env)).0,
        201
    );
    let logs = enc.logs_with("ENC_AUTH=off");
    assert!(logs.contains("ENC_AUTH=off"), "{logs}");
    assert!(
        !data.dir().join("admin-token").exists(),
        "no token is made when nobody needs one"
    );
    enc.terminate();
    assert!(enc.wait(std::time::Duration::from_secs(10)).success());
}

#[tokio::test]
async fn metrics_may_require_a_token() {
    let backing = crate::helpers::TestStore::new().await;
    let auth = enc::auth::Auth::new(true, Some(ADMIN), None, true, enc::router::access());
    let app = TestApp::with_state(
        enc::App::new(backing.engine.clone()).with_auth(auth),
        backing,
    );
    app.as_caller(None)
        .get("/metrics")
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let reader = app.token("prometheus", &["read"]).await;
    assert_eq!(
        app.as_caller(Some(&reader)).get("/metrics").await.status,
        StatusCode::OK
    );
    let classify = app.token("puppet", &["classify"]).await;
    app.as_caller(Some(&classify))
        .get("/metrics")
        .await
        .problem(StatusCode::FORBIDDEN);
    assert_eq!(
        TestApp::new()
            .await
            .as_caller(None)
            .get("/metrics")
            .await
            .status,
        StatusCode::OK,
        "open by default"
    );
}

/// An agent run's facts are checked the same way: its token in its own store read, before
/// its body is read and before anything is said or stored.
#[tokio::test]
async fn facts_posted_are_refused_before_their_body_is_read_unless_the_token_is_good() {
    let app = seeded().await;
    let reader = app.token("reader", &["read"]).await;
    let revoked = app.token("gone", &["classify"]).await;
    app.delete("/tokens/gone", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    let unknown = Secret::generate(&TokenName::parse("nobody").unwrap()).into_string();
    let bodies = [
        Some(json!({"facts": {"os": {"family": "Debian"}}})),
        Some(json!({"facts": "not an object"})),
        Some(json!({"bogus": 1})),
        None,
    ];
    let before = app.dump().await;
    for secret in [&unknown, &revoked] {
        for body in &bodies {
            for uri in ["/nodes/web01/classification", "/nodes/a%20b/classification"] {
                let caller = app.as_caller(Some(secret));
                let response = match body {
                    Some(body) => caller.post(uri, body.clone()).await,
                    None => {
                        let request = crate::helpers::raw(
                            axum::http::Method::POST,
                            uri,
                            Some("text/plain"),
                            "{",
                        );
                        caller.send(request).await
                    }
                };
                response.problem(StatusCode::UNAUTHORIZED);
            }
        }
    }
    for body in &bodies {
        let caller = app.as_caller(Some(&reader));
        let problem = match body {
            Some(body) => {
                caller
                    .post("/nodes/web01/classification", body.clone())
                    .await
            }
            None => {
                let request = crate::helpers::raw(
                    axum::http::Method::POST,
                    "/nodes/web01/classification",
                    Some("text/plain"),
                    "{",
                );
                caller.send(request).await
            }
        }
        .problem(StatusCode::FORBIDDEN);
        assert!(
            problem["detail"].as_str().unwrap().contains("classify"),
            "{problem}"
        );
    }
    assert_eq!(
        app.dump().await,
        before,
        "a refused agent run stored something"
    );
    assert_eq!(
        app.get("/nodes/web01/facts").await.status,
        StatusCode::NOT_FOUND,
        "no facts were kept"
    );
    // A good token's malformed body is answered as such.
    let puppet = app.as_caller(Some(&app.token("puppet", &["classify"]).await));
    assert_eq!(
        puppet
            .post("/nodes/web01/classification", json!({"bogus": 1}))
            .await
            .invalid_fields(),
        ["bogus"]
    );
}

/// Every store call so far, of every kind and outcome, from enc's own counters.
async fn all_store_calls(app: &TestApp) -> f64 {
    let metrics = TestApp::text(&app.as_caller(None).get("/metrics").await);
    metrics
        .lines()
        .filter(|l| l.starts_with("store_operation_duration_seconds_count{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn open_routes_read_no_credential_and_readiness_probes_the_store_at_most_once_a_second() {
    let app = TestApp::new().await;
    let stored = app.token("prober", &["read"]).await;
    // Warm: the metric series exist, and reading /metrics itself reads nothing.
    let before = all_store_calls(&app).await;
    assert_eq!(
        all_store_calls(&app).await,
        before,
        "/metrics reads nothing"
    );
    let made_up = format!("enc_prober_{}", "A".repeat(43));
    let nobody = format!("enc_nobody_{}", "x".repeat(43));
    for bearer in [stored.as_str(), made_up.as_str(), nobody.as_str()] {
        let answer = app.as_caller(Some(bearer)).get("/healthz").await;
        assert_eq!(answer.status, StatusCode::OK);
        let answer = app
            .as_caller(Some(bearer))
            .get("/api-docs/openapi.json")
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(
        all_store_calls(&app).await,
        before,
        "a bearer on an open route cost a store read"
    );
    // A burst of readiness checks: one probe of the store (a call per table on DynamoDB),
    // the rest answered from it.
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    let probed = all_store_calls(&app).await;
    assert!(probed > before, "the first /readyz probes the store");
    for _ in 0..20 {
        assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    }
    assert_eq!(
        all_store_calls(&app).await,
        probed,
        "20 more /readyz within a second probed the store again"
    );
    // A second later, the next one probes again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    assert!(
        all_store_calls(&app).await > probed,
        "the probe is not kept for ever"
    );
    // The form's page still knows who asks: what may be seen depends on it.
    let form = app.as_caller(Some(&stored)).get("/metrics-form").await;
    assert_eq!(form.status, StatusCode::OK);
}

#[tokio::test]
async fn a_plan_token_previews_every_write_and_does_nothing_else() {
    let app = seeded().await;
    let plan = app.token("pull-requests", &["plan"]).await;
    let bearer = format!("Bearer {plan}");
    let access = enc::router::access();
    let mut previewed = 0;
    let mut operations: Vec<_> = access
        .operations()
        .map(|(m, p, n)| (m.clone(), p.to_owned(), n))
        .collect();
    operations.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
    let document = app.get("/api-docs/openapi.json").await.ok(StatusCode::OK);
    for (method, path, needs) in operations {
        let operation = &document["paths"][&path][method.as_str().to_lowercase()];
        let takes_dry_run = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "dry_run");
        let Some(row) = case(&method, &path) else {
            continue;
        };
        if takes_dry_run {
            // The row's request, with its query's own `dry_run` (if any) taken out, and `query`.
            let with = |query: &str| {
                let mut row = case(&method, &path).unwrap();
                let (base, own) = row.uri.split_once('?').unwrap_or((&row.uri, ""));
                let mut kept: Vec<&str> = own
                    .split('&')
                    .filter(|p| !p.is_empty() && !p.starts_with("dry_run="))
                    .collect();
                if !query.is_empty() {
                    kept.push(query);
                }
                row.uri = match kept.is_empty() {
                    true => base.to_owned(),
                    false => format!("{base}?{}", kept.join("&")),
                };
                row
            };
            // Previewed: allowed, and nothing stored changes.
            let preview = with("dry_run=true");
            let (response, changed) =
                attempt_watching(&app, &method, preview, Some(&bearer), true).await;
            assert!(
                response.status.is_success(),
                "{method} {path}?dry_run=true with plan: {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
            assert!(!changed, "{method} {path}?dry_run=true changed something");
            previewed += 1;
            // Not previewed, or previewed in a way the check cannot be sure of: refused.
            for query in [
                "",
                "dry_run=false",
                "dry_run=true&dry_run=false",
                "dry%5Frun=true",
            ] {
                let real = with(query);
                let (response, changed) =
                    attempt_watching(&app, &method, real, Some(&bearer), true).await;
                assert_eq!(
                    response.status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} {query:?} with plan"
                );
                assert!(
                    !changed,
                    "{method} {path} {query:?} with plan changed something"
                );
            }
        } else if needs != Needs::Nothing {
            // Reads and everything else: plan is not read.
            let response = attempt(&app, &method, row, Some(&bearer)).await;
            assert_eq!(
                response.status,
                StatusCode::FORBIDDEN,
                "{method} {path} with plan"
            );
        }
    }
    assert!(previewed >= 8, "previewable writes checked: {previewed}");
    // `write` previews too, as before.
    let writer = app.token("writer", &["write"]).await;
    let preview = app
        .as_caller(Some(&writer))
        .put("/nodegroup/base?dry_run=true", json!({"classes": {}}), None)
        .await;
    assert_eq!(preview.status, StatusCode::OK);
}

/// enc's store calls so far by (operation, record), from its own counters.
async fn store_calls_by_record(app: &TestApp) -> std::collections::BTreeMap<(String, String), f64> {
    let metrics = TestApp::text(&app.as_caller(None).get("/metrics").await);
    let mut calls = std::collections::BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("store_operation_duration_seconds_count{") else {
            continue;
        };
        let label = |name: &str| {
            let start = rest.find(&format!("{name}=\""))? + name.len() + 2;
            Some(rest[start..].split('"').next()?.to_owned())
        };
        let (Some(operation), Some(record)) = (label("operation"), label("record")) else {
            continue;
        };
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *calls.entry((operation, record)).or_default() += count;
    }
    calls
}

#[tokio::test]
async fn a_classification_with_a_bad_token_reads_only_the_token_record() {
    let app = seeded().await;
    let puppet = app.token("puppet-eu", &["classify"]).await;
    let uri = "/nodes/web01/classification";
    // A good token: checked alone the first time, then in the node's own read.
    for _ in 0..2 {
        assert_eq!(
            app.as_caller(Some(&puppet)).get(uri).await.status,
            StatusCode::OK
        );
    }
    let before = store_calls_by_record(&app).await;
    assert_eq!(
        app.as_caller(Some(&puppet)).get(uri).await.status,
        StatusCode::OK
    );
    let after = store_calls_by_record(&app).await;
    let delta = |b: &std::collections::BTreeMap<(String, String), f64>,
                 a: &std::collections::BTreeMap<(String, String), f64>| {
        // Reads only: what the request itself costs (a last-use write is in the background).
        a.iter()
            .filter(|(k, _)| k.0 != "commit")
            .filter_map(|(k, v)| {
                let d = v - b.get(k).copied().unwrap_or(0.0);
                (d > 0.0).then(|| (format!("{} {}", k.0, k.1), d))
            })
            .collect::<Vec<_>>()
    };
    let good = delta(&before, &after);
    assert_eq!(
        good.iter().map(|(_, d)| d).sum::<f64>(),
        1.0,
        "one read per classification: {good:?}"
    );
    // Wrong secrets of that token, and an unknown token: the token record alone is read.
    let name = "puppet-eu";
    let wrong = format!("enc_{name}_{}", "B".repeat(43));
    let unknown = format!("enc_nobody_{}", "C".repeat(43));
    for bad in [&wrong, &unknown] {
        let before = store_calls_by_record(&app).await;
        let answer = app.as_caller(Some(bad)).get(uri).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{bad}");
        let read = delta(&before, &store_calls_by_record(&app).await);
        assert_eq!(read, [("get token".to_owned(), 1.0)], "{bad}: {read:?}");
    }
    // A revoked token is refused at once, though it was good a moment ago.
    app.delete("/tokens/puppet-eu", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    assert_eq!(
        app.as_caller(Some(&puppet)).get(uri).await.status,
        StatusCode::UNAUTHORIZED
    );
}
