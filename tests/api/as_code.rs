//! Classification as code: export, plan, apply and ownership, on whichever store is under
//! test.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn seed(app: &TestApp) {
    app.env("production", "eu").await;
    app.group(json!({"name": "base", "classes": {"ntp": {}}, "parameters": {"tier": "base"}}))
        .await;
    app.group(json!({"name": "web", "parent": "base", "classes": {"nginx": {"workers": 4}}}))
        .await;
    app.node("web01", Some("web")).await;
    app.node("web02", Some("web")).await;
    app.node("db01", Some("base")).await;
}

async fn export(app: &TestApp) -> Value {
    app.get("/export").await.ok(StatusCode::OK)["files"].clone()
}

async fn plan(app: &TestApp, files: &Value, prune: bool) -> Value {
    let body = json!({"files": files, "prune": prune, "source_revision": "abc123"});
    app.post("/import?dry_run=true", body)
        .await
        .ok(StatusCode::OK)
}

async fn apply(
    app: &TestApp,
    files: &Value,
    prune: bool,
    id: &str,
) -> crate::helpers::TestResponse {
    let body = json!({"files": files, "prune": prune, "source_revision": "abc123"});
    let tag = format!("\"{id}\"");
    app.request(Method::POST, "/import", Some(&body), Some(&tag))
        .await
}

