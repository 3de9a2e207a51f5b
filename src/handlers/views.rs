//! How far every node's rule view is taken through the paths rules read now: while it is
//! not, group writes, previews and lookups over more nodes than `ENC_VIEWS_INLINE` say
//! their answers are provisional.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::classifier::views::ViewsStatus;
use crate::error::{AppError, ReadProblems};

/// The rules' paths, and how far views are taken through them.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleViews {
    /// Every fact path a group's rule reads now, as rules write them (`facts.os.family`).
    #[schema(example = json!(["facts.os.family", "trusted.extensions.pp_role"]))]
    pub paths: Vec<String>,
    /// A short name of that set of paths; each view names the one it was taken through.
    pub lens: String,
    /// Whether every node's view was taken through these paths: membership answers are
    /// exact. If not, views are being taken again (`taking`).
    pub current: bool,
    /// The last (or current) taking of every node's view again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taking: Option<Taking>,
}

/// A taking of every node's view through one set of paths.
#[derive(Debug, Serialize, ToSchema)]
pub struct Taking {
    pub lens: String,
    pub started_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Nodes' facts read so far.
    pub scanned: u64,
    /// Views written because they were taken through other paths.
    pub rewritten: u64,
}

/// The paths rules read, and how far every node's rule view is taken through them.
#[utoipa::path(get, path = "/rule-views", tag = "node groups",
    operation_id = "rule_views", security(("bearer" = ["read"])),
    responses((status = 200, description = "The rules' paths and how far views are taken", body = RuleViews), ReadProblems))]
pub async fn status(State(state): State<AppState>) -> Result<Json<RuleViews>, AppError> {
    let status = ViewsStatus::read(&state.store).await?;
    Ok(Json(RuleViews {
        paths: status.lens.paths().to_vec(),
        lens: status.lens.id().to_owned(),
        current: status.current,
        taking: status.taken.map(|t| Taking {
            lens: t.lens,
            started_at: t.started_at,
            finished_at: t.finished_at,
            scanned: t.scanned,
            rewritten: t.rewritten,
        }),
    }))
}
