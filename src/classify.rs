//! `enc classify <certname>`: Puppet's external node classifier command. It prints the
//! node's classification as YAML and exits 0, or exits non-zero with a one-line reason on
//! stderr. With a cache directory it keeps the last good answer per node and prints that,
//! with a warning, when the service cannot answer, so an outage does not fail agent runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use axum::http::StatusCode;

use crate::client::{FetchError, get_as};
use crate::config::Config;
use crate::domain::Certname;

pub async fn run(config: &Config, certname: &str) -> ExitCode {
    let certname = match Certname::parse(certname) {
        Ok(c) => c,
        Err(why) => return fail(&format!("{certname:?} is not a certname: it {why}")),
    };
    let url = format!(
        "{}/nodes/{certname}/classification?format=yaml",
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
    let outage = match get_as(&url, "application/yaml", token.as_deref(), timeout).await {
        Ok(answer) if answer.status == StatusCode::OK => {
            if let Some(path) = &cache
                && let Err(e) = save(path, &answer.body)
            {
                eprintln!(
                    "enc: warning: could not cache the answer in {}: {e}",
                    path.display()
                );
            }
            print(&answer.body);
            return ExitCode::SUCCESS;
        }
        Ok(answer) if answer.status == StatusCode::NOT_FOUND => {
            if let Some(path) = &cache {
                let _ = std::fs::remove_file(path);
            }
            return fail(&format!(
                "node {certname} is not classified by enc ({url} answered 404)"
            ));
        }
        Ok(answer) if answer.status.is_server_error() => {
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

fn fail(reason: &str) -> ExitCode {
    eprintln!("enc: {reason}");
    ExitCode::FAILURE
}

fn print(body: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(body).and_then(|()| out.flush());
}

/// Writes atomically, so a concurrent run never reads half an answer.
fn save(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
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
