use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn seeded() -> TestApp {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.env("staging", "eu").await;
    app.env("production", "us").await;
    app.group(json!({"name": "web"})).await;
    app.group(json!({"name": "db"})).await;
    app
}

fn names(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["unique_name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn create_read_replace_delete() {
    let app = seeded().await;
    // The existing clients' body, unchanged.
    let created = app
        .post(
            "/nodes/",
            json!({
                "unique_name": "web01.example.com",
                "node_group_name": "web",
                "environment_name": "production",
                "puppet_cluster_name": "eu"
            }),
        )
        .await;
    let body = created.ok(StatusCode::CREATED);
    assert_eq!(created.header("location"), Some("/nodes/web01.example.com"));
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(body["unique_name"], "web01.example.com");
    assert_eq!(body["node_group_name"], "web");
    assert_eq!(body["classes"], json!({}));
    assert_eq!(body["parameters"], json!({}));

    let read = app.get("/nodes/web01.example.com").await;
    assert_eq!(read.ok(StatusCode::OK), body);
    assert_eq!(read.header("etag"), Some("\"1\""));

    let replaced = app
        .put(
            "/nodes/web01.example.com",
            json!({
                "unique_name": "web01.example.com",
                "node_group_name": "db",
                "environment_name": "staging",
                "puppet_cluster_name": "eu",
                "classes": {"profile::monitoring": {"interval": 30}},
                "parameters": {"role": "frontend", "weights": [1, 2], "on": "yes"}
            }),
            Some("\"1\""),
        )
        .await;
    let new = replaced.ok(StatusCode::OK);
    assert_eq!(replaced.header("etag"), Some("\"2\""));
    assert_eq!(new["version"], 2);
    assert_eq!(new["environment_name"], "staging");
    assert_eq!(
        new["classes"],
        json!({"profile::monitoring": {"interval": 30}})
    );
    assert_eq!(new["parameters"]["weights"], json!([1, 2]));
    assert_eq!(
        app.get("/nodes/web01.example.com").await.ok(StatusCode::OK),
        new
    );

    app.delete("/nodes/web01.example.com", Some("\"2\""))
        .await
        .ok(StatusCode::NO_CONTENT);
    app.get("/nodes/web01.example.com")
        .await
        .problem(StatusCode::NOT_FOUND);
    // The group and environment it used are free again.
    app.delete("/nodegroup/db", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    app.delete("/environment/staging/eu", None)
        .await
        .ok(StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn both_collection_paths_work() {
    let app = seeded().await;
    for (i, path) in ["/nodes", "/nodes/"].iter().enumerate() {
        app.post(
            path,
            json!({"unique_name": format!("n{i}"), "environment_name": "production", "puppet_cluster_name": "eu"}),
        )
        .await
        .ok(StatusCode::CREATED);
    }
    for path in ["/nodes", "/nodes/"] {
        assert_eq!(
            names(&app.get(path).await.ok(StatusCode::OK)),
            ["n0", "n1"],
            "{path}"
        );
    }
}

#[tokio::test]
async fn filters() {
    let app = seeded().await;
    let add = |name: &'static str,
               env: &'static str,
               cluster: &'static str,
               group: Option<&'static str>| {
        let app = &app;
        async move {
            app.post(
                "/nodes/",
                json!({"unique_name": name, "environment_name": env, "puppet_cluster_name": cluster, "node_group_name": group}),
            )
            .await
            .ok(StatusCode::CREATED);
        }
    };
    add("a", "production", "eu", Some("web")).await;
    add("b", "staging", "eu", Some("web")).await;
    add("c", "production", "us", Some("db")).await;
    add("d", "production", "eu", None).await;

    for (query, expected) in [
        ("", vec!["a", "b", "c", "d"]),
        ("environment_name=production", vec!["a", "c", "d"]),
        ("puppet_cluster_name=eu", vec!["a", "b", "d"]),
        ("node_group_name=web", vec!["a", "b"]),
        ("node_group_name=web&environment_name=production", vec!["a"]),
        (
            "environment_name=production&puppet_cluster_name=us",
            vec!["c"],
        ),
        ("node_group_name=nothing", vec![]),
    ] {
        let page = app.get(&format!("/nodes?{query}")).await.ok(StatusCode::OK);
        assert_eq!(names(&page), expected, "{query}");
    }
    let fields = app
        .get("/nodes?environment_name=Bad-Env")
        .await
        .invalid_fields();
    assert_eq!(fields, ["environment_name"]);
    app.get("/nodes?enviroment_name=production")
        .await
        .problem(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn missing_references_are_named_and_change_nothing() {
    let app = seeded().await;
    let before = app.dump().await;
    for (body, field) in [
        (
            json!({"unique_name": "x", "environment_name": "nope", "puppet_cluster_name": "eu"}),
            "environment_name",
        ),
        (
            json!({"unique_name": "x", "environment_name": "staging", "puppet_cluster_name": "us"}),
            "environment_name",
        ),
        (
            json!({"unique_name": "x", "environment_name": "production", "puppet_cluster_name": "eu", "node_group_name": "nope"}),
            "node_group_name",
        ),
    ] {
        let problem = app
            .post("/nodes/", body)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    app.node("web01", Some("web")).await;
    let before_put = app.dump().await;
    let problem = app
        .put(
            "/nodes/web01",
            json!({"environment_name": "production", "puppet_cluster_name": "eu", "node_group_name": "gone"}),
            None,
        )
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("gone")
    );
    assert_eq!(app.dump().await, before_put);
    app.delete("/nodes/web01", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    let mut after = app.dump().await;
    let mut before = before;
    let (made, deleted) = (&after["changes"][1], &after["changes"][0]);
    assert_eq!(
        (made["operation"].as_str(), deleted["operation"].as_str()),
        (Some("create"), Some("delete"))
    );
    after["changes"] = json!(null);
    before["changes"] = json!(null);
    assert_eq!(after, before);
}

#[tokio::test]
async fn invalid_fields_are_all_named() {
    let app = seeded().await;
    let fields = app
        .post(
            "/nodes/",
            json!({"unique_name": "Web 01", "environment_name": "production", "colour": "red", "clases": {}}),
        )
        .await
        .invalid_fields();
    // Unknown fields are named first; the values are checked once the shape is right.
    assert_eq!(fields, ["clases", "colour"]);
    let fields = app
        .post(
            "/nodes/",
            json!({"unique_name": "Web 01", "environment_name": "production"}),
        )
        .await
        .invalid_fields();
    assert_eq!(fields, ["unique_name", "puppet_cluster_name"]);
    let fields = app
        .post(
            "/nodes/",
            json!({"unique_name": 5, "environment_name": "production"}),
        )
        .await
        .invalid_fields();
    assert_eq!(fields, ["unique_name"]);
    let long = "a".repeat(254);
    let fields = app
        .post("/nodes/", json!({"unique_name": long, "environment_name": "production", "puppet_cluster_name": "eu"}))
        .await
        .invalid_fields();
    assert_eq!(fields, ["unique_name"]);
    assert_eq!(app.dump().await["nodes"], json!([]));
}

#[tokio::test]
async fn duplicates_and_unknowns() {
    let app = seeded().await;
    app.node("web01", None).await;
    let before = app.dump().await;
    app.post(
        "/nodes/",
        json!({"unique_name": "web01", "environment_name": "staging", "puppet_cluster_name": "eu"}),
    )
    .await
    .problem(StatusCode::CONFLICT);
    assert_eq!(app.dump().await, before);
    let problem = app
        .get("/nodes/nobody")
        .await
        .problem(StatusCode::NOT_FOUND);
    assert!(problem["detail"].as_str().unwrap().contains("nobody"));
    app.put(
        "/nodes/nobody",
        json!({"environment_name": "production", "puppet_cluster_name": "eu"}),
        None,
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    app.delete("/nodes/nobody", None)
        .await
        .problem(StatusCode::NOT_FOUND);
    let fields = app
        .put("/nodes/web01", json!({"unique_name": "web02", "environment_name": "production", "puppet_cluster_name": "eu"}), None)
        .await
        .invalid_fields();
    assert_eq!(fields, ["unique_name"]);
}

#[tokio::test]
async fn stale_if_match_is_refused_and_changes_nothing() {
    let app = seeded().await;
    app.node("web01", None).await;
    let body = json!({"environment_name": "staging", "puppet_cluster_name": "eu"});
    app.put("/nodes/web01", body.clone(), Some("\"1\""))
        .await
        .ok(StatusCode::OK);
    let before = app.dump().await;

    let problem = app
        .put("/nodes/web01", body.clone(), Some("\"1\""))
        .await
        .problem(StatusCode::PRECONDITION_FAILED);
    assert!(
        problem["detail"].as_str().unwrap().contains("version 2"),
        "{problem}"
    );
    app.delete("/nodes/web01", Some("\"1\""))
        .await
        .problem(StatusCode::PRECONDITION_FAILED);
    app.put("/nodes/web01", body.clone(), Some("W/\"2\""))
        .await
        .problem(StatusCode::PRECONDITION_FAILED);
    app.put("/nodes/web01", body.clone(), Some("two"))
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert_eq!(app.dump().await, before);

    // `*` only requires that the node exists; no header at all is an unconditional write.
    app.put("/nodes/web01", body.clone(), Some("*"))
        .await
        .ok(StatusCode::OK);
    let last = app.put("/nodes/web01", body, None).await.ok(StatusCode::OK);
    assert_eq!(last["version"], 4);
}

#[tokio::test]
async fn concurrent_puts_with_one_if_match_have_one_winner() {
    let app = Arc::new(seeded().await);
    app.node("web01", None).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let body = json!({
                    "environment_name": "production",
                    "puppet_cluster_name": "eu",
                    "parameters": {"writer": i}
                });
                let response = app.put("/nodes/web01", body, Some("\"1\"")).await;
                (i, response.status)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (i, status) = task.await.unwrap();
        match status {
            StatusCode::OK => winners.push(i),
            StatusCode::PRECONDITION_FAILED => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let node = app.get("/nodes/web01").await.ok(StatusCode::OK);
    assert_eq!(node["version"], 2);
    assert_eq!(node["parameters"]["writer"], winners[0]);
}

/// A page is made of the JSON each node's own read answers (kept per version of its record):
/// the same bytes, never an earlier version, a page and a cursor as ever.
#[tokio::test]
async fn a_page_holds_each_nodes_own_answer_and_never_an_old_one() {
    let app = seeded().await;
    for name in ["a1.example.com", "b2.example.com", "c3.example.com"] {
        app.node(name, Some("web")).await;
    }
    // Read once, so that the node's answer is kept before the page is asked for.
    app.get("/nodes/b2.example.com").await.ok(StatusCode::OK);
    let page = app.get("/nodes?limit=2").await;
    assert_eq!(page.header("content-type"), Some("application/json"));
    let text = String::from_utf8(page.body.to_vec()).unwrap();
    let (a1, b2) = (
        app.get("/nodes/a1.example.com").await,
        app.get("/nodes/b2.example.com").await,
    );
    let items = format!(
        "{{\"items\":[{},{}],\"next_cursor\":",
        String::from_utf8_lossy(&a1.body),
        String::from_utf8_lossy(&b2.body)
    );
    assert!(text.starts_with(&items), "{text}\n{items}");
    let cursor = page.ok(StatusCode::OK)["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let replaced = json!({"node_group_name": "db", "environment_name": "staging",
        "puppet_cluster_name": "eu", "parameters": {"rack": "r7"}});
    app.put("/nodes/b2.example.com", replaced, Some("\"1\""))
        .await
        .ok(StatusCode::OK);
    let again = app.get("/nodes?limit=2").await.ok(StatusCode::OK);
    assert_eq!(again["items"][1]["node_group_name"], "db");
    assert_eq!(again["items"][1]["parameters"], json!({"rack": "r7"}));
    assert_eq!(again["items"][1]["version"], 2);
    assert_eq!(
        again["items"][1],
        app.get("/nodes/b2.example.com").await.ok(StatusCode::OK)
    );
    let last = app.get(&format!("/nodes?limit=2&cursor={cursor}")).await;
    assert!(String::from_utf8_lossy(&last.body).ends_with("],\"next_cursor\":null}"));
    assert_eq!(names(&last.ok(StatusCode::OK)), ["c3.example.com"]);
}
