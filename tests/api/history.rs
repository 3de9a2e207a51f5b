//! Change history, time travel, restore and impact preview, on whichever store is under test.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// Every revision, newest first.
async fn changes(app: &TestApp) -> Vec<Value> {
    app.all("/changes").await
}

/// The instant now, after the last change and before the next (times are kept to the ms).
async fn instant() -> String {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(5)).await;
    now
}

async fn base(app: &TestApp) {
    app.env("production", "eu").await;
    app.env("staging", "eu").await;
}

fn classification(app_response: Value) -> Value {
    json!({
        "environment": app_response["environment"],
        "classes": app_response["classes"],
        "parameters": app_response["parameters"],
    })
}

/// Sends `body` to `uri` as the request `id`; the answer's status.
async fn as_request(
    app: &TestApp,
    method: Method,
    uri: &str,
    body: Option<Value>,
    id: &str,
) -> u16 {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-request-id", id)
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    app.send(request).await.status.as_u16()
}

#[tokio::test]
async fn every_kind_of_write_keeps_the_id_of_the_request_that_made_it() {
    // The id travels with the write (the store reads no request's task-local): through the
    // store alone (environments, tokens), the classifier (groups, nodes) and a node learnt
    // from its facts.
    let app = TestApp::new().await;
    let writes = [
        (
            Method::POST,
            "/environment/",
            Some(json!({"environment_name": "production",
            "puppet_cluster_name": "eu"})),
            "rid-env",
        ),
        (
            Method::POST,
            "/nodegroup/",
            Some(json!({"name": "web", "environment_name": "production",
            "puppet_cluster_name": "eu", "rule": ["=", ["fact", "role"], "web"]})),
            "rid-group",
        ),
        (
            Method::POST,
            "/nodes/",
            Some(
                json!({"unique_name": "db01", "environment_name": "production",
            "puppet_cluster_name": "eu"}),
            ),
            "rid-node",
        ),
        (
            Method::POST,
            "/nodes/web09/classification",
            Some(json!({"facts": {"role": "web"}})),
            "rid-learnt",
        ),
        (
            Method::POST,
            "/tokens",
            Some(json!({"name": "t", "scopes": ["read"]})),
            "rid-token",
        ),
        (Method::DELETE, "/tokens/t", None, "rid-revoke"),
    ];
    for (method, uri, body, id) in writes {
        let status = as_request(&app, method, uri, body, id).await;
        assert!(status < 300, "{uri}: {status}");
    }
    let kept: Vec<(String, String, String)> = changes(&app)
        .await
        .iter()
        .map(|c| {
            let text = |f: &str| c[f].as_str().unwrap_or_default().to_owned();
            (text("kind"), text("key"), text("request_id"))
        })
        .collect();
    for (kind, key, id) in [
        ("environment", "production/eu", "rid-env"),
        ("node_group", "web", "rid-group"),
        ("node", "db01", "rid-node"),
        ("node", "web09", "rid-learnt"),
        ("token", "t", "rid-token"),
        ("token", "t", "rid-revoke"),
    ] {
        let found = (kind.to_owned(), key.to_owned(), id.to_owned());
        assert!(kept.contains(&found), "{found:?} in {kept:#?}");
    }
}

