//! The ENC contract, end to end: real Puppet 7 runs `enc classify` against a running enc.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::binary::{BIN, Enc, EncData};
use crate::classification::{chain_requests, expected_classes, expected_parameters};
use crate::helpers::{tool, yaml_1_1};

const NODE: &str = "web01.example.com";

/// A running enc with the chain, and a file holding a `classify` token, as a Puppet server has.
struct Seeded {
    _data: EncData,
    enc: Enc,
    token_file: tempfile::NamedTempFile,
}

fn seeded() -> Seeded {
    let data = EncData::new();
    let enc = Enc::start(&data, 5);
    for (path, body) in chain_requests() {
        let (status, answer) = enc.http("POST", path, Some(&body.to_string()));
        assert_eq!(status, 201, "{answer}");
    }
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        token_file.path(),
        enc.token("puppet-eu", &["classify"]) + "\n",
    )
    .unwrap();
    Seeded {
        _data: data,
        enc,
        token_file,
    }
}

/// `puppet node find` with the exec terminus, in throwaway Puppet directories.
fn puppet_find(certname: &str, url: &str, token: &Path, cache: &Path, dirs: &Path) -> Output {
    puppet_find_with(certname, url, token, cache, dirs, &[])
}

fn puppet_find_with(
    certname: &str,
    url: &str,
    token: &Path,
    cache: &Path,
    dirs: &Path,
    env: &[(&str, &Path)],
) -> Output {
    let dir = |name: &str| dirs.join(name).display().to_string();
    std::fs::create_dir_all(dirs.join("code/environments/production")).unwrap();
    Command::new(tool("ENC_TEST_PUPPET", "puppet"))
        .envs(env.iter().copied())
        .args(["node", "find", certname, "--terminus", "exec"])
        .args(["--external_nodes", &format!("{BIN} classify")])
        .args(["--render-as", "yaml"])
        .args(["--confdir", &dir("conf"), "--vardir", &dir("var")])
        .args(["--codedir", &dir("code"), "--logdir", &dir("log")])
        .env("ENC_URL", url)
        .env("ENC_TOKEN_FILE", token)
        .env("ENC_CACHE_DIR", cache)
        .env("ENC_CLASSIFY_TIMEOUT", "5")
        .output()
        .expect("puppet runs (scripts/test installs Debian's puppet package)")
}

/// What Puppet made of the node: its YAML output, as JSON.
#[track_caller]
fn puppet_node(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "puppet failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("--- !ruby/object:Puppet::Node"),
        "{stdout}"
    );
    yaml_1_1(&stdout)
}

#[track_caller]
fn assert_classified(node: &Value) {
    assert_eq!(node["name"], NODE);
    assert_eq!(node["environment"], "production");
    assert_eq!(node["classes"], expected_classes());
    // Puppet adds its own facts to the parameters; ours must all be there, unchanged.
    for (name, value) in expected_parameters().as_object().unwrap() {
        assert_eq!(&node["parameters"][name], value, "parameter {name}");
    }
}

