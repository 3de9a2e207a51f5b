//! Classification as code over HTTP: the whole classification as a tree of YAML files, one
//! per object (`GET /export`); such a tree planned against what is stored
//! (`POST /import?dry_run=true`) and applied exactly as planned (`POST /import` with
//! `If-Match: <plan id>`). The files' format is `handlers::tree`; planning and applying are
//! the classifier's (`classifier::plan`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::tree::{parse_tree, render};
use crate::AppState;
use crate::auth::Caller;
use crate::classifier::Write;
pub use crate::classifier::plan::{
    Applied, ApplyOutcome, Plan, PlanAction, PlanOrOutcome, PlanSummary, PlannedChange,
};
use crate::classifier::plan::{AsStored, Object, Proposal};
use crate::error::{AppError, ReadProblems, WriteProblems};
use crate::extract::{Query, parse_body};

/// The largest tree `POST /import` takes.
pub const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;

/// The classification as files.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Tree {
    /// Each object's YAML file by path: `environments/<cluster>/<environment>.yaml`,
    /// `node_groups/<name>.yaml`, `nodes/<certname>.yaml` (names percent-encoded but for
    /// letters, digits, space, `.`, `-` and `_`).
    #[schema(example = json!({"nodes/web01.example.com.yaml": "unique_name: web01.example.com\nnode_group_name: web\nenvironment_name: production\npuppet_cluster_name: puppet-eu\nclasses: {}\nparameters: {}\n"}))]
    pub files: BTreeMap<String, String>,
}

/// A tree to plan or apply.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    /// Each object's YAML file by path, as `GET /export` gives them.
    pub files: BTreeMap<String, String>,
    /// Delete the objects that are not in the tree (default: leave them alone).
    #[serde(default)]
    pub prune: bool,
    /// The tree's source revision (e.g. a git commit), kept on every object applied.
    #[schema(max_length = 200, example = "3f9c2e1")]
    pub source_revision: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Plan only: answer what the apply would do, and its plan id; store nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Apply even though the plan gives nodes conflicting values.
    #[serde(default)]
    pub force: bool,
}

/// The whole classification as a tree of YAML files, one per object, in a stable order and
/// form, so that a diff of two exports shows exactly what changed.
#[utoipa::path(get, path = "/export", tag = "classification as code", operation_id = "export",
    security(("bearer" = ["read"])),
    responses((status = 200, description = "The tree: every object as a file", body = Tree), ReadProblems))]
pub async fn export(State(state): State<AppState>) -> Result<axum::Json<Tree>, AppError> {
    let _place = super::classifier(&state).fleet_work()?;
    let current = AsStored::read(&state.store).await?;
    let mut files = BTreeMap::new();
    for env in &current.environments {
        files.insert(env.item.path(), render(&env.item)?);
    }
    for group in &current.groups {
        files.insert(group.item.path(), render(&group.item)?);
    }
    for node in &current.nodes {
        files.insert(node.item.path(), render(&node.item)?);
    }
    Ok(axum::Json(Tree { files }))
}

/// The plan id an apply names (`If-Match`).
fn named_plan(headers: &HeaderMap) -> Result<String, AppError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Err(AppError::PreconditionRequired(
            "send the plan id to apply as If-Match (plan it with dry_run=true)".into(),
        ));
    };
    let text = value.to_str().unwrap_or_default().trim();
    let id = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(AppError::BadRequest(
            "If-Match must be a plan id, as a plan's plan_id gives it".into(),
        ))
    }
}

/// Plan a tree of YAML files against what is stored (`dry_run=true`: 200 with the plan and
/// its id, nothing stored), or apply exactly the plan named by `If-Match` (refused with 412
/// if it is no longer what the tree would do). Objects applied become `managed_by: git`.
#[utoipa::path(post, path = "/import", tag = "classification as code", operation_id = "import",
    security(("bearer" = ["write"])), params(ImportQuery,
        ("If-Match" = Option<String>, Header, description = "To apply: the plan id of the plan to apply")),
    request_body = ImportBody,
    responses(
        (status = 200, description = "`dry_run`: the plan; else what was applied", body = PlanOrOutcome),
        (status = 428, description = "An apply without a plan id", body = crate::error::Problem,
            content_type = "application/problem+json"),
        WriteProblems,
    ))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Query(options): Query<ImportQuery>,
    headers: HeaderMap,
    body: Result<axum::Json<Value>, JsonRejection>,
) -> Result<Response, AppError> {
    let body: ImportBody = match body {
        Ok(axum::Json(value)) => parse_body(value)?,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(AppError::PayloadTooLarge(format!(
                "a tree may be at most {MAX_IMPORT_BYTES} bytes"
            )));
        }
        Err(r) => return Err(r.into()),
    };
    let named = match options.dry_run {
        true => None,
        false => Some(named_plan(&headers)?),
    };
    if body
        .source_revision
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.len() > 200 || r.chars().any(char::is_control))
    {
        return Err(AppError::invalid(
            "source_revision",
            "must be 1 to 200 characters without control characters",
        ));
    }
    let proposal = Proposal {
        desired: parse_tree(&body.files)?,
        prune: body.prune,
        source_revision: body.source_revision,
    };
    let classifier = super::classifier(&state);
    let Some(id) = named else {
        return Ok(axum::Json(classifier.plan(&proposal).await?).into_response());
    };
    let write = Write {
        force: options.force,
        ..super::writer(&caller)
    };
    let outcome = classifier.apply(&proposal, &id, write).await?;
    Ok(axum::Json(outcome).into_response())
}