#[tokio::test]
async fn every_successful_write_has_one_revision_and_a_refused_one_none() {
    let app = TestApp::new().await;
    base(&app).await;
    app.group(json!({"name": "base", "classes": {"ntp": {}}}))
        .await;
    app.group(json!({"name": "web", "parent": "base"})).await;
    app.node("web01", Some("web")).await;
    let request = Request::builder()
        .method(Method::PUT)
        .uri("/nodegroup/web")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::IF_MATCH, "\"1\"")
        .header("x-request-id", "change-42")
        .body(Body::from(
            json!({"parent": "base", "parameters": {"tier": "web"}}).to_string(),
        ))
        .unwrap();
    app.send(request).await.ok(StatusCode::OK);
    let before = changes(&app).await;
    assert_eq!(before.len(), 6, "{before:#?}");

    let refused = [
        app.put("/nodegroup/web", json!({}), Some("\"1\""))
            .await
            .status, // stale If-Match
        app.post("/nodegroup/", json!({"name": "web"})).await.status, // exists
        app.delete("/nodegroup/base", None).await.status,             // still used
        app.put("/nodegroup/base", json!({"parent": "web"}), None)
            .await
            .status, // cycle
        app.put("/nodegroup/web", json!({"parent": "nope"}), None)
            .await
            .status, // missing
        app.post(
            "/nodes/",
            json!({"unique_name": "db01", "environment_name": "nope", "puppet_cluster_name": "eu"}),
        )
        .await
        .status,
        app.delete("/nodes/web02", None).await.status,
    ];
    assert_eq!(
        refused.map(|s| s.as_u16()),
        [412, 409, 409, 422, 422, 422, 404]
    );
    assert_eq!(
        changes(&app).await,
        before,
        "refused writes recorded nothing"
    );

    let newest = &before[0];
    assert_eq!(newest["kind"], "node_group");
    assert_eq!(newest["key"], "web");
    assert_eq!(newest["version"], 2);
    assert_eq!(newest["operation"], "replace");
    assert_eq!(newest["request_id"], "change-42");
    assert_eq!(newest["actor"], "bootstrap");
    let live = app.get("/nodegroup/web").await.ok(StatusCode::OK);
    assert_eq!(
        newest["object"], live,
        "the revision holds the object as GET shows it"
    );

    // Each patch takes the previous revision's object to this one's.
    let history = app.all("/nodegroup/web/history").await;
    assert_eq!(history.len(), 2);
    let (second, first) = (&history[0], &history[1]);
    assert_eq!(first["operation"], "create");
    let mut object = first["object"].clone();
    let patch: json_patch::Patch = serde_json::from_value(second["patch"].clone()).unwrap();
    json_patch::patch(&mut object, &patch).unwrap();
    assert_eq!(object, second["object"]);
    let mut nothing = Value::Null;
    let patch: json_patch::Patch = serde_json::from_value(first["patch"].clone()).unwrap();
    json_patch::patch(&mut nothing, &patch).unwrap();
    assert_eq!(nothing, first["object"]);

    // A deletion is a revision with no object, and takes the next version.
    app.delete("/nodes/web01", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    let deleted = &app.all("/nodes/web01/history").await[0];
    assert_eq!(deleted["operation"], "delete");
    assert_eq!(deleted["version"], 2);
    assert!(deleted["object"].is_null());
    // Made again, the node's versions go on counting, so a version names one revision.
    let again = app.node("web01", Some("web")).await;
    assert_eq!(again["version"], 3);
    assert_eq!(app.all("/nodes/web01/history").await.len(), 3);
}

#[tokio::test]
async fn fifty_concurrent_conflicting_writes_record_exactly_their_successes() {
    let app = TestApp::new().await;
    app.group(json!({"name": "contended"})).await;
    let writes = (0..50).map(|i| {
        let app = &app;
        async move {
            let body = json!({"parameters": {"writer": i}});
            let if_match = (i % 2 == 0).then_some("\"1\"");
            app.put("/nodegroup/contended", body, if_match).await.status
        }
    });
    let statuses = futures_util::future::join_all(writes).await;
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    for status in &statuses {
        assert!([200, 412, 503].contains(&status.as_u16()), "{statuses:?}");
    }
    let history = app.all("/nodegroup/contended/history").await;
    assert_eq!(history.len(), 1 + won, "{statuses:?}");
    let versions: Vec<u64> = history
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=1 + won as u64).rev().collect();
    assert_eq!(versions, expected, "one revision per version, newest first");
    let last = app.get("/nodegroup/contended").await.ok(StatusCode::OK);
    assert_eq!(history[0]["object"], last);
}