#[test]
fn puppet_classifies_by_the_facts_of_its_own_fact_cache() {
    let Seeded {
        enc, token_file, ..
    } = seeded();
    let rule_group = serde_json::json!({
        "name": "Debian boxes",
        "rule": ["and", ["=", ["fact", "os", "family"], "Debian"], [">=", ["fact", "processors", "count"], "2"]],
        "classes": {"profile::apt": {"mirror": "deb.example.com"}},
        "environment_name": "production", "puppet_cluster_name": "eu"
    });
    let (status, answer) = enc.http("POST", "/nodegroup/", Some(&rule_group.to_string()));
    assert_eq!(status, 201, "{answer}");
    // The fact cache as a Puppet server keeps it: an older server's YAML, written by Puppet's
    // own YAML writer; Puppet Server 7's JSON, written by Puppet's JSON facts terminus.
    let server_datadir = tempfile::tempdir().unwrap();
    let facts = server_datadir.path().join("facts");
    std::fs::create_dir(&facts).unwrap();
    let cache_yaml_facts = |certname: &str| {
        let file = facts.join(format!("{certname}.yaml"));
        let written = Command::new(tool("ENC_TEST_RUBY", "ruby"))
            .args(["-e", r#"require "puppet"
facts = Puppet::Node::Facts.new(ARGV[0], {"os" => {"family" => "Debian"}, "processors" => {"count" => 4}, "kernel" => "Linux"})
facts.timestamp = Time.now
Puppet::Util::Yaml.dump(facts, ARGV[1])"#, certname])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            written.status.success(),
            "{}",
            String::from_utf8_lossy(&written.stderr)
        );
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("--- !ruby/object:Puppet::Node::Facts"),
            "{text}"
        );
    };
    cache_yaml_facts(NODE);

    let (dirs, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [("ENC_FACTS_DIR", facts.as_path())];
    let url = enc.url();
    let find = |certname: &str| {
        puppet_find_with(
            certname,
            &url,
            token_file.path(),
            cache.path(),
            dirs.path(),
            &env,
        )
    };
    let out = find(NODE);
    let node = puppet_node(&out);
    assert_eq!(
        node["classes"]["profile::apt"],
        serde_json::json!({"mirror": "deb.example.com"})
    );
    for (class, parameters) in expected_classes().as_object().unwrap() {
        assert_eq!(&node["classes"][class], parameters, "{class}");
    }
    // enc kept the facts: it explains the match, and classifies by them without the cache.
    let (status, explained) = enc.http(
        "GET",
        &format!("/nodes/{NODE}/classification?explain=true"),
        None,
    );
    assert_eq!(status, 200);
    let explained: Value = serde_json::from_str(&explained).unwrap();
    let groups = explained["membership"]["groups"].as_array().unwrap();
    assert!(
        groups
            .iter()
            .any(|g| g["group"] == "Debian boxes" && g["why"][0] == "rule"),
        "{groups:?}"
    );
    assert!(explained["membership"]["facts_received_at"].is_string());
    let plain = puppet_find(
        NODE,
        &enc.url(),
        token_file.path(),
        cache.path(),
        dirs.path(),
    );
    assert_eq!(
        puppet_node(&plain)["classes"]["profile::apt"]["mirror"],
        "deb.example.com"
    );

    // A node enc has never heard of, that the rule takes in through its facts: recorded, in
    // the environment its group gives, and classified.
    let newcomer = "new01.example.com";
    let written = crate::puppet_pki::cache_json_facts(
        server_datadir.path(),
        &[newcomer],
        &serde_json::json!({"os": {"family": "Debian"}, "processors": {"count": 4}}),
    );
    assert_eq!(written, [facts.join(format!("{newcomer}.json"))]);
    let out = find(newcomer);
    let node = puppet_node(&out);
    assert_eq!(node["name"], newcomer);
    assert_eq!(node["environment"], "production");
    assert_eq!(
        node["classes"],
        serde_json::json!({"profile::apt": {"mirror": "deb.example.com"}})
    );
    let (status, recorded) = enc.http("GET", &format!("/nodes/{newcomer}"), None);
    assert_eq!(status, 200, "{recorded}");

    // A forced change that makes the node's groups disagree: enc answers 409, and Puppet
    // keeps the last good answer from enc classify's cache.
    let rival = serde_json::json!({
        "name": "rival", "pinned": [NODE],
        "classes": {"profile::apt": {"mirror": "elsewhere.example.com"}}
    });
    let (status, answer) = enc.http("POST", "/nodegroup/?force=true", Some(&rival.to_string()));
    assert_eq!(status, 201, "{answer}");
    let (status, _) = enc.http("GET", &format!("/nodes/{NODE}/classification"), None);
    assert_eq!(status, 409);
    let out = find(NODE);
    let kept = puppet_node(&out);
    assert_eq!(kept["classes"]["profile::apt"]["mirror"], "deb.example.com");
}

#[test]
fn puppet_gets_the_classification_and_falls_back_to_the_cache() {
    let Seeded {
        mut enc,
        token_file,
        ..
    } = seeded();
    let token = token_file.path();
    let puppet_dirs = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let url = enc.url();
    let find = |certname: &str, token: &Path, cache: &Path| {
        puppet_find(certname, &url, token, cache, puppet_dirs.path())
    };

    assert_classified(&puppet_node(&find(NODE, token, cache.path())));
    let unknown = find("nobody.example.com", token, cache.path());
    assert!(
        !unknown.status.success(),
        "an unknown node must fail the lookup"
    );

    // Without a valid token Puppet gets nothing, and never the cached answer as if fresh.
    let empty = tempfile::NamedTempFile::new().unwrap();
    let no_token = find(NODE, empty.path(), cache.path());
    assert!(!no_token.status.success(), "no token must fail");
    let (status, _) = enc.http("DELETE", "/tokens/puppet-eu", None);
    assert_eq!(status, 204);
    let revoked = find(NODE, token, cache.path());
    assert!(!revoked.status.success(), "a revoked token must fail");

    enc.terminate();
    assert!(enc.wait(Duration::from_secs(10)).success());
    let cached = find(NODE, token, cache.path());
    assert_classified(&puppet_node(&cached));
    let without_cache = tempfile::tempdir().unwrap();
    let failed = find(NODE, token, without_cache.path());
    assert!(
        !failed.status.success(),
        "no service and no cache must fail"
    );
}

fn classify(
    certname: &str,
    url: &str,
    token: &Path,
    cache: Option<&Path>,
    timeout_seconds: u64,
) -> Output {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .args(["classify", certname])
        .env("ENC_URL", url)
        .env("ENC_TOKEN_FILE", token)
        .env("ENC_CLASSIFY_TIMEOUT", timeout_seconds.to_string());
    if let Some(cache) = cache {
        command.env("ENC_CACHE_DIR", cache);
    }
    command.output().unwrap()
}

/// A server that answers every request with this status line and body.
fn canned(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut stream, answer.as_bytes());
        }
    });
    url
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A Puppet node as Puppet itself reads its YAML (Psych, with Puppet's classes loaded).
fn as_puppet_reads_it(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "puppet failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::helpers::ruby(
        "n = YAML.unsafe_load($stdin.read); puts JSON.generate({classes: n.classes, parameters: n.parameters})",
        &["puppet"],
        &stdout,
    )
    .unwrap()
}

