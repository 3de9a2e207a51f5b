use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn create_read_replace_delete() {
    let app = TestApp::new().await;
    let created = app
        .post(
            "/nodegroup/",
            json!({
                "name": "base",
                "description": "Every server",
                "classes": {"ntp": {"servers": ["0.pool.ntp.org"]}, "roles::base_server": null},
                "parameters": {"datacenter": "eu-west-1"}
            }),
        )
        .await;
    let body = created.ok(StatusCode::CREATED);
    assert_eq!(created.header("location"), Some("/nodegroup/base"));
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(
        body["classes"],
        json!({"ntp": {"servers": ["0.pool.ntp.org"]}, "roles::base_server": {}})
    );
    assert_eq!(body["parameters"], json!({"datacenter": "eu-west-1"}));
    assert_eq!(body["parent"], json!(null));

    assert_eq!(app.get("/nodegroup/base").await.ok(StatusCode::OK), body);

    let replaced = app
        .put(
            "/nodegroup/base",
            json!({"classes": {"ntp": {}}, "parameters": {}}),
            Some("\"1\""),
        )
        .await;
    let new = replaced.ok(StatusCode::OK);
    assert_eq!(replaced.header("etag"), Some("\"2\""));
    assert_eq!(new["version"], 2);
    assert_eq!(new["created_at"], body["created_at"]);
    assert_eq!(new["classes"], json!({"ntp": {}}));
    assert_eq!(new["description"], json!(null));

    app.delete("/nodegroup/base", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    app.get("/nodegroup/base")
        .await
        .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn seed_shape_means_one_class_with_parameters() {
    let app = TestApp::new().await;
    let body = app
        .group(json!({"name": "web", "class_": "profile::nginx", "parameters": {"workers": 4}}))
        .await;
    assert_eq!(body["classes"], json!({"profile::nginx": {"workers": 4}}));
    assert_eq!(body["parameters"], json!({}));

    let fields = app
        .post(
            "/nodegroup/",
            json!({"name": "x", "class_": "a", "classes": {"b": {}}}),
        )
        .await
        .invalid_fields();
    assert_eq!(fields, ["class_"]);
    let fields = app
        .post("/nodegroup/", json!({"name": "x", "class_": "Bad-Class"}))
        .await
        .invalid_fields();
    assert_eq!(fields, ["class_.Bad-Class"]);
}

#[tokio::test]
async fn both_collection_paths_work() {
    let app = TestApp::new().await;
    app.post("/nodegroup", json!({"name": "a"}))
        .await
        .ok(StatusCode::CREATED);
    app.post("/nodegroup/", json!({"name": "b"}))
        .await
        .ok(StatusCode::CREATED);
    for path in ["/nodegroup", "/nodegroup/"] {
        let page = app.get(path).await.ok(StatusCode::OK);
        assert_eq!(page["items"].as_array().unwrap().len(), 2, "{path}");
    }
}

#[tokio::test]
async fn class_and_parameter_names_are_checked() {
    let app = TestApp::new().await;
    let fields = app
        .post(
            "/nodegroup/",
            json!({
                "name": "bad/name",
                "classes": {"Roles::Web": {"ok": 1, "Bad-Param": 2}, "roles::db": {"9lives": 1}},
                "parameters": {"fine": true, "not fine": 1}
            }),
        )
        .await
        .invalid_fields();
    assert_eq!(
        fields,
        [
            "name",
            "classes.Roles::Web",
            "classes.Roles::Web.Bad-Param",
            "classes.roles::db.9lives",
            "parameters.not fine"
        ]
    );
    assert_eq!(app.dump().await["node_groups"], json!([]));
}

#[tokio::test]
async fn parent_must_exist() {
    let app = TestApp::new().await;
    let problem = app
        .post("/nodegroup/", json!({"name": "web", "parent": "base"}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "parent");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("base")
    );
    assert_eq!(app.dump().await["node_groups"], json!([]));
}

#[tokio::test]
async fn cycles_are_refused_and_change_nothing() {
    let app = TestApp::new().await;
    app.group(json!({"name": "a"})).await;
    app.group(json!({"name": "b", "parent": "a"})).await;
    app.group(json!({"name": "c", "parent": "b"})).await;
    let before = app.dump().await;

    for (group, parent) in [("a", "c"), ("a", "b"), ("a", "a")] {
        let problem = app
            .put(
                &format!("/nodegroup/{group}"),
                json!({"parent": parent}),
                None,
            )
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem["errors"][0]["field"], "parent", "{problem}");
        assert!(
            problem["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("cycle"),
            "{problem}"
        );
    }
    assert_eq!(app.dump().await, before);

    // Moving a leaf elsewhere is fine.
    app.put("/nodegroup/c", json!({"parent": "a"}), None)
        .await
        .ok(StatusCode::OK);
}

#[tokio::test]
async fn chains_are_at_most_32_groups_deep() {
    let app = TestApp::new().await;
    app.group(json!({"name": "g1"})).await;
    for level in 2..=32 {
        let parent = format!("g{}", level - 1);
        app.group(json!({"name": format!("g{level}"), "parent": parent}))
            .await;
    }
    app.group(json!({"name": "top"})).await;
    app.group(json!({"name": "side", "parent": "g31"})).await;
    let before = app.dump().await;
    let too_deep = [
        // A 33rd level below the deepest group.
        app.post("/nodegroup/", json!({"name": "g33", "parent": "g32"}))
            .await,
        // g1 and the 31 groups below it, moved under another root.
        app.put("/nodegroup/g1", json!({"parent": "top"}), None)
            .await,
    ];
    for response in too_deep {
        let problem = response.problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem["errors"][0]["field"], "parent", "{problem}");
        let message = problem["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("33") && message.contains("32"),
            "{message}"
        );
    }
    assert_eq!(app.dump().await, before);
    let document = app.get("/api-docs/openapi.json").await.ok(StatusCode::OK);
    let documented = &document["components"]["schemas"]["NodeGroupBody"]["properties"]["parent"];
    let limit = format!("at most {} groups", enc::domain::MAX_DEPTH);
    assert!(documented.to_string().contains(&limit), "{documented}");
    // A group with no children may move to the 32nd level.
    app.put("/nodegroup/top", json!({"parent": "g31"}), None)
        .await
        .ok(StatusCode::OK);
}

#[tokio::test]
async fn delete_while_used_is_refused_and_names_users() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.group(json!({"name": "base"})).await;
    app.group(json!({"name": "web", "parent": "base"})).await;
    app.node("web01", Some("web")).await;
    let before = app.dump().await;

    let problem = app
        .delete("/nodegroup/base", None)
        .await
        .problem(StatusCode::CONFLICT);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("node group web"),
        "{problem}"
    );
    let problem = app
        .delete("/nodegroup/web", None)
        .await
        .problem(StatusCode::CONFLICT);
    assert!(
        problem["detail"].as_str().unwrap().contains("node web01"),
        "{problem}"
    );
    assert_eq!(app.dump().await, before);

    // Once the node moves away and the child goes, both can be deleted.
    app.put(
        "/nodes/web01",
        json!({"environment_name": "production", "puppet_cluster_name": "eu"}),
        None,
    )
    .await
    .ok(StatusCode::OK);
    app.delete("/nodegroup/web", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    app.delete("/nodegroup/base", None)
        .await
        .ok(StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn replace_moves_the_parent_reference() {
    let app = TestApp::new().await;
    app.group(json!({"name": "a"})).await;
    app.group(json!({"name": "b"})).await;
    app.group(json!({"name": "child", "parent": "a"})).await;
    app.put("/nodegroup/child", json!({"parent": "b"}), None)
        .await
        .ok(StatusCode::OK);
    // "a" is no longer used; "b" is.
    app.delete("/nodegroup/a", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    app.delete("/nodegroup/b", None)
        .await
        .problem(StatusCode::CONFLICT);
}

#[tokio::test]
async fn put_name_must_match_path_and_target_must_exist() {
    let app = TestApp::new().await;
    app.group(json!({"name": "a"})).await;
    let fields = app
        .put("/nodegroup/a", json!({"name": "b"}), None)
        .await
        .invalid_fields();
    assert_eq!(fields, ["name"]);
    app.put("/nodegroup/a", json!({"name": "a"}), None)
        .await
        .ok(StatusCode::OK);
    app.put("/nodegroup/missing", json!({}), None)
        .await
        .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn free_text_names_are_percent_encoded_where_they_become_a_path() {
    let app = TestApp::new().await;
    let name = "Web servers (EU) #1 ? 100% Zürich";
    let created = app
        .post("/nodegroup/", json!({"name": name, "classes": {}}))
        .await;
    created.ok(StatusCode::CREATED);
    let location = created.header("location").unwrap().to_owned();
    assert_eq!(
        location,
        "/nodegroup/Web%20servers%20%28EU%29%20%231%20%3F%20100%25%20Z%C3%BCrich"
    );
    // The path it names is the group, read back as it was written.
    assert_eq!(app.get(&location).await.ok(StatusCode::OK)["name"], name);
}
