use axum::http::StatusCode;
use serde_json::Value;

fn document() -> Value {
    serde_json::to_value(enc::router::document()).unwrap()
}

use crate::helpers::TestApp;

#[tokio::test]
async fn served_document_is_the_generated_one() {
    let app = TestApp::new().await;
    let served = app.get("/api-docs/openapi.json").await.ok(StatusCode::OK);
    assert_eq!(served, document());
    assert_eq!(served["openapi"], "3.1.0");
}

#[test]
fn openapi_snapshot() {
    insta::assert_json_snapshot!("openapi", document());
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = TestApp::new().await;
    let doc = document();
    let paths = doc["paths"].as_object().unwrap();
    let mut count = 0;
    for (path, item) in paths {
        let uri = path
            .replace("{unique_name}", "x")
            .replace("{node_group_name}", "x")
            .replace("{environment_name}", "x")
            .replace("{puppet_cluster_name}", "x")
            .replace("{name}", "x");
        for method in item.as_object().unwrap().keys() {
            let method: axum::http::Method = method.to_uppercase().parse().unwrap();
            let response = app.request(method.clone(), &uri, None, None).await;
            let unrouted = response.status == StatusCode::METHOD_NOT_ALLOWED
                || (response.status == StatusCode::NOT_FOUND
                    && String::from_utf8_lossy(&response.body).contains("no route"));
            assert!(!unrouted, "{method} {path} is documented but not routed");
            count += 1;
        }
    }
    assert_eq!(count, 31);
}

#[tokio::test]
async fn swagger_ui_is_served_offline() {
    let app = TestApp::new().await;
    let redirect = app.get("/swagger-ui").await;
    assert!(redirect.status.is_redirection(), "{}", redirect.status);
    let page = app.get("/swagger-ui/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&page.body).contains("swagger-ui"));
    let init = app.get("/swagger-ui/swagger-initializer.js").await;
    assert_eq!(init.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&init.body).contains("/api-docs/openapi.json"));
    let bundle = app.get("/swagger-ui/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert!(bundle.body.len() > 100_000, "the UI bundle is embedded");
}