#[test]
fn puppet_reads_hostile_values_and_free_text_group_names_as_the_api_shows_them() {
    let data = EncData::new();
    let enc = Enc::start(&data, 5);
    let corpus = crate::yaml::corpus();
    let requests = [
        (
            "/environment/",
            serde_json::json!({"environment_name": "production", "puppet_cluster_name": "eu"}),
        ),
        (
            "/nodegroup/",
            serde_json::json!({"name": "All Nodes", "classes": {"profile::hostile": {"cfg": corpus, "merge": {"<<": {"a": 1}, "a": 0}}}, "parameters": {"site": "Ünïcode\u{2028}"}}),
        ),
        (
            "/nodegroup/",
            serde_json::json!({"name": "BT Base Server", "parent": "All Nodes", "classes": {"roles::base": {}}}),
        ),
        (
            "/nodes/",
            serde_json::json!({"unique_name": NODE, "node_group_name": "BT Base Server", "environment_name": "production", "puppet_cluster_name": "eu"}),
        ),
    ];
    for (path, body) in requests {
        let (status, answer) = enc.http("POST", path, Some(&body.to_string()));
        assert_eq!(status, 201, "{answer}");
    }
    let (_, api) = enc.http(
        "GET",
        &format!("/nodes/{NODE}/classification?explain=true"),
        None,
    );
    let api: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(
        api["explain"]["classes"]["roles::base"]["name"],
        "BT Base Server"
    );
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), enc.token("puppet", &["classify"])).unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let node = as_puppet_reads_it(&puppet_find(
        NODE,
        &enc.url(),
        token.path(),
        cache.path(),
        dirs.path(),
    ));
    assert_eq!(
        node["classes"], api["classes"],
        "classes as Puppet reads them"
    );
    for (name, value) in api["parameters"].as_object().unwrap() {
        assert_eq!(&node["parameters"][name], value, "parameter {name}");
    }
}

