use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, raw};

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::new().await;
    for body in ["{", "{\"unique_name\": }", "", "nul"] {
        app.send(raw(Method::POST, "/nodes/", Some("application/json"), body))
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn non_object_json_is_422() {
    let app = TestApp::new().await;
    for body in ["[]", "42", "\"node\"", "null"] {
        let fields = app
            .send(raw(
                Method::POST,
                "/nodegroup/",
                Some("application/json"),
                body,
            ))
            .await
            .invalid_fields();
        assert_eq!(fields, [""], "{body}");
    }
}

#[tokio::test]
async fn non_json_body_is_415() {
    let app = TestApp::new().await;
    app.send(raw(Method::POST, "/environment/", None, "{}"))
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.send(raw(Method::POST, "/environment/", Some("text/plain"), "{}"))
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.send(raw(
        Method::POST,
        "/nodes/",
        Some("application/x-www-form-urlencoded"),
        "unique_name=x",
    ))
    .await
    .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413() {
    let app = TestApp::new().await;
    let big = json!({"name": "big", "description": "x".repeat(1024 * 1024)}).to_string();
    app.send(raw(
        Method::POST,
        "/nodegroup/",
        Some("application/json"),
        big,
    ))
    .await
    .problem(StatusCode::PAYLOAD_TOO_LARGE);
    // Just under the limit is parsed (and then refused for the description's length).
    let fields = app
        .post(
            "/nodegroup/",
            json!({"name": "big", "description": "x".repeat(1000 * 1000)}),
        )
        .await
        .invalid_fields();
    assert_eq!(fields, ["description"]);
    assert_eq!(app.dump().await["node_groups"], json!([]));
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let app = TestApp::new().await;
    let problem = app
        .get("/no/such/thing")
        .await
        .problem(StatusCode::NOT_FOUND);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("/no/such/thing")
    );
    app.request(Method::PATCH, "/nodes/web01", None, None)
        .await
        .problem(StatusCode::METHOD_NOT_ALLOWED);
    app.request(
        Method::PUT,
        "/environment/production/eu",
        Some(&json!({})),
        None,
    )
    .await
    .problem(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn bad_query_strings_are_400() {
    let app = TestApp::new().await;
    for uri in [
        "/nodes?limit=abc",
        "/nodes?limit=-1",
        "/nodegroup?page=2",
        "/environment?cursor=@@@",
        "/nodes?cursor=bm90IGEgY3Vyc29y",
    ] {
        app.get(uri).await.problem(StatusCode::BAD_REQUEST);
    }
    for uri in ["/nodes?limit=0", "/nodes?limit=1001", "/nodegroup?limit=0"] {
        assert_eq!(app.get(uri).await.invalid_fields(), ["limit"], "{uri}");
    }
    app.get("/nodes?limit=1000").await.ok(StatusCode::OK);
}

#[tokio::test]
async fn hostile_paths_never_break_the_service() {
    let app = TestApp::new().await;
    for uri in [
        "/nodes/%FF%FE",
        "/nodes/..%2F..%2Fetc%2Fpasswd",
        "/nodegroup/%00",
        "/environment/%20/%20",
        &format!("/nodes/{}", "a".repeat(10_000)),
    ] {
        let response = app.get(uri).await;
        assert!(
            response.status.is_client_error(),
            "{uri}: {}",
            response.status
        );
        response.problem(response.status);
    }
    app.get("/healthz").await.ok(StatusCode::OK);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::new().await;
    assert_eq!(
        app.get("/healthz").await.ok(StatusCode::OK),
        json!({"status": "ok"})
    );
    assert_eq!(
        app.get("/readyz").await.ok(StatusCode::OK),
        json!({"status": "ready"})
    );
}

#[tokio::test]
async fn objects_too_large_for_any_store_are_413() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    let big = "x".repeat(360 * 1024);
    app.post(
        "/nodegroup/",
        json!({"name": "g", "parameters": {"blob": big}}),
    )
    .await
    .problem(StatusCode::PAYLOAD_TOO_LARGE);
    app.post(
        "/nodes/",
        json!({"unique_name": "n", "environment_name": "production", "puppet_cluster_name": "eu", "parameters": {"blob": big}}),
    )
    .await
    .problem(StatusCode::PAYLOAD_TOO_LARGE);
    app.node("n", None).await;
    app.put(
        "/nodes/n",
        json!({"environment_name": "production", "puppet_cluster_name": "eu", "parameters": {"blob": big}}),
        None,
    )
    .await
    .problem(StatusCode::PAYLOAD_TOO_LARGE);
    // Just under the limit is stored, on every backend.
    let fits = "x".repeat(300 * 1024);
    let group = app
        .group(json!({"name": "g", "parameters": {"blob": fits}}))
        .await;
    assert_eq!(
        group["parameters"]["blob"].as_str().unwrap().len(),
        300 * 1024
    );
}
