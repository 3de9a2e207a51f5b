//! Data written by the first enc keeps working: an embedded file of layout 1 is migrated when
//! opened, and DynamoDB items of that version read and update in place. The fixtures and
//! what that enc answered for them are in `tests/fixtures/v1` (see its `seed.sh`).

use std::path::Path;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use axum::http::StatusCode;
use serde_json::{Value, json};

use enc::store::embedded::{Embedded, SCHEMA_VERSION};

use crate::helpers::{TestApp, TestStore, dynamodb_endpoint, dynamodb_store, dynamodb_under_test};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v1")
        .join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

/// Everything the fixture's enc answered, asked again.
async fn answers(app: &TestApp) -> Value {
    let mut all = app.dump().await;
    let changes = all.as_object_mut().unwrap().remove("changes");
    assert_eq!(
        changes,
        Some(json!([])),
        "records made before history have none"
    );
    all["activities"] = app.all("/metrics-form/entries").await.into();
    all["classification"] = app
        .get("/nodes/web01.example.com/classification?explain=true")
        .await
        .ok(StatusCode::OK);
    all
}

/// Changes that need the reference counts and indexes the migration made.
async fn still_consistent(app: &TestApp) {
    let refused = app.delete("/nodegroup/base", None).await;
    let problem = refused.problem(StatusCode::CONFLICT);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("node group web"),
        "{problem}"
    );
    let refused = app.delete("/environment/production/puppet-us", None).await;
    let detail = refused.problem(StatusCode::CONFLICT)["detail"].to_string();
    assert!(
        detail.contains("node db01.example.com") && detail.contains("node legacy01"),
        "{detail}"
    );
    let listed = app
        .get("/nodes?node_group_name=web_eu")
        .await
        .ok(StatusCode::OK);
    assert_eq!(listed["items"][0]["unique_name"], "web01.example.com");
    let entries = app
        .get("/metrics-form/entries?customer=ACME%20Corp")
        .await
        .ok(StatusCode::OK);
    assert_eq!(entries["items"].as_array().unwrap().len(), 2);

    app.delete("/nodes/legacy01", Some("\"1\""))
        .await
        .ok(StatusCode::NO_CONTENT);
    app.delete("/nodegroup/Legacy-Group.1", None)
        .await
        .ok(StatusCode::NO_CONTENT);
    let replaced = app
        .put(
            "/nodegroup/web_eu",
            json!({"parent": "web", "parameters": {"region": "eu-central"}}),
            Some("\"1\""),
        )
        .await
        .ok(StatusCode::OK);
    assert_eq!(replaced["version"], 2);
    let classified = app
        .get("/nodes/web01.example.com/classification")
        .await
        .ok(StatusCode::OK);
    assert_eq!(classified["parameters"]["region"], "eu-central");
    assert_eq!(classified["parameters"]["datacenter"], "eu-west-1");
}

#[tokio::test]
async fn an_embedded_file_of_layout_1_is_migrated_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("enc.redb"), dir.path().join("enc.redb")).unwrap();
    let engine = Embedded::open(dir.path()).expect("the old file opens");
    assert_eq!(engine.schema_version().unwrap(), Some(SCHEMA_VERSION));
    let app = TestApp::on(TestStore::over(Arc::new(engine), dir));
    assert_eq!(answers(&app).await, expected("embedded.json"));
    still_consistent(&app).await;
    let after = app.dump().await;

    let TestApp {
        router, backing, ..
    } = app;
    let TestStore { engine, store, dir } = backing;
    drop((router, store, engine));
    {
        let db = redb::Database::open(dir.path().join("enc.redb")).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let tables: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| redb::TableHandle::name(&t).to_owned())
            .collect();
        for old in [
            "nodes",
            "node_groups",
            "environments",
            "activities",
            "nodes_by_group",
        ] {
            assert!(
                !tables.contains(&old.to_owned()),
                "{old} is left in {tables:?}"
            );
        }
    }
    let reopened = TestApp::on(TestStore::over(
        Arc::new(Embedded::open(dir.path()).expect("reopens")),
        dir,
    ));
    assert_eq!(
        reopened.dump().await,
        after,
        "a migrated file opens as it is"
    );
}