#[test]
fn classify_says_once_that_the_fact_cache_has_no_facts_of_the_node() {
    let Seeded {
        enc, token_file, ..
    } = seeded();
    let facts = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .env_clear()
        .args(["classify", NODE])
        .env("ENC_URL", enc.url())
        .env("ENC_TOKEN_FILE", token_file.path())
        .env("ENC_FACTS_DIR", facts.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines = stderr_lines(&out);
    assert!(
        lines.len() == 1
            && lines[0].starts_with("enc: warning:")
            && lines[0].contains(&format!("{NODE}.json"))
            && lines[0].contains(&format!("{NODE}.yaml")),
        "{lines:?}"
    );
    let (_, served) = enc.http(
        "GET",
        &format!("/nodes/{NODE}/classification?format=yaml"),
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), served);
}

#[test]
fn classify_command_contract() {
    let Seeded {
        mut enc,
        token_file,
        ..
    } = seeded();
    let token = token_file.path();
    let cache = tempfile::tempdir().unwrap();

    let ok = classify(NODE, &enc.url(), token, Some(cache.path()), 5);
    assert!(ok.status.success());
    assert!(ok.stderr.is_empty(), "{:?}", stderr_lines(&ok));
    let (_, served) = enc.http(
        "GET",
        &format!("/nodes/{NODE}/classification?format=yaml"),
        None,
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), served);

    for bad in ["nobody", "Not A Certname"] {
        let out = classify(bad, &enc.url(), token, Some(cache.path()), 5);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(out.stdout.is_empty());
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("enc: "), "{lines:?}");
    }

    // Refused identity fails at once, the cached answer unused.
    let empty = tempfile::NamedTempFile::new().unwrap();
    let refused = classify(NODE, &enc.url(), empty.path(), Some(cache.path()), 5);
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty());
    let lines = stderr_lines(&refused);
    assert!(
        lines.len() == 1 && lines[0].contains("401") && lines[0].contains("ENC_TOKEN_FILE"),
        "{lines:?}"
    );

    // A service that accepts connections but never answers: the timeout bounds the wait.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let asked = Instant::now();
    let cached = classify(NODE, &silent_url, token, Some(cache.path()), 1);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert!(cached.status.success());
    assert_eq!(cached.stdout, ok.stdout);
    let lines = stderr_lines(&cached);
    assert!(
        lines.len() == 1 && lines[0].contains("warning") && lines[0].contains("cached"),
        "{lines:?}"
    );
    // An answer that is not this node's classification never replaces the good one; nor
    // does a failing service's.
    for (status, body) in [
        ("200 OK", "not json"),
        (
            "200 OK",
            r#"{"name": "someone-else", "environment": "x", "classes": {}, "parameters": {}}"#,
        ),
        ("200 OK", r#"{"name": "web01.example.com"}"#),
        ("500 Internal Server Error", "{}"),
        ("503 Service Unavailable", ""),
    ] {
        let out = classify(NODE, &canned(status, body), token, Some(cache.path()), 5);
        assert!(out.status.success(), "{status} {body}");
        assert_eq!(out.stdout, ok.stdout, "{status} {body}: the cached answer");
        let lines = stderr_lines(&out);
        assert!(lines.len() == 1 && lines[0].contains("cached"), "{lines:?}");
    }
    let kept = std::fs::read(cache.path().join(format!("{NODE}.yaml"))).unwrap();
    assert_eq!(
        kept, ok.stdout,
        "the cache still holds the last good answer"
    );
    let uncached = classify(NODE, &silent_url, token, None, 1);
    assert_eq!(uncached.status.code(), Some(1));
    assert!(stderr_lines(&uncached)[0].contains("no answer"));

    // healthcheck follows the server's ENC_LISTEN.
    let health = |addr: &str| {
        Command::new(BIN)
            .env_clear()
            .env("ENC_LISTEN", addr)
            .arg("healthcheck")
            .status()
            .unwrap()
    };
    assert!(health(&enc.addr.to_string()).success());
    let any_interface = format!("0.0.0.0:{}", enc.addr.port());
    assert!(health(&any_interface).success());
    enc.terminate();
    assert!(enc.wait(Duration::from_secs(10)).success());
    assert!(!health(&enc.addr.to_string()).success());
}

