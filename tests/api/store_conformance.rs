//! The behaviour `Store` must have on every engine, written once and run on the engine under
//! test (redb, or DynamoDB Local in the DynamoDB pass).

use std::collections::BTreeMap;

use serde_json::json;

use enc::domain::{
    Activity, ActivityType, Certname, ClassName, ClusterName, Environment, EnvironmentKey,
    EnvironmentName, GroupName, Hours, Label, Node, NodeGroup, ParamName,
};
use enc::store::{
    ActivityFilter, EnvironmentFilter, Kind, NodeFilter, Page, PageRequest, StoreError,
};

use crate::helpers::{TestStore, dynamodb_under_test};

/// Who the conformance suite writes as.
const BY: &str = "conformance";

fn env(name: &str, cluster: &str) -> Environment {
    Environment {
        environment_name: EnvironmentName::parse(name).unwrap(),
        puppet_cluster_name: ClusterName::parse(cluster).unwrap(),
        description: None,
    }
}

fn group(name: &str, parent: Option<&str>) -> NodeGroup {
    NodeGroup {
        name: GroupName::parse(name).unwrap(),
        description: None,
        parent: parent.map(|p| GroupName::parse(p).unwrap()),
        classes: BTreeMap::new(),
        parameters: BTreeMap::new(),
        rule: None,
        pinned: Default::default(),
        environment_name: None,
        puppet_cluster_name: None,
    }
}

fn node(name: &str, env: &str, group: Option<&str>) -> Node {
    Node {
        unique_name: Certname::parse(name).unwrap(),
        node_group_name: group.map(|g| GroupName::parse(g).unwrap()),
        environment_name: EnvironmentName::parse(env).unwrap(),
        puppet_cluster_name: ClusterName::parse("eu").unwrap(),
        classes: BTreeMap::new(),
        parameters: BTreeMap::new(),
    }
}

fn gname(s: &str) -> GroupName {
    GroupName::parse(s).unwrap()
}

fn cert(s: &str) -> Certname {
    Certname::parse(s).unwrap()
}

fn page(limit: usize, cursor: Option<String>) -> PageRequest {
    PageRequest { limit, cursor }
}

async fn seeded() -> TestStore {
    let t = TestStore::new().await;
    t.store
        .create_environment(env("production", "eu"), BY)
        .await
        .unwrap();
    t.store
        .create_environment(env("staging", "eu"), BY)
        .await
        .unwrap();
    t
}

#[tokio::test]
async fn versions_and_timestamps() {
    let t = seeded().await;
    let s = &t.store;
    let mut g = group("base", None);
    g.classes.insert(
        ClassName::parse("ntp").unwrap(),
        BTreeMap::from([(ParamName::parse("servers").unwrap(), json!(["a"]))]),
    );
    let created = s.create_node_group(g.clone(), BY).await.unwrap();
    assert_eq!(created.meta.version, 1);
    assert_eq!(created.item, g);
    assert_eq!(s.get_node_group(&gname("base")).await.unwrap(), created);

    g.description = Some("changed".into());
    let replaced = s.replace_node_group(g.clone(), Some(1), BY).await.unwrap();
    assert_eq!(replaced.meta.version, 2);
    assert_eq!(replaced.meta.created_at, created.meta.created_at);
    assert!(replaced.meta.updated_at >= created.meta.updated_at);
    let again = s.replace_node_group(g, None, BY).await.unwrap();
    assert_eq!(again.meta.version, 3);
}

#[tokio::test]
async fn creates_refuse_existing_objects() {
    let t = seeded().await;
    let s = &t.store;
    s.create_node_group(group("base", None), BY).await.unwrap();
    s.create_node(node("web01", "production", None), BY)
        .await
        .unwrap();
    assert!(matches!(
        s.create_environment(env("production", "eu"), BY).await,
        Err(StoreError::AlreadyExists {
            kind: Kind::Environment,
            ..
        })
    ));
    assert!(matches!(
        s.create_node_group(group("base", None), BY).await,
        Err(StoreError::AlreadyExists {
            kind: Kind::NodeGroup,
            ..
        })
    ));
    assert!(matches!(
        s.create_node(node("web01", "staging", None), BY).await,
        Err(StoreError::AlreadyExists {
            kind: Kind::Node,
            ..
        })
    ));
    // The refused create left the first one as it was.
    let kept = s.get_node(&cert("web01")).await.unwrap();
    assert_eq!(kept.item.environment_name.as_str(), "production");
}

