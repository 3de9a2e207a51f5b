//! Classification as code through the binary: `enc export`, `enc plan`, `enc apply` against
//! a running enc; an apply killed mid-way on DynamoDB Local and resumed; `enc migrate` from
//! the earlier ENC's tables on DynamoDB Local.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::binary::{BIN, Enc, EncData};
use axum::http::{Method, StatusCode};

use crate::helpers::{ADMIN, TestApp, TestStore, dynamodb_endpoint, dynamodb_under_test};

/// `enc <args>` as a client of `enc` (its URL, a token file with the admin secret).
fn client(enc: &Enc, dir: &Path, args: &[&str]) -> Output {
    let token = dir.join("token");
    std::fs::write(&token, ADMIN).unwrap();
    Command::new(BIN)
        .env_clear()
        .env("ENC_URL", enc.url())
        .env("ENC_TOKEN_FILE", &token)
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .unwrap()
}

/// The id in the last line `enc plan` printed, `plan <id>`.
fn plan_id(printed: &str) -> String {
    let last = printed.lines().last().unwrap_or_default();
    last.strip_prefix("plan ").expect(printed).to_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(enc: &Enc, method: &str, path: &str, body: Value) -> Value {
    let (status, answer) = enc.http(method, path, Some(&body.to_string()));
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    serde_json::from_str(&answer).unwrap()
}

/// The plan enc makes of `body`, a `POST /import` body.
fn dry_run(enc: &Enc, body: &str) -> Value {
    let (status, answer) = enc.http("POST", "/import?dry_run=true", Some(body));
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str(&answer).unwrap()
}

/// The `.yaml` files of a tree by path.
fn files(dir: &Path) -> BTreeMap<String, String> {
    enc::cli::as_code::read_tree(dir).unwrap()
}

#[test]
fn export_plan_and_apply_work_from_the_command_line() {
    let data = EncData::new();
    let enc = Enc::start(&data, 1);
    ok(
        &enc,
        "POST",
        "/environment",
        json!({"environment_name": "production", "puppet_cluster_name": "eu"}),
    );
    ok(
        &enc,
        "POST",
        "/nodegroup",
        json!({"name": "web", "classes": {"nginx": {"workers": 4}}}),
    );
    for node in ["web01", "web02"] {
        let body = json!({"unique_name": node, "node_group_name": "web",
            "environment_name": "production", "puppet_cluster_name": "eu"});
        ok(&enc, "POST", "/nodes", body);
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let tree_arg = tree.to_str().unwrap();

    let out = client(&enc, work.path(), &["export", "--dir", tree_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = files(&tree);
    let names: Vec<&str> = exported.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "environments/eu/production.yaml",
            "node_groups/web.yaml",
            "nodes/web01.yaml",
            "nodes/web02.yaml"
        ]
    );

    // Nothing changed yet, but the objects are not managed by the tree: exit 0, adoptions.
    let out = client(&enc, work.path(), &["plan", "--dir", tree_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("= adopt node web01"), "{printed}");
    let id = plan_id(&printed);

    // A one-line change: exit 2, the change and its impact printed, then applied.
    let web = tree.join("node_groups/web.yaml");
    let changed = std::fs::read_to_string(&web)
        .unwrap()
        .replace("workers: 4", "workers: 8");
    std::fs::write(&web, changed).unwrap();
    let out = client(
        &enc,
        work.path(),
        &["plan", "--dir", tree_arg, "--source-revision", "c0ffee"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("~ replace node_group web (node_groups/web.yaml)"),
        "{printed}"
    );
    assert!(
        printed.contains("replace /classes/nginx/workers 8"),
        "{printed}"
    );
    assert!(
        printed.contains("nodes: 2 of 2 would get another classification"),
        "{printed}"
    );
    let new_id = plan_id(&printed);
    assert_ne!(new_id, id);

    // The old plan id is refused; the new one applies.
    let apply = |id: &str| {
        let args = [
            "apply",
            "--dir",
            tree_arg,
            "--plan",
            id,
            "--source-revision",
            "c0ffee",
        ];
        client(&enc, work.path(), &args)
    };
    let out = apply(&id);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("412"), "{}", text(&out.stderr));
    let out = apply(&new_id);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("replace node_group web (version 2)"),
        "{}",
        text(&out.stdout)
    );
    let (status, node) = enc.http("GET", "/nodes/web01/classification", None);
    assert_eq!(status, 200);
    assert!(node.contains(r#""workers":8"#), "{node}");
    let (_, group) = enc.http("GET", "/nodegroup/web", None);
    let group: Value = serde_json::from_str(&group).unwrap();
    assert_eq!(group["managed_by"], "git");
    assert_eq!(group["source_revision"], "c0ffee");

    let out = client(
        &enc,
        work.path(),
        &["plan", "--dir", tree_arg, "--source-revision", "c0ffee"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // An object deleted (forced past its owner) disappears from the next export on disk.
    let (status, answer) = enc.http("DELETE", "/nodes/web02?force=true", None);
    assert_eq!(status, 204, "{answer}");
    let out = client(&enc, work.path(), &["export", "--dir", tree_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!tree.join("nodes/web02.yaml").exists());
    assert_eq!(files(&tree).len(), 3);

    // A bad tree: the error names the file, exit 1.
    std::fs::write(tree.join("nodes/web01.yaml"), "unique_name: [\n").unwrap();
    let out = client(&enc, work.path(), &["plan", "--dir", tree_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nodes/web01.yaml"),
        "{}",
        text(&out.stderr)
    );
}

/// A tree of a chain of five groups and `nodes` nodes under its deepest group.
fn large_tree(nodes: usize) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    files.insert(
        "environments/eu/production.yaml".to_owned(),
        "environment_name: production\npuppet_cluster_name: eu\n".to_owned(),
    );
    for level in 0..5 {
        let parent = match level {
            0 => String::new(),
            n => format!("parent: g{}\n", n - 1),
        };
        files.insert(
            format!("node_groups/g{level}.yaml"),
            format!("name: g{level}\n{parent}classes:\n  c{level}: {{}}\nparameters: {{}}\n"),
        );
    }
    for n in 0..nodes {
        files.insert(
            format!("nodes/n{n:04}.example.com.yaml"),
            format!(
                "unique_name: n{n:04}.example.com\nnode_group_name: g4\nenvironment_name: \
                 production\npuppet_cluster_name: eu\n"
            ),
        );
    }
    files
}

/// Every item of a listing through enc's API.
fn listed(enc: &Enc, collection: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut uri = format!("{collection}?limit=1000");
    loop {
        let (status, body) = enc.http("GET", &uri, None);
        assert_eq!(status, 200, "{uri}: {body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("{collection}?limit=1000&cursor={cursor}"),
            None => return items,
        }
    }
}

#[test]
fn an_apply_killed_mid_way_on_dynamodb_resumes_to_the_plan() {
    if !dynamodb_under_test() {
        crate::helpers::skipped(
            "a batched apply is interrupted in the DynamoDB pass of scripts/test",
        );
        return;
    }
    let data = EncData::new();
    let mut enc = Enc::start(&data, 1);
    let tree = large_tree(1000);
    let body = json!({"files": tree, "source_revision": "r1"}).to_string();
    let plan = dry_run(&enc, &body);
    assert_eq!(plan["summary"]["create"], 1006);
    let id = plan["plan_id"].as_str().unwrap().to_owned();

    // The apply in flight; enc killed (SIGKILL) as soon as some nodes are stored.
    let apply = apply_in_background(&enc, &id, &body);
    wait_for_a_node(&enc);
    enc.child.kill().unwrap();
    enc.wait(Duration::from_secs(10));
    let answer = apply.join().unwrap();
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "the apply finished before the kill: {answer}"
    );

    // What the killed apply left: part of the plan, and nothing that names a missing object.
    let enc = Enc::start(&data, 1);
    let nodes = listed(&enc, "/nodes");
    let groups = listed(&enc, "/nodegroup");
    assert!(
        !nodes.is_empty() && nodes.len() < 1000,
        "{} nodes",
        nodes.len()
    );
    assert_eq!(groups.len(), 5);
    let group_names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    for group in &groups {
        if let Some(parent) = group["parent"].as_str() {
            assert!(
                group_names.contains(&parent),
                "{group} names a missing parent"
            );
        }
    }
    let (status, envs) = enc.http("GET", "/environment/production/eu", None);
    assert_eq!(status, 200, "{envs}");
    for node in &nodes {
        let group = node["node_group_name"].as_str().unwrap();
        assert!(group_names.contains(&group), "{node} names a missing group");
    }

    // The same apply asked again finishes the plan.
    let (status, answer) = enc.send_raw(&apply_request(&id, &body));
    assert_eq!(status, 200, "{answer}");
    let outcome: Value = serde_json::from_str(&answer).unwrap();
    let already = outcome["already_applied"].as_u64().unwrap();
    let applied = outcome["applied"].as_array().unwrap().len() as u64;
    // Every object the killed apply stored counts as applied by it: batches are atomic, and
    // a batch with a node comes after the environment and every group.
    assert_eq!(already, 1 + 5 + nodes.len() as u64);
    assert_eq!(already + applied, 1006);
    assert_eq!(listed(&enc, "/nodes").len(), 1000);

    // The store is now the tree: the export has its files, and the plan is empty.
    let (status, export) = enc.http("GET", "/export", None);
    assert_eq!(status, 200);
    let export: Value = serde_json::from_str(&export).unwrap();
    let exported: Vec<&String> = export["files"].as_object().unwrap().keys().collect();
    assert_eq!(exported, tree.keys().collect::<Vec<_>>());
    let replan = dry_run(&enc, &body);
    assert_eq!(replan["changes"], json!([]), "{replan}");
    let (status, history) = enc.http("GET", "/nodes/n0999.example.com/history", None);
    assert_eq!(status, 200);
    assert!(
        history.contains(&id),
        "the revision names the plan: {history}"
    );
}

/// `POST /import` of `body` applying plan `id`, as the administrator.
fn apply_request(id: &str, body: &str) -> String {
    format!(
        "POST /import HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer \
         {ADMIN}\r\nIf-Match: \"{id}\"\r\nContent-Type: application/json\r\nContent-Length: \
         {}\r\n\r\n{body}",
        body.len()
    )
}

/// The apply of plan `id` sent from another thread: its raw answer, if any comes.
fn apply_in_background(enc: &Enc, id: &str, body: &str) -> std::thread::JoinHandle<String> {
    let (request, addr) = (apply_request(id, body), enc.addr);
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
}

/// Waits until enc has stored a node (the apply is past its environments and groups).
fn wait_for_a_node(enc: &Enc) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, page) = enc.http("GET", "/nodes?limit=1", None);
        assert_eq!(status, 200, "{page}");
        if page.contains("unique_name") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no node was stored within 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_batch_refused_after_others_answers_what_was_applied() {
    if !dynamodb_under_test() {
        crate::helpers::skipped(
            "a batched apply meets a concurrent write in the DynamoDB pass of scripts/test",
        );
        return;
    }
    let data = EncData::new();
    let enc = Enc::start(&data, 1);
    let tree = large_tree(600);
    let body = json!({"files": tree}).to_string();
    let plan = dry_run(&enc, &body);
    let id = plan["plan_id"].as_str().unwrap().to_owned();
    let apply = apply_in_background(&enc, &id, &body);
    wait_for_a_node(&enc);
    // The last node of the plan, made through the API while the apply is under way.
    let last = json!({"unique_name": "n0599.example.com", "node_group_name": "g0",
        "environment_name": "production", "puppet_cluster_name": "eu"});
    ok(&enc, "POST", "/nodes", last);
    let answer = apply.join().unwrap();
    let (head, problem) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 412"), "{answer}");
    assert!(head.contains("application/problem+json"), "{head}");
    let problem: Value = serde_json::from_str(problem).unwrap();
    let applied = problem["applied"].as_array().unwrap();
    assert!(
        applied.len() >= 6 && applied.len() < 606,
        "{}",
        applied.len()
    );
    assert!(
        problem["detail"].as_str().unwrap().contains(&format!(
            "{} of the plan's 606 changes were applied first",
            applied.len()
        )),
        "{problem}"
    );
    // What it names is stored, and the node written meanwhile is as the API wrote it.
    for object in applied.iter().filter(|a| a["kind"] == "node") {
        let (status, _) = enc.http(
            "GET",
            &format!("/nodes/{}", object["key"].as_str().unwrap()),
            None,
        );
        assert_eq!(status, 200, "{object}");
    }
    let (_, node) = enc.http("GET", "/nodes/n0599.example.com", None);
    assert!(node.contains(r#""node_group_name":"g0""#), "{node}");
    // A new plan takes it from there: the rest to create, the API's node to replace.
    let replan = dry_run(&enc, &body);
    assert_eq!(replan["summary"]["replace"], 1, "{}", replan["summary"]);
    assert_eq!(
        replan["summary"]["create"].as_u64().unwrap() as usize,
        606 - applied.len() - 1
    );
}

/// The earlier ENC's tables, with its key schemas, named with `prefix`.
async fn earlier_tables(client: &aws_sdk_dynamodb::Client, prefix: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    for (table, hash, range) in [
        ("Environment", "EnvironmentName", "PuppetClusterName"),
        ("NodeGroup", "Name", "Class"),
        ("Node", "UniqueName", "NodeGroupName"),
    ] {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap()
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .unwrap()
        };
        client
            .create_table()
            .table_name(format!("{prefix}{table}"))
            .attribute_definitions(attribute(hash))
            .attribute_definitions(attribute(range))
            .key_schema(key(hash, KeyType::Hash))
            .key_schema(key(range, KeyType::Range))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .unwrap();
    }
}

async fn put_items(client: &aws_sdk_dynamodb::Client, table: &str, items: Vec<Value>) {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    let requests: Vec<WriteRequest> = items
        .into_iter()
        .map(|item| {
            let item = item
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => AttributeValue::S(s.clone()),
                        Value::Number(n) => AttributeValue::N(n.to_string()),
                        other => panic!("no such attribute in the earlier tables: {other}"),
                    };
                    (k.clone(), value)
                })
                .collect();
            let put = PutRequest::builder().set_item(Some(item)).build().unwrap();
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    for chunk in requests.chunks(25) {
        let mut pending = Some(std::collections::HashMap::from([(
            table.to_owned(),
            chunk.to_vec(),
        )]));
        while let Some(batch) = pending.filter(|p| !p.is_empty()) {
            let out = client
                .batch_write_item()
                .set_request_items(Some(batch))
                .send()
                .await
                .unwrap();
            pending = out.unprocessed_items;
        }
    }
}

#[tokio::test]
async fn a_migration_from_the_earlier_tables_reports_every_unmappable_item() {
    if !dynamodb_under_test() {
        crate::helpers::skipped(
            "the earlier ENC's tables are made in DynamoDB Local in its pass of scripts/test",
        );
        return;
    }
    let endpoint = dynamodb_endpoint();
    let setup = crate::helpers::dynamodb_store(&endpoint, crate::helpers::SETUP_TIMEOUT).await;
    let prefix = crate::helpers::unique_prefix();
    let client = setup.client();
    earlier_tables(client, &prefix).await;
    let table = |name: &str| format!("{prefix}{name}");
    put_items(
        client,
        &table("Environment"),
        vec![
            json!({"EnvironmentName": "production", "PuppetClusterName": "puppet-eu"}),
            json!({"EnvironmentName": "staging", "PuppetClusterName": "puppet-eu", "Owner": "ops"}),
            json!({"EnvironmentName": "Production", "PuppetClusterName": "puppet-eu"}),
        ],
    )
    .await;
    put_items(
        client,
        &table("NodeGroup"),
        vec![
            json!({"Name": "web", "Class": "nginx", "Parameters": "{\"worker_processes\": 4}"}),
            json!({"Name": "web", "Class": "ntp", "Parameters": "{\"servers\": [\"a\", \"b\"]}"}),
            json!({"Name": "base", "Class": "ntp"}),
            json!({"Name": "db", "Class": "postgresql", "Parameters": "{port: 5432}"}),
            json!({"Name": "db", "Class": "ntp", "Parameters": "{}"}),
            json!({"Name": "odd", "Class": "Not A Class", "Parameters": "{}"}),
            json!({"Name": "lists", "Class": "motd", "Parameters": "[1, 2]"}),
        ],
    )
    .await;
    let node = |name: &str, group: &str, env: &str| {
        json!({"UniqueName": name, "NodeGroupName": group,
            "environment_name": env, "puppet_cluster_name": "puppet-eu"})
    };
    let mut nodes = vec![
        node("web01.example.com", "web", "production"),
        node("web02.example.com", "web", "production"),
        node("web02.example.com", "base", "production"),
        node("db01.example.com", "db", "production"),
        node("app01.example.com", "missing", "production"),
        node("web03.example.com", "web", "qa"),
        node("web04.example.com", "web", "Production"),
        node("Bad_Host!", "base", "staging"),
        json!({"UniqueName": "web05.example.com", "NodeGroupName": "web"}),
    ];
    // Enough nodes that reading the table shows its progress.
    for n in 0..1100 {
        nodes.push(node(&format!("n{n:04}.example.com"), "base", "staging"));
    }
    put_items(client, &table("Node"), nodes).await;

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("tree");
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("ENC_DYNAMODB_TIMEOUT_MS", "30000");
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
        if let Ok(value) = std::env::var(name) {
            command.env(name, value);
        }
    }
    let out = command
        .args([
            "migrate",
            "--from-dynamodb",
            "--endpoint",
            &endpoint,
            "--dir",
        ])
        .arg(&dir)
        .args([
            "--node-table",
            &table("Node"),
            "--node-group-table",
            &table("NodeGroup"),
        ])
        .args(["--environment-table", &table("Environment")])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("{}: 1000 items read of about 1109", table("Node"))),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: 1109 items read of about 1109", table("Node"))),
        "{stderr}"
    );
    let reported: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("not mapped: "))
        .map(|l| l.replace(&prefix, ""))
        .collect();
    let expected = [
        "Environment item EnvironmentName=Production, PuppetClusterName=puppet-eu: environment_name",
        "Environment item EnvironmentName=staging, PuppetClusterName=puppet-eu: attribute Owner is not mapped",
        "Node item UniqueName=Bad_Host!, NodeGroupName=base: unique_name",
        "Node item UniqueName=app01.example.com, NodeGroupName=missing: its node group \"missing\" is not in table NodeGroup",
        "Node item UniqueName=db01.example.com, NodeGroupName=db: its node group \"db\" is not mapped",
        "Node item UniqueName=web02.example.com, NodeGroupName=base: node \"web02.example.com\" is under 2 groups",
        "Node item UniqueName=web02.example.com, NodeGroupName=web: node \"web02.example.com\" is under 2 groups",
        "Node item UniqueName=web03.example.com, NodeGroupName=web: its environment qa/puppet-eu is not in table Environment",
        "Node item UniqueName=web04.example.com, NodeGroupName=web: its environment Production/puppet-eu is not mapped",
        "Node item UniqueName=web05.example.com, NodeGroupName=web: has no environment_name",
        "NodeGroup item Name=db, Class=ntp: not mapped because another item of group \"db\" cannot be",
        "NodeGroup item Name=db, Class=postgresql: Parameters is not JSON",
        "NodeGroup item Name=lists, Class=motd: Parameters is JSON but not an object",
        "NodeGroup item Name=odd, Class=Not A Class: classes",
    ];
    assert_eq!(reported.len(), expected.len(), "{reported:#?}");
    for want in expected {
        assert!(
            reported.iter().any(|r| r.starts_with(want)),
            "missing {want:?} in {reported:#?}"
        );
    }
    assert!(
        stdout.contains("wrote 2 environments, 2 node groups and 1101 nodes"),
        "{stdout}"
    );

    let tree = files(&dir);
    assert_eq!(tree.len(), 2 + 2 + 1101);
    assert_eq!(
        tree["node_groups/web.yaml"],
        "name: web\ndescription: null\nparent: null\nclasses:\n  nginx:\n    worker_processes: 4\n  ntp:\n    servers:\n    - a\n    - b\nparameters: {}\n"
    );
    assert_eq!(
        tree["nodes/web01.example.com.yaml"],
        "unique_name: web01.example.com\nnode_group_name: web\nenvironment_name: production\npuppet_cluster_name: puppet-eu\nclasses: {}\nparameters: {}\n"
    );

    // The tree goes through plan and apply as any tree, on either store.
    let files = serde_json::to_value(&tree).unwrap();
    for app in [TestApp::on(TestStore::embedded()), TestApp::new().await] {
        let body = json!({"files": files, "source_revision": "migrated"});
        let plan = app
            .post("/import?dry_run=true", body.clone())
            .await
            .ok(StatusCode::OK);
        assert_eq!(plan["summary"]["create"], 1105, "{}", plan["summary"]);
        let tag = format!("\"{}\"", plan["plan_id"].as_str().unwrap());
        let outcome = app
            .request(Method::POST, "/import", Some(&body), Some(&tag))
            .await;
        assert_eq!(
            outcome.ok(StatusCode::OK)["applied"]
                .as_array()
                .unwrap()
                .len(),
            1105
        );
        let classified = app.get("/nodes/web01.example.com/classification").await;
        let classified = classified.ok(StatusCode::OK);
        assert_eq!(
            classified["classes"],
            json!({"nginx": {"worker_processes": 4}, "ntp": {"servers": ["a", "b"]}})
        );
        assert_eq!(classified["environment"], "production");
    }
}

#[test]
fn over_long_names_export_and_plan_and_no_tree_is_read_or_written_through_a_link() {
    use std::os::unix::fs::symlink;
    let data = EncData::new();
    let enc = Enc::start(&data, 1);
    ok(
        &enc,
        "POST",
        "/environment",
        json!({"environment_name": "production", "puppet_cluster_name": "eu"}),
    );
    // 200 characters of 2 bytes, 6 encoded: 1,200 bytes as a file name; a certname of 253.
    let group = "é".repeat(200);
    let certname = format!("{}.example.com", "a".repeat(241));
    assert_eq!(certname.len(), 253);
    ok(
        &enc,
        "POST",
        "/nodegroup",
        json!({"name": group, "classes": {"ntp": {}}}),
    );
    ok(
        &enc,
        "POST",
        "/nodes",
        json!({"unique_name": certname, "node_group_name": group,
            "environment_name": "production", "puppet_cluster_name": "eu"}),
    );
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let tree_arg = tree.to_str().unwrap();
    let out = client(&enc, work.path(), &["export", "--dir", tree_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = files(&tree);
    assert_eq!(exported.len(), 3, "{:?}", exported.keys());
    for path in exported.keys() {
        let name = path.rsplit('/').next().unwrap();
        assert!(name.len() <= 255, "{name}: {} bytes", name.len());
    }
    // Each file still holds its whole name, and the tree plans as it was exported.
    assert!(exported.values().any(|t| t.contains(&certname)));
    let out = client(&enc, work.path(), &["plan", "--dir", tree_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        !printed.contains("+ create") && !printed.contains("~ "),
        "{printed}"
    );

    // A link in the tree, to a file outside it: neither planned from nor written through.
    let secret = work.path().join("outside.yaml");
    std::fs::write(&secret, "unique_name: outside\n").unwrap();
    let planted = tree.join("nodes/planted.yaml");
    symlink(&secret, &planted).unwrap();
    let out = client(&enc, work.path(), &["plan", "--dir", tree_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("symbolic link"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_file(&planted).unwrap();
    // An exported file's path made a link to a file the exporter should not write.
    let (group_file, _) = exported
        .iter()
        .find(|(p, _)| p.starts_with("node_groups/"))
        .unwrap();
    let at = tree.join(group_file);
    std::fs::remove_file(&at).unwrap();
    symlink(&secret, &at).unwrap();
    ok(
        &enc,
        "PUT",
        &format!("/nodegroup/{}", urlencode(&group)),
        json!({"classes": {"ntp": {"servers": ["a"]}}}),
    );
    let out = client(&enc, work.path(), &["export", "--dir", tree_arg]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("symbolic link"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "unique_name: outside\n",
        "written through the link"
    );
    // A whole directory of the tree made a link: refused too.
    std::fs::remove_file(&at).unwrap();
    let elsewhere = work.path().join("elsewhere");
    std::fs::rename(tree.join("nodes"), &elsewhere).unwrap();
    symlink(&elsewhere, tree.join("nodes")).unwrap();
    let out = client(&enc, work.path(), &["plan", "--dir", tree_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("symbolic link"),
        "{}",
        text(&out.stderr)
    );
}

/// A name as a path segment.
fn urlencode(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}
