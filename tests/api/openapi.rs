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

/// The document is valid OpenAPI 3.1, as `openapi-spec-validator` (PyPI) judges it: every
/// response described, every link's parameters as the specification's schema has them.
#[test]
fn the_document_validates_as_openapi_3_1() {
    const SCRIPT: &str = r#"
import json, sys
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
document = json.load(sys.stdin)
errors = ["/".join(map(str, e.path)) + ": " + e.message
          for e in OpenAPIV31SpecValidator(document).iter_errors()]
print(json.dumps(errors))
"#;
    let errors = crate::helpers::python(SCRIPT, &document().to_string());
    assert_eq!(errors, serde_json::json!([]), "{errors:#}");
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
            .replace("{name}", "x")
            .replace("{version}", "1")
            .replace("{class_name}", "ntp");
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
    assert_eq!(
        count, 57,
        "operations documented (a collection's at both spellings)"
    );
}

#[tokio::test]
async fn swagger_ui_is_served_offline() {
    let app = TestApp::new().await;
    let redirect = app.get("/swagger-ui").await;
    assert!(redirect.status.is_redirection(), "{}", redirect.status);
    let page = app.get("/swagger-ui/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&page.body).contains("swagger-ui"));
    // It cannot be framed, and runs only the scripts enc serves (the browser test drives it
    // under this policy).
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let init = app.get("/swagger-ui/swagger-initializer.js").await;
    assert_eq!(init.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&init.body).contains("/api-docs/openapi.json"));
    let bundle = app.get("/swagger-ui/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert!(bundle.body.len() > 100_000, "the UI bundle is embedded");
}

/// Each name's documented rule (pattern and lengths, as JSON Schema validators read them) is
/// the rule enc applies: for every sample, both accept it or both refuse it.
#[test]
fn documented_name_rules_are_the_rules_enc_applies() {
    use enc::domain::{
        Certname, ClassName, ClusterName, EnvironmentName, GroupName, Label, ParamName, TokenName,
    };
    let long = |c: &str, n: usize| c.repeat(n);
    let mut common: Vec<String> = [
        "",
        ".",
        "..",
        "...",
        "a..b",
        "web01.example.com",
        "a b",
        " a",
        "a ",
        "a/b",
        "UPPER",
        "roles::base_server",
        "::ntp",
        "ntp::",
        "a::b::c",
        "1ab",
        "a-b",
        "_x",
        "prod_1",
        "tab\there",
        "new\nline",
        "\u{85}",
        "a\u{2028}b",
        "Zürich",
        "All Nodes",
        "-x",
        "x.",
        "puppet-eu-1",
        "a\u{0}b",
        "\u{7f}",
        "\u{a0}x",
        "x\u{3000}",
        "\u{1F600}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for n in [63, 64, 65, 99, 100, 101, 253, 254, 255, 256] {
        common.push(long("a", n));
        common.push(long("é", n));
    }
    type Accepts = fn(&str) -> bool;
    let rules: [(&str, Accepts); 8] = [
        ("Certname", |s| Certname::parse(s).is_ok()),
        ("ClusterName", |s| ClusterName::parse(s).is_ok()),
        ("EnvironmentName", |s| EnvironmentName::parse(s).is_ok()),
        ("ClassName", |s| ClassName::parse(s).is_ok()),
        ("ParamName", |s| ParamName::parse(s).is_ok()),
        ("GroupName", |s| GroupName::parse(s).is_ok()),
        ("Label", |s| Label::parse(s).is_ok()),
        ("TokenName", |s| TokenName::parse(s).is_ok()),
    ];
    let document = document();
    let schemas = &document["components"]["schemas"];
    let param_name = &schemas["NodeBody"]["properties"]["parameters"]["propertyNames"];
    let mut cases = Vec::new();
    for (name, _) in &rules {
        let schema = match *name {
            "ParamName" => param_name.clone(),
            _ => schemas[*name].clone(),
        };
        assert!(schema["pattern"].is_string(), "{name} documents no pattern");
        cases.push(serde_json::json!({"name": name, "schema": schema, "samples": common}));
    }
    const SCRIPT: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
out = {}
for case in json.load(sys.stdin):
    validator = Draft202012Validator(case["schema"])
    out[case["name"]] = [validator.is_valid(s) for s in case["samples"]]
print(json.dumps(out))
"#;
    let verdicts = crate::helpers::python(SCRIPT, &Value::from(cases).to_string());
    let mut disagreements = Vec::new();
    for (name, parse) in &rules {
        for (sample, documented) in common.iter().zip(verdicts[name].as_array().unwrap()) {
            let enc = parse(sample);
            if Some(enc) != documented.as_bool() {
                disagreements.push(format!(
                    "{name} {sample:?}: enc {enc}, document {documented}"
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

#[tokio::test]
async fn explanations_and_conflicts_validate_against_the_document() {
    // Values of every JSON type along a chain, and groups that disagree.
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    app.group(
        serde_json::json!({"name": "root", "parameters": {"port": "22", "n": 1},
        "classes": {"ntp": {"servers": ["a"], "on": true}}}),
    )
    .await;
    app.group(serde_json::json!({"name": "web", "parent": "root",
        "parameters": {"port": 2222, "n": null}, "classes": {"ntp": {"servers": "b"}}}))
        .await;
    app.group(serde_json::json!({"name": "db", "parameters": {"port": "5432"}, "pinned": ["n2"]}))
        .await;
    app.node("n1", Some("web")).await;
    app.post(
        "/nodes/?force=true",
        serde_json::json!({"unique_name": "n2",
        "node_group_name": "web", "environment_name": "production", "puppet_cluster_name": "eu"}),
    )
    .await
    .ok(StatusCode::CREATED);
    let explained = app
        .get("/nodes/n1/classification?explain=true")
        .await
        .ok(StatusCode::OK);
    let conflict = app
        .get("/nodes/n2/classification?explain=true")
        .await
        .problem(StatusCode::CONFLICT);
    let document = document();
    let cases = serde_json::json!([
        {"schema": "ClassificationResponse", "value": explained},
        {"schema": "Membership", "value": conflict["membership"]},
        {"schema": "Conflict", "value": conflict["conflicts"][0]},
    ]);
    const SCRIPT: &str = r##"
import json, sys
from jsonschema import Draft202012Validator
given = json.load(sys.stdin)
out = []
for case in given["cases"]:
    schema = {"$ref": "#/components/schemas/" + case["schema"], "components": given["components"]}
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(case["value"])]
    out.append({"schema": case["schema"], "errors": errors})
print(json.dumps(out))
"##;
    let input = serde_json::json!({"cases": cases, "components": document["components"]});
    let verdicts = crate::helpers::python(SCRIPT, &input.to_string());
    for verdict in verdicts.as_array().unwrap() {
        assert_eq!(verdict["errors"], serde_json::json!([]), "{verdict}");
    }
}

/// A client that follows the document's links (schemathesis's stateful phase) makes the
/// writes it links to, never previews them: a `DELETE ...?dry_run=true` leaves the object
/// there, and a client taking it for a delete would report the object "still available".
#[test]
fn every_link_to_a_previewable_write_says_it_is_not_a_dry_run() {
    let document = document();
    let mut previewable = std::collections::BTreeSet::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            let takes = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == "dry_run" && p["in"] == "query");
            if takes {
                previewable.insert(operation["operationId"].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(previewable.contains("delete_node_group"), "{previewable:?}");
    let mut checked = 0;
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            for response in operation["responses"].as_object().into_iter().flatten() {
                for link in response.1["links"].as_object().into_iter().flatten() {
                    let target = link.1["operationId"].as_str().unwrap();
                    if previewable.contains(target) {
                        assert_eq!(
                            link.1["parameters"]["dry_run"], "false",
                            "{}: {target}",
                            link.0
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked >= 4, "links to previewable writes: {checked}");
}
