//! A classification reads the node and its whole group chain as they were at one instant:
//! one store call while no group changed, a change through another enc seen at once, and
//! never a mix of two versions of the tree.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::binary::{Enc, EncData};
use crate::classification::chain_requests;
use crate::helpers::{TestApp, dynamodb_under_test};

/// Store calls so far, by operation, read from the process's `/metrics`.
fn store_calls(enc: &Enc) -> BTreeMap<String, f64> {
    let (status, text) = enc.http("GET", "/metrics", None);
    assert_eq!(status, 200);
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("store_operation_duration_seconds_count{") else {
            continue;
        };
        let (labels, count) = rest.split_once("} ").unwrap();
        let operation = labels
            .split(',')
            .find_map(|l| l.strip_prefix("operation=\""))
            .unwrap()
            .trim_end_matches('"');
        *calls.entry(operation.to_owned()).or_default() += count.parse::<f64>().unwrap();
    }
    calls
}

/// The calls made between two readings.
fn made(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

fn commits_of(enc: &Enc) -> f64 {
    store_calls(enc).get("commit").copied().unwrap_or(0.0)
}

/// Waits until a token's first use, written in the background (once a minute at most), is
/// stored and its commit counted, so it is not counted as part of what is measured next.
fn use_recorded(enc: &Enc, name: &str, commits_before: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, token) = enc.http("GET", &format!("/tokens/{name}"), None);
        if token.contains("last_used_at\":\"") && commits_of(enc) > commits_before {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the use of {name} was never recorded"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn classify(enc: &Enc) -> Value {
    let (status, body) = enc.http("GET", "/nodes/web01.example.com/classification", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn a_classification_is_one_store_call_and_sees_changes_from_another_enc_at_once() {
    let data = EncData::new();
    let a = Enc::start(&data, 5);
    for (path, body) in chain_requests() {
        let (status, answer) = a.http("POST", path, Some(&body.to_string()));
        assert_eq!(status, 201, "{answer}");
    }
    assert_eq!(classify(&a)["parameters"]["owner"], "platform");
    let one_read = BTreeMap::from([("get".to_owned(), 1.0)]);
    let before = store_calls(&a);
    classify(&a);
    assert_eq!(
        made(&before, &store_calls(&a)),
        one_read,
        "four groups deep"
    );
    // As a Puppet server asks, with a stored `classify` token: that is read in the same call.
    let puppet = a.token("puppet", &["classify"]);
    let path = "/nodes/web01.example.com/classification";
    let commits = commits_of(&a);
    assert_eq!(a.http_as(Some(&puppet), "GET", path, None).0, 200);
    use_recorded(&a, "puppet", commits);
    let before = store_calls(&a);
    let (status, body) = a.http_as(Some(&puppet), "GET", path, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        made(&before, &store_calls(&a)),
        one_read,
        "the token with the node and the groups' generation"
    );
    let reader = a.token("reader", &["read"]);
    let node = "/nodes/web01.example.com";
    let commits = commits_of(&a);
    assert_eq!(a.http_as(Some(&reader), "GET", node, None).0, 200);
    use_recorded(&a, "reader", commits);
    let before = store_calls(&a);
    assert_eq!(a.http_as(Some(&reader), "GET", node, None).0, 200);
    assert_eq!(
        made(&before, &store_calls(&a)),
        one_read,
        "a node read with a stored token: the token with the node"
    );

    // A second enc (the embedded store is one process's file, so there it is the same one)
    // changes a group in the middle of the chain.
    let b = dynamodb_under_test().then(|| Enc::start(&data, 5));
    let writer = b.as_ref().unwrap_or(&a);
    let platform = json!({"parent": "root", "classes": {"ntp": {"servers": ["b"]}, "monitoring": {}},
        "parameters": {"owner": "platform-team"}});
    let (status, answer) = writer.http("PUT", "/nodegroup/platform", Some(&platform.to_string()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(classify(&a)["parameters"]["owner"], "platform-team");
    let before = store_calls(&a);
    classify(&a);
    assert_eq!(
        made(&before, &store_calls(&a)),
        one_read,
        "and again once known"
    );
}

/// Groups above the node's: a chain long enough that reading it one group at a time would
/// span several commits.
const LEVELS: usize = 24;

/// While a writer moves `leaf` between two parents and bumps a counter on `leaf`, then on
/// the root, every classification of a node in `leaf` must see a state that was committed:
/// the parent `leaf` had at its counter, and the root's counter at `leaf`'s or one behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifications_never_mix_two_versions_of_the_tree() {
    let app = Arc::new(TestApp::new().await);
    app.env("production", "eu").await;
    app.group(json!({"name": "g0", "parameters": {"ka": 0}}))
        .await;
    for level in 1..LEVELS {
        let name = format!("g{level}");
        let parent = format!("g{}", level - 1);
        app.group(json!({"name": name, "parent": parent, "parameters": {(name.clone()): true}}))
            .await;
    }
    let parent_of = |k: i64| format!("g{}", LEVELS - 1 - (k % 2) as usize);
    app.group(json!({"name": "leaf", "parent": parent_of(0), "parameters": {"kb": 0}}))
        .await;
    app.node("web01", Some("leaf")).await;
    let last = format!("g{}", LEVELS - 1);
    let rounds: i64 = if dynamodb_under_test() { 15 } else { 60 };

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (app, done, last) = (app.clone(), done.clone(), last.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let c = app
                        .get("/nodes/web01/classification")
                        .await
                        .ok(StatusCode::OK);
                    let p = &c["parameters"];
                    let (kb, ka) = (p["kb"].as_i64().unwrap(), p["ka"].as_i64().unwrap());
                    seen.push((kb, ka, p.get(&last).is_some()));
                }
                seen
            })
        })
        .collect();
    for k in 1..=rounds {
        let leaf = json!({"parent": parent_of(k), "parameters": {"kb": k}});
        app.put("/nodegroup/leaf", leaf, None)
            .await
            .ok(StatusCode::OK);
        app.put("/nodegroup/g0", json!({"parameters": {"ka": k}}), None)
            .await
            .ok(StatusCode::OK);
    }
    done.store(true, Ordering::Relaxed);
    let mut distinct = BTreeSet::new();
    for reader in readers {
        for (kb, ka, under_last) in reader.await.unwrap() {
            assert!(
                ka == kb || ka == kb - 1,
                "leaf at {kb} with the root at {ka}: never committed"
            );
            assert_eq!(
                under_last,
                parent_of(kb) == last,
                "leaf at {kb} under the wrong parent: never committed"
            );
            distinct.insert(kb);
        }
    }
    assert!(
        distinct.len() >= 2,
        "the readers ran while the tree changed: {distinct:?}"
    );
}
