//! `enc export`, `enc plan` and `enc apply`: a classification tree on disk, and the enc at
//! `ENC_URL` (`GET /export`, `POST /import`), with the token in `ENC_TOKEN_FILE`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use axum::http::{StatusCode, header};
use serde_json::{Value, json};

use crate::client::{Fetched, fetch_with};
use crate::config::Config;

/// The directories of a tree, one per kind of object.
pub const DIRS: [&str; 3] = ["environments", "node_groups", "nodes"];
/// How long a plan or an apply of a large tree may take.
const TIMEOUT: Duration = Duration::from_secs(600);
/// Exit status of a plan that would change something.
const CHANGES: u8 = 2;

fn fail(message: &str) -> ExitCode {
    eprintln!("enc: {message}");
    ExitCode::FAILURE
}

fn token(config: &Config) -> Result<Option<String>, String> {
    match &config.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| Some(t.trim().to_owned()))
            .map_err(|e| format!("ENC_TOKEN_FILE {}: {e}", path.display())),
        None => Ok(None),
    }
}

/// Asks enc, answering the body of a 200 as JSON or what went wrong.
async fn ask(
    config: &Config,
    path: &str,
    body: Option<&Value>,
    plan: Option<&str>,
) -> Result<Value, String> {
    crate::client::check_clear_text(&config.url, config.allow_http)?;
    let url = format!("{}{path}", config.url.trim_end_matches('/'));
    let token = token(config)?;
    let json = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
    let headers: Vec<_> = plan
        .map(|id| (header::IF_MATCH, format!("\"{id}\"")))
        .into_iter()
        .collect();
    let asked = fetch_with(
        &url,
        "application/json",
        token.as_deref(),
        json,
        &headers,
        TIMEOUT,
    );
    let Fetched { status, body } = asked.await.map_err(|e| e.to_string())?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status == StatusCode::OK {
        return Ok(answer);
    }
    let mut message = format!(
        "{url} answered {status}: {}",
        answer["detail"].as_str().unwrap_or("(no detail)")
    );
    for error in answer["errors"].as_array().into_iter().flatten() {
        let field = error["field"].as_str().unwrap_or_default();
        let text = error["message"].as_str().unwrap_or_default();
        message.push_str(&format!("\n  {field}: {text}"));
    }
    for applied in answer["applied"].as_array().into_iter().flatten() {
        message.push_str(&format!("\n  applied before that: {}", line(applied)));
    }
    Err(message)
}

fn line(change: &Value) -> String {
    format!(
        "{} {} {}",
        change["action"].as_str().unwrap_or_default(),
        change["kind"].as_str().unwrap_or_default(),
        change["key"].as_str().unwrap_or_default()
    )
}

/// Every `.yaml` file under the tree's directories, by path with `/` between parts.
pub fn read_tree(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    fn walk(root: &Path, at: &Path, files: &mut BTreeMap<String, String>) -> Result<(), String> {
        let entries = std::fs::read_dir(at).map_err(|e| format!("{}: {e}", at.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", at.display()))?;
            let path = entry.path();
            // What the entry is itself, not what a link points at: a link could take the
            // plan outside the tree (or a tree in git anywhere on the machine running it).
            let kind = entry
                .file_type()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if kind.is_symlink() {
                return Err(not_a_link(&path));
            }
            if kind.is_dir() {
                walk(root, &path, files)?;
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let relative = path.strip_prefix(root).unwrap_or(&path);
                let parts: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                files.insert(parts.join("/"), text);
            }
        }
        Ok(())
    }
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let mut files = BTreeMap::new();
    for kind in DIRS {
        let at = dir.join(kind);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(not_a_link(&at)),
            Ok(meta) if meta.is_dir() => walk(dir, &at, &mut files)?,
            _ => {}
        }
    }
    Ok(files)
}

fn not_a_link(path: &Path) -> String {
    format!(
        "{} is a symbolic link: a tree is read and written without following links",
        path.display()
    )
}

/// Writes `text` to `at` under `dir`, making the directories between: none of them, nor the
/// file, may be a link (the file is opened without following one).
fn write_file(dir: &Path, at: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let relative = at.strip_prefix(dir).unwrap_or(at);
    let mut so_far = dir.to_path_buf();
    let parents: Vec<_> = relative
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .collect();
    for part in parents {
        so_far.push(part);
        match std::fs::symlink_metadata(&so_far) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(not_a_link(&so_far)),
            Ok(_) => {}
            Err(_) => {
                std::fs::create_dir(&so_far).map_err(|e| format!("{}: {e}", so_far.display()))?
            }
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(at)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => not_a_link(at),
            _ => format!("{}: {e}", at.display()),
        })?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", at.display()))
}

/// Writes the files under `dir`, and removes the tree's other `.yaml` files, so that the
/// tree on disk is the export.
pub fn write_tree(dir: &Path, files: &BTreeMap<String, String>) -> Result<(), String> {
    let old = match dir.is_dir() {
        true => read_tree(dir)?,
        false => BTreeMap::new(),
    };
    for path in old.keys().filter(|p| !files.contains_key(*p)) {
        let at = dir.join(path);
        std::fs::remove_file(&at).map_err(|e| format!("{}: {e}", at.display()))?;
    }
    for (path, text) in files {
        let safe = path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
        if !safe || !DIRS.iter().any(|d| path.starts_with(&format!("{d}/"))) {
            return Err(format!("enc sent a file outside the tree: {path:?}"));
        }
        let at: PathBuf = dir.join(path);
        if old.get(path) != Some(text) {
            write_file(dir, &at, text)?;
        }
    }
    Ok(())
}

