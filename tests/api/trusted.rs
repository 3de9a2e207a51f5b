//! Trusted facts come from the node's certificate alone: `enc classify` verifies it against
//! the Puppet CA (and its CRL) and sends `$trusted` exactly as Puppet's own Ruby makes it
//! from that certificate. A certificate that does not verify, and the agent's own fact
//! cache, give none, so trusted-path rules cannot be claimed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::{Value, json};

use crate::binary::{BIN, Enc, EncData};
use crate::puppet_pki::{Ca, CaServer, Recorded, cache_json_facts, puppets_trusted, recorder};

/// Extension requests of every kind Puppet tells apart.
const EXTENSIONS: &[&str] = &[
    "1.3.6.1.4.1.34380.1.1.13=ASN1:UTF8String:db", // pp_role
    "1.3.6.1.4.1.34380.1.1.12=ASN1:UTF8String:production", // pp_environment
    "1.3.6.1.4.1.34380.1.1.1=ASN1:PRINTABLESTRING:ED803750-E3C7-44F5-BB08-41A04433FE2E", // pp_uuid
    "1.3.6.1.4.1.34380.1.3.1=ASN1:UTF8String:true", // pp_authorization
    "1.3.6.1.4.1.34380.1.3.13=ASN1:UTF8String:db_admin", // pp_auth_role
    "1.3.6.1.4.1.34380.1.2.1=ASN1:UTF8String:private value", // a private extension
    "1.3.6.1.4.1.34380.1.2.2=DER:68656c6c6f",      // not DER: Puppet takes the bytes, "hello"
    "1.3.6.1.4.1.34380.1.10=ASN1:IA5STRING:prefixed", // Puppet matches arcs by string prefix
    "1.2.3.4.5=ASN1:UTF8String:unregistered",      // outside Puppet's arcs
];

const ROLE_DB: &str = "1.3.6.1.4.1.34380.1.1.13=ASN1:UTF8String:db";

fn classify<K: AsRef<OsStr>, V: AsRef<OsStr>>(certname: &str, url: &str, env: &[(K, V)]) -> Output {
    Command::new(BIN)
        .env_clear()
        .args(["classify", certname])
        .env("ENC_URL", url)
        .env("ENC_CLASSIFY_TIMEOUT", "10")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[track_caller]
fn posted(out: &Output, requests: &Receiver<Recorded>) -> Value {
    assert!(out.status.success(), "{:?}", stderr_lines(out));
    let sent = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(sent.method, "POST");
    sent.body.expect("a body")
}

/// The settings that point `enc classify` at `ca` and its signed directory.
fn at_ca(ca: &Ca) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("ENC_PUPPET_CA_CERT", ca.ca_cert()),
        ("ENC_PUPPET_SIGNED_DIR", ca.signed_dir()),
    ]
}

#[test]
fn trusted_is_what_puppet_makes_of_the_certificate() {
    let ca = Ca::new("test");
    let (web, _) = ca.issue("web01.example.com", EXTENSIONS, None);
    let (bare, _) = ca.issue("db01", &[ROLE_DB], None);
    let (url, requests) = recorder();

    let puppets = puppets_trusted(&web, "web01.example.com");
    assert_eq!(puppets["authenticated"], "remote");
    assert_eq!(puppets["extensions"]["pp_role"], "db");
    assert_eq!(puppets["extensions"]["1.3.6.1.4.1.34380.1.2.2"], "hello");
    assert_eq!(puppets["extensions"]["1.3.6.1.4.1.34380.1.10"], "prefixed");
    assert!(
        puppets["extensions"].get("1.2.3.4.5").is_none(),
        "{puppets}"
    );
    assert_eq!(puppets["domain"], "example.com");
    assert_eq!(puppets_trusted(&bare, "db01")["domain"], Value::Null);

    for (certname, cert) in [("web01.example.com", &web), ("db01", &bare)] {
        let out = classify(certname, &url, &at_ca(&ca));
        assert!(out.stderr.is_empty(), "{:?}", stderr_lines(&out));
        let body = posted(&out, &requests);
        // No fact cache here: enc keeps the facts it has.
        assert!(body.get("facts").is_none(), "{body}");
        assert_eq!(
            body["trusted"],
            puppets_trusted(cert, certname),
            "{certname}"
        );
    }

    // Fetched from the CA over https instead, the CA's server checked against the Puppet CA:
    // when there is no signed directory, and when it lacks the node.
    let www = tempfile::tempdir().unwrap();
    CaServer::publish(www.path(), "web01.example.com", &web);
    let (server_cert, server_key) = ca.issue(
        "puppet",
        &["subjectAltName=IP:127.0.0.1,DNS:localhost"],
        None,
    );
    let server = CaServer::start(www.path(), &server_cert, &server_key);
    let elsewhere = tempfile::tempdir().unwrap();
    let ca_cert = ca.ca_cert();
    let settings: [&[(&str, &Path)]; 2] = [
        &[
            ("ENC_PUPPET_CA_CERT", &ca_cert),
            ("ENC_PUPPET_CA_URL", Path::new(&server.url)),
        ],
        &[
            ("ENC_PUPPET_CA_CERT", &ca_cert),
            ("ENC_PUPPET_CA_URL", Path::new(&server.url)),
            ("ENC_PUPPET_SIGNED_DIR", elsewhere.path()),
        ],
    ];
    for env in settings {
        let out = classify("web01.example.com", &url, env);
        assert!(out.stderr.is_empty(), "{:?}", stderr_lines(&out));
        assert_eq!(posted(&out, &requests)["trusted"], puppets);
    }
    let unknown = classify("nobody.example.com", &url, settings[0]);
    let lines = stderr_lines(&unknown);
    assert!(
        lines.len() == 1
            && lines[0].starts_with("enc: warning:")
            && lines[0].contains("/puppet-ca/v1/certificate/nobody.example.com"),
        "{lines:?}"
    );
    assert_eq!(
        posted(&unknown, &requests),
        json!({}),
        "no facts to post, and no trusted facts: enc drops any it kept"
    );
    drop(server);

    // A CA server whose certificate another CA signed is not asked.
    let other = Ca::new("other");
    let (impostor_cert, impostor_key) = other.issue(
        "puppet",
        &["subjectAltName=IP:127.0.0.1,DNS:localhost"],
        None,
    );
    let impostor = CaServer::start(www.path(), &impostor_cert, &impostor_key);
    let out = classify(
        "web01.example.com",
        &url,
        &[
            ("ENC_PUPPET_CA_CERT", ca_cert.as_path()),
            ("ENC_PUPPET_CA_URL", Path::new(&impostor.url)),
        ],
    );
    let lines = stderr_lines(&out);
    assert!(
        lines.len() == 1 && lines[0].contains("warning") && lines[0].contains(&impostor.url),
        "{lines:?}"
    );
    assert_eq!(posted(&out, &requests), json!({}), "no trusted facts");
}

