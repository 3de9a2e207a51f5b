//! Fleet-wide work a page at a time: lookups and a group write's judgement read the nodes and
//! their facts page by page (never the whole fleet at once), and give the same answers as
//! for a fleet that fits in one page.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use enc::{App, Limits};
use serde_json::{Value, json};

use crate::binary::{Enc, EncData};
use crate::helpers::{TestApp, TestStore};

/// The nodes `n000`..: each a file of a tree, in group `base` (one class).
fn tree(nodes: usize) -> BTreeMap<String, String> {
    let mut files = BTreeMap::from([
        (
            "environments/eu/production.yaml".to_owned(),
            "environment_name: production\npuppet_cluster_name: eu\n".to_owned(),
        ),
        (
            "node_groups/base.yaml".to_owned(),
            "name: base\nclasses:\n  ntp: {}\n".to_owned(),
        ),
    ]);
    for n in 0..nodes {
        files.insert(
            format!("nodes/n{n:03}.yaml"),
            format!(
                "unique_name: n{n:03}\nnode_group_name: base\nenvironment_name: production\n\
                 puppet_cluster_name: eu\n"
            ),
        );
    }
    files
}

async fn import(app: &TestApp, files: BTreeMap<String, String>) {
    let body = json!({ "files": files });
    let plan = app
        .post("/import?dry_run=true", body.clone())
        .await
        .ok(StatusCode::OK);
    let tag = format!("\"{}\"", plan["plan_id"].as_str().unwrap());
    app.request(Method::POST, "/import", Some(&body), Some(&tag))
        .await
        .ok(StatusCode::OK);
}

