//! `enc classify <certname>`: Puppet's external node classifier command. It prints the
//! node's classification as YAML and exits 0, or exits non-zero with a one-line reason on
//! stderr. With a cache directory it keeps the last good answer per node and prints that,
//! with a warning, when the service cannot answer, so an outage does not fail agent runs.
//! It asks for JSON and writes the YAML itself, so an answer replaces the cached one only
//! once it has been read whole and is a classification of this node.
//!
//! It classifies with the node's facts from the Puppet server's fact cache (`facts`) and its
//! trusted facts from its certificate alone (`certificate`, `puppet_trusted`).

mod certificate;
mod der;
mod facts;
mod puppet_trusted;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use axum::http::StatusCode;

use crate::client::{FetchError, check_clear_text, fetch_at_most};
use crate::config::Config;
use crate::domain::Certname;

/// The longest classification read: far past any real one (enc keeps a group's classes and
/// parameters within its body limit), so that a wrong server cannot fill the memory of a
/// Puppet server's ENC runs, nor its cache.
const MAX_CLASSIFICATION_BYTES: usize = 8 << 20;

pub async fn run(config: &Config, certname: &str) -> ExitCode {
    let certname = match Certname::parse(certname) {
        Ok(c) => c,
        Err(why) => return fail(&format!("{certname:?} is not a certname: it {why}")),
    };
    if let Err(why) = check_clear_text(&config.url, config.allow_http) {
        return fail(&why);
    }
    let url = format!(
        "{}/nodes/{certname}/classification",
        config.url.trim_end_matches('/')
    );
    let cache = config
        .cache_dir
        .as_deref()
        .map(|dir| dir.join(format!("{certname}.yaml")));
    let token = match &config.token_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) => return fail(&format!("ENC_TOKEN_FILE {}: {e}", path.display())),
        },
        None => None,
    };
    let timeout = Duration::from_secs(config.classify_timeout);
    let body = classification_inputs(config, &certname, timeout).await;
    let asked = fetch_at_most(
        &url,
        "application/json",
        token.as_deref(),
        body,
        MAX_CLASSIFICATION_BYTES,
        timeout,
    );
    let outage = match asked.await {
        Ok(answer) if answer.status == StatusCode::OK => match as_yaml(&answer.body, &certname) {
            Ok(yaml) => {
                if let Some(path) = &cache
                    && let Err(e) = save(path, yaml.as_bytes())
                {
                    eprintln!(
                        "enc: warning: could not cache the answer in {}: {e}",
                        path.display()
                    );
                }
                print(yaml.as_bytes());
                return ExitCode::SUCCESS;
            }
            Err(why) => format!("{url} answered 200 with {why}"),
        },
        Ok(answer) if answer.status == StatusCode::NOT_FOUND => {
            if let Some(path) = &cache {
                let _ = std::fs::remove_file(path);
            }
            return fail(&format!(
                "node {certname} is not classified by enc ({url} answered 404)"
            ));
        }
        // A conflict between the node's groups is an outage of its classification: Puppet
        // keeps the last good answer while someone settles it.
        Ok(answer) if answer.status.is_server_error() || answer.status == StatusCode::CONFLICT => {
            format!("{url} answered {}", answer.status)
        }
        Ok(answer) if answer.status == StatusCode::UNAUTHORIZED => {
            return fail(&format!(
                "{url} answered 401: set ENC_TOKEN_FILE to a file holding a token with the scope classify"
            ));
        }
        Ok(answer) => return fail(&format!("{url} answered {}", answer.status)),
        Err(e @ (FetchError::Timeout { .. } | FetchError::Failed { .. })) => e.to_string(),
    };
    match cache.as_deref().map(read_cached) {
        Some(Some((body, age))) => {
            eprintln!("enc: warning: {outage}; using the answer cached {age} ago");
            print(&body);
            ExitCode::SUCCESS
        }
        _ => fail(&outage),
    }
}