/// A server that answers every request 200 with `body` (any length), as JSON.
fn canned_bytes(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut stream, head.as_bytes());
            let _ = std::io::Write::write_all(&mut stream, &body);
        }
    });
    url
}

#[test]
fn classify_keeps_its_cache_private_never_writes_through_a_link_and_reads_answers_of_bounded_size()
{
    use std::os::unix::fs::{PermissionsExt as _, symlink};
    let Seeded {
        enc, token_file, ..
    } = seeded();
    let token = token_file.path();
    let parent = tempfile::tempdir().unwrap();
    // A cache directory made by hand, readable by everyone: narrowed to its owner.
    let cache = parent.path().join("enc-cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A link planted where the node's answer goes, to a file the attacker wants written.
    let victim = parent.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let answer = cache.join(format!("{NODE}.yaml"));
    symlink(&victim, &answer).unwrap();

    let ok = classify(NODE, &enc.url(), token, Some(&cache), 5);
    assert!(ok.status.success(), "{:?}", stderr_lines(&ok));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let file = std::fs::symlink_metadata(&answer).unwrap();
    assert!(
        file.file_type().is_file(),
        "the link was replaced, not followed"
    );
    assert_eq!(
        file.permissions().mode() & 0o777,
        0o600,
        "the answer is private"
    );
    let dir = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir, 0o700, "the cache directory is private");
    assert_eq!(std::fs::read(&answer).unwrap(), ok.stdout);
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "no temporary file is left: {left:?}");
    // A cache directory enc makes itself is private from the start.
    let fresh = parent.path().join("made/by/enc");
    assert!(
        classify(NODE, &enc.url(), token, Some(&fresh), 5)
            .status
            .success()
    );
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    // An answer past the cap (8 MiB) is refused as it comes, and never cached: the last
    // good answer is served.
    let mut huge = format!(r#"{{"name": "{NODE}", "environment": "production", "classes": {{}}, "parameters": {{"pad": ""#).into_bytes();
    huge.extend(std::iter::repeat_n(b'x', 9 << 20));
    huge.extend_from_slice(br#""}}"#);
    let out = classify(NODE, &canned_bytes(huge), token, Some(&cache), 10);
    assert!(out.status.success(), "{:?}", stderr_lines(&out));
    assert_eq!(out.stdout, ok.stdout, "the cached answer, not the huge one");
    let lines = stderr_lines(&out);
    assert!(
        lines.len() == 1 && lines[0].contains("longer than") && lines[0].contains("cached"),
        "{lines:?}"
    );
    assert_eq!(std::fs::read(&answer).unwrap(), ok.stdout);

    // A token is not sent in clear to another machine: refused before any connection,
    // unless ENC_ALLOW_HTTP says so.
    let far = "http://192.0.2.10:8080";
    let refused = classify(NODE, far, token, Some(&cache), 5);
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty(), "not even the cached answer");
    let lines = stderr_lines(&refused);
    assert!(
        lines.len() == 1 && lines[0].contains("ENC_ALLOW_HTTP") && lines[0].contains("clear"),
        "{lines:?}"
    );
    let allowed = Command::new(BIN)
        .env_clear()
        .args(["classify", NODE])
        .env("ENC_URL", far)
        .env("ENC_TOKEN_FILE", token)
        .env("ENC_CLASSIFY_TIMEOUT", "1")
        .env("ENC_ALLOW_HTTP", "true")
        .output()
        .unwrap();
    let lines = stderr_lines(&allowed);
    assert!(
        !allowed.status.success() && lines.iter().all(|l| !l.contains("ENC_ALLOW_HTTP")),
        "allowed, it tried (and found nothing there): {lines:?}"
    );
    for local in ["http://localhost:1", "http://127.0.0.1:1", "http://[::1]:1"] {
        let out = classify(NODE, local, token, None, 1);
        let lines = stderr_lines(&out);
        assert!(
            lines.iter().all(|l| !l.contains("ENC_ALLOW_HTTP")),
            "{local}: {lines:?}"
        );
    }
}