/// Every item of a lookup, `limit` at a time.
async fn paged(app: &TestApp, path: &str, limit: usize) -> Vec<Value> {
    let (mut items, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let uri = match &cursor {
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
            None => format!("{path}?limit={limit}"),
        };
        let page = app.get(&uri).await.ok(StatusCode::OK);
        let found = page["items"].as_array().unwrap();
        assert!(found.len() <= limit);
        items.extend(found.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test]
async fn a_lookup_page_judges_a_bounded_number_of_nodes_and_says_where_the_next_starts() {
    // Pages judge at most 120 nodes here (5,000 by default): 301 nodes in `base`, then `zz`
    // alone in `rare`. The first pages of `rare` hold none, with the cursor where they
    // stopped; following the cursors finds `zz`.
    let backing = TestStore::new().await;
    let limits = Limits::new(Duration::from_secs(30), 256).with_lookup_judged(120);
    let state = App::new(backing.engine.clone())
        .with_limits(limits)
        .with_auth(crate::helpers::test_auth());
    let app = TestApp::with_state(state, backing);
    let mut files = tree(301);
    files.insert(
        "node_groups/rare.yaml".to_owned(),
        "name: rare\nclasses:\n  rare: {}\n".to_owned(),
    );
    files.insert(
        "nodes/zz.yaml".to_owned(),
        "unique_name: zz\nnode_group_name: rare\nenvironment_name: production\n\
         puppet_cluster_name: eu\n"
            .to_owned(),
    );
    import(&app, files).await;

    for path in ["/nodegroup/rare/nodes", "/classes/rare/nodes"] {
        let mut uri = path.to_owned();
        for stop in ["n119", "n239"] {
            let page = app.get(&uri).await.ok(StatusCode::OK);
            assert_eq!(page["items"], json!([]), "{path}");
            assert_eq!(page["next_cursor"], stop, "{path}: 120 more judged");
            uri = format!("{path}?cursor={stop}");
        }
        let last = app.get(&uri).await.ok(StatusCode::OK);
        let found = last["items"].as_array().unwrap();
        assert_eq!(found.len(), 1, "{path}: {last}");
        assert_eq!(found[0]["unique_name"], "zz");
        assert!(last["next_cursor"].is_null(), "{path}: the last page");
    }
    // A page that fills before the bound stops there, its cursor at its last node.
    let dense = app
        .get("/nodegroup/base/nodes?limit=100")
        .await
        .ok(StatusCode::OK);
    assert_eq!(dense["items"].as_array().unwrap().len(), 100);
    assert_eq!(dense["next_cursor"], "n099");
    // Following the cursors lists every member once, pages full or stopped at the bound.
    let every = paged(&app, "/classes/ntp/nodes", 1000).await;
    let names: Vec<&str> = every
        .iter()
        .map(|i| i["unique_name"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..301).map(|n| format!("n{n:03}")).collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn lookups_and_judgements_read_a_fleet_larger_than_a_page_right() {
    // 450 nodes (the fleet is read 200 at a time); every third sends facts with role web.
    let app = TestApp::new().await;
    import(&app, tree(450)).await;
    app.group(
        json!({"name": "web", "rule": ["=", ["fact", "role"], "web"],
                     "classes": {"nginx": {}}, "parameters": {"port": "1"}}),
    )
    .await;
    let web: Vec<String> = (0..450).step_by(3).map(|n| format!("n{n:03}")).collect();
    for n in 0..450 {
        let role = if n % 3 == 0 { "web" } else { "db" };
        app.post(
            &format!("/nodes/n{n:03}/classification"),
            json!({"facts": {"role": role}}),
        )
        .await
        .ok(StatusCode::OK);
    }
    // Facts of a certname that is no node any more are passed by.
    app.node("n2000", Some("base")).await;
    app.post(
        "/nodes/n2000/classification",
        json!({"facts": {"role": "web"}}),
    )
    .await
    .ok(StatusCode::OK);
    app.delete("/nodes/n2000", None)
        .await
        .ok(StatusCode::NO_CONTENT);

    let names = |items: &[Value]| -> Vec<String> {
        let names = items.iter().map(|i| i["unique_name"].as_str().unwrap());
        names.map(str::to_owned).collect()
    };
    let members = paged(&app, "/nodegroup/web/nodes", 40).await;
    assert_eq!(names(&members), web);
    assert!(members.iter().all(|m| m["why"] == json!(["rule"])));
    assert_eq!(names(&paged(&app, "/classes/nginx/nodes", 70).await), web);
    assert_eq!(paged(&app, "/classes/ntp/nodes", 1000).await.len(), 450);

    // A preview lists the first 100 nodes it changes and counts the rest.
    let body = json!({"name": "web", "rule": ["=", ["fact", "role"], "web"],
                      "classes": {"nginx": {"workers": 2}}, "parameters": {"port": "1"}});
    let preview = app
        .put("/nodegroup/web?dry_run=true", body, None)
        .await
        .ok(StatusCode::OK);
    assert_eq!(preview["examined"], 150, "{}", preview["examined"]);
    assert_eq!(preview["affected"], 150);
    assert_eq!(preview["nodes"].as_array().unwrap().len(), 100);
    assert_eq!(preview["more"], 50);
    assert_eq!(preview["nodes"][0]["unique_name"], "n000");

    // A write that would break them all: the first 100 listed, all counted.
    let conflicting = json!({"name": "clash", "rule": ["=", ["fact", "role"], "web"],
                             "parameters": {"port": "2"}});
    let preview = app
        .post("/nodegroup/?dry_run=true", conflicting.clone())
        .await
        .ok(StatusCode::OK);
    assert_eq!(
        preview["failed"].as_array().unwrap().len(),
        100,
        "{preview}"
    );
    assert_eq!(preview["failed_more"], 50);
    let before = app.dump().await;
    let refused = app.post("/nodegroup/", conflicting).await;
    let problem = refused.problem(StatusCode::CONFLICT);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("would give 150 node(s)"), "{detail}");
    assert_eq!(problem["conflicts"].as_array().unwrap().len(), 100);
    assert_eq!(app.dump().await, before, "nothing stored");
}

/// The peak resident memory of process `pid` since it was last reset, and now, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn fleet_wide_work_holds_a_page_of_facts_not_the_fleets() {
    if crate::helpers::dynamodb_under_test() {
        crate::helpers::skipped(
            "the process's memory is measured in the embedded pass of scripts/test",
        );
        return;
    }
    // 2,000 nodes with 32 KiB of facts each: 64 MiB of facts as JSON, several times that as
    // values in memory. Lookups, judgements and plans must stay far below.
    let data = EncData::new();
    let enc = Enc::start_with(&data, 1, &[("ENC_MAX_FLEET_WORK", "1")], false);
    let files = tree(2000);
    let body = json!({ "files": files }).to_string();
    let (status, plan) = enc.http("POST", "/import?dry_run=true", Some(&body));
    assert_eq!(status, 200, "{plan}");
    let plan: Value = serde_json::from_str(&plan).unwrap();
    let id = plan["plan_id"].as_str().unwrap();
    let request = format!(
        "POST /import HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         If-Match: \"{id}\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        crate::helpers::ADMIN,
        body.len()
    );
    let (status, answer) = enc.send_raw(&request);
    assert_eq!(status, 200, "{answer}");
    let padding = "x".repeat(1000);
    for n in 0..2000 {
        let custom: serde_json::Map<String, Value> = (0..32)
            .map(|i| (format!("custom_{i}"), json!(format!("{n}{padding}"))))
            .collect();
        let role = if n % 10 == 0 { "web" } else { "db" };
        let facts = json!({"facts": {"role": role, "custom": custom}}).to_string();
        let (status, answer) = enc.http(
            "POST",
            &format!("/nodes/n{n:03}/classification"),
            Some(&facts),
        );
        assert_eq!(status, 200, "{answer}");
    }
    let rule =
        r#"{"name": "web", "rule": ["=", ["fact", "role"], "web"], "classes": {"nginx": {}}}"#;
    let (status, answer) = enc.http("POST", "/nodegroup/", Some(rule));
    assert_eq!(status, 201, "{answer}");

    let pid = enc.child.id();
    // Peak memory from here: writing 5 to clear_refs resets it (Linux).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let (_, before) = memory(pid);
    let changed: &'static str = r#"{"name": "web", "rule": ["=", ["fact", "role"], "web"], "classes": {"nginx": {"workers": 2}}}"#;
    for _ in 0..2 {
        let (status, answer) = enc.http("PUT", "/nodegroup/web?dry_run=true", Some(changed));
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains(r#""affected":200"#), "{answer}");
        let (status, answer) = enc.http("GET", "/nodegroup/web/nodes?limit=1000", None);
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = enc.http("GET", "/classes/ntp/nodes?limit=1000", None);
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = enc.http("PUT", "/nodegroup/web", Some(changed));
    assert_eq!(status, 200, "{answer}");
    // A plan judges every node of the tree on its facts.
    let (status, answer) = enc.http("POST", "/import?dry_run=true", Some(&body));
    assert_eq!(status, 200, "{answer}");
    let (peak, _) = memory(pid);
    let grown = peak.saturating_sub(before) / 1024;
    assert!(
        grown < 64,
        "fleet-wide work grew the process by {grown} MiB (from {} MiB)",
        before / 1024
    );

    // One at a time (ENC_MAX_FLEET_WORK=1): the others are answered 503 at once, not queued.
    let enc = std::sync::Arc::new(enc);
    let previews: Vec<_> = (0..4)
        .map(|_| {
            let enc = enc.clone();
            std::thread::spawn(move || {
                enc.http("PUT", "/nodegroup/web?dry_run=true", Some(changed))
            })
        })
        .collect();
    let answers: Vec<(u16, String)> = previews.into_iter().map(|p| p.join().unwrap()).collect();
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert!(statuses.contains(&200), "{answers:?}");
    let busy: Vec<&String> = answers
        .iter()
        .filter(|(status, _)| *status == 503)
        .map(|(_, body)| body)
        .collect();
    assert!(!busy.is_empty(), "{statuses:?}");
    assert!(
        busy.iter().all(|b| b.contains("fleet-wide work")),
        "{busy:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
}
