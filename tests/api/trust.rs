//! Who may decide a node's groups: only a Puppet server's `classify` token posts facts (and
//! trusted facts), and a token bound to Puppet clusters reaches only their nodes.

use axum::http::StatusCode;
use serde_json::{Value, json};

use enc::domain::{Certname, NodeFacts};

use crate::helpers::{ADMIN, TestApp};

/// Facts that put a node in the `db` group by its trusted role, and `Linux` by its kernel.
fn claims() -> Value {
    json!({"facts": {"kernel": "Linux"}, "trusted": {"extensions": {"pp_role": "db"}}})
}

async fn stored_facts(app: &TestApp, node: &str) -> Option<NodeFacts> {
    let name = Certname::parse(node).unwrap();
    app.backing.store.facts(&name).await.unwrap()
}

/// Two clusters, a node in each, and groups that rules (one on a trusted path) fill.
async fn fleet() -> TestApp {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.env("production", "us").await;
    app.node("web01", None).await;
    app.post(
        "/nodes/",
        json!({"unique_name": "web02", "environment_name": "production", "puppet_cluster_name": "us"}),
    )
    .await
    .ok(StatusCode::CREATED);
    app.group(json!({
        "name": "db", "rule": ["=", ["trusted", "extensions", "pp_role"], "db"],
        "classes": {"profile::db": {}}, "parameters": {"secret": "s3cr3t"}
    }))
    .await;
    app
}