/// An item in DynamoDB's JSON form (as a Scan printed it) as the SDK's value.
fn attribute(value: &Value) -> AttributeValue {
    let (kind, inner) = value.as_object().unwrap().iter().next().unwrap();
    match kind.as_str() {
        "S" => AttributeValue::S(inner.as_str().unwrap().to_owned()),
        "N" => AttributeValue::N(inner.as_str().unwrap().to_owned()),
        "BOOL" => AttributeValue::Bool(inner.as_bool().unwrap()),
        "NULL" => AttributeValue::Null(true),
        "L" => AttributeValue::L(inner.as_array().unwrap().iter().map(attribute).collect()),
        "M" => AttributeValue::M(
            inner
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), attribute(v)))
                .collect(),
        ),
        other => panic!("no {other} attributes in the fixture"),
    }
}

#[tokio::test]
async fn dynamodb_items_of_the_first_version_read_and_update() {
    if !dynamodb_under_test() {
        crate::helpers::skipped(
            "the DynamoDB fixture is loaded in the DynamoDB pass of scripts/test",
        );
        return;
    }
    let engine = dynamodb_store(&dynamodb_endpoint(), std::time::Duration::from_secs(10)).await;
    let tables = expected("dynamodb-items.json");
    for (table, items) in tables.as_object().unwrap() {
        for item in items.as_array().unwrap() {
            let item = item
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), attribute(v)))
                .collect();
            engine
                .client()
                .put_item()
                .table_name(format!("{}{table}", engine.prefix()))
                .set_item(Some(item))
                .send()
                .await
                .unwrap();
        }
    }
    let app = TestApp::on(TestStore::over(
        Arc::new(engine),
        tempfile::tempdir().unwrap(),
    ));
    assert_eq!(answers(&app).await, expected("dynamodb.json"));
    still_consistent(&app).await;
}

#[tokio::test]
async fn an_embedded_file_of_layout_2_loses_the_facts_index_and_gets_its_views() {
    use redb::{ReadableDatabase, TableDefinition, TableHandle};
    let dir = tempfile::tempdir().unwrap();
    // A file as an enc of layout 2 left it: facts listed by an index, no views.
    {
        let app = TestApp::on(TestStore::over(
            Arc::new(Embedded::open(dir.path()).unwrap()),
            tempfile::tempdir().unwrap(),
        ));
        app.env("production", "eu").await;
        app.group(json!({"name": "debian", "environment_name": "production",
            "puppet_cluster_name": "eu", "rule": ["=", ["fact", "os", "family"], "Debian"],
            "classes": {"apt": {}}}))
            .await;
        app.post(
            "/nodes/web1/classification",
            json!({"facts": {"os": {"family": "Debian"}}}),
        )
        .await
        .ok(StatusCode::OK);
    }
    {
        let db = redb::Database::open(dir.path().join("enc.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let index: TableDefinition<(&str, &str, &str), ()> =
            TableDefinition::new("index/facts/ordered");
        txn.open_table(index)
            .unwrap()
            .insert(("facts", "web1", "web1"), ())
            .unwrap();
        let schema: TableDefinition<&str, u64> = TableDefinition::new("schema");
        txn.open_table(schema)
            .unwrap()
            .insert("version", 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let engine = Embedded::open(dir.path()).expect("a file of layout 2 opens");
    assert_eq!(engine.schema_version().unwrap(), Some(SCHEMA_VERSION));
    drop(engine);
    let db = redb::Database::open(dir.path().join("enc.redb")).unwrap();
    let tables: Vec<String> = db
        .begin_read()
        .unwrap()
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_owned())
        .collect();
    assert!(
        !tables.contains(&"index/facts/ordered".to_owned()),
        "{tables:?}"
    );
    assert!(tables.contains(&"record/view".to_owned()), "{tables:?}");
}
