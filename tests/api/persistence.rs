use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;

use enc::store::embedded::Embedded;

use crate::helpers::{TestApp, TestStore};

#[tokio::test]
async fn data_survives_closing_and_reopening_the_store() {
    let app = TestApp::on(TestStore::embedded());
    app.env("production", "eu").await;
    app.group(json!({"name": "base", "classes": {"ntp": {"servers": ["a", "b"]}}}))
        .await;
    app.group(json!({"name": "web", "parent": "base"})).await;
    app.node("web01", Some("web")).await;
    app.put(
        "/nodes/web01",
        json!({"environment_name": "production", "puppet_cluster_name": "eu", "node_group_name": "web", "parameters": {"x": 1}}),
        None,
    )
    .await
    .ok(StatusCode::OK);
    let before = app.dump().await;

    let TestApp {
        router, backing, ..
    } = app;
    let TestStore { engine, store, dir } = backing;
    drop(router);
    drop(store);
    assert_eq!(
        Arc::strong_count(&engine),
        1,
        "nothing else holds the store"
    );
    drop(engine);

    let reopened = TestApp::on(TestStore::over(
        Arc::new(Embedded::open(dir.path()).expect("reopen")),
        dir,
    ));
    assert_eq!(reopened.dump().await, before);
    assert_eq!(
        reopened.get("/nodes/web01").await.header("etag"),
        Some("\"2\"")
    );
    // The reverse references came back too: the group is still protected.
    reopened
        .delete("/nodegroup/base", None)
        .await
        .problem(StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_second_open_of_the_same_file_is_refused() {
    let backing = TestStore::embedded();
    let second = Embedded::open(backing.dir.path());
    assert!(
        second.is_err(),
        "two writers on one file must not both open it"
    );
}