#[tokio::test]
async fn absent_objects_are_not_found() {
    let t = seeded().await;
    let s = &t.store;
    let missing_env = EnvironmentKey {
        environment_name: EnvironmentName::parse("nope").unwrap(),
        puppet_cluster_name: ClusterName::parse("eu").unwrap(),
    };
    assert!(matches!(
        s.get_environment(&missing_env).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete_environment(&missing_env, None, BY).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.get_node_group(&gname("x")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.replace_node_group(group("x", None), None, BY).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete_node_group(&gname("x"), None, BY).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.get_node(&cert("x")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.replace_node(node("x", "production", None), None, BY)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete_node(&cert("x"), None, BY).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn stale_versions_are_refused() {
    let t = seeded().await;
    let s = &t.store;
    s.create_node(node("web01", "production", None), BY)
        .await
        .unwrap();
    s.create_node_group(group("base", None), BY).await.unwrap();
    assert!(matches!(
        s.replace_node(node("web01", "staging", None), Some(2), BY)
            .await,
        Err(StoreError::VersionMismatch {
            expected: 2,
            actual: 1,
            ..
        })
    ));
    assert!(matches!(
        s.delete_node(&cert("web01"), Some(5), BY).await,
        Err(StoreError::VersionMismatch { .. })
    ));
    assert!(matches!(
        s.delete_node_group(&gname("base"), Some(2), BY).await,
        Err(StoreError::VersionMismatch { .. })
    ));
    let key = env("staging", "eu").key();
    assert!(matches!(
        s.delete_environment(&key, Some(9), BY).await,
        Err(StoreError::VersionMismatch { .. })
    ));
    assert_eq!(
        s.get_node(&cert("web01"))
            .await
            .unwrap()
            .item
            .environment_name
            .as_str(),
        "production"
    );
    s.delete_node(&cert("web01"), Some(1), BY).await.unwrap();
    s.delete_node_group(&gname("base"), Some(1), BY)
        .await
        .unwrap();
    s.delete_environment(&key, Some(1), BY).await.unwrap();
}

#[tokio::test]
async fn references_must_exist() {
    let t = seeded().await;
    let s = &t.store;
    assert!(matches!(
        s.create_node(node("a", "nope", None), BY).await,
        Err(StoreError::MissingReference {
            field: "environment_name",
            ..
        })
    ));
    assert!(matches!(
        s.create_node(node("a", "production", Some("nope")), BY)
            .await,
        Err(StoreError::MissingReference {
            field: "node_group_name",
            ..
        })
    ));
    assert!(matches!(
        s.create_node_group(group("a", Some("nope")), BY).await,
        Err(StoreError::MissingReference {
            field: "parent",
            ..
        })
    ));
    s.create_node(node("a", "production", None), BY)
        .await
        .unwrap();
    assert!(matches!(
        s.replace_node(node("a", "production", Some("nope")), None, BY)
            .await,
        Err(StoreError::MissingReference {
            field: "node_group_name",
            ..
        })
    ));
    let listed = s
        .list_nodes(&NodeFilter::default(), &page(10, None))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(
        s.list_node_groups(&page(10, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn cycles_are_refused() {
    let t = seeded().await;
    let s = &t.store;
    s.create_node_group(group("a", None), BY).await.unwrap();
    s.create_node_group(group("b", Some("a")), BY)
        .await
        .unwrap();
    s.create_node_group(group("c", Some("b")), BY)
        .await
        .unwrap();
    match s.replace_node_group(group("a", Some("c")), None, BY).await {
        Err(StoreError::Cycle { chain }) => assert_eq!(chain, ["a", "c", "b", "a"]),
        other => panic!("expected a cycle, got {other:?}"),
    }
    assert!(matches!(
        s.replace_node_group(group("b", Some("b")), None, BY).await,
        Err(StoreError::Cycle { .. })
    ));
    assert_eq!(
        s.get_node_group(&gname("a")).await.unwrap().item.parent,
        None
    );
}

#[tokio::test]
async fn used_objects_cannot_be_deleted() {
    let t = seeded().await;
    let s = &t.store;
    s.create_node_group(group("base", None), BY).await.unwrap();
    s.create_node_group(group("web", Some("base")), BY)
        .await
        .unwrap();
    for i in 0..12 {
        s.create_node(node(&format!("web{i:02}"), "production", Some("web")), BY)
            .await
            .unwrap();
    }
    match s.delete_node_group(&gname("base"), None, BY).await {
        Err(StoreError::StillReferenced { referrers, .. }) => {
            assert_eq!(referrers, ["node group web"])
        }
        other => panic!("{other:?}"),
    }
    match s.delete_node_group(&gname("web"), None, BY).await {
        Err(StoreError::StillReferenced { referrers, .. }) => {
            assert_eq!(referrers.len(), 11, "ten names and 'more': {referrers:?}");
            assert_eq!(referrers[0], "node web00");
            assert_eq!(referrers[10], "more");
        }
        other => panic!("{other:?}"),
    }
    let key = env("production", "eu").key();
    assert!(matches!(
        s.delete_environment(&key, None, BY).await,
        Err(StoreError::StillReferenced { .. })
    ));
    s.get_node_group(&gname("web")).await.unwrap();
    s.get_environment(&key).await.unwrap();
    // The unused environment of the same cluster can go.
    s.delete_environment(&env("staging", "eu").key(), None, BY)
        .await
        .unwrap();
}

#[tokio::test]
async fn listings_page_and_filter() {
    let t = seeded().await;
    let s = &t.store;
    s.create_node_group(group("web", None), BY).await.unwrap();
    for i in 0..7 {
        let g = (i % 2 == 0).then_some("web");
        let e = if i < 4 { "production" } else { "staging" };
        s.create_node(node(&format!("n{i}"), e, g), BY)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let p = s
            .list_nodes(&NodeFilter::default(), &page(3, cursor))
            .await
            .unwrap();
        seen.extend(p.items.iter().map(|n| n.item.unique_name.to_string()));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["n0", "n1", "n2", "n3", "n4", "n5", "n6"]);

    let filter = NodeFilter {
        node_group_name: Some(gname("web")),
        environment_name: Some(EnvironmentName::parse("staging").unwrap()),
        ..NodeFilter::default()
    };
    let p = s.list_nodes(&filter, &page(10, None)).await.unwrap();
    let names: Vec<_> = p
        .items
        .iter()
        .map(|n| n.item.unique_name.to_string())
        .collect();
    assert_eq!(names, ["n4", "n6"]);

    let envs = s
        .list_environments(
            &EnvironmentFilter {
                puppet_cluster_name: Some(ClusterName::parse("eu").unwrap()),
            },
            &page(1, None),
        )
        .await
        .unwrap();
    assert_eq!(envs.items.len(), 1);
    assert!(envs.next_cursor.is_some());
}

#[tokio::test]
async fn foreign_cursors_are_refused() {
    let t = seeded().await;
    let s = &t.store;
    let envs = s
        .list_environments(&EnvironmentFilter::default(), &page(1, None))
        .await
        .unwrap();
    let foreign = envs.next_cursor.unwrap();
    assert!(matches!(
        s.list_nodes(&NodeFilter::default(), &page(1, Some(foreign.clone())))
            .await,
        Err(StoreError::InvalidCursor)
    ));
    assert!(matches!(
        s.list_node_groups(&page(1, Some(foreign))).await,
        Err(StoreError::InvalidCursor)
    ));
    assert!(matches!(
        s.list_node_groups(&page(1, Some("garbage".into()))).await,
        Err(StoreError::InvalidCursor)
    ));
}

#[tokio::test]
async fn concurrent_conditional_writes_have_one_winner() {
    let t = seeded().await;
    t.store
        .create_node(node("web01", "production", None), BY)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = t.store.clone();
            tokio::spawn(async move {
                let mut n = node("web01", "production", None);
                n.parameters
                    .insert(ParamName::parse("writer").unwrap(), json!(i));
                store.replace_node(n, Some(1), BY).await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(stored) => {
                assert_eq!(stored.meta.version, 2);
                wins += 1;
            }
            Err(StoreError::VersionMismatch { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(
        t.store.get_node(&cert("web01")).await.unwrap().meta.version,
        2
    );
}

#[tokio::test]
async fn ping_answers() {
    let t = TestStore::new().await;
    t.store.ping().await.unwrap();
    let expected = if dynamodb_under_test() {
        "dynamodb"
    } else {
        "embedded"
    };
    assert_eq!(t.store.backend(), expected);
}

fn activity(engineer: &str, customer: &str, project: &str, date: &str, hours: f64) -> Activity {
    Activity {
        recorded_by: None,
        id: uuid::Uuid::now_v7().to_string(),
        engineer: Label::parse(engineer).unwrap(),
        customer: Label::parse(customer).unwrap(),
        project: Label::parse(project).unwrap(),
        activity_type: ActivityType::Support,
        date: date.parse().unwrap(),
        hours: Hours::from_f64(hours).unwrap(),
        description: "did things".into(),
        created_at: enc::domain::now(),
    }
}

#[tokio::test]
async fn activities_are_kept_and_found_by_id() {
    let t = TestStore::new().await;
    let a = activity("alice", "ACME", "Web", "2026-11-02", 1.25);
    assert_eq!(t.store.create_activity(a.clone()).await.unwrap(), a);
    let read = t.store.get_activity(&a.id).await.unwrap();
    assert_eq!(read, a);
    assert!(matches!(
        t.store.create_activity(a.clone()).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(matches!(
        t.store.get_activity("no-such-id").await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn activities_list_by_date_with_filters_and_pages() {
    let t = TestStore::new().await;
    let s = &t.store;
    let entries = [
        activity("alice", "ACME", "Web", "2026-11-03", 1.0),
        activity("bob", "ACME", "Web", "2026-11-01", 2.0),
        activity("alice", "ACME", "Ops", "2026-11-02", 0.5),
        activity("carol", "Globex", "Web", "2026-11-02", 3.0),
        activity("alice", "Globex", "Ops", "2026-11-05", 4.0),
        activity("bob", "ACME", "Web", "2026-11-02", 0.25),
    ];
    for e in &entries {
        s.create_activity(e.clone()).await.unwrap();
    }
    let ids = |page: &Page<Activity>| page.items.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    let expect = |indexes: &[usize]| {
        indexes
            .iter()
            .map(|&i| entries[i].id.clone())
            .collect::<Vec<_>>()
    };
    let label = |s: &str| Some(Label::parse(s).unwrap());
    let date = |s: &str| Some(s.parse().unwrap());

    // Edit date, then in the order recorded.
    let all = s
        .list_activities(&ActivityFilter::default(), &page(100, None))
        .await
        .unwrap();
    assert_eq!(ids(&all), expect(&[1, 2, 3, 5, 0, 4]));

    for (filter, expected) in [
        (
            ActivityFilter {
                customer: label("ACME"),
                ..Default::default()
            },
            vec![1, 2, 5, 0],
        ),
        (
            ActivityFilter {
                customer: label("ACME"),
                from: date("2026-11-02"),
                to: date("2026-11-02"),
                ..Default::default()
            },
            vec![2, 5],
        ),
        (
            ActivityFilter {
                customer: label("ACME"),
                project: label("Web"),
                engineer: label("bob"),
                ..Default::default()
            },
            vec![1, 5],
        ),
        (
            ActivityFilter {
                engineer: label("alice"),
                ..Default::default()
            },
            vec![2, 0, 4],
        ),
        (
            ActivityFilter {
                project: label("Ops"),
                ..Default::default()
            },
            vec![2, 4],
        ),
        (
            ActivityFilter {
                from: date("2026-11-03"),
                ..Default::default()
            },
            vec![0, 4],
        ),
        (
            ActivityFilter {
                to: date("2026-11-01"),
                ..Default::default()
            },
            vec![1],
        ),
        (
            ActivityFilter {
                customer: label("Nobody"),
                ..Default::default()
            },
            vec![],
        ),
    ] {
        let listed = s.list_activities(&filter, &page(100, None)).await.unwrap();
        assert_eq!(ids(&listed), expect(&expected), "{filter:?}");
    }

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let p = s
            .list_activities(&ActivityFilter::default(), &page(4, cursor))
            .await
            .unwrap();
        seen.extend(ids(&p));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, expect(&[1, 2, 3, 5, 0, 4]));

    let groups = s.list_node_groups(&page(1, None)).await.unwrap();
    assert!(groups.next_cursor.is_none());
    let first = s
        .list_activities(&ActivityFilter::default(), &page(1, None))
        .await
        .unwrap();
    let cursor = first.next_cursor.unwrap();
    let filtered = ActivityFilter {
        customer: label("ACME"),
        ..Default::default()
    };
    assert!(
        matches!(
            s.list_activities(&filtered, &page(1, Some(cursor))).await,
            Err(StoreError::InvalidCursor)
        ),
        "a cursor of the unfiltered listing is not one of the customer listing"
    );
}
