use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn create_read_list_delete() {
    let app = TestApp::new().await;
    let created = app
        .post(
            "/environment/",
            json!({"environment_name": "production", "puppet_cluster_name": "eu", "description": "EU code"}),
        )
        .await;
    let body = created.ok(StatusCode::CREATED);
    assert_eq!(
        created.header("location"),
        Some("/environment/production/eu")
    );
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(body["environment_name"], "production");
    assert_eq!(body["puppet_cluster_name"], "eu");
    assert_eq!(body["description"], "EU code");
    assert_eq!(body["version"], 1);
    assert_eq!(body["created_at"], body["updated_at"]);

    let read = app.get("/environment/production/eu").await;
    assert_eq!(read.ok(StatusCode::OK), body);
    assert_eq!(read.header("etag"), Some("\"1\""));

    app.env("production", "us").await;
    app.env("staging", "eu").await;
    let names = |page: serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["environment_name"].as_str().unwrap(),
                    e["puppet_cluster_name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let all = app.get("/environment").await.ok(StatusCode::OK);
    assert_eq!(
        names(all.clone()),
        ["production/eu", "production/us", "staging/eu"]
    );
    assert!(all["next_cursor"].is_null());
    let eu = app
        .get("/environment/?puppet_cluster_name=eu")
        .await
        .ok(StatusCode::OK);
    assert_eq!(names(eu), ["production/eu", "staging/eu"]);

    app.delete("/environment/production/eu", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    app.get("/environment/production/eu")
        .await
        .problem(StatusCode::NOT_FOUND);
    app.delete("/environment/production/eu", None)
        .await
        .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn both_collection_paths_work() {
    let app = TestApp::new().await;
    app.post(
        "/environment",
        json!({"environment_name": "a", "puppet_cluster_name": "c"}),
    )
    .await
    .ok(StatusCode::CREATED);
    app.post(
        "/environment/",
        json!({"environment_name": "b", "puppet_cluster_name": "c"}),
    )
    .await
    .ok(StatusCode::CREATED);
    for path in ["/environment", "/environment/"] {
        let page = app.get(path).await.ok(StatusCode::OK);
        assert_eq!(page["items"].as_array().unwrap().len(), 2, "{path}");
    }
}

#[tokio::test]
async fn duplicates_are_conflicts() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    let before = app.dump().await;
    let problem = app
        .post(
            "/environment/",
            json!({"environment_name": "production", "puppet_cluster_name": "eu"}),
        )
        .await
        .problem(StatusCode::CONFLICT);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("production/eu")
    );
    assert_eq!(app.dump().await, before);
}

#[tokio::test]
async fn names_follow_puppet_rules() {
    let app = TestApp::new().await;
    let fields = app
        .post(
            "/environment/",
            json!({"environment_name": "Prod-1", "puppet_cluster_name": "EU"}),
        )
        .await
        .invalid_fields();
    assert_eq!(fields, ["environment_name", "puppet_cluster_name"]);
    let fields = app.post("/environment/", json!({})).await.invalid_fields();
    assert_eq!(fields, ["environment_name", "puppet_cluster_name"]);
    app.get("/environment/Prod/eu")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.dump().await["environments"], json!([]));
}

#[tokio::test]
async fn delete_while_nodes_use_it_is_refused() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.node("web01", None).await;
    app.node("web02", None).await;
    let before = app.dump().await;
    let problem = app
        .delete("/environment/production/eu", None)
        .await
        .problem(StatusCode::CONFLICT);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("node web01") && detail.contains("node web02"),
        "{detail}"
    );
    assert_eq!(app.dump().await, before);

    app.delete("/nodes/web01", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    app.delete("/nodes/web02", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    app.delete("/environment/production/eu", None)
        .await
        .ok(StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn delete_honours_if_match() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.delete("/environment/production/eu", Some("\"7\""))
        .await
        .problem(StatusCode::PRECONDITION_FAILED);
    app.get("/environment/production/eu")
        .await
        .ok(StatusCode::OK);
    app.delete("/environment/production/eu", Some("\"1\""))
        .await
        .ok(StatusCode::NO_CONTENT);
}

/// Creating an environment or a token has no preview: `?dry_run=true` there is refused (400)
/// and writes nothing, rather than being ignored and written for real; so is a token
/// delete's, the metrics form's post and signing in and out.
#[tokio::test]
async fn a_query_on_a_write_without_one_is_refused_and_writes_nothing() {
    let app = TestApp::new().await;
    let problem = app
        .post(
            "/environment/?dry_run=true",
            json!({"environment_name": "production", "puppet_cluster_name": "eu"}),
        )
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"].as_str().unwrap().contains("dry_run"),
        "{problem}"
    );
    app.get("/environment/production/eu")
        .await
        .problem(StatusCode::NOT_FOUND);

    app.post(
        "/tokens?dry_run=true",
        json!({"name": "ci", "scopes": ["read"]}),
    )
    .await
    .problem(StatusCode::BAD_REQUEST);
    app.get("/tokens/ci").await.problem(StatusCode::NOT_FOUND);

    app.post("/tokens", json!({"name": "ci", "scopes": ["read"]}))
        .await
        .ok(StatusCode::CREATED);
    app.delete("/tokens/ci?dry_run=true", None)
        .await
        .problem(StatusCode::BAD_REQUEST);
    app.get("/tokens/ci").await.ok(StatusCode::OK);

    // The metrics form's post, and signing in and out, take none either.
    let entry = json!({"engineer": "alice", "customer": "ACME", "project": "Web",
        "activity_type": "development", "hours": 1});
    app.post("/metrics-form?dry_run=true", entry.clone())
        .await
        .problem(StatusCode::BAD_REQUEST);
    let entries = app.get("/metrics-form/entries").await.ok(StatusCode::OK);
    assert_eq!(entries["items"], json!([]), "nothing was recorded");
    for path in ["/sign-in?x=1", "/sign-out?x=1"] {
        let status = app.post(path, json!({})).await.status;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    }
    app.post("/metrics-form", entry)
        .await
        .ok(StatusCode::CREATED);
}
