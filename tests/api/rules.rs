//! Group rules over facts, pins, several groups per node, and conflicts, on the store under test.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestApp;

fn facts(family: &str, cores: u32) -> Value {
    json!({
        "facts": {"os": {"family": family}, "processorcount": cores, "kernel": "Linux"},
        "trusted": {"extensions": {"pp_role": "web"}},
    })
}

async fn fleet(app: &TestApp) {
    app.env("production", "eu").await;
    app.group(json!({"name": "base", "classes": {"ntp": {"servers": ["a"]}}, "parameters": {"tier": "base"}}))
        .await;
    app.group(json!({
        "name": "debian", "parent": "base",
        "rule": ["=", ["fact", "os", "family"], "Debian"],
        "classes": {"apt": {}}, "parameters": {"pkg": "apt"}
    }))
    .await;
    app.group(json!({
        "name": "big", "parent": "base",
        "rule": ["and", [">=", ["fact", "processorcount"], "8"], ["=", ["trusted", "extensions", "pp_role"], "web"]],
        "classes": {"tuning": {"level": "high"}}
    }))
    .await;
}

#[tokio::test]
async fn nodes_join_groups_by_their_facts_and_the_facts_are_kept() {
    let app = TestApp::new().await;
    fleet(&app).await;
    app.node("web01", Some("base")).await;
    let uri = "/nodes/web01/classification";

    // No facts yet: only its named group.
    let plain = app.get(uri).await.ok(StatusCode::OK);
    assert_eq!(plain["classes"], json!({"ntp": {"servers": ["a"]}}));

    // Debian with 8 cores: both rule groups; base is their ancestor, so it is no leaf.
    let with = app.post(uri, facts("Debian", 8)).await.ok(StatusCode::OK);
    assert_eq!(
        with["classes"],
        json!({"apt": {}, "ntp": {"servers": ["a"]}, "tuning": {"level": "high"}})
    );
    assert_eq!(with["parameters"], json!({"pkg": "apt", "tier": "base"}));
    // The facts are kept: a plain GET now classifies by them too.
    assert_eq!(app.get(uri).await.ok(StatusCode::OK), with);
    let yaml = app.get(&format!("{uri}?format=yaml")).await;
    assert!(TestApp::text(&yaml).contains("\"tuning\":"));

    // New facts, new groups.
    let redhat = app.post(uri, facts("RedHat", 2)).await.ok(StatusCode::OK);
    assert_eq!(redhat["classes"], json!({"ntp": {"servers": ["a"]}}));

    let explained = app
        .post(&format!("{uri}?explain=true"), facts("Debian", 2))
        .await
        .ok(StatusCode::OK);
    let membership = &explained["membership"];
    assert_eq!(
        membership["groups"],
        json!([
            {"group": "base", "why": ["named", "ancestor"], "ancestor_of": ["debian"]},
            {"group": "debian", "why": ["rule"]}
        ])
    );
    assert_eq!(membership["leaves"], json!(["debian"]));
    assert!(membership["facts_received_at"].is_string());
    let big = membership["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "big")
        .unwrap();
    assert_eq!(big["outcome"]["matched"], false);
    assert_eq!(big["outcome"]["of"][0]["path"], "facts.processorcount");
    assert_eq!(big["outcome"]["of"][0]["fact"], 2);
    assert_eq!(big["outcome"]["of"][1]["matched"], true);
}

#[tokio::test]
async fn pins_make_members_and_stay_through_a_replace() {
    let app = TestApp::new().await;
    fleet(&app).await;
    app.group(json!({"name": "canary", "classes": {"canary": {}}}))
        .await;
    app.node("web01", None).await;
    let uri = "/nodes/web01/classification";
    let pinned = app
        .post(
            "/nodegroup/canary/pin",
            json!({"nodes": ["web01", "web02"]}),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(pinned["pinned"], json!(["web01", "web02"]));
    assert_eq!(pinned["version"], 2);
    assert_eq!(
        app.get(uri).await.ok(StatusCode::OK)["classes"],
        json!({"canary": {}})
    );

    // A replace that says nothing of pins keeps them; one that names them sets them.
    let kept = app
        .put(
            "/nodegroup/canary",
            json!({"classes": {"canary": {"on": true}}}),
            None,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(kept["pinned"], json!(["web01", "web02"]));
    app.post("/nodegroup/canary/unpin", json!({"nodes": ["web01"]}))
        .await
        .ok(StatusCode::OK);
    assert_eq!(app.get(uri).await.ok(StatusCode::OK)["classes"], json!({}));
    let set = app
        .put("/nodegroup/canary", json!({"pinned": []}), None)
        .await
        .ok(StatusCode::OK);
    assert!(set.get("pinned").is_none(), "{set}");

    let before = app.dump().await;
    let bad = app
        .post(
            "/nodegroup/canary/pin",
            json!({"nodes": ["web01", "Not A Certname!"]}),
        )
        .await;
    assert_eq!(
        bad.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"],
        "nodes[1]"
    );
    app.post("/nodegroup/nope/pin", json!({"nodes": ["web01"]}))
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(app.dump().await, before);
}

#[tokio::test]
async fn groups_that_disagree_are_a_conflict_unless_the_node_decides() {
    let app = TestApp::new().await;
    fleet(&app).await;
    // Both rule groups set tier; neither is below the other.
    app.put(
        "/nodegroup/debian",
        json!({"parent": "base", "rule": ["=", ["fact", "os", "family"], "Debian"], "parameters": {"tier": "debian"}, "classes": {"ntp": {"servers": ["d"]}}}),
        None,
    )
    .await
    .ok(StatusCode::OK);
    app.put(
        "/nodegroup/big",
        json!({"parent": "base", "rule": [">=", ["fact", "processorcount"], "8"], "parameters": {"tier": "big"}, "classes": {"ntp": {"servers": ["d"]}}}),
        None,
    )
    .await
    .ok(StatusCode::OK);
    app.node("web01", Some("base")).await;
    let uri = "/nodes/web01/classification";
    let conflict = app.post(uri, facts("Debian", 8)).await;
    let problem = conflict.problem(StatusCode::CONFLICT);
    assert_eq!(problem["type"], "urn:enc:problem:classification-conflict");
    assert_eq!(
        problem["conflicts"],
        json!([{"key": "parameters.tier", "values": [
            {"value": "big", "group": "big"},
            {"value": "debian", "group": "debian"},
        ]}]),
        "the same value from both (ntp servers) is no conflict"
    );
    // Explained, the conflict comes with why the node is in each group.
    let explained = app
        .get(&format!("{uri}?explain=true"))
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(explained["conflicts"], problem["conflicts"]);
    assert_eq!(explained["membership"]["leaves"], json!(["big", "debian"]));
    assert!(
        explained["membership"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"]["matched"] == true)
    );
    // The node's own value settles it.
    app.put(
        "/nodes/web01",
        json!({"node_group_name": "base", "environment_name": "production", "puppet_cluster_name": "eu", "parameters": {"tier": "mine"}}),
        None,
    )
    .await
    .ok(StatusCode::OK);
    let settled = app.get(uri).await.ok(StatusCode::OK);
    assert_eq!(settled["parameters"]["tier"], "mine");
    assert_eq!(settled["classes"]["ntp"], json!({"servers": ["d"]}));
}

#[tokio::test]
async fn malformed_rules_and_facts_are_refused_and_change_nothing() {
    let app = TestApp::new().await;
    fleet(&app).await;
    app.node("web01", None).await;
    let before = app.dump().await;
    for (rule, field, message) in [
        (
            json!(["and", ["=", "name", "a"], ["==", "name", "b"]]),
            "rule",
            "at rule[2][0]: unknown operator",
        ),
        (
            json!([">", ["fact", "cores"], "many"]),
            "rule",
            "at rule[2]: > compares numbers",
        ),
        (
            json!(["~", "name", "(unclosed"]),
            "rule",
            "at rule[2]: not a usable regex",
        ),
        (json!("name"), "rule", "expected an array"),
    ] {
        let refused = app
            .post("/nodegroup/", json!({"name": "bad", "rule": rule}))
            .await;
        let problem = refused.problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        let text = problem["errors"][0]["message"].as_str().unwrap();
        assert!(text.starts_with(message), "{text}");
    }
    let huge = json!({"facts": {"blob": "x".repeat(300 * 1024)}});
    app.post("/nodes/web01/classification", huge)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    app.post("/nodes/nobody/classification", facts("Debian", 1))
        .await
        .problem(StatusCode::NOT_FOUND);
    app.post(
        "/nodes/web01/classification",
        json!({"facts": {}, "extra": 1}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.dump().await, before);
}

#[tokio::test]
async fn a_write_that_would_conflict_is_refused_unless_forced_and_then_recorded() {
    let app = TestApp::new().await;
    fleet(&app).await;
    app.node("web01", Some("base")).await;
    app.post("/nodes/web01/classification", facts("Debian", 8))
        .await
        .ok(StatusCode::OK);
    let edit = json!({
        "parent": "base",
        "rule": ["and", [">=", ["fact", "processorcount"], "8"], ["=", ["trusted", "extensions", "pp_role"], "web"]],
        "parameters": {"pkg": "yum"}
    });
    let before = app.dump().await;
    let refused = app.put("/nodegroup/big", edit.clone(), None).await;
    let problem = refused.problem(StatusCode::CONFLICT);
    assert_eq!(problem["type"], "urn:enc:problem:classification-conflict");
    assert_eq!(problem["conflicts"][0]["unique_name"], "web01");
    assert_eq!(
        problem["conflicts"][0]["conflicts"][0]["key"],
        "parameters.pkg"
    );
    assert_eq!(
        app.dump().await,
        before,
        "refused: nothing stored, no revision"
    );

    // The preview shows it as a failure to come.
    let preview = app
        .put("/nodegroup/big?dry_run=true", edit.clone(), None)
        .await
        .ok(StatusCode::OK);
    assert_eq!(preview["failed"][0]["unique_name"], "web01");
    assert_eq!(
        preview["failed"][0]["conflicts"][0]["key"],
        "parameters.pkg"
    );

    // Forced, it is made and its revision says what it broke; the node now answers 409.
    app.put("/nodegroup/big?force=true", edit, None)
        .await
        .ok(StatusCode::OK);
    let revision = &app.all("/nodegroup/big/history").await[0];
    assert_eq!(revision["forced_conflicts"][0]["unique_name"], "web01");
    app.get("/nodes/web01/classification")
        .await
        .problem(StatusCode::CONFLICT);

    // A pin can conflict too.
    app.put("/nodegroup/big?force=true", json!({"parent": "base"}), None)
        .await
        .ok(StatusCode::OK);
    app.get("/nodes/web01/classification")
        .await
        .ok(StatusCode::OK);
    app.group(json!({"name": "other", "parameters": {"pkg": "other"}}))
        .await;
    let before = app.dump().await;
    app.post("/nodegroup/other/pin", json!({"nodes": ["web01"]}))
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(app.dump().await, before);

    // Joins and leaves show in a preview.
    let joining = app
        .post(
            "/nodegroup/?dry_run=true",
            json!({"name": "extra", "rule": ["~", "name", "^web"], "classes": {"extra": {}}}),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(joining["examined"], 1);
    assert_eq!(joining["nodes"][0]["joins"], json!(["extra"]));
    assert_eq!(
        joining["nodes"][0]["diff"]["classes_added"],
        json!(["extra"])
    );
    let leaving = app
        .put(
            "/nodegroup/debian?dry_run=true",
            json!({"parent": "base", "rule": ["=", ["fact", "os", "family"], "RedHat"], "classes": {"apt": {}}, "parameters": {"pkg": "apt"}}),
            None,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(leaving["nodes"][0]["leaves"], json!(["debian"]));
    assert_eq!(
        leaving["nodes"][0]["diff"]["classes_removed"],
        json!(["apt"])
    );
}

#[tokio::test]
async fn operators_see_who_a_group_holds_and_who_gets_a_class() {
    let app = TestApp::new().await;
    fleet(&app).await;
    for name in ["web01", "web02", "web03"] {
        app.node(name, Some("base")).await;
    }
    app.post("/nodes/web01/classification", facts("Debian", 8))
        .await
        .ok(StatusCode::OK);
    app.post("/nodes/web02/classification", facts("Debian", 1))
        .await
        .ok(StatusCode::OK);
    app.post("/nodegroup/big/pin", json!({"nodes": ["web03"]}))
        .await
        .ok(StatusCode::OK);

    let debian = app.get("/nodegroup/debian/nodes").await.ok(StatusCode::OK);
    assert_eq!(
        debian["items"],
        json!([{"unique_name": "web01", "why": ["rule"]}, {"unique_name": "web02", "why": ["rule"]}])
    );
    let big = app.get("/nodegroup/big/nodes").await.ok(StatusCode::OK);
    assert_eq!(
        big["items"],
        json!([{"unique_name": "web01", "why": ["rule"]}, {"unique_name": "web03", "why": ["pinned"]}])
    );
    let base = app
        .get("/nodegroup/base/nodes?limit=2")
        .await
        .ok(StatusCode::OK);
    assert_eq!(base["items"].as_array().unwrap().len(), 2);
    assert_eq!(base["next_cursor"], "web02");
    let rest = app
        .get("/nodegroup/base/nodes?limit=2&cursor=web02")
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        rest["items"],
        json!([{"unique_name": "web03", "why": ["named"]}])
    );
    assert!(rest["next_cursor"].is_null());

    let apt = app.get("/classes/apt/nodes").await.ok(StatusCode::OK);
    assert_eq!(
        apt["items"],
        json!([
            {"unique_name": "web01", "from": {"kind": "node_group", "name": "debian"}},
            {"unique_name": "web02", "from": {"kind": "node_group", "name": "debian"}},
        ])
    );
    let ntp = app.get("/classes/ntp/nodes").await.ok(StatusCode::OK);
    assert_eq!(ntp["items"].as_array().unwrap().len(), 3);
    app.get("/nodegroup/nope/nodes")
        .await
        .problem(StatusCode::NOT_FOUND);
    app.get("/nodegroup/base/nodes?cursor=%20bad")
        .await
        .problem(StatusCode::BAD_REQUEST);
    app.get("/classes/Not%20A%20Class/nodes")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn newcomers_are_recorded_in_the_environment_their_groups_give() {
    let app = TestApp::new().await;
    fleet(&app).await;
    app.env("staging", "eu").await;
    let debian = json!({
        "parent": "base", "rule": ["=", ["fact", "os", "family"], "Debian"], "classes": {"apt": {}},
        "environment_name": "production", "puppet_cluster_name": "eu"
    });
    app.put("/nodegroup/debian", debian, None)
        .await
        .ok(StatusCode::OK);
    let puppet = app.token("puppet", &["classify"]).await;
    let as_puppet = app.as_caller(Some(&puppet));
    let answer = as_puppet
        .post("/nodes/new01/classification", facts("Debian", 2))
        .await
        .ok(StatusCode::OK);
    assert_eq!(answer["environment"], "production");
    assert_eq!(
        answer["classes"],
        json!({"apt": {}, "ntp": {"servers": ["a"]}})
    );
    let node = app.get("/nodes/new01").await.ok(StatusCode::OK);
    assert_eq!(node["environment_name"], "production");
    assert_eq!(node["puppet_cluster_name"], "eu");
    assert!(node["node_group_name"].is_null());
    let made = &app.all("/nodes/new01/history").await[0];
    assert_eq!(
        (made["operation"].clone(), made["actor"].clone()),
        (json!("create"), json!("puppet"))
    );

    // Nothing takes a RedHat node in; a group's environment must exist and come whole.
    as_puppet
        .post("/nodes/new02/classification", facts("RedHat", 2))
        .await
        .problem(StatusCode::NOT_FOUND);
    app.get("/nodes/new02").await.problem(StatusCode::NOT_FOUND);
    let missing = app
        .put(
            "/nodegroup/big",
            json!({"parent": "base", "environment_name": "nope", "puppet_cluster_name": "eu"}),
            None,
        )
        .await;
    assert_eq!(
        missing.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"],
        "environment_name"
    );
    app.put(
        "/nodegroup/big",
        json!({"parent": "base", "environment_name": "staging"}),
        None,
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    // An environment a group gives is in use.
    app.delete("/environment/production/eu", None)
        .await
        .problem(StatusCode::CONFLICT);

    // Two groups giving two environments: a conflict, and nothing recorded.
    app.put(
        "/nodegroup/big",
        json!({"parent": "base", "rule": [">=", ["fact", "processorcount"], "8"], "environment_name": "staging", "puppet_cluster_name": "eu"}),
        None,
    )
    .await
    .ok(StatusCode::OK);
    let torn = as_puppet
        .post("/nodes/new03/classification", facts("Debian", 8))
        .await;
    assert_eq!(
        torn.problem(StatusCode::CONFLICT)["conflicts"][0]["key"],
        "environment"
    );
    app.get("/nodes/new03").await.problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_nodes_stay_unknown_when_the_setting_says_so() {
    let backing = crate::helpers::TestStore::new().await;
    let state = enc::App::new(backing.engine.clone())
        .with_auth(crate::helpers::test_auth())
        .with_classify_unknown(false);
    let app = TestApp::with_state(state, backing);
    fleet(&app).await;
    app.put(
        "/nodegroup/debian",
        json!({"parent": "base", "rule": ["=", ["fact", "os", "family"], "Debian"], "environment_name": "production", "puppet_cluster_name": "eu"}),
        None,
    )
    .await
    .ok(StatusCode::OK);
    app.post("/nodes/new01/classification", facts("Debian", 2))
        .await
        .problem(StatusCode::NOT_FOUND);
    app.get("/nodes/new01").await.problem(StatusCode::NOT_FOUND);
}

/// A node's facts as a Puppet server posts them.
fn os_and_role(family: &str, role: &str) -> Value {
    json!({"facts": {"os": {"family": family}, "role": role, "kernel": "Linux"}})
}

/// The certnames of a listing's items.
fn names(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["unique_name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_childs_rule_is_narrowed_by_its_ancestors_rules_as_in_puppet_enterprise() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.group(json!({
        "name": "Debian", "rule": ["=", ["fact", "os", "family"], "Debian"],
        "classes": {"apt": {}}
    }))
    .await;
    app.group(json!({
        "name": "Debian web", "parent": "Debian", "rule": ["=", ["fact", "role"], "web"],
        "classes": {"nginx": {}}
    }))
    .await;
    // Three levels, a rule on the first and the last only: the middle narrows nothing.
    app.group(json!({"name": "Debian web plain", "parent": "Debian web"}))
        .await;
    app.group(json!({
        "name": "Debian web tls", "parent": "Debian web plain",
        "rule": ["=", ["fact", "kernel"], "Linux"], "classes": {"tls": {}}
    }))
    .await;
    for (node, family, role) in [
        ("redhat01", "RedHat", "web"),
        ("debweb01", "Debian", "web"),
        ("debdb01", "Debian", "db"),
        ("pinned01", "RedHat", "web"),
        ("named01", "RedHat", "web"),
    ] {
        let group = (node == "named01").then_some("Debian web");
        app.node(node, group).await;
        app.post(
            &format!("/nodes/{node}/classification"),
            os_and_role(family, role),
        )
        .await
        .ok(StatusCode::OK);
    }
    app.post(
        "/nodegroup/Debian%20web/pin",
        json!({"nodes": ["pinned01"]}),
    )
    .await
    .ok(StatusCode::OK);

    let classes = |node: &'static str| {
        let app = &app;
        async move {
            app.get(&format!("/nodes/{node}/classification"))
                .await
                .ok(StatusCode::OK)["classes"]
                .clone()
        }
    };
    // A RedHat web host matches the child's rule but not its parent's: neither applies.
    assert_eq!(classes("redhat01").await, json!({}));
    assert_eq!(
        classes("debweb01").await,
        json!({"apt": {}, "nginx": {}, "tls": {}})
    );
    assert_eq!(classes("debdb01").await, json!({"apt": {}}));
    // Pins and the named group are explicit: no rule on the chain needs to match.
    assert_eq!(classes("pinned01").await, json!({"apt": {}, "nginx": {}}));
    assert_eq!(classes("named01").await, json!({"apt": {}, "nginx": {}}));

    let explained = app
        .get("/nodes/redhat01/classification?explain=true")
        .await
        .ok(StatusCode::OK);
    assert_eq!(explained["membership"]["groups"], json!([]));

    // Lookups agree with classification.
    let web = app
        .get("/nodegroup/Debian%20web/nodes")
        .await
        .ok(StatusCode::OK);
    assert_eq!(names(&web), ["debweb01", "named01", "pinned01"]);
    let tls = app
        .get("/nodegroup/Debian%20web%20tls/nodes")
        .await
        .ok(StatusCode::OK);
    assert_eq!(names(&tls), ["debweb01"]);
    let nginx = app.get("/classes/nginx/nodes").await.ok(StatusCode::OK);
    assert_eq!(names(&nginx), ["debweb01", "named01", "pinned01"]);
    let apt = app.get("/classes/apt/nodes").await.ok(StatusCode::OK);
    assert_eq!(names(&apt), ["debdb01", "debweb01", "named01", "pinned01"]);

    // And so does the preview: widening the parent's rule brings the RedHat web hosts in by
    // rule, each as far as the rules below let it; the Debian hosts' groups stay.
    let widened = json!({
        "name": "Debian", "rule": ["or", ["=", ["fact", "os", "family"], "Debian"], ["=", ["fact", "os", "family"], "RedHat"]],
        "classes": {"apt": {}}
    });
    let preview = app
        .put("/nodegroup/Debian?dry_run=true", widened.clone(), None)
        .await
        .ok(StatusCode::OK);
    let joined: Vec<(&str, &Value)> = preview["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| !n["joins"].as_array().unwrap().is_empty())
        .map(|n| (n["unique_name"].as_str().unwrap(), &n["joins"]))
        .collect();
    assert_eq!(
        joined,
        [
            ("named01", &json!(["Debian", "Debian web tls"])),
            ("pinned01", &json!(["Debian", "Debian web tls"])),
            (
                "redhat01",
                &json!(["Debian", "Debian web", "Debian web tls"])
            )
        ],
        "{preview}"
    );
    app.put("/nodegroup/Debian", widened, None)
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        classes("redhat01").await,
        json!({"apt": {}, "nginx": {}, "tls": {}})
    );
}

/// The revisions of a group, newest first.
async fn revisions(app: &TestApp, group: &str) -> Vec<Value> {
    let page = app
        .get(&format!("/nodegroup/{group}/history"))
        .await
        .ok(StatusCode::OK);
    page["items"].as_array().unwrap().clone()
}

async fn pinned(app: &TestApp, group: &str) -> Value {
    let group = app
        .get(&format!("/nodegroup/{group}"))
        .await
        .ok(StatusCode::OK);
    group.get("pinned").cloned().unwrap_or(json!([]))
}

#[tokio::test]
async fn a_pin_dies_with_its_node() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    for group in ["a", "b", "c", "d"] {
        app.group(json!({
            "name": group, "classes": {format!("role_{group}"): {}},
            "environment_name": "production", "puppet_cluster_name": "eu"
        }))
        .await;
    }
    app.node("n1", None).await;
    app.node("n2", None).await;
    for group in ["a", "b", "c"] {
        app.post(
            &format!("/nodegroup/{group}/pin"),
            json!({"nodes": ["n1", "n2"]}),
        )
        .await
        .ok(StatusCode::OK);
    }
    let writer = app.as_caller(Some(&app.token("ops", &["write"]).await));

    // The dry run names the groups that would stop pinning it, and changes nothing.
    let preview = writer
        .delete("/nodes/n1?dry_run=true", None)
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        preview["unpinned_from"],
        json!(["a", "b", "c"]),
        "{preview}"
    );
    assert_eq!(pinned(&app, "a").await, json!(["n1", "n2"]));

    // A refused delete (a stale If-Match) leaves every pin.
    writer
        .delete("/nodes/n1", Some("\"7\""))
        .await
        .problem(StatusCode::PRECONDITION_FAILED);
    assert_eq!(pinned(&app, "b").await, json!(["n1", "n2"]));

    writer
        .delete("/nodes/n1", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    for group in ["a", "b", "c"] {
        assert_eq!(pinned(&app, group).await, json!(["n2"]), "{group}");
        let newest = &revisions(&app, group).await[0];
        assert_eq!(newest["actor"], "ops", "{newest}");
        assert_eq!(newest["operation"], "replace", "{newest}");
        assert_eq!(newest["version"], 3, "{newest}");
    }
    assert_eq!(revisions(&app, "d").await.len(), 1, "d never pinned it");
    // One request, one commit: the node's revision and the groups' share the request id.
    let changes = app.get("/changes?actor=ops").await.ok(StatusCode::OK);
    let changes = changes["items"].as_array().unwrap();
    assert_eq!(changes.len(), 4, "{changes:?}");
    let ids: std::collections::BTreeSet<&str> = changes
        .iter()
        .map(|c| c["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{changes:?}");

    // A rebuilt host of that certname, learnt through its facts, joins none of them.
    let learnt = app
        .post(
            "/nodes/n1/classification",
            json!({"facts": {"kernel": "Linux"}}),
        )
        .await;
    learnt.problem(StatusCode::NOT_FOUND);
    app.get("/nodes/n1").await.problem(StatusCode::NOT_FOUND);

    // unpin-from-all: the same without deleting the node, previewed first.
    let preview = writer
        .post(
            "/commands/unpin-from-all?dry_run=true",
            json!({"nodes": ["n2"]}),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        preview["unpinned_from"],
        json!(["a", "b", "c"]),
        "{preview}"
    );
    assert_eq!(
        preview["nodes"][0]["leaves"],
        json!(["a", "b", "c"]),
        "{preview}"
    );
    assert_eq!(pinned(&app, "c").await, json!(["n2"]));
    let done = writer
        .post("/commands/unpin-from-all", json!({"nodes": ["n2"]}))
        .await
        .ok(StatusCode::OK);
    assert_eq!(done["unpinned_from"], json!(["a", "b", "c"]));
    for group in ["a", "b", "c"] {
        assert_eq!(pinned(&app, group).await, json!([]), "{group}");
    }
    app.get("/nodes/n2").await.ok(StatusCode::OK);
    let again = writer
        .post("/commands/unpin-from-all", json!({"nodes": ["n2"]}))
        .await
        .ok(StatusCode::OK);
    assert_eq!(again["unpinned_from"], json!([]));
    writer
        .post("/commands/unpin-from-all", json!({"nodes": ["Not A Node"]}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_pin_in_a_group_a_tree_owns_goes_with_its_node_only_when_forced() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.node("n1", None).await;
    app.group(json!({"name": "web", "pinned": ["n1"]})).await;
    // Adopted by a tree that holds it alone: the group is managed by git from now on.
    let files = app.get("/export").await.ok(StatusCode::OK)["files"].clone();
    let path = "node_groups/web.yaml";
    let body = json!({"files": {path: files[path].clone()}});
    let plan = app
        .post("/import?dry_run=true", body.clone())
        .await
        .ok(StatusCode::OK);
    let tag = format!("\"{}\"", plan["plan_id"].as_str().unwrap());
    app.request(Method::POST, "/import", Some(&body), Some(&tag))
        .await
        .ok(StatusCode::OK);
    let before = app.dump().await;
    for refused in [
        app.delete("/nodes/n1", None).await,
        app.post("/commands/unpin-from-all", json!({"nodes": ["n1"]}))
            .await,
    ] {
        let problem = refused.problem(StatusCode::CONFLICT);
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("node group web is managed by git"),
            "{detail}"
        );
    }
    assert_eq!(app.dump().await, before, "nothing stored");
    app.delete("/nodes/n1?force=true", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    assert_eq!(pinned(&app, "web").await, json!([]));
}

#[tokio::test]
async fn a_node_pinned_in_more_groups_than_one_commit_holds_is_refused_clearly() {
    // 40 groups: three writes each to unpin it, over DynamoDB's 100 writes per transaction.
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.node("n1", None).await;
    for i in 0..40 {
        app.group(json!({"name": format!("g{i}"), "pinned": ["n1"]}))
            .await;
    }
    let before = app.dump().await;
    let deleted = app.delete("/nodes/n1", None).await;
    if !crate::helpers::dynamodb_under_test() {
        // The embedded store commits any number of writes at once.
        deleted.ok(StatusCode::NO_CONTENT);
        assert_eq!(pinned(&app, "g39").await, json!([]));
        return;
    }
    for refused in [deleted, app.delete("/nodes/n1?dry_run=true", None).await] {
        let problem = refused.problem(StatusCode::CONFLICT);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("takes at most 100"), "{detail}");
        assert!(
            detail.contains("unpin the node from some groups first"),
            "{detail}"
        );
    }
    assert_eq!(app.dump().await, before, "nothing stored");
    // In smaller parts, as the answer says.
    for i in 0..30 {
        app.post(&format!("/nodegroup/g{i}/unpin"), json!({"nodes": ["n1"]}))
            .await
            .ok(StatusCode::OK);
    }
    app.delete("/nodes/n1", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    assert_eq!(pinned(&app, "g39").await, json!([]));
}

#[tokio::test]
async fn no_write_pins_a_deleted_node_again_unless_forced() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.node("n1", None).await;
    app.group(json!({"name": "web", "pinned": ["n1"]})).await;
    let old_tree = app.get("/export").await.ok(StatusCode::OK)["files"].clone();
    app.delete("/nodes/n1", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    assert_eq!(pinned(&app, "web").await, json!([]));
    let before = app.dump().await;
    let deleted = |refused: crate::helpers::TestResponse| {
        let problem = refused.problem(StatusCode::CONFLICT);
        let detail = problem["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains("pin 1 node(s) that were deleted (n1)"),
            "{detail}"
        );
    };
    // A restore of the version that pinned it, a pin, a replace, a new group, an old tree.
    deleted(
        app.post("/nodegroup/web/history/1/restore", json!({}))
            .await,
    );
    deleted(
        app.post("/nodegroup/web/pin", json!({"nodes": ["n1"]}))
            .await,
    );
    deleted(
        app.put(
            "/nodegroup/web",
            json!({"name": "web", "pinned": ["n1"]}),
            None,
        )
        .await,
    );
    deleted(
        app.post("/nodegroup/", json!({"name": "db", "pinned": ["n1"]}))
            .await,
    );
    let body = json!({"files": {"node_groups/web.yaml": old_tree["node_groups/web.yaml"].clone()}});
    let plan = app
        .post("/import?dry_run=true", body.clone())
        .await
        .ok(StatusCode::OK);
    assert_eq!(plan["pins_of_deleted_nodes"], json!(["n1"]), "{plan}");
    let tag = format!("\"{}\"", plan["plan_id"].as_str().unwrap());
    deleted(
        app.request(Method::POST, "/import", Some(&body), Some(&tag))
            .await,
    );
    assert_eq!(app.dump().await, before, "nothing stored");
    // A certname that never was a node may be pinned (ahead of its first run).
    app.post("/nodegroup/web/pin", json!({"nodes": ["n9"]}))
        .await
        .ok(StatusCode::OK);
    // Forced, it is pinned again.
    app.post("/nodegroup/web/history/1/restore?force=true", json!({}))
        .await
        .ok(StatusCode::OK);
    assert_eq!(pinned(&app, "web").await, json!(["n1"]));
}

#[tokio::test]
async fn a_pruning_tree_that_deletes_a_node_it_still_pins_is_refused() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.node("n1", None).await;
    app.node("n2", None).await;
    app.group(json!({"name": "web", "pinned": ["n1", "n2"]}))
        .await;
    let mut files = app.get("/export").await.ok(StatusCode::OK)["files"].clone();
    files.as_object_mut().unwrap().remove("nodes/n1.yaml");
    let body = json!({"files": files, "prune": true});
    let refused = app.post("/import?dry_run=true", body).await;
    let problem = refused.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem["errors"],
        json!([{"field": "node_groups/web.yaml: pinned",
                "message": "pins n1, which the tree deletes (a pin dies with its node): take it off"}])
    );
    // Taken off in the tree too: the plan deletes n1 and changes web.
    let web: Value =
        serde_norway::from_str(files["node_groups/web.yaml"].as_str().unwrap()).unwrap();
    let mut web = web;
    web["pinned"] = json!(["n2"]);
    files["node_groups/web.yaml"] = json!(serde_norway::to_string(&web).unwrap());
    let plan = app
        .post(
            "/import?dry_run=true",
            json!({"files": files, "prune": true}),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(plan["summary"]["delete"], 1, "{plan}");
    assert_eq!(plan["summary"]["replace"], 1, "{plan}");
}

/// Groups `a` and `b` both pin `n1`; each may give it `port` alone, not both.
async fn rivals() -> TestApp {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.node("n1", None).await;
    for group in ["a", "b"] {
        app.group(json!({"name": group, "pinned": ["n1"]})).await;
    }
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writes_that_conflict_only_together_never_both_land() {
    let app = rivals().await;
    for round in 0..12 {
        let writes = ["a", "b"].map(|group| {
            let caller = app.as_caller(Some(crate::helpers::ADMIN));
            let body = json!({"name": group, "parameters": {"port": format!("{group}{round}")}});
            tokio::spawn(async move {
                caller
                    .put(&format!("/nodegroup/{group}"), body, None)
                    .await
                    .status
            })
        });
        let mut statuses = Vec::new();
        for write in writes {
            statuses.push(write.await.unwrap());
        }
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "round {round}"
        );
        app.get("/nodes/n1/classification").await.ok(StatusCode::OK);
        // Back to no port at all, for the next round.
        for group in ["a", "b"] {
            app.put(&format!("/nodegroup/{group}"), json!({"name": group}), None)
                .await
                .ok(StatusCode::OK);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_write_and_a_node_write_that_conflict_only_together_never_both_land() {
    // n1 is pinned in b (port 2) and named in c; moving it into a, and giving a a port,
    // are each fine alone.
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.group(json!({"name": "b", "parameters": {"port": "2"}, "pinned": ["n1"]}))
        .await;
    for group in ["a", "c"] {
        app.group(json!({"name": group})).await;
    }
    let node = |group: &str| {
        json!({"unique_name": "n1", "node_group_name": group,
               "environment_name": "production", "puppet_cluster_name": "eu"})
    };
    app.post("/nodes/", node("c")).await.ok(StatusCode::CREATED);
    for round in 0..16 {
        let group_write = {
            let caller = app.as_caller(Some(crate::helpers::ADMIN));
            let body = json!({"name": "a", "parameters": {"port": format!("a{round}")}});
            tokio::spawn(async move { caller.put("/nodegroup/a", body, None).await.status })
        };
        let node_write = {
            let caller = app.as_caller(Some(crate::helpers::ADMIN));
            let body = node("a");
            tokio::spawn(async move { caller.put("/nodes/n1", body, None).await.status })
        };
        let mut statuses = vec![group_write.await.unwrap(), node_write.await.unwrap()];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "round {round}"
        );
        app.get("/nodes/n1/classification").await.ok(StatusCode::OK);
        // Back to n1 in c and a without a port, for the next round.
        app.put("/nodes/n1", node("c"), None)
            .await
            .ok(StatusCode::OK);
        app.put("/nodegroup/a", json!({"name": "a"}), None)
            .await
            .ok(StatusCode::OK);
    }
}

#[tokio::test]
async fn a_restore_or_an_import_that_would_conflict_is_refused_unless_forced() {
    let app = rivals().await;
    // a: version 2 gave port 1, version 3 took it away; b now gives port 2.
    app.put(
        "/nodegroup/a",
        json!({"name": "a", "parameters": {"port": "1"}}),
        None,
    )
    .await
    .ok(StatusCode::OK);
    app.put("/nodegroup/a", json!({"name": "a"}), None)
        .await
        .ok(StatusCode::OK);
    let files = app.get("/export").await.ok(StatusCode::OK)["files"].clone();
    app.put(
        "/nodegroup/b",
        json!({"name": "b", "parameters": {"port": "2"}}),
        None,
    )
    .await
    .ok(StatusCode::OK);

    let refused = app.post("/nodegroup/a/history/2/restore", json!({})).await;
    let problem = refused.problem(StatusCode::CONFLICT);
    assert!(problem["conflicts"].to_string().contains("n1"), "{problem}");
    assert_eq!(
        app.get("/nodegroup/a").await.ok(StatusCode::OK)["version"],
        3
    );
    app.post("/nodegroup/a/history/2/restore?force=true", json!({}))
        .await
        .ok(StatusCode::OK);
    let a = &revisions(&app, "a").await[0];
    assert!(a["forced_conflicts"].is_array(), "{a}");
    app.get("/nodes/n1/classification")
        .await
        .problem(StatusCode::CONFLICT);
    app.post("/nodegroup/a/history/3/restore", json!({}))
        .await
        .ok(StatusCode::OK);

    // The exported tree (a without a port, b without one) with a port on a: b gives one now.
    let mut files = files;
    let path = "node_groups/a.yaml";
    let mut group: Value = serde_norway::from_str(files[path].as_str().unwrap()).unwrap();
    group["parameters"] = json!({"port": "3"});
    files[path] = json!(serde_norway::to_string(&group).unwrap());
    let files = json!({"node_groups/a.yaml": files[path].clone()});
    let body = json!({"files": files});
    let planned = app
        .post("/import?dry_run=true", body.clone())
        .await
        .ok(StatusCode::OK);
    let id = planned["plan_id"].as_str().unwrap().to_owned();
    let tag = format!("\"{id}\"");
    let refused = app
        .request(axum::http::Method::POST, "/import", Some(&body), Some(&tag))
        .await;
    refused.problem(StatusCode::CONFLICT);
    assert!(
        app.get("/nodegroup/a").await.ok(StatusCode::OK)["parameters"]
            .get("port")
            .is_none()
    );
}

#[tokio::test]
async fn explain_shows_each_chain_what_won_and_what_it_overrode() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    let linux = json!(["=", ["fact", "kernel"], "Linux"]);
    app.group(json!({
        "name": "root", "classes": {"ntp": {"servers": ["a"]}},
        "parameters": {"port": "22", "tier": "base"}
    }))
    .await;
    app.group(
        json!({"name": "linux", "parent": "root", "rule": linux, "parameters": {"port": "2222"}}),
    )
    .await;
    app.group(json!({"name": "web", "parent": "linux", "classes": {"ntp": {"servers": ["b"]}}}))
        .await;
    app.group(json!({"name": "web_eu", "parent": "web", "pinned": ["n1"], "parameters": {"tier": "web-eu"}}))
        .await;
    app.group(json!({"name": "monitored", "rule": linux, "classes": {"mon": {}}}))
        .await;
    app.node("n1", None).await;
    let explained = app
        .post(
            "/nodes/n1/classification?explain=true",
            json!({"facts": {"kernel": "Linux"}}),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        explained["parameters"],
        json!({"port": "2222", "tier": "web-eu"})
    );
    let membership = &explained["membership"];
    assert_eq!(
        membership["groups"],
        json!([
            {"group": "linux", "why": ["rule", "ancestor"], "ancestor_of": ["web_eu"]},
            {"group": "monitored", "why": ["rule"]},
            {"group": "root", "why": ["ancestor"], "ancestor_of": ["linux", "web_eu"]},
            {"group": "web", "why": ["ancestor"], "ancestor_of": ["web_eu"]},
            {"group": "web_eu", "why": ["pinned"]},
        ])
    );
    assert_eq!(membership["leaves"], json!(["monitored", "web_eu"]));
    let chains = membership["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 2);
    assert_eq!(chains[0]["groups"], json!(["monitored"]));
    let web_eu = &chains[1];
    assert_eq!(web_eu["leaf"], "web_eu");
    assert_eq!(web_eu["groups"], json!(["root", "linux", "web", "web_eu"]));
    let value = |key: &str| {
        web_eu["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {web_eu}"))
            .clone()
    };
    let group = |name: &str| json!({"kind": "node_group", "name": name});
    // Why does this node get port 2222? linux gave it, over root's 22.
    assert_eq!(
        value("parameters.port"),
        json!({"key": "parameters.port", "value": "2222", "from": group("linux"),
               "overrode": [{"from": group("root"), "value": "22"}]})
    );
    assert_eq!(
        value("parameters.tier")["overrode"],
        json!([{"from": group("root"), "value": "base"}])
    );
    assert_eq!(
        value("classes.ntp.servers"),
        json!({"key": "classes.ntp.servers", "value": ["b"], "from": group("web"),
               "overrode": [{"from": group("root"), "value": ["a"]}]})
    );
    // The node's own value wins last, over the whole chain.
    app.put(
        "/nodes/n1",
        json!({"unique_name": "n1", "environment_name": "production", "puppet_cluster_name": "eu",
               "parameters": {"port": "2200"}}),
        None,
    )
    .await
    .ok(StatusCode::OK);
    let explained = app
        .get("/nodes/n1/classification?explain=true")
        .await
        .ok(StatusCode::OK);
    let chain = &explained["membership"]["chains"][1];
    let port = chain["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == "parameters.port")
        .unwrap();
    assert_eq!(port["from"], json!({"kind": "node", "name": "n1"}));
    assert_eq!(
        port["overrode"],
        json!([{"from": group("linux"), "value": "2222"}, {"from": group("root"), "value": "22"}])
    );
}

#[tokio::test]
async fn a_node_write_that_would_give_it_conflicting_values_is_refused_unless_forced() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.group(json!({"name": "a", "parameters": {"port": "1"}}))
        .await;
    app.group(json!({"name": "b", "parameters": {"port": "2"}, "pinned": ["n1", "n2"]}))
        .await;
    let node = |name: &str, group: &str| {
        json!({"unique_name": name, "node_group_name": group,
               "environment_name": "production", "puppet_cluster_name": "eu"})
    };
    let before = app.dump().await;
    let refused = app.post("/nodes/", node("n1", "a")).await;
    let problem = refused.problem(StatusCode::CONFLICT);
    assert!(
        problem["conflicts"].to_string().contains("port"),
        "{problem}"
    );
    assert_eq!(app.dump().await, before, "nothing stored");
    // Named in b, where it is pinned anyway: no conflict.
    app.post("/nodes/", node("n1", "b"))
        .await
        .ok(StatusCode::CREATED);
    app.put("/nodes/n1", node("n1", "a"), None)
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(
        app.get("/nodes/n1").await.ok(StatusCode::OK)["node_group_name"],
        "b"
    );
    // Its own value settles it.
    let mut settled = node("n1", "a");
    settled["parameters"] = json!({"port": "3"});
    app.put("/nodes/n1", settled, None).await.ok(StatusCode::OK);
    // Forced: stored, and its revision says what it broke.
    app.post("/nodes/?force=true", node("n2", "a"))
        .await
        .ok(StatusCode::CREATED);
    let history = app.get("/nodes/n2/history").await.ok(StatusCode::OK);
    assert!(
        history["items"][0]["forced_conflicts"].is_array(),
        "{history}"
    );
    app.get("/nodes/n2/classification")
        .await
        .problem(StatusCode::CONFLICT);
    // Named where it is pinned anyway: settled. Restoring the forced version is judged again.
    app.put("/nodes/n2", node("n2", "b"), None)
        .await
        .ok(StatusCode::OK);
    app.post("/nodes/n2/history/1/restore", json!({}))
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(
        app.get("/nodes/n2").await.ok(StatusCode::OK)["node_group_name"],
        "b"
    );
    app.post("/nodes/n2/history/1/restore?force=true", json!({}))
        .await
        .ok(StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_node_writes_judged_on_the_same_groups_all_land() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.group(json!({"name": "web", "parameters": {"port": "80"}}))
        .await;
    let creates: Vec<_> = (0..16)
        .map(|i| {
            let caller = app.as_caller(Some(crate::helpers::ADMIN));
            let body = json!({"unique_name": format!("c{i}"), "node_group_name": "web",
                              "environment_name": "production", "puppet_cluster_name": "eu"});
            tokio::spawn(async move { caller.post("/nodes/", body).await.status })
        })
        .collect();
    for create in creates {
        assert_eq!(create.await.unwrap(), StatusCode::CREATED);
    }
    assert_eq!(app.all("/nodes").await.len(), 16);
}