#[tokio::test]
async fn an_exported_tree_plans_empty_and_a_one_line_change_plans_one_object() {
    let app = TestApp::new().await;
    seed(&app).await;
    let files = export(&app).await;
    let names: Vec<&String> = files.as_object().unwrap().keys().collect();
    assert_eq!(
        names,
        [
            "environments/eu/production.yaml",
            "node_groups/base.yaml",
            "node_groups/web.yaml",
            "nodes/db01.yaml",
            "nodes/web01.yaml",
            "nodes/web02.yaml",
        ]
    );
    // Stable: the same export twice, byte for byte.
    assert_eq!(export(&app).await, files);

    let first = plan(&app, &files, false).await;
    let s = &first["summary"];
    assert_eq!(
        (
            s["create"].as_u64(),
            s["replace"].as_u64(),
            s["delete"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{first:#}"
    );
    assert_eq!(s["adopt"], 6, "{first:#}");
    assert_eq!(first["impact"]["affected"], 0);
    let before = app.dump().await;
    // Planning stores nothing.
    assert_eq!(app.dump().await, before);
    apply(&app, &files, false, first["plan_id"].as_str().unwrap())
        .await
        .ok(StatusCode::OK);
    let web = app.get("/nodegroup/web").await.ok(StatusCode::OK);
    assert_eq!(web["managed_by"], "git");
    assert_eq!(web["source_revision"], "abc123");
    let again = plan(&app, &export(&app).await, false).await;
    assert_eq!(again["changes"], json!([]), "{again:#}");
    assert_eq!(again["summary"]["unchanged"], 6);

    // One line changed in one file.
    let mut edited = files.clone();
    let text = edited["node_groups/web.yaml"]
        .as_str()
        .unwrap()
        .replace("workers: 4", "workers: 8");
    assert_ne!(text, edited["node_groups/web.yaml"].as_str().unwrap());
    edited["node_groups/web.yaml"] = text.into();
    let one = plan(&app, &edited, false).await;
    let changes = one["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{one:#}");
    assert_eq!(changes[0]["action"], "replace");
    assert_eq!(changes[0]["key"], "web");
    assert_eq!(changes[0]["diff"][0]["path"], "/classes/nginx/workers");
    let impacted: Vec<&str> = one["impact"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["unique_name"].as_str().unwrap())
        .collect();
    assert_eq!(impacted, ["web01", "web02"], "{one:#}");

    // Something the plan read changes: its id is refused, and nothing is written.
    app.put("/nodes/web01?force=true", json!({"node_group_name": "base", "environment_name": "production", "puppet_cluster_name": "eu"}), None)
        .await
        .ok(StatusCode::OK);
    let stale_id = one["plan_id"].as_str().unwrap().to_owned();
    let now = plan(&app, &edited, false).await;
    assert_ne!(now["plan_id"], stale_id);
    let before = app.dump().await;
    assert_eq!(
        apply(&app, &edited, false, &stale_id).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(app.dump().await, before);
    // Without a plan id: 428.
    let body = json!({"files": edited});
    assert_eq!(
        app.post("/import", body).await.status,
        StatusCode::PRECONDITION_REQUIRED
    );

    // The fresh plan applies, and puts web01 back where the tree has it.
    let applied = apply(&app, &edited, false, now["plan_id"].as_str().unwrap())
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        applied["applied"].as_array().unwrap().len(),
        2,
        "{applied:#}"
    );
    let web01 = app
        .get("/nodes/web01/classification")
        .await
        .ok(StatusCode::OK);
    assert_eq!(web01["classes"]["nginx"]["workers"], 8);
    let revisions = app.get("/nodegroup/web/history").await.ok(StatusCode::OK);
    assert_eq!(revisions["items"][0]["plan_id"], now["plan_id"]);
}

#[tokio::test]
async fn managed_objects_refuse_api_writes_unless_forced_and_prune_deletes_in_order() {
    let app = TestApp::new().await;
    seed(&app).await;
    app.env("staging", "eu").await;
    let files = export(&app).await;
    let first = plan(&app, &files, false).await;
    apply(&app, &files, false, first["plan_id"].as_str().unwrap())
        .await
        .ok(StatusCode::OK);
    let refused = app
        .put("/nodegroup/web", json!({"parent": "base"}), None)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap()
            .contains("managed by git")
    );
    assert_eq!(
        app.delete("/nodes/db01", None).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.delete("/environment/production/eu", None).await.status,
        StatusCode::CONFLICT
    );
    app.delete("/nodes/db01?force=true", None).await;
    assert_eq!(app.get("/nodes/db01").await.status, StatusCode::NOT_FOUND);
    // An object outside the tree is left alone unless the plan prunes.
    app.node("extra01", Some("base")).await;
    let mut smaller = files.clone();
    let map = smaller.as_object_mut().unwrap();
    map.remove("nodes/web01.yaml");
    map.remove("nodes/web02.yaml");
    map.remove("node_groups/web.yaml");
    let kept = plan(&app, &smaller, false).await;
    assert_eq!(kept["summary"]["left_alone"], 4, "{kept:#}");
    let pruned = plan(&app, &smaller, true).await;
    let order: Vec<String> = pruned["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["action"].as_str().unwrap(),
                c["kind"].as_str().unwrap(),
                c["key"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "create node db01",
            "delete node extra01",
            "delete node web01",
            "delete node web02",
            "delete node_group web",
        ]
    );
    apply(&app, &smaller, true, pruned["plan_id"].as_str().unwrap())
        .await
        .ok(StatusCode::OK);
    assert_eq!(app.all("/nodes").await.len(), 1);
    assert_eq!(
        app.get("/nodegroup/web").await.status,
        StatusCode::NOT_FOUND
    );
    // Environment deletion and restores honour the owner too, and give way to force.
    let refused = app.delete("/environment/staging/eu", None).await;
    assert!(
        refused.problem(StatusCode::CONFLICT)["detail"]
            .as_str()
            .unwrap()
            .contains("managed by git")
    );
    app.delete("/environment/staging/eu?force=true", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    let restore = "/nodegroup/base/history/1/restore";
    let refused = app.request(Method::POST, restore, None, None).await;
    refused.problem(StatusCode::CONFLICT);
    assert_eq!(app.get("/nodegroup/base").await.json()["version"], 2);
    let forced = format!("{restore}?force=true");
    let restored = app.request(Method::POST, &forced, None, None).await;
    assert_eq!(restored.ok(StatusCode::OK)["version"], 3);
}

#[tokio::test]
async fn a_bad_tree_is_refused_naming_each_file() {
    let app = TestApp::new().await;
    seed(&app).await;
    let before = app.dump().await;
    let files = json!({
        "nodes/web09.yaml": "unique_name: web08\nenvironment_name: production\npuppet_cluster_name: eu\n",
        "nodes/web10.yaml": "unique_name: web10\nenvironment_name: Prod!\npuppet_cluster_name: eu\n",
        "nodes/web11.yaml": ": : not yaml [",
        "README.yaml": "x: 1\n",
        "node_groups/g.yaml": "name: g\nparent: missing\n",
    });
    let refused = app
        .post("/import?dry_run=true", json!({"files": files}))
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<String> = refused.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        fields,
        [
            "README.yaml",
            "nodes/web09.yaml",
            "nodes/web10.yaml: environment_name",
            "nodes/web11.yaml",
        ],
        "{:#}",
        refused.json()
    );
    // A tree whose group names a missing parent plans, but does not apply.
    let files = json!({"node_groups/g.yaml": "name: g\nparent: missing\n"});
    let planned = plan(&app, &files, false).await;
    let answer = apply(&app, &files, false, planned["plan_id"].as_str().unwrap()).await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:#}",
        answer.json()
    );
    assert_eq!(app.dump().await, before);
}

#[tokio::test]
async fn groups_with_rules_and_pins_round_trip_through_a_tree() {
    let app = TestApp::new().await;
    seed(&app).await;
    app.group(json!({
        "name": "debian",
        "parent": "base",
        "rule": ["=", ["fact", "os", "family"], "Debian"],
        "pinned": ["db01"],
        "environment_name": "production",
        "puppet_cluster_name": "eu",
        "classes": {"apt": {}}
    }))
    .await;
    let files = export(&app).await;
    let debian = files["node_groups/debian.yaml"].as_str().unwrap();
    assert!(debian.contains("rule:\n- ="), "{debian}");
    assert!(debian.contains("pinned:\n- db01"), "{debian}");
    let first = plan(&app, &files, false).await;
    apply(&app, &files, false, first["plan_id"].as_str().unwrap())
        .await
        .ok(StatusCode::OK);
    assert_eq!(export(&app).await, files);
    assert_eq!(plan(&app, &files, false).await["changes"], json!([]));

    // Unpinning in the tree: db01 leaves the group, and the plan says so.
    let mut edited = files.clone();
    let text = debian.replace("pinned:\n- db01\n", "");
    assert_ne!(text, debian);
    edited["node_groups/debian.yaml"] = text.into();
    let one = plan(&app, &edited, false).await;
    assert_eq!(one["changes"].as_array().unwrap().len(), 1, "{one:#}");
    let impacted = &one["impact"]["nodes"];
    assert_eq!(impacted[0]["unique_name"], "db01", "{one:#}");
    assert_eq!(one["impact"]["affected"], 1, "{one:#}");
}
