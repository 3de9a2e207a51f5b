//! Rule views: of each node's facts, only what rules read. An agent run whose view did not
//! change writes nothing; when rules come to read a new path, every view is taken again from
//! the stored facts, within the write for a small fleet and in the background (resumable
//! across a restart) for a large one, with answers saying they are provisional until then.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::binary::{Enc, EncData};
use crate::helpers::{TestApp, TestStore, test_auth};

/// The sum of the store calls of one operation (`get`, `commit`, ...) so far.
async fn store_calls(app: &TestApp, operation: &str) -> f64 {
    let metrics = TestApp::text(&app.get("/metrics").await);
    let wanted = format!(r#"operation="{operation}""#);
    metrics
        .lines()
        .filter(|l| l.starts_with("store_operation_duration_seconds_count{") && l.contains(&wanted))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn classify(app: &TestApp, name: &str, facts: Value) -> Value {
    app.post(
        &format!("/nodes/{name}/classification"),
        json!({ "facts": facts }),
    )
    .await
    .ok(StatusCode::OK)
}

/// An app whose requests read the whole facts of at most `inline` nodes whose views do not
/// serve.
async fn app_with_inline(inline: usize) -> TestApp {
    let backing = TestStore::new().await;
    let state = enc::App::new(backing.engine.clone())
        .with_auth(test_auth())
        .with_views(inline, chrono::Duration::hours(1), Duration::ZERO);
    TestApp::with_state(state, backing)
}

async fn debian_group(app: &TestApp) {
    app.env("production", "eu").await;
    app.group(json!({"name": "debian", "environment_name": "production",
        "puppet_cluster_name": "eu", "rule": ["=", ["fact", "os", "family"], "Debian"],
        "classes": {"apt": {}}}))
        .await;
}

#[tokio::test]
async fn an_agent_run_whose_rule_view_did_not_change_writes_nothing() {
    let admin = TestApp::new().await;
    debian_group(&admin).await;
    // A Puppet server's stored token: checked in the same store call as the node.
    let puppet = admin.token("puppet", &["classify"]).await;
    let app = admin.as_caller(Some(&puppet));
    let facts = |uptime: u64, family: &str| {
        json!({"os": {"family": family, "release": "12"}, "uptime_seconds": uptime,
               "memory": {"free": format!("{uptime} MiB")}})
    };
    // Learnt from its facts: the view and the whole facts are kept.
    classify(&app, "web1", facts(10, "Debian")).await;
    let kept = admin.get("/nodes/web1/facts").await.ok(StatusCode::OK);
    assert_eq!(kept["facts"]["uptime_seconds"], 10);
    assert_eq!(kept["posted_by"], "puppet");

    let calls = |operation: &'static str| store_calls(&admin, operation);
    let (commits, gets) = (calls("commit").await, calls("get").await);
    for uptime in [20, 30, 40] {
        let answer = classify(&app, "web1", facts(uptime, "Debian")).await;
        assert!(answer["classes"].get("apt").is_some(), "{answer}");
    }
    assert_eq!(
        calls("commit").await,
        commits,
        "agent runs whose rule view did not change wrote"
    );
    // Each: one read of the node, the groups' generation, the view and the token (the
    // metrics scrape reads nothing).
    assert_eq!(calls("get").await - gets, 3.0);
    // What rules read changed: kept at once, whole facts with it.
    classify(&app, "web1", facts(50, "RedHat")).await;
    assert_eq!(calls("commit").await, commits + 1.0);
    let kept = admin.get("/nodes/web1/facts").await.ok(StatusCode::OK);
    assert_eq!(kept["facts"]["uptime_seconds"], 50);
    assert_eq!(kept["facts"]["os"]["family"], "RedHat");
    let now = admin
        .get("/nodes/web1/classification")
        .await
        .ok(StatusCode::OK);
    assert!(now["classes"].get("apt").is_none(), "{now}");
}

#[tokio::test]
async fn whole_facts_are_stored_again_once_they_are_older_than_the_refresh() {
    let backing = TestStore::new().await;
    let state = enc::App::new(backing.engine.clone())
        .with_auth(test_auth())
        .with_views(1000, chrono::Duration::zero(), Duration::ZERO);
    let app = TestApp::with_state(state, backing);
    debian_group(&app).await;
    classify(
        &app,
        "web1",
        json!({"os": {"family": "Debian"}, "uptime": 1}),
    )
    .await;
    classify(
        &app,
        "web1",
        json!({"os": {"family": "Debian"}, "uptime": 2}),
    )
    .await;
    let kept = app.get("/nodes/web1/facts").await.ok(StatusCode::OK);
    assert_eq!(kept["facts"]["uptime"], 2);
    // What rules see did not change: one version of the view is kept for time travel.
    let versions = app
        .backing
        .engine
        .scan(&enc::store::enc::VIEW_PAST, None)
        .await
        .unwrap();
    assert_eq!(versions.records.len(), 1);
}

/// Nodes `n000`.. in the production environment, each classified with its facts: `os` as
/// given and `datacenter` dc1 for even ones.
async fn fleet(app: &TestApp, nodes: usize) {
    debian_group(app).await;
    for n in 0..nodes {
        let dc = if n % 2 == 0 { "dc1" } else { "dc2" };
        let facts = json!({"os": {"family": "Debian"}, "datacenter": dc, "uptime": n});
        classify(app, &format!("n{n:03}"), facts).await;
    }
}

/// Every member of a group, and whether some page said it was provisional.
async fn members(app: &TestApp, group: &str) -> (Vec<String>, bool) {
    let page = app
        .get(&format!("/nodegroup/{group}/nodes?limit=1000"))
        .await;
    let provisional = page.header("enc-provisional").is_some();
    let body = page.ok(StatusCode::OK);
    let names = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["unique_name"].as_str().unwrap().to_owned())
        .collect();
    (names, provisional)
}

fn even(nodes: usize) -> Vec<String> {
    (0..nodes).step_by(2).map(|n| format!("n{n:03}")).collect()
}

const DC1: &str = r#"{"name": "dc1", "parent": "debian", "rule": ["=", ["fact", "datacenter"], "dc1"], "classes": {"dc": {}}}"#;

#[tokio::test]
async fn a_rule_on_a_new_path_takes_views_again_within_the_write_for_a_small_fleet() {
    let app = TestApp::new().await;
    fleet(&app, 30).await;
    let status = app.get("/rule-views").await.ok(StatusCode::OK);
    assert_eq!(status["paths"], json!(["facts.os.family"]));

    let group: Value = serde_json::from_str(DC1).unwrap();
    let preview = app
        .post("/nodegroup/?dry_run=true", group.clone())
        .await
        .ok(StatusCode::OK);
    // Judged on the stored facts where views lack the new path: exact.
    assert_eq!(preview["affected"], 15, "{preview}");
    assert!(preview.get("provisional").is_none(), "{preview}");
    app.post("/nodegroup/", group).await.ok(StatusCode::CREATED);

    // Done by the time the write answered.
    let status = app.get("/rule-views").await.ok(StatusCode::OK);
    assert_eq!(status["current"], true, "{status}");
    assert_eq!(
        status["paths"],
        json!(["facts.datacenter", "facts.os.family"])
    );
    assert_eq!(status["taking"]["rewritten"], 30, "{status}");
    let (found, provisional) = members(&app, "dc1").await;
    assert_eq!(found, even(30));
    assert!(!provisional);
    let web = app
        .get("/nodes/n000/classification")
        .await
        .ok(StatusCode::OK);
    assert!(web["classes"].get("dc").is_some(), "{web}");
}

#[tokio::test]
async fn a_rule_on_a_new_path_over_a_large_fleet_is_provisional_until_views_are_taken() {
    // Requests read the whole facts of at most 5 nodes: 40 nodes are a large fleet here.
    let app = app_with_inline(5).await;
    fleet(&app, 40).await;
    let group: Value = serde_json::from_str(DC1).unwrap();
    let preview = app
        .post("/nodegroup/?dry_run=true", group.clone())
        .await
        .ok(StatusCode::OK);
    assert_eq!(preview["provisional"], true, "{preview}");
    app.post("/nodegroup/", group).await.ok(StatusCode::CREATED);

    // The background takes the rest; until then answers may be provisional.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = app.get("/rule-views").await.ok(StatusCode::OK);
        if status["current"] == true {
            assert_eq!(status["taking"]["scanned"], 40, "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "views not taken: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (found, provisional) = members(&app, "dc1").await;
    assert_eq!(found, even(40));
    assert!(!provisional, "views are all taken");
    let preview = app
        .put(
            "/nodegroup/dc1?dry_run=true",
            serde_json::from_str(DC1).unwrap(),
            None,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(preview["examined"], 20, "{preview}");
    assert!(preview.get("provisional").is_none(), "{preview}");
}

#[test]
fn taking_views_goes_on_where_it_was_after_a_restart() {
    if crate::helpers::dynamodb_under_test() {
        crate::helpers::skipped(
            "the restart runs on the embedded store in its pass of scripts/test",
        );
        return;
    }
    let data = EncData::new();
    // Slow background pages, none taken within a write: the taking is caught mid-way.
    let slow = [("ENC_VIEWS_INLINE", "0"), ("ENC_VIEWS_PACE_MS", "400")];
    let enc = Enc::start_with(&data, 1, &slow, false);
    let ok = |(status, body): (u16, String)| {
        assert!((200..300).contains(&status), "{status}: {body}");
        serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)
    };
    ok(enc.http(
        "POST",
        "/environment/",
        Some(r#"{"environment_name": "production", "puppet_cluster_name": "eu"}"#),
    ));
    let debian = r#"{"name": "debian", "environment_name": "production", "puppet_cluster_name": "eu", "rule": ["=", ["fact", "os", "family"], "Debian"]}"#;
    ok(enc.http("POST", "/nodegroup/", Some(debian)));
    // Facts of 20 KiB: the store's scan reads about 50 nodes' facts a page.
    let padding = "x".repeat(20 * 1024);
    for n in 0..300 {
        let dc = if n % 2 == 0 { "dc1" } else { "dc2" };
        let facts =
            json!({"facts": {"os": {"family": "Debian"}, "datacenter": dc, "padding": padding}});
        ok(enc.http(
            "POST",
            &format!("/nodes/n{n:03}/classification"),
            Some(&facts.to_string()),
        ));
    }
    let status = |enc: &Enc| ok(enc.http("GET", "/rule-views", None));
    let settled = Instant::now() + Duration::from_secs(30);
    while status(&enc)["current"] != true {
        assert!(Instant::now() < settled, "the first views were not taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(enc.http("POST", "/nodegroup/", Some(DC1)));
    let deadline = Instant::now() + Duration::from_secs(30);
    let started = loop {
        let now = status(&enc);
        if now["taking"]["scanned"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(now["current"], false, "{now}");
            break now["taking"]["started_at"].clone();
        }
        assert!(Instant::now() < deadline, "the taking did not begin: {now}");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(enc); // killed mid-way

    let enc = Enc::start_with(&data, 1, &[("ENC_VIEWS_PACE_MS", "10")], false);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let now = status(&enc);
        if now["current"] == true {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the taking did not finish: {now}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        done["taking"]["started_at"], started,
        "it began again: {done}"
    );
    assert_eq!(done["taking"]["scanned"], 300, "{done}");
    let members = ok(enc.http("GET", "/nodegroup/dc1/nodes?limit=1000", None));
    assert_eq!(members["items"].as_array().unwrap().len(), 150, "{members}");
}

#[tokio::test]
async fn create_tables_deletes_the_facts_index_of_earlier_versions() {
    if !crate::helpers::dynamodb_under_test() {
        crate::helpers::skipped(
            "DynamoDB tables are migrated in the DynamoDB Local pass of scripts/test",
        );
        return;
    }
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType,
    };
    use enc::store::dynamodb::DynamoDb;
    use enc::store::dynamodb::tables::create_tables;

    let prefix = crate::helpers::unique_prefix();
    let settings = crate::helpers::dynamodb_settings(
        &crate::helpers::dynamodb_endpoint(),
        &prefix,
        crate::helpers::SETUP_TIMEOUT,
    );
    let db = DynamoDb::connect(&settings).await;
    let client = db.client();
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    // The facts table as enc made it before rule views: ordered by certname in one partition.
    let facts = format!("{prefix}facts");
    client
        .create_table()
        .table_name(&facts)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("unique_name", KeyType::Hash))
        .attribute_definitions(attribute("unique_name"))
        .attribute_definitions(attribute("item_type"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("ordered")
                .key_schema(key("item_type", KeyType::Hash))
                .key_schema(key("unique_name", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("the earlier facts table");

    create_tables(client, &prefix).await.expect("create tables");
    let described = client
        .describe_table()
        .table_name(&facts)
        .send()
        .await
        .unwrap();
    let indexes = described.table().unwrap().global_secondary_indexes();
    // Gone, or going (DynamoDB Local may show it `DELETING` for a while).
    assert!(
        indexes
            .iter()
            .all(|i| i.index_status() == Some(&aws_sdk_dynamodb::types::IndexStatus::Deleting)),
        "left: {indexes:?}"
    );
    let views = client
        .describe_table()
        .table_name(format!("{prefix}views"))
        .send()
        .await
        .unwrap();
    assert!(views.table().unwrap().global_secondary_indexes().is_empty());
    // Run again, it has nothing left to do.
    create_tables(client, &prefix)
        .await
        .expect("create tables again");
}

#[tokio::test]
async fn facts_kept_before_views_existed_still_judge_and_are_viewed() {
    use enc::store::engine::{Expect, Key, Op, Write};
    let earlier = TestApp::new().await;
    debian_group(&earlier).await;
    earlier.node("old1", None).await;
    // Facts as an enc before rule views kept them: no view beside them, and no record of
    // views ever taken.
    let facts = json!({"unique_name": "old1", "facts": {"os": {"family": "Debian"}},
        "trusted": {}, "received_at": "2026-01-01T00:00:00Z", "with_trusted": false});
    let put = Write::new(
        &enc::store::enc::FACTS,
        Key::one("old1"),
        Op::Put {
            body: facts.as_object().unwrap().clone(),
            refs: 0,
        },
        Expect::Anything,
    );
    let forget = Write::new(
        &enc::store::enc::VIEWS_TAKEN,
        Key::one("/views"),
        Op::Delete,
        Expect::Anything,
    );
    let engine = earlier.backing.engine.clone();
    engine.commit(&[put, forget]).await.unwrap();
    // This enc starts on that store.
    let state = enc::App::new(engine.clone()).with_auth(test_auth());
    let app = TestApp::with_state(state, TestStore::over(engine, tempfile::tempdir().unwrap()));

    let classified = app
        .get("/nodes/old1/classification")
        .await
        .ok(StatusCode::OK);
    assert!(classified["classes"].get("apt").is_some(), "{classified}");
    let (found, provisional) = members(&app, "debian").await;
    assert_eq!(found, ["old1"]);
    assert!(!provisional);

    // The next group write takes every view (the store had none).
    app.group(json!({"name": "other", "rule": ["=", ["fact", "kernel"], "Linux"]}))
        .await;
    let status = app.get("/rule-views").await.ok(StatusCode::OK);
    assert_eq!(status["current"], true, "{status}");
    assert_eq!(status["taking"]["rewritten"], 1, "{status}");
    let (found, _) = members(&app, "debian").await;
    assert_eq!(found, ["old1"]);
}

/// The instant now, after the last change and before the next (times are kept to the ms).
async fn instant() -> String {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(5)).await;
    now
}

#[tokio::test]
async fn time_travel_replays_rule_and_pin_membership() {
    let app = TestApp::new().await;
    debian_group(&app).await;
    app.group(json!({"name": "pinned", "classes": {"pinclass": {}}}))
        .await;
    let family = |f: &str| json!({"os": {"family": f}});
    classify(&app, "n1", family("Debian")).await;
    let debian_facts = instant().await;
    classify(&app, "n1", family("RedHat")).await;
    let redhat_facts = instant().await;
    let rule = json!({"name": "debian", "environment_name": "production",
        "puppet_cluster_name": "eu", "rule": ["=", ["fact", "os", "family"], "RedHat"],
        "classes": {"apt": {}}});
    app.put("/nodegroup/debian", rule, None)
        .await
        .ok(StatusCode::OK);
    let redhat_rule = instant().await;
    app.post("/nodegroup/pinned/pin", json!({"nodes": ["n1"]}))
        .await
        .ok(StatusCode::OK);
    let pinned = instant().await;
    app.post("/nodegroup/pinned/unpin", json!({"nodes": ["n1"]}))
        .await
        .ok(StatusCode::OK);
    let unpinned = instant().await;
    // Facts that change nothing rules read leave the view (and its history) as it was.
    classify(&app, "n1", json!({"os": {"family": "RedHat"}, "uptime": 5})).await;

    let classes = |answer: Value| -> Vec<String> {
        let mut names: Vec<String> = answer["classes"]
            .as_object()
            .unwrap_or_else(|| panic!("{answer}"))
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    let at = |t: &str| format!("/nodes/n1/classification?at={t}");
    let then = |t: String| {
        let app = &app;
        async move { classes(app.get(&at(&t)).await.ok(StatusCode::OK)) }
    };
    assert_eq!(
        then(debian_facts.clone()).await,
        ["apt"],
        "Debian facts, Debian rule"
    );
    assert!(
        then(redhat_facts.clone()).await.is_empty(),
        "RedHat facts, Debian rule"
    );
    assert_eq!(
        then(redhat_rule).await,
        ["apt"],
        "RedHat facts, RedHat rule"
    );
    assert_eq!(then(pinned).await, ["apt", "pinclass"], "pinned");
    assert_eq!(then(unpinned.clone()).await, ["apt"], "unpinned");
    let now = app.get("/nodes/n1/classification").await.ok(StatusCode::OK);
    assert_eq!(classes(now), ["apt"]);

    let diff = app
        .get(&format!(
            "/nodes/n1/classification/diff?from={debian_facts}&to={redhat_facts}"
        ))
        .await
        .ok(StatusCode::OK);
    assert_eq!(diff["diff"]["classes_removed"], json!(["apt"]), "{diff}");
    let diff = app
        .get(&format!(
            "/nodes/n1/classification/diff?from={debian_facts}&to={unpinned}"
        ))
        .await
        .ok(StatusCode::OK);
    assert_eq!(diff["diff"]["classes_removed"], json!([]), "{diff}");
}

/// The bytes of records the store's reads returned so far.
async fn read_bytes(app: &TestApp) -> f64 {
    let metrics = TestApp::text(&app.get("/metrics").await);
    metrics
        .lines()
        .filter(|l| l.starts_with("store_read_bytes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_judgement_reads_views_not_the_facts() {
    let app = TestApp::new().await;
    debian_group(&app).await;
    let padding = "x".repeat(20 * 1024);
    for n in 0..40 {
        let facts = json!({"os": {"family": "Debian"}, "padding": padding, "n": n});
        classify(&app, &format!("n{n:03}"), facts).await;
    }
    let before = read_bytes(&app).await;
    let preview = app
        .put(
            "/nodegroup/debian?dry_run=true",
            json!({"environment_name": "production", "puppet_cluster_name": "eu",
                   "rule": ["=", ["fact", "os", "family"], "Debian"], "classes": {"apt": {"v": 2}}}),
            None,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(preview["examined"], 40, "{preview}");
    let read = read_bytes(&app).await - before;
    // Each node's record and its view: far from its 20 KiB of facts.
    assert!(read < 40.0 * 1024.0, "the judgement read {read} bytes");
    assert!(
        read > 40.0 * 100.0,
        "the judgement read {read} bytes: are reads counted?"
    );
}

#[tokio::test]
async fn time_travel_into_a_gap_in_the_views_versions_says_so() {
    use enc::store::engine::{Expect, Key, Op, Write};
    let app = TestApp::new().await;
    debian_group(&app).await;
    let mut instants = Vec::new();
    for family in ["Debian", "RedHat", "Debian", "RedHat"] {
        classify(&app, "n1", json!({"os": {"family": family}})).await;
        instants.push(instant().await);
    }
    let at = |t: &str| format!("/nodes/n1/classification?at={t}");
    app.get(&at(&instants[1])).await.ok(StatusCode::OK);
    // The second version goes (as DynamoDB's TTL may take any): its time is not guessed.
    let gone = Write::new(
        &enc::store::enc::VIEW_PAST,
        Key::two("view/n1", format!("{:020}", 2)),
        Op::Delete,
        Expect::Present,
    );
    app.backing.engine.commit(&[gone]).await.unwrap();
    let problem = app
        .get(&at(&instants[1]))
        .await
        .problem(StatusCode::NOT_FOUND);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no longer in the history"),
        "{problem}"
    );
    // Before it too: when the gone version began is not known.
    app.get(&at(&instants[0]))
        .await
        .problem(StatusCode::NOT_FOUND);
    // After it, the versions kept still answer.
    let third = app.get(&at(&instants[2])).await.ok(StatusCode::OK);
    assert!(third["classes"].get("apt").is_some(), "{third}");
    let fourth = app.get(&at(&instants[3])).await.ok(StatusCode::OK);
    assert!(fourth["classes"].get("apt").is_none(), "{fourth}");
}

#[tokio::test]
async fn nodes_alike_but_for_their_certname_are_judged_apart_where_it_decides() {
    let app = TestApp::new().await;
    debian_group(&app).await;
    for name in ["a1", "a2", "a3"] {
        classify(&app, name, json!({"os": {"family": "Debian"}})).await;
    }
    app.group(json!({"name": "first", "parent": "debian",
        "rule": ["=", "name", "a1"], "classes": {"one": {}}}))
        .await;
    app.group(
        json!({"name": "pinned", "parent": "debian", "pinned": ["a2"],
        "classes": {"two": {}}}),
    )
    .await;
    let names = |preview: &Value| -> Vec<String> {
        preview["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["unique_name"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = app
        .put(
            "/nodegroup/first?dry_run=true",
            json!({"parent": "debian", "rule": ["=", "name", "a1"], "classes": {"one": {"v": 1}}}),
            None,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(names(&first), ["a1"], "{first}");
    let pinned = app
        .put(
            "/nodegroup/pinned?dry_run=true",
            json!({"parent": "debian", "pinned": ["a2"], "classes": {"two": {"v": 1}}}),
            None,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(names(&pinned), ["a2"], "{pinned}");
    // Alike, all three change with their common group.
    let all = app
        .put(
            "/nodegroup/debian?dry_run=true",
            json!({"environment_name": "production", "puppet_cluster_name": "eu",
                   "rule": ["=", ["fact", "os", "family"], "Debian"], "classes": {"apt": {"v": 1}}}),
            None,
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(names(&all), ["a1", "a2", "a3"], "{all}");
    assert_eq!(all["affected"], 3);
}