#[test]
fn a_certificate_that_does_not_verify_gives_no_trusted_and_one_warning() {
    let ca = Ca::new("test");
    let other = Ca::new("other");
    let (good, _) = ca.issue("good.example.com", &[ROLE_DB], None);
    let old = ("20200101000000Z", "20210101000000Z");
    ca.issue("expired.example.com", &[ROLE_DB], Some(old));
    let later = ("20990101000000Z", "20991231000000Z");
    ca.issue("future.example.com", &[ROLE_DB], Some(later));
    let (revoked, _) = ca.issue("revoked.example.com", &[ROLE_DB], None);
    ca.revoke(&revoked);
    let (foreign, _) = other.issue("foreign.example.com", &[ROLE_DB], None);
    std::fs::copy(&foreign, ca.signed_dir().join("foreign.example.com.pem")).unwrap();
    std::fs::copy(&good, ca.signed_dir().join("imposter.example.com.pem")).unwrap();

    // Each node's fact cache claims the role, as an agent may.
    let certnames = [
        "good.example.com",
        "expired.example.com",
        "future.example.com",
        "revoked.example.com",
        "foreign.example.com",
        "imposter.example.com",
        "absent.example.com",
    ];
    let datadir = tempfile::tempdir().unwrap();
    let forged = json!({"kernel": "Linux", "trusted": {"authenticated": "remote", "extensions": {"pp_role": "db"}}});
    cache_json_facts(datadir.path(), &certnames, &forged);
    let mut env = at_ca(&ca);
    env.push(("ENC_FACTS_DIR", datadir.path().join("facts")));
    let (url, requests) = recorder();

    for (certname, why) in [
        ("expired.example.com", "expired"),
        ("future.example.com", "not valid yet"),
        ("revoked.example.com", "revoked"),
        ("foreign.example.com", "not signed by the Puppet CA"),
        ("imposter.example.com", "is for \"good.example.com\""),
        ("absent.example.com", "absent"),
    ] {
        let out = classify(certname, &url, &env);
        let lines = stderr_lines(&out);
        assert!(
            lines.len() == 1
                && lines[0].starts_with("enc: warning:")
                && lines[0].contains(certname)
                && lines[0].contains(why),
            "{certname}: {lines:?}"
        );
        let body = posted(&out, &requests);
        assert_eq!(body, json!({"facts": {"kernel": "Linux"}}), "{certname}");
    }

    // The good certificate verifies with the CRL in place, and trusted is its own.
    let out = classify("good.example.com", &url, &env);
    assert!(out.stderr.is_empty(), "{:?}", stderr_lines(&out));
    let body = posted(&out, &requests);
    assert_eq!(body["trusted"], puppets_trusted(&good, "good.example.com"));
    assert_eq!(body["facts"], json!({"kernel": "Linux"}));

    // A CRL that is not the Puppet CA's cannot vouch for it; one that cannot be read neither.
    for crl in [other.write_crl(), datadir.path().join("no-such-crl.pem")] {
        let mut env = env.clone();
        env.push(("ENC_PUPPET_CRL", crl.clone()));
        let out = classify("good.example.com", &url, &env);
        let lines = stderr_lines(&out);
        assert!(
            lines.len() == 1 && lines[0].contains("ENC_PUPPET_CRL"),
            "{crl:?}: {lines:?}"
        );
        assert!(posted(&out, &requests).get("trusted").is_none());
    }

    // Without the CA's settings: no trusted, and nothing to warn about.
    let facts_only = [("ENC_FACTS_DIR", datadir.path().join("facts"))];
    let out = classify("good.example.com", &url, &facts_only);
    assert!(out.stderr.is_empty(), "{:?}", stderr_lines(&out));
    assert_eq!(
        posted(&out, &requests),
        json!({"facts": {"kernel": "Linux"}})
    );
}