/// A classification tree and how to take it.
#[derive(Debug, clap::Args)]
pub struct TreeArgs {
    /// The tree: environments/, node_groups/ and nodes/ with one YAML file per object.
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// Delete the objects that are not in the tree (default: leave them alone).
    #[arg(long)]
    pub prune: bool,
    /// The tree's source revision (e.g. a git commit), kept on every object applied.
    #[arg(long, env = "ENC_SOURCE_REVISION")]
    pub source_revision: Option<String>,
}

/// `enc export --dir D`.
pub async fn export(config: &Config, dir: &Path) -> ExitCode {
    let tree = match ask(config, "/export", None, None).await {
        Ok(tree) => tree,
        Err(e) => return fail(&e),
    };
    let files: BTreeMap<String, String> = match serde_json::from_value(tree["files"].clone()) {
        Ok(files) => files,
        Err(e) => return fail(&format!("the export is not a tree of files: {e}")),
    };
    match write_tree(dir, &files) {
        Ok(()) => {
            println!("exported {} files to {}", files.len(), dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn body(tree: &TreeArgs) -> Result<Value, String> {
    let files = read_tree(&tree.dir)?;
    Ok(json!({
        "files": files,
        "prune": tree.prune,
        "source_revision": tree.source_revision,
    }))
}

/// The plan as people read it.
pub fn render_plan(plan: &Value) -> String {
    let mut out = String::new();
    let sign = |action: &str| match action {
        "create" => '+',
        "delete" => '-',
        "adopt" => '=',
        _ => '~',
    };
    for change in plan["changes"].as_array().into_iter().flatten() {
        let action = change["action"].as_str().unwrap_or_default();
        out.push_str(&format!(
            "{} {} ({})\n",
            sign(action),
            line(change),
            change["file"].as_str().unwrap_or_default()
        ));
        if action == "replace" {
            for op in change["diff"].as_array().into_iter().flatten() {
                let value = match &op["value"] {
                    Value::Null => String::new(),
                    v => format!(" {v}"),
                };
                out.push_str(&format!(
                    "    {} {}{value}\n",
                    op["op"].as_str().unwrap_or_default(),
                    op["path"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    let impact = &plan["impact"];
    let affected = impact["affected"].as_u64().unwrap_or(0);
    out.push_str(&format!(
        "nodes: {affected} of {} would get another classification\n",
        impact["examined"].as_u64().unwrap_or(0)
    ));
    for node in impact["nodes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}: {}\n",
            node["unique_name"].as_str().unwrap_or_default(),
            node["diff"]
        ));
    }
    if let Some(more) = impact["more"].as_u64().filter(|m| *m > 0) {
        out.push_str(&format!("  ... and {more} more\n"));
    }
    for failed in impact["failed"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  ! {}: {}\n",
            failed["unique_name"].as_str().unwrap_or_default(),
            failed["error"].as_str().unwrap_or_default()
        ));
    }
    let s = &plan["summary"];
    let n = |field: &str| s[field].as_u64().unwrap_or(0);
    out.push_str(&format!(
        "{} to create, {} to replace, {} to delete, {} to adopt; {} unchanged, {} left alone\n",
        n("create"),
        n("replace"),
        n("delete"),
        n("adopt"),
        n("unchanged"),
        n("left_alone")
    ));
    out.push_str(&format!(
        "plan {}\n",
        plan["plan_id"].as_str().unwrap_or_default()
    ));
    out
}

/// `enc plan --dir D`: 0 when nothing would change, 2 when something would.
pub async fn plan(config: &Config, tree: &TreeArgs) -> ExitCode {
    let planned = match body(tree) {
        Ok(body) => ask(config, "/import?dry_run=true", Some(&body), None).await,
        Err(e) => Err(e),
    };
    match planned {
        Ok(plan) => {
            print!("{}", render_plan(&plan));
            let s = &plan["summary"];
            let changes: u64 = ["create", "replace", "delete"]
                .iter()
                .map(|f| s[*f].as_u64().unwrap_or(0))
                .sum();
            match changes {
                0 => ExitCode::SUCCESS,
                _ => ExitCode::from(CHANGES),
            }
        }
        Err(e) => fail(&e),
    }
}

/// `enc apply --dir D --plan ID`.
pub async fn apply(config: &Config, tree: &TreeArgs, id: &str, force: bool) -> ExitCode {
    let path = match force {
        true => "/import?force=true",
        false => "/import",
    };
    let applied = match body(tree) {
        Ok(body) => ask(config, path, Some(&body), Some(id)).await,
        Err(e) => Err(e),
    };
    match applied {
        Ok(outcome) => {
            for change in outcome["applied"].as_array().into_iter().flatten() {
                println!("{} (version {})", line(change), change["version"]);
            }
            println!(
                "applied plan {}: {} objects written, {} written by an earlier apply",
                outcome["plan_id"].as_str().unwrap_or_default(),
                outcome["applied"].as_array().map_or(0, Vec::len),
                outcome["already_applied"]
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
