//! DynamoDB going away and coming back, with Amazon's DynamoDB Local as the real thing.
//! Runs in the DynamoDB pass of `scripts/test`, which sets `ENC_TEST_DYNAMODB_JAR_DIR`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, TestStore, dynamodb_stores, dynamodb_under_test};

struct Local {
    child: Child,
}

impl Local {
    /// DynamoDB Local on `port`, keeping its data in `dir` so a restart finds the tables.
    fn start(jar_dir: &Path, port: u16, dir: &Path) -> Local {
        let child = Command::new("java")
            .arg(format!(
                "-Djava.library.path={}",
                jar_dir.join("DynamoDBLocal_lib").display()
            ))
            .arg("-jar")
            .arg(jar_dir.join("DynamoDBLocal.jar"))
            .args(["-sharedDb", "-port", &port.to_string(), "-dbPath"])
            .arg(dir)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("java runs DynamoDB Local");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "DynamoDB Local did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Local { child }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn an_outage_answers_503_in_time_and_enc_recovers_by_itself() {
    if !dynamodb_under_test() {
        crate::helpers::skipped(
            "the DynamoDB outage test runs in the DynamoDB pass of scripts/test",
        );
        return;
    }
    let jar_dir = PathBuf::from(
        std::env::var("ENC_TEST_DYNAMODB_JAR_DIR")
            .expect("scripts/test sets ENC_TEST_DYNAMODB_JAR_DIR"),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let mut local = Local::start(&jar_dir, port, data.path());

    let timeout = Duration::from_millis(1500);
    let (setup, store) = dynamodb_stores(&format!("http://127.0.0.1:{port}"), timeout).await;
    let over = |store| {
        TestApp::on(TestStore::over(
            Arc::new(store),
            tempfile::tempdir().unwrap(),
        ))
    };
    // Setup with normal timeouts: a fresh JVM is slow to warm up next to the other tests.
    let (setup, app) = (over(setup), over(store));
    setup.env("production", "eu").await;
    app.get("/environment/production/eu")
        .await
        .ok(StatusCode::OK);
    app.get("/readyz").await.ok(StatusCode::OK);

    local.stop();
    // `/readyz` probes the store at most once a second: the probe just made still answers
    // for up to a second (a read that fails at once would ask within it).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for uri in ["/environment/production/eu", "/readyz", "/nodes"] {
        let asked = Instant::now();
        let response = app.get(uri).await;
        let took = asked.elapsed();
        response.problem(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.header("retry-after"), Some("1"));
        assert!(
            took < timeout + Duration::from_millis(1000),
            "{uri} took {took:?}"
        );
    }
    app.post(
        "/environment/",
        json!({"environment_name": "staging", "puppet_cluster_name": "eu"}),
    )
    .await
    .problem(StatusCode::SERVICE_UNAVAILABLE);

    let _local = Local::start(&jar_dir, port, data.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get("/readyz").await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "enc did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.get("/environment/production/eu")
        .await
        .ok(StatusCode::OK);
    // The restarted JVM warms up on a write with normal timeouts; then the short ones write.
    setup.env("staging", "eu").await;
    app.env("testing", "eu").await;
}
