use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// Follows `next_cursor` from the first page, returning every page's names.
async fn pages(app: &TestApp, collection: &str, query: &str, key: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut uri = format!("{collection}?{query}");
    loop {
        let page: Value = app.get(&uri).await.ok(StatusCode::OK);
        pages.push(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i[key].as_str().unwrap().to_owned())
                .collect(),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("{collection}?{query}&cursor={cursor}"),
            None => return pages,
        }
    }
}

#[tokio::test]
async fn nodes_across_pages_with_nothing_lost_or_repeated() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.group(json!({"name": "odd"})).await;
    let mut expected = Vec::new();
    for i in 0..23 {
        let name = format!("node{i:02}");
        app.node(&name, (i % 2 == 1).then_some("odd")).await;
        expected.push(name);
    }
    let got = pages(&app, "/nodes", "limit=5", "unique_name").await;
    assert_eq!(
        got.iter().map(Vec::len).collect::<Vec<_>>(),
        [5, 5, 5, 5, 3]
    );
    assert_eq!(got.concat(), expected);

    let odd: Vec<String> = expected.iter().skip(1).step_by(2).cloned().collect();
    let got = pages(&app, "/nodes", "limit=4&node_group_name=odd", "unique_name").await;
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 3]);
    assert_eq!(got.concat(), odd);

    // An exact multiple of the page size ends without an empty page.
    let got = pages(&app, "/nodes", "limit=23", "unique_name").await;
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn writes_between_pages_do_not_repeat_items() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    for name in ["b", "d", "f"] {
        app.node(name, None).await;
    }
    let first = app.get("/nodes?limit=2").await.ok(StatusCode::OK);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    app.node("a", None).await; // before the cursor: not seen on later pages
    app.node("e", None).await; // after it: seen
    app.delete("/nodes/d", None)
        .await
        .ok(StatusCode::NO_CONTENT); // the cursor's own item
    let rest = app
        .get(&format!("/nodes?limit=2&cursor={cursor}"))
        .await
        .ok(StatusCode::OK);
    let names: Vec<_> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["unique_name"].clone())
        .collect();
    assert_eq!(names, [json!("e"), json!("f")]);
}

#[tokio::test]
async fn groups_and_environments_across_pages() {
    let app = TestApp::new().await;
    let mut groups = Vec::new();
    for i in 0..12 {
        let name = format!("g{i:02}");
        app.group(json!({"name": name})).await;
        groups.push(name);
    }
    let got = pages(&app, "/nodegroup", "limit=5", "name").await;
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 2]);
    assert_eq!(got.concat(), groups);

    for cluster in ["a", "b", "c"] {
        for env in ["dev", "prod"] {
            app.env(env, cluster).await;
        }
    }
    let got = pages(&app, "/environment", "limit=4", "environment_name").await;
    assert_eq!(got.concat(), ["dev", "dev", "dev", "prod", "prod", "prod"]);
    let got = pages(
        &app,
        "/environment",
        "limit=1&puppet_cluster_name=b",
        "environment_name",
    )
    .await;
    assert_eq!(got, [vec!["dev"], vec!["prod"]]);
}

#[tokio::test]
async fn a_cursor_from_another_listing_is_400() {
    let app = TestApp::new().await;
    for i in 0..3 {
        app.group(json!({"name": format!("g{i}")})).await;
    }
    let page = app.get("/nodegroup?limit=1").await.ok(StatusCode::OK);
    let cursor = page["next_cursor"].as_str().unwrap();
    app.get(&format!("/nodes?cursor={cursor}"))
        .await
        .problem(StatusCode::BAD_REQUEST);
    app.get(&format!("/environment?cursor={cursor}"))
        .await
        .problem(StatusCode::BAD_REQUEST);
    let tampered = format!("{}x", &cursor[..cursor.len() - 1]);
    app.get(&format!("/nodegroup?cursor={tampered}"))
        .await
        .problem(StatusCode::BAD_REQUEST);
}

/// A listing's query is its page (`limit`, `cursor`) and its filter, read as `Query` reads a
/// query string: names decoded (`lim%69t` is `limit`), and whatever neither knows refused.
#[tokio::test]
async fn a_listings_page_and_filter_are_read_from_one_query_string() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    for i in 0..3 {
        app.node(&format!("n{i}"), None).await;
    }
    let page = app
        .get("/nodes?lim%69t=2&environment_name=production")
        .await
        .ok(StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    assert!(page["next_cursor"].is_string());
    let filtered = app
        .get("/nodes?environment_name=staging&limit=2")
        .await
        .ok(StatusCode::OK);
    assert_eq!(filtered["items"], json!([]));
    for refused in [
        "/nodes?limit=2&bogus=1",
        "/nodes?limit=2&limit=3",
        "/nodes?limit",
        "/changes?limit=1&kind=nothing",
        "/metrics-form/entries?limit=0",
    ] {
        let status = app.get(refused).await.status;
        assert!(status.is_client_error(), "{refused}: {status}");
    }
}