#[tokio::test]
async fn at_gives_each_earlier_classification_and_diff_matches() {
    let app = TestApp::new().await;
    base(&app).await;
    app.group(json!({"name": "parent", "classes": {"ntp": {"servers": ["a"]}}, "parameters": {"tier": "base"}}))
        .await;
    app.group(json!({"name": "child", "parent": "parent", "classes": {"nginx": {}}}))
        .await;
    app.node("web01", Some("child")).await;
    let uri = "/nodes/web01/classification";
    let mut seen = vec![(instant().await, app.get(uri).await.ok(StatusCode::OK))];
    let edits = [
        (
            "/nodegroup/parent",
            json!({"classes": {"ntp": {"servers": ["b"]}}, "parameters": {"tier": "base", "dc": "eu"}}),
        ),
        (
            "/nodegroup/child",
            json!({"parent": "parent", "classes": {"nginx": {"workers": 4}, "php": {}}}),
        ),
        (
            "/nodegroup/parent",
            json!({"classes": {}, "parameters": {"tier": "edge"}}),
        ),
        (
            "/nodes/web01",
            json!({"node_group_name": "child", "environment_name": "staging", "puppet_cluster_name": "eu"}),
        ),
        ("/nodegroup/child", json!({"classes": {"php": {}}})),
    ];
    for (path, body) in edits {
        app.put(path, body, None).await.ok(StatusCode::OK);
        seen.push((instant().await, app.get(uri).await.ok(StatusCode::OK)));
    }
    for (at, expected) in &seen {
        let then = app.get(&format!("{uri}?at={at}")).await.ok(StatusCode::OK);
        assert_eq!(&then, expected, "at {at}");
    }
    let yaml = app
        .get(&format!("{uri}?at={}&format=yaml", seen[0].0))
        .await;
    assert_eq!(yaml.status, StatusCode::OK);
    assert!(TestApp::text(&yaml).contains("\"servers\":"));

    let (from, to) = (&seen[0].0, &seen[5].0);
    let diff = app
        .get(&format!("{uri}/diff?from={from}&to={to}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        diff["diff"],
        json!({
            "environment": {"from": "production", "to": "staging"},
            "classes_added": ["php"],
            "classes_removed": ["nginx", "ntp"],
            // The last edit left the child without its parent, and so without a tier.
            "parameters_changed": [{"name": "tier", "from": "base", "to": null}],
        })
    );
    let (a, b) = (
        classification(seen[1].1.clone()),
        classification(seen[2].1.clone()),
    );
    let step = app
        .get(&format!("{uri}/diff?from={}&to={}", seen[1].0, seen[2].0))
        .await
        .ok(StatusCode::OK);
    assert_eq!(step["diff"]["classes_added"], json!(["php"]));
    assert_eq!(
        step["diff"]["parameters_changed"],
        json!([{"class": "nginx", "name": "workers", "from": null, "to": 4}])
    );
    assert_ne!(a, b);

    // Before the node existed there is nothing to give; bad instants are refused.
    for before in ["2001-01-01T00:00:00Z", "1900-01-01T00:00:00Z"] {
        app.get(&format!("{uri}?at={before}"))
            .await
            .problem(StatusCode::NOT_FOUND);
    }
    let bad = app.get(&format!("{uri}?at=yesterday")).await;
    assert_eq!(
        bad.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"],
        "at"
    );
    app.get(&format!("{uri}/diff?to={to}"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    app.get(&format!("{uri}/diff?from={to}&to={from}"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn restore_honours_if_match_and_makes_a_deleted_node_again() {
    let app = TestApp::new().await;
    base(&app).await;
    app.group(json!({"name": "web", "parameters": {"tier": "one"}}))
        .await;
    app.put(
        "/nodegroup/web",
        json!({"parameters": {"tier": "two"}}),
        None,
    )
    .await
    .ok(StatusCode::OK);
    let stale = app
        .request(
            Method::POST,
            "/nodegroup/web/history/1/restore",
            None,
            Some("\"1\""),
        )
        .await;
    stale.problem(StatusCode::PRECONDITION_FAILED);
    let restored = app
        .request(
            Method::POST,
            "/nodegroup/web/history/1/restore",
            None,
            Some("\"2\""),
        )
        .await;
    let body = restored.ok(StatusCode::OK);
    assert_eq!(restored.header("etag"), Some("\"3\""));
    assert_eq!(body["parameters"], json!({"tier": "one"}));
    let newest = &app.all("/nodegroup/web/history").await[0];
    assert_eq!(newest["operation"], "restore");
    assert_eq!(newest["restored_from"], 1);
    app.request(Method::POST, "/nodegroup/web/history/9/restore", None, None)
        .await
        .problem(StatusCode::NOT_FOUND);

    let node = app.node("web01", Some("web")).await;
    app.delete("/nodes/web01", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    let tombstone = app
        .request(Method::POST, "/nodes/web01/history/2/restore", None, None)
        .await;
    assert_eq!(
        tombstone.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"],
        "version"
    );
    app.request(
        Method::POST,
        "/nodes/web01/history/1/restore",
        None,
        Some("\"1\""),
    )
    .await
    .problem(StatusCode::PRECONDITION_FAILED);
    let again = app
        .request(
            Method::POST,
            "/nodes/web01/history/1/restore",
            None,
            Some("\"2\""),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(again["version"], 3);
    assert_eq!(again["node_group_name"], node["node_group_name"]);
    app.get("/nodes/web01/classification")
        .await
        .ok(StatusCode::OK);

    // A restored object's references must exist.
    app.group(json!({"name": "gone"})).await;
    app.put(
        "/nodes/web01",
        json!({"node_group_name": "gone", "environment_name": "production", "puppet_cluster_name": "eu"}),
        None,
    )
    .await
    .ok(StatusCode::OK);
    app.delete("/nodes/web01", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    app.delete("/nodegroup/gone", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    let before = app.dump().await;
    app.request(Method::POST, "/nodes/web01/history/4/restore", None, None)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.dump().await, before);
}

#[tokio::test]
async fn dry_run_changes_nothing_and_predicts_the_real_write() {
    let app = TestApp::new().await;
    base(&app).await;
    app.group(json!({"name": "root", "classes": {"ntp": {}}, "parameters": {"tier": "base"}}))
        .await;
    app.group(json!({"name": "web", "parent": "root", "parameters": {"tier": "web"}}))
        .await;
    app.group(json!({"name": "db", "parent": "root"})).await;
    app.group(json!({"name": "empty"})).await;
    for (node, group) in [
        ("web01", "web"),
        ("web02", "web"),
        ("db01", "db"),
        ("root01", "root"),
    ] {
        app.node(node, Some(group)).await;
    }
    let edit = json!({"classes": {"ntp": {"servers": ["x"]}, "motd": {}}, "parameters": {"tier": "edge", "dc": "eu"}});

    let before = app.dump().await;
    let preview = app
        .put("/nodegroup/root?dry_run=true", edit.clone(), Some("\"1\""))
        .await
        .ok(StatusCode::OK);
    assert_eq!(app.dump().await, before, "a preview stores nothing");
    assert_eq!(preview["dry_run"], true);
    assert_eq!(preview["object"]["version"], 2);
    assert_eq!(preview["examined"], 4);
    assert_eq!(preview["affected"], 4);
    assert_eq!(preview["more"], 0);
    let names: Vec<&str> = preview["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["unique_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db01", "root01", "web01", "web02"]);
    // web's own tier wins over the root's, so web nodes see no tier change.
    let web01 = &preview["nodes"][2]["diff"];
    assert!(
        !web01["parameters_changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "tier")
    );
    // Refused in a dry run exactly as for real, and still nothing stored.
    app.put("/nodegroup/root?dry_run=true", edit.clone(), Some("\"7\""))
        .await
        .problem(StatusCode::PRECONDITION_FAILED);
    app.put(
        "/nodegroup/root?dry_run=true",
        json!({"parent": "web"}),
        None,
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    app.delete("/nodegroup/root?dry_run=true", None)
        .await
        .problem(StatusCode::CONFLICT);
    app.post("/nodegroup/?dry_run=true", json!({"name": "web"}))
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(app.dump().await, before);

    // The real write's observed effect is the preview.
    let t0 = instant().await;
    app.put("/nodegroup/root", edit, Some("\"1\""))
        .await
        .ok(StatusCode::OK);
    let t1 = instant().await;
    for impact in preview["nodes"].as_array().unwrap() {
        let name = impact["unique_name"].as_str().unwrap();
        let observed = app
            .get(&format!(
                "/nodes/{name}/classification/diff?from={t0}&to={t1}"
            ))
            .await
            .ok(StatusCode::OK);
        assert_eq!(observed["diff"], impact["diff"], "{name}");
    }

    // A node's delete: the preview is its whole classification going away.
    let before = app.dump().await;
    let preview = app
        .delete("/nodes/db01?dry_run=true", None)
        .await
        .ok(StatusCode::OK);
    assert_eq!(app.dump().await, before);
    assert_eq!(preview["affected"], 1);
    assert!(preview["object"].is_null());
    let t2 = instant().await;
    app.delete("/nodes/db01", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    let t3 = instant().await;
    let observed = app
        .get(&format!(
            "/nodes/db01/classification/diff?from={t2}&to={t3}"
        ))
        .await
        .ok(StatusCode::OK);
    assert_eq!(observed["absent_at_to"], true);
    assert_eq!(observed["diff"], preview["nodes"][0]["diff"]);

    // A group with nothing under it affects no node; a new node is all new.
    let before = app.dump().await;
    let empty = app
        .delete("/nodegroup/empty?dry_run=true", None)
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        (empty["examined"].clone(), empty["affected"].clone()),
        (json!(0), json!(0))
    );
    let new = app
        .post(
            "/nodes/?dry_run=true",
            json!({"unique_name": "new01", "node_group_name": "web", "environment_name": "production", "puppet_cluster_name": "eu"}),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        new["nodes"][0]["diff"]["classes_added"],
        json!(["motd", "ntp"])
    );
    app.get("/nodes/new01").await.problem(StatusCode::NOT_FOUND);
    assert_eq!(app.dump().await, before);
}

#[tokio::test]
async fn the_feed_filters_by_time_actor_and_kind_and_pages() {
    let app = TestApp::new().await;
    base(&app).await;
    let t0 = instant().await;
    app.group(json!({"name": "one"})).await;
    let alice = app.token("alice", &["write"]).await;
    let as_alice = app.as_caller(Some(&alice));
    as_alice.group(json!({"name": "two"})).await;
    as_alice.node("web01", Some("two")).await;
    let t1 = instant().await;
    app.put("/nodegroup/one", json!({"description": "later"}), None)
        .await
        .ok(StatusCode::OK);

    let list = |query: String| {
        let app = &app;
        async move {
            app.get(&format!("/changes?{query}"))
                .await
                .ok(StatusCode::OK)["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {}",
                        r["kind"].as_str().unwrap(),
                        r["key"].as_str().unwrap(),
                        r["version"]
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list("actor=alice".into()).await,
        ["node web01 1", "node_group two 1"]
    );
    assert_eq!(
        list(format!("since={t0}&until={t1}")).await,
        [
            "node web01 1",
            "node_group two 1",
            "token alice 1",
            "node_group one 1"
        ]
    );
    assert_eq!(
        list(format!("kind=node_group&since={t1}")).await,
        ["node_group one 2"]
    );
    assert_eq!(list("kind=environment".into()).await.len(), 2);

    let first = app.get("/changes?limit=2").await.ok(StatusCode::OK);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = app.all("/changes").await;
    let second = app
        .get(&format!("/changes?limit=2&cursor={cursor}"))
        .await
        .ok(StatusCode::OK);
    assert_eq!(second["items"][0], rest[2]);

    // The token's revision never holds its secret's hash, and its uses record nothing.
    let token = &list("kind=token".into()).await;
    assert_eq!(token.len(), 1);
    let revision = &app.get("/changes?kind=token").await.ok(StatusCode::OK)["items"][0];
    assert!(
        revision["object"].get("secret_sha256").is_none(),
        "{revision}"
    );
    assert!(!revision.to_string().contains("sha256"));
    // Token revisions name every token's scopes and creator: only admin sees them, as only
    // admin lists tokens. A read token's feed leaves them out, and asking for them is 403.
    let reader = app.token("feed-reader", &["read"]).await;
    let as_reader = app.as_caller(Some(&reader));
    let seen = as_reader.all("/changes").await;
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| r["kind"] != "token"),
        "a read token sees token revisions: {seen:?}"
    );
    assert_eq!(
        seen.len(),
        app.all("/changes")
            .await
            .iter()
            .filter(|r| r["kind"] != "token")
            .count(),
        "the reader sees every other change"
    );
    let refused = as_reader.get("/changes?kind=token").await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        refused.json()
    );
    assert_eq!(
        as_reader.get("/tokens").await.status,
        StatusCode::FORBIDDEN,
        "as for the token list"
    );

    for bad in [
        "kind=activity",
        "since=monday",
        "until=2026-13-01T00:00:00Z",
        "limit=0",
    ] {
        let status = app.get(&format!("/changes?{bad}")).await.status;
        assert!(status == 400 || status == 422, "{bad}: {status}");
    }
    app.get(&format!("/changes?since={t1}&until={t0}"))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);

    // History is `read`; restoring is `write`.
    let reader = app.token("reader", &["read"]).await;
    let as_reader = app.as_caller(Some(&reader));
    as_reader.get("/changes").await.ok(StatusCode::OK);
    as_reader
        .get("/nodegroup/one/history")
        .await
        .ok(StatusCode::OK);
    as_reader
        .request(Method::POST, "/nodegroup/one/history/1/restore", None, None)
        .await
        .problem(StatusCode::FORBIDDEN);
    as_reader
        .put("/nodegroup/one?dry_run=true", json!({}), None)
        .await
        .problem(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn retention_prunes_old_revisions_and_leaves_objects() {
    let app = TestApp::new().await;
    base(&app).await;
    app.group(json!({"name": "kept"})).await;
    let mut store = enc::store::Store::new(app.backing.engine.clone());
    store.set_retention(Some(chrono::Duration::days(30)));
    let store = std::sync::Arc::new(store);
    let removed = store
        .prune_history(&(chrono::Utc::now() - chrono::Duration::days(1)))
        .await
        .unwrap();
    assert_eq!(removed, 0, "nothing is older than a day");
    assert_eq!(changes(&app).await.len(), 3);
    let removed = store
        .prune_history(&(chrono::Utc::now() + chrono::Duration::seconds(1)))
        .await
        .unwrap();
    assert_eq!(removed, 3);
    assert!(changes(&app).await.is_empty());
    app.get("/nodegroup/kept").await.ok(StatusCode::OK);
    // Revisions made under a retention carry when they may go (DynamoDB's TTL attribute).
    let group = serde_json::from_value(json!({"name": "brief", "description": null, "parent": null, "classes": {}, "parameters": {}})).unwrap();
    store.create_node_group(group, "tester").await.unwrap();
    let key = enc::store::engine::Key::two("node_group/brief", format!("{:020}", 1));
    let found = app
        .backing
        .engine
        .get(&[(&enc::store::history::REVISION, key)])
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&found[0].as_ref().unwrap().body).unwrap();
    let expires = body["expires_at"].as_i64().unwrap();
    let expected = (chrono::Utc::now() + chrono::Duration::days(30)).timestamp();
    assert!((expected - expires).abs() < 60, "{body}");
    // Versions still count on from the head.
    app.put("/nodegroup/kept", json!({}), Some("\"1\""))
        .await
        .ok(StatusCode::OK);
    assert_eq!(app.all("/nodegroup/kept/history").await.len(), 1);
}