/// The body to classify with, `{"facts": ..., "trusted": ...}`: the facts from the Puppet
/// server's fact cache, `trusted` only from the node's verified certificate. `None` (a plain
/// GET) when there is neither. Each thing missing is said once on stderr.
async fn classification_inputs(
    config: &Config,
    certname: &Certname,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let facts = config
        .facts_dir
        .as_deref()
        .and_then(|dir| match facts::cached_facts(dir, certname) {
            Ok(Some(facts)) => Some(facts),
            Ok(None) => {
                eprintln!(
                    "enc: warning: no facts of {certname} in {} (neither {certname}.json nor {certname}.yaml); classifying without facts",
                    dir.display()
                );
                None
            }
            Err(why) => {
                eprintln!("enc: warning: {why}; classifying without facts");
                None
            }
        });
    let ca = certificate::PuppetCa::from_config(config);
    let trusted = if ca.configured() {
        match ca.trusted(certname, timeout).await {
            Ok(trusted) => Some(trusted),
            Err(why) => {
                eprintln!("enc: warning: {why}; classifying without trusted facts");
                None
            }
        }
    } else {
        None
    };
    // With certificates to check, every run posts: a certificate that no longer verifies
    // (revoked, expired) must take away the trusted facts enc kept from an earlier run, and
    // without facts the body leaves out `facts`, so enc keeps the ones it has.
    if facts.is_none() && !ca.configured() {
        return None;
    }
    let mut body = serde_json::Map::new();
    if let Some(facts) = facts {
        body.insert("facts".into(), facts.into());
    }
    if let Some(trusted) = trusted {
        body.insert("trusted".into(), trusted);
    }
    Some(serde_json::Value::Object(body).to_string().into_bytes())
}

/// The answer as Puppet's YAML, if it is a whole classification of `certname`.
fn as_yaml(body: &[u8], certname: &Certname) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("something that is not JSON ({e})"))?;
    let is_object = |field: &str| value.get(field).is_some_and(serde_json::Value::is_object);
    let whole = value.get("name").and_then(|n| n.as_str()) == Some(certname.as_str())
        && value
            .get("environment")
            .is_some_and(serde_json::Value::is_string)
        && is_object("classes")
        && is_object("parameters");
    if !whole {
        return Err("something that is not this node's classification".into());
    }
    Ok(crate::yaml::to_yaml(&value))
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("enc: {reason}");
    ExitCode::FAILURE
}

fn print(body: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(body).and_then(|()| out.flush());
}

/// Writes atomically, so a concurrent run never reads half an answer, and privately: answers
/// hold parameters that may be secret. The directory is made (or narrowed to) 0700, and the
/// answer goes to a temporary file of an unguessable name, created only if nothing is there
/// (`O_EXCL`: a symlink planted at the name is not followed) with mode 0600, then renamed over
/// the node's file (a rename replaces a link, never writes through it).
fn save(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::store::embedded::private_dir(dir)?;
    }
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(std::io::Error::other)?;
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = PathBuf::from(format!("{}.{nonce}.tmp", path.display()));
    save_through(&tmp, path, body)
}

/// Writes `body` to the new file `tmp` (mode 0600, refused if anything, a link included, is
/// there), then renames it to `path`.
fn save_through(tmp: &Path, path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .and_then(|mut file| file.write_all(body).and_then(|()| file.sync_all()));
    match written.and_then(|()| std::fs::rename(tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

fn read_cached(path: &Path) -> Option<(Vec<u8>, String)> {
    let body = std::fs::read(path).ok()?;
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or_else(|| "some time".to_owned(), |d| format!("{} s", d.as_secs()));
    Some((body, age))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use super::*;

    #[test]
    fn an_answer_is_never_written_through_a_link_planted_at_its_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let answer = dir.path().join("web01.yaml");
        let tmp = dir.path().join("web01.yaml.planted.tmp");
        symlink(&victim, &tmp).unwrap();
        let refused = save_through(&tmp, &answer, b"secret parameters").unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(!answer.exists());
        // The link is left as it was found, not followed nor removed by this writer.
        assert!(
            std::fs::symlink_metadata(&tmp)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // With nothing planted, the answer is written privately.
        save(&answer, b"classes: {}").unwrap();
        let mode = std::fs::metadata(&answer).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&answer).unwrap(), b"classes: {}");
    }
}