#[tokio::test]
async fn posting_facts_is_a_puppet_servers_act() {
    let app = fleet().await;
    // A rule that would take in (and so teach enc) a node it has never seen.
    app.group(json!({
        "name": "Linux", "rule": ["=", ["fact", "kernel"], "Linux"],
        "environment_name": "production", "puppet_cluster_name": "eu"
    }))
    .await;
    let mut holders = Vec::new();
    for scope in ["read", "write", "activities:write", "activities:read"] {
        let name = format!("not-puppet-{}", scope.replace(':', "-"));
        holders.push((scope, app.token(&name, &[scope]).await));
    }
    let reader = app.as_caller(Some(&app.token("reader", &["read"]).await));
    let puppet = app.as_caller(Some(&app.token("puppet-eu", &["classify"]).await));
    let before = app.dump().await;
    for (scope, secret) in &holders {
        let caller = app.as_caller(Some(secret));
        for node in ["web01", "newcomer01"] {
            let refused = caller
                .post(&format!("/nodes/{node}/classification"), claims())
                .await;
            let problem = refused.problem(StatusCode::FORBIDDEN);
            assert!(
                problem["detail"].as_str().unwrap().contains("classify"),
                "{scope}: {problem}"
            );
            assert_eq!(stored_facts(&app, node).await, None, "{scope} {node}");
        }
    }
    assert_eq!(app.dump().await, before, "nothing stored, no node learnt");

    // Reading a classification stays a read, and stores nothing.
    let read = reader
        .get("/nodes/web01/classification")
        .await
        .ok(StatusCode::OK);
    assert_eq!(read["classes"], json!({}));
    assert_eq!(stored_facts(&app, "web01").await, None);

    // A Puppet server's token posts them; enc records who did, and that trusted came along.
    let classified = puppet
        .post("/nodes/web01/classification?explain=true", claims())
        .await
        .ok(StatusCode::OK);
    assert_eq!(classified["parameters"]["secret"], "s3cr3t");
    let kept = stored_facts(&app, "web01").await.expect("kept");
    assert_eq!(kept.posted_by.as_deref(), Some("puppet-eu"));
    assert!(kept.with_trusted);
    let explained = reader
        .get("/nodes/web01/classification?explain=true")
        .await
        .ok(StatusCode::OK);
    assert_eq!(explained["membership"]["facts_posted_by"], "puppet-eu");
    assert_eq!(explained["membership"]["facts_with_trusted"], true);

    // Facts without trusted: said so, and the trusted rule no longer matches.
    let plain = puppet
        .post(
            "/nodes/web01/classification",
            json!({"facts": {"kernel": "Linux"}}),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(plain["classes"], json!({}));
    let explained = reader
        .get("/nodes/web01/classification?explain=true")
        .await
        .ok(StatusCode::OK);
    assert_eq!(explained["membership"]["facts_with_trusted"], false);
    // And a Puppet server's token learns an unknown node its facts place.
    puppet
        .post("/nodes/newcomer01/classification", claims())
        .await
        .ok(StatusCode::OK);
    app.get("/nodes/newcomer01").await.ok(StatusCode::OK);
}

#[tokio::test]
async fn a_token_bound_to_clusters_reaches_only_their_nodes() {
    let app = fleet().await;
    // The same rule gives a newcomer the environment of cluster `us`.
    app.group(json!({
        "name": "Linux in us", "rule": ["=", ["fact", "kernel"], "Linux"],
        "environment_name": "production", "puppet_cluster_name": "us"
    }))
    .await;
    let made = app
        .post(
            "/tokens",
            json!({"name": "puppet-eu", "scopes": ["classify"], "clusters": ["eu"]}),
        )
        .await
        .ok(StatusCode::CREATED);
    assert_eq!(made["clusters"], json!(["eu"]));
    let shown = app.get("/tokens/puppet-eu").await.ok(StatusCode::OK);
    assert_eq!(shown["clusters"], json!(["eu"]));
    let unbound = app
        .post("/tokens", json!({"name": "anywhere", "scopes": ["read"]}))
        .await
        .ok(StatusCode::CREATED);
    assert!(unbound.get("clusters").is_none(), "{unbound}");
    let eu = app.as_caller(made["token"].as_str());

    // Another cluster's node, known or to be learnt, is absent to it, and nothing is stored.
    let before = app.dump().await;
    for node in ["web02", "newcomer02"] {
        let refused = eu
            .post(&format!("/nodes/{node}/classification"), claims())
            .await;
        // The same answer as for a node nobody knows: nothing said of other clusters' groups.
        let problem = refused.problem(StatusCode::NOT_FOUND);
        assert_eq!(problem["detail"], format!("node {node} does not exist"));
        assert_eq!(stored_facts(&app, node).await, None, "{node}");
    }
    for uri in [
        "/nodes/web02/classification",
        "/nodes/web02/classification?explain=true",
        "/nodes/web02/history",
        "/nodes/web02/classification/diff?from=2020-01-01T00:00:00Z",
    ] {
        eu.get(uri).await.problem(StatusCode::NOT_FOUND);
    }
    assert_eq!(app.dump().await, before);

    // Its own cluster's nodes: classified with its facts, read, and their history shown.
    let own = eu
        .post("/nodes/web01/classification", claims())
        .await
        .ok(StatusCode::OK);
    assert!(own["classes"]["profile::db"].is_object(), "{own}");
    assert!(stored_facts(&app, "web01").await.is_some());
    eu.get("/nodes/web01/classification")
        .await
        .ok(StatusCode::OK);
    eu.get("/nodes/web01/history").await.ok(StatusCode::OK);

    // It writes nothing else, and reads nothing beyond its nodes.
    for (uri, body) in [
        ("/nodegroup/", json!({"name": "mine"})),
        (
            "/environment/",
            json!({"environment_name": "staging", "puppet_cluster_name": "eu"}),
        ),
        ("/tokens", json!({"name": "more", "scopes": ["classify"]})),
    ] {
        eu.post(uri, body).await.problem(StatusCode::FORBIDDEN);
    }
    let reader = app
        .post(
            "/tokens",
            json!({"name": "eu-reader", "scopes": ["read", "classify"], "clusters": ["eu"]}),
        )
        .await
        .ok(StatusCode::CREATED);
    let reader = app.as_caller(reader["token"].as_str());
    reader.get("/nodes/web01").await.ok(StatusCode::OK);
    reader
        .get("/nodes/web02")
        .await
        .problem(StatusCode::NOT_FOUND);
    for uri in [
        "/nodes",
        "/nodegroup",
        "/nodegroup/db",
        "/changes",
        "/export",
    ] {
        let problem = reader.get(uri).await.problem(StatusCode::FORBIDDEN);
        assert!(
            problem["detail"].as_str().unwrap().contains("bound"),
            "{uri}: {problem}"
        );
    }
    assert_eq!(app.dump().await["node_groups"], before["node_groups"]);
}

#[tokio::test]
async fn a_binding_is_checked_when_the_token_is_made() {
    let app = TestApp::new().await;
    for (body, field) in [
        (
            json!({"name": "t1", "scopes": ["classify", "write"], "clusters": ["eu"]}),
            "scopes",
        ),
        (
            json!({"name": "t2", "scopes": ["admin"], "clusters": ["eu"]}),
            "scopes",
        ),
        (
            json!({"name": "t3", "scopes": ["classify"], "clusters": []}),
            "clusters",
        ),
        (
            json!({"name": "t4", "scopes": ["classify"], "clusters": ["Not A Cluster"]}),
            "clusters.0",
        ),
    ] {
        let refused = app.post("/tokens", body.clone()).await;
        refused.problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            refused.invalid_fields().contains(&field.to_owned()),
            "{body}: {:?}",
            refused.invalid_fields()
        );
    }
    let tokens = app
        .as_caller(Some(ADMIN))
        .get("/tokens")
        .await
        .ok(StatusCode::OK);
    assert_eq!(tokens["items"], json!([]), "none made");
}

#[tokio::test]
async fn facts_left_out_are_kept_and_trusted_left_out_ends() {
    let app = fleet().await;
    app.group(json!({
        "name": "Linux", "rule": ["=", ["fact", "kernel"], "Linux"], "classes": {"linux": {}}
    }))
    .await;
    let puppet = app.as_caller(Some(&app.token("puppet-eu", &["classify"]).await));
    let both = puppet
        .post("/nodes/web01/classification", claims())
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        both["classes"],
        json!({"linux": {}, "profile::db": {}}),
        "{both}"
    );
    // The certificate no longer verifies (revoked): enc classify posts without trusted and,
    // having no fact cache, without facts.
    let after = puppet
        .post("/nodes/web01/classification", json!({}))
        .await
        .ok(StatusCode::OK);
    assert_eq!(after["classes"], json!({"linux": {}}), "{after}");
    let kept = stored_facts(&app, "web01").await.unwrap();
    assert_eq!(kept.facts["kernel"], "Linux");
    assert!(!kept.with_trusted && kept.trusted.is_empty());
    // A plain GET uses what was kept: no trusted facts any more.
    let plain = app
        .get("/nodes/web01/classification")
        .await
        .ok(StatusCode::OK);
    assert_eq!(plain["classes"], json!({"linux": {}}));
}