#[test]
fn a_chain_verifies_to_its_root_and_a_revoked_intermediate_vouches_for_no_one() {
    let root = Ca::new("root");
    let intermediate = Ca::intermediate(&root, "intermediate");
    let chain = std::fs::read_to_string(intermediate.ca_cert()).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    let (cert, _) = intermediate.issue("web01.example.com", &[ROLE_DB], None);
    intermediate.write_crl_chain(&root);
    let (url, requests) = recorder();

    let out = classify("web01.example.com", &url, &at_ca(&intermediate));
    assert!(out.stderr.is_empty(), "{:?}", stderr_lines(&out));
    let trusted = &posted(&out, &requests)["trusted"];
    assert_eq!(trusted, &puppets_trusted(&cert, "web01.example.com"));

    root.revoke(&intermediate.ca_cert());
    intermediate.write_crl_chain(&root);
    let out = classify("web01.example.com", &url, &at_ca(&intermediate));
    let lines = stderr_lines(&out);
    assert!(
        lines.len() == 1 && lines[0].contains("revoked"),
        "{lines:?}"
    );
    // Posted all the same, without trusted facts, so that enc drops the ones it kept from an
    // earlier run, and without facts, so that it keeps those.
    assert_eq!(posted(&out, &requests), json!({}));
}

#[test]
fn only_a_verified_certificate_places_a_node_by_its_trusted_facts() {
    const NODE: &str = "db01.example.com";
    let data = EncData::new();
    let enc = Enc::start(&data, 5);
    for (path, body) in [
        (
            "/environment/",
            json!({"environment_name": "production", "puppet_cluster_name": "eu"}),
        ),
        (
            "/nodegroup/",
            json!({"name": "base", "classes": {"base": {}}}),
        ),
        (
            "/nodegroup/",
            json!({
                "name": "Databases",
                "rule": ["=", ["trusted", "extensions", "pp_role"], "db"],
                "classes": {"role::db": {}},
                "environment_name": "production", "puppet_cluster_name": "eu"
            }),
        ),
        (
            "/nodes/",
            json!({"unique_name": NODE, "node_group_name": "base", "environment_name": "production", "puppet_cluster_name": "eu"}),
        ),
    ] {
        let (status, answer) = enc.http("POST", path, Some(&body.to_string()));
        assert_eq!(status, 201, "{answer}");
    }
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), enc.token("puppet-eu", &["classify"])).unwrap();
    let datadir = tempfile::tempdir().unwrap();
    let forged = json!({"kernel": "Linux", "trusted": {"authenticated": "remote", "certname": NODE, "extensions": {"pp_role": "db"}}});
    cache_json_facts(datadir.path(), &[NODE], &forged);
    let ca = Ca::new("test");
    let mut env = vec![
        ("ENC_FACTS_DIR", datadir.path().join("facts")),
        ("ENC_TOKEN_FILE", token.path().to_owned()),
    ];
    let classes = |out: &Output| -> Value {
        assert!(out.status.success(), "{:?}", stderr_lines(out));
        let node: Value = serde_norway::from_slice(&out.stdout).unwrap();
        node["classes"].clone()
    };
    let served = || {
        let (status, answer) = enc.http("GET", &format!("/nodes/{NODE}/classification"), None);
        assert_eq!(status, 200, "{answer}");
        serde_json::from_str::<Value>(&answer).unwrap()["classes"].clone()
    };

    // The fact cache's claim alone: not a database.
    let out = classify(NODE, &enc.url(), &env);
    assert_eq!(classes(&out), json!({"base": {}}));
    assert_eq!(served(), json!({"base": {}}));

    // A certificate that says otherwise: still not.
    env.extend(at_ca(&ca));
    ca.issue(
        NODE,
        &["1.3.6.1.4.1.34380.1.1.13=ASN1:UTF8String:web"],
        None,
    );
    let out = classify(NODE, &enc.url(), &env);
    assert!(out.stderr.is_empty(), "{:?}", stderr_lines(&out));
    assert_eq!(classes(&out), json!({"base": {}}));

    // Its certificate, signed by the Puppet CA, carries the role: a database.
    ca.issue(NODE, &[ROLE_DB], None);
    let out = classify(NODE, &enc.url(), &env);
    assert!(out.stderr.is_empty(), "{:?}", stderr_lines(&out));
    assert_eq!(classes(&out), json!({"base": {}, "role::db": {}}));
    assert_eq!(served(), json!({"base": {}, "role::db": {}}));
}
