//! What Puppet reads is what the API says: enc's YAML read back by Ruby's Psych, the parser
//! Puppet uses, over keys and values chosen to trip YAML readers.

use axum::http::{Request, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::helpers::{TestApp, psych};

/// Strings that mean something else to a YAML reader, or that a reader may mangle.
pub(crate) fn hostile_strings() -> Vec<String> {
    let mut corpus: Vec<String> = (0u32..0x20)
        .chain(0x7f..0xa0)
        .filter_map(char::from_u32)
        .map(|c| format!("a{c}b"))
        .collect();
    corpus.extend(
        [
            "\u{85}",
            "\u{2028}",
            "\u{2029}",
            "\u{feff}",
            "\u{feff}x",
            "\u{fffe}",
        ]
        .map(String::from),
    );
    corpus.extend(
        [
            "---",
            "...",
            "--- x",
            "<<",
            "!tag",
            "!!str",
            "!ruby/object:Puppet::Node",
            "&a",
            "*a",
            "? x",
            "- x",
            "-",
            "?",
            ":",
            ": x",
            "x: y",
            "x :y",
            "#",
            "# comment",
            "x #y",
            "%YAML 1.1",
            "%TAG",
            "@",
            "`",
            "|",
            ">",
            "|-\n x",
            "'",
            "\"",
            "\\",
            "\\n",
            "[a, b]",
            "{a: b}",
            ",",
            "\t",
            "a\tb",
            "\ttab",
            " lead",
            "trail ",
            "",
            " ",
            "true",
            "False",
            "yes",
            "No",
            "on",
            "OFF",
            "y",
            "n",
            "~",
            "null",
            "Null",
            "0x1F",
            "0o17",
            "0b11",
            "0755",
            "1_000",
            "12:30",
            "12:30:45",
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
            ".inf",
            "-.inf",
            ".nan",
            "1e3",
            "+1",
            "0.",
            ".5",
            "=",
            "日本語",
            "emoji 🎉",
            "\r\n",
            "\r",
        ]
        .map(String::from),
    );
    corpus.push("x".repeat(100_000));
    corpus.push("é\u{0}".repeat(5_000));
    corpus
}

fn hostile_numbers() -> Vec<Value> {
    vec![
        json!(0),
        json!(-1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(12345678901234567890u64),
        json!(1.5),
        json!(-0.0),
        json!(1e-7),
        json!(1.5e300),
        json!(5e-324),
        json!(f64::MAX),
        json!(0.1),
        json!(1e21),
        json!(123456789.125),
    ]
}

/// One document holding the corpus as keys and values, nested every way.
pub(crate) fn corpus() -> Value {
    let strings = hostile_strings();
    let mut keys = Map::new();
    for (i, s) in strings.iter().enumerate() {
        if enc::yaml::key_fits(s) {
            keys.insert(s.clone(), json!(i));
        }
    }
    json!({
        "values": strings,
        "numbers": hostile_numbers(),
        "keys": keys,
        "nested": {"<<": {"0": "y", "a": 1}, "0": "x", "list": [[], {}, [[]], [{"<<": "z"}], null, true, false]},
        "empty": {},
        "none": null,
    })
}

#[test]
fn psych_reads_the_yaml_exactly_as_the_json() {
    let json = corpus();
    let yaml = enc::yaml::to_yaml(&json);
    let read = psych(&yaml).unwrap_or_else(|e| panic!("Psych could not read enc's YAML: {e}"));
    if read != json {
        for (field, value) in json.as_object().unwrap() {
            assert_eq!(&read[field], value, "{field} as Psych reads it");
        }
    }
    assert_eq!(read, json);
}

#[test]
fn a_key_too_long_for_libyaml_would_have_failed_the_parse() {
    // What the write-time limit protects from: this is what Puppet would have seen.
    let too_long = "k".repeat(enc::yaml::MAX_KEY - 1);
    let yaml = enc::yaml::to_yaml(&json!({ too_long: 1 }));
    assert!(
        psych(&yaml).is_err(),
        "libyaml refuses implicit keys over 1024 characters"
    );
    let fits = "k".repeat(enc::yaml::MAX_KEY - 2);
    assert_eq!(
        psych(&enc::yaml::to_yaml(&json!({ fits.clone(): 1 }))).unwrap(),
        json!({ fits: 1 })
    );
}

#[tokio::test]
async fn a_classification_reads_in_psych_as_the_api_shows_it() {
    let app = TestApp::new().await;
    app.env("production", "eu").await;
    let corpus = corpus();
    app.group(json!({"name": "All Nodes", "classes": {"profile::hostile": {"cfg": corpus.clone()}}, "parameters": {"merge": {"<<": {"a": 1}, "a": 0}}}))
        .await;
    app.group(
        json!({"name": "BT Base Server", "parent": "All Nodes", "parameters": {"tier": "base"}}),
    )
    .await;
    app.node("web01", Some("BT Base Server")).await;
    let json = app
        .get("/nodes/web01/classification")
        .await
        .ok(StatusCode::OK);
    let request = Request::get("/nodes/web01/classification")
        .header(header::ACCEPT, "application/yaml")
        .body(axum::body::Body::empty())
        .unwrap();
    let yaml = TestApp::text(&app.send(request).await);
    assert_eq!(psych(&yaml).unwrap(), json);
    assert_eq!(json["classes"]["profile::hostile"]["cfg"], corpus);
    assert_eq!(json["parameters"]["merge"], json!({"<<": {"a": 1}, "a": 0}));
}

#[tokio::test]
async fn keys_puppet_could_not_read_are_refused_on_write() {
    let app = TestApp::new().await;
    let long = "k".repeat(enc::yaml::MAX_KEY - 1);
    let escaped = "\u{1}".repeat(200);
    for key in [long, escaped] {
        let fields = app
            .post(
                "/nodegroup/",
                json!({"name": "g", "parameters": {"cfg": {"deep": [{ key: 1 }]}}}),
            )
            .await
            .invalid_fields();
        assert_eq!(fields.len(), 1);
        assert!(
            fields[0].starts_with("parameters.cfg.deep.0."),
            "{fields:?}"
        );
    }
    assert_eq!(app.dump().await["node_groups"], json!([]));
    let fits = "k".repeat(enc::yaml::MAX_KEY - 2);
    app.group(json!({"name": "g", "classes": {"ntp": {"cfg": { fits: 1 }}}}))
        .await;
}
