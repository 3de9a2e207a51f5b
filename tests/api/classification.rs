use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, yaml_1_1};

/// Strings a YAML 1.1 reader would turn into something else if they were written plainly.
pub(crate) const TRAPS: [&str; 22] = [
    "on",
    "off",
    "yes",
    "no",
    "y",
    "n",
    "true",
    "False",
    "~",
    "null",
    "0755",
    "0x1F",
    "1_000",
    "12:30",
    "1e3",
    ".inf",
    "2001-12-14",
    "",
    "-",
    "<<",
    "=",
    "line\nbreak",
];

/// Creates a chain root <- platform <- web <- web_eu with overrides at each level, and node
/// web01.example.com in web_eu: the requests, to send through any client.
pub(crate) fn chain_requests() -> Vec<(&'static str, Value)> {
    let traps: serde_json::Map<String, Value> = TRAPS
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("trap{i}"), json!(t)))
        .collect();
    vec![
        (
            "/environment/",
            json!({"environment_name": "production", "puppet_cluster_name": "eu"}),
        ),
        (
            "/nodegroup/",
            json!({"name": "root", "classes": {"ntp": {"servers": ["a"], "iburst": true}}, "parameters": {"owner": "root", "tier": "base", "dc": "x"}}),
        ),
        (
            "/nodegroup/",
            json!({"name": "platform", "parent": "root", "classes": {"ntp": {"servers": ["b"]}, "monitoring": {}}, "parameters": {"owner": "platform"}}),
        ),
        (
            "/nodegroup/",
            json!({"name": "web", "parent": "platform", "classes": {"profile::nginx": {"listen": 443, "workers": 8}}, "parameters": {"tier": "web"}}),
        ),
        (
            "/nodegroup/",
            json!({"name": "web_eu", "parent": "web", "classes": {"profile::nginx": {"listen": 8443}}, "parameters": {"region": "eu", "tier": "web-eu"}}),
        ),
        (
            "/nodes/",
            json!({
                "unique_name": "web01.example.com", "node_group_name": "web_eu",
                "environment_name": "production", "puppet_cluster_name": "eu",
                "classes": {"profile::nginx": {"workers": 16}, "roles::hotfix": null},
                "parameters": {"dc": "eu-1", "traps": traps, "ratio": 0.25, "tiny": 1e-7, "big": 12345678901234i64}
            }),
        ),
    ]
}

async fn seed_chain(app: &TestApp) {
    for (path, body) in chain_requests() {
        app.post(path, body).await.ok(StatusCode::CREATED);
    }
}

pub(crate) fn expected_classes() -> Value {
    json!({
        "monitoring": {},
        "ntp": {"servers": ["b"], "iburst": true},
        "profile::nginx": {"listen": 8443, "workers": 16},
        "roles::hotfix": {}
    })
}

pub(crate) fn expected_parameters() -> Value {
    let traps: serde_json::Map<String, Value> = TRAPS
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("trap{i}"), json!(t)))
        .collect();
    json!({
        "big": 12345678901234i64, "dc": "eu-1", "owner": "platform", "ratio": 0.25,
        "region": "eu", "tier": "web-eu", "tiny": 1e-7, "traps": traps
    })
}

#[tokio::test]
async fn merges_the_chain_nearer_wins() {
    let app = TestApp::new().await;
    seed_chain(&app).await;
    let response = app.get("/nodes/web01.example.com/classification").await;
    assert_eq!(response.header("content-type"), Some("application/json"));
    let c = response.ok(StatusCode::OK);
    assert_eq!(c["name"], "web01.example.com");
    assert_eq!(c["environment"], "production");
    assert_eq!(c["classes"], expected_classes());
    assert_eq!(c["parameters"], expected_parameters());
    assert!(c.get("explain").is_none());
}

#[tokio::test]
async fn explain_names_the_source_of_everything() {
    let app = TestApp::new().await;
    seed_chain(&app).await;
    let c = app
        .get("/nodes/web01.example.com/classification?explain=true")
        .await
        .ok(StatusCode::OK);
    let group = |n: &str| json!({"kind": "node_group", "name": n});
    let node = json!({"kind": "node", "name": "web01.example.com"});
    let why = &c["explain"];
    assert_eq!(
        why["classes"],
        json!({"monitoring": group("platform"), "ntp": group("platform"), "profile::nginx": node, "roles::hotfix": node})
    );
    assert_eq!(
        why["class_parameters"],
        json!({
            "monitoring": {}, "roles::hotfix": {},
            "ntp": {"servers": group("platform"), "iburst": group("root")},
            "profile::nginx": {"listen": group("web_eu"), "workers": node}
        })
    );
    assert_eq!(why["parameters"]["owner"], group("platform"));
    assert_eq!(why["parameters"]["tier"], group("web_eu"));
    assert_eq!(why["parameters"]["dc"], node);
    assert_eq!(why["parameters"].as_object().unwrap().len(), 8);
}

#[tokio::test]
async fn yaml_round_trips_through_a_yaml_1_1_parser() {
    let app = TestApp::new().await;
    seed_chain(&app).await;
    let json = app
        .get("/nodes/web01.example.com/classification")
        .await
        .ok(StatusCode::OK);
    for request in [
        Request::get("/nodes/web01.example.com/classification?format=yaml")
            .body(Body::empty())
            .unwrap(),
        Request::get("/nodes/web01.example.com/classification")
            .header(header::ACCEPT, "application/yaml")
            .body(Body::empty())
            .unwrap(),
    ] {
        let response = app.send(request).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.header("content-type"), Some("application/yaml"));
        let text = String::from_utf8(response.body.to_vec()).unwrap();
        assert!(text.starts_with("---\n"), "{text}");
        assert_eq!(yaml_1_1(&text), json, "{text}");
    }
    // Explicit JSON wins over Accept.
    let response = app
        .send(
            Request::get("/nodes/web01.example.com/classification?format=json")
                .header(header::ACCEPT, "application/yaml")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn unknown_nodes_and_bad_queries() {
    let app = TestApp::new().await;
    let problem = app
        .get("/nodes/nobody/classification")
        .await
        .problem(StatusCode::NOT_FOUND);
    assert!(problem["detail"].as_str().unwrap().contains("nobody"));
    app.get("/nodes/nobody/classification?format=yaml")
        .await
        .problem(StatusCode::NOT_FOUND);
    app.get("/nodes/x/classification?format=xml")
        .await
        .problem(StatusCode::BAD_REQUEST);
    app.get("/nodes/x/classification?explain=maybe")
        .await
        .problem(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_node_without_a_group_gets_only_its_own() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.post(
        "/nodes/",
        json!({"unique_name": "solo", "environment_name": "production", "puppet_cluster_name": "eu", "classes": {"ntp": {}}}),
    )
    .await
    .ok(StatusCode::CREATED);
    let c = app
        .get("/nodes/solo/classification")
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        c,
        json!({"name": "solo", "environment": "production", "classes": {"ntp": {}}, "parameters": {}})
    );
}
