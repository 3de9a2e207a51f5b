//! The metrics form in a real browser: headless Chromium, driven by Selenium.

use std::path::PathBuf;
use std::process::Command;

use crate::binary::{Enc, EncData};
use crate::helpers::tool;

#[test]
fn an_engineer_records_work_in_chromium() {
    let data = EncData::new();
    let enc = Enc::start(&data, 5);
    let token = enc.token("dana", &["activities:write", "activities:read"]);
    let reader = enc.token("swagger", &["read"]);
    // A group named as people name them, for Swagger UI to ask for by name.
    let (status, _) = enc.http(
        "POST",
        "/nodegroup/",
        Some(r#"{"name": "All Nodes (EU) #1?", "classes": {}}"#),
    );
    assert_eq!(status, 201);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../test-output/screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/metrics_form.py");
    let out = Command::new(tool("ENC_TEST_PYTHON", "python3"))
        .arg(script)
        .arg(enc.url())
        .arg(&shots)
        .arg(&token)
        .arg(&reader)
        .output()
        .expect("python with selenium (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for shot in [
        "00-sign-in",
        "01-filled",
        "02-saved",
        "03-invalid",
        "04-report",
        "05-phone",
        "06-cross-site",
        "07-swagger-authorized",
        "08-swagger-group-by-name",
    ] {
        let png = std::fs::read(shots.join(format!("{shot}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
    // What the browser saved is really stored.
    let (status, body) = enc.http("GET", "/metrics-form/entries?customer=Browser%20Co", None);
    assert_eq!(status, 200);
    assert!(
        body.contains("\"hours\":3.25") && body.contains("\"engineer\":\"dana\""),
        "{body}"
    );
    assert!(
        body.contains("\"recorded_by\":\"dana\""),
        "the signed-in token recorded it: {body}"
    );
    let (_, hostile) = enc.http(
        "GET",
        "/metrics-form/entries?customer=Cross%20Site%20Co",
        None,
    );
    assert!(
        hostile.contains("\"items\":[]"),
        "the cross-site post saved nothing: {hostile}"
    );
}
