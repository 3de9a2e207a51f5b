//! What operators ask of rules: which nodes a group holds now, and which nodes get a class
//! and from where. Both judge nodes on their last facts, read from the cursor on until the
//! page is full (`Classifier::members`, `holders`): for operators, not for agent runs.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ListResponse, page_request, parse_name};
use crate::AppState;
use crate::domain::Why;
use crate::domain::{Certname, ClassName, GroupName, Source};
use crate::error::{AppError, ReadProblems};
use crate::extract::{Path, Query};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    /// Nodes per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page: the last certname it held.
    cursor: Option<String>,
}

/// A node in a group, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    #[schema(value_type = String)]
    pub unique_name: Certname,
    pub why: Vec<Why>,
}

/// A node that gets a class, and where it comes from.
#[derive(Debug, Serialize, ToSchema)]
pub struct Holder {
    #[schema(value_type = String)]
    pub unique_name: Certname,
    pub from: Source,
}

/// Which page a lookup asks for: its size, and the certname it goes on after.
fn requested(query: LookupQuery) -> Result<(usize, Option<Certname>), AppError> {
    let request = page_request(query.limit, query.cursor)?;
    let after = match &request.cursor {
        Some(text) => Some(Certname::parse(text).map_err(|_| {
            AppError::BadRequest("the pagination cursor is not valid for this listing".into())
        })?),
        None => None,
    };
    Ok((request.limit, after))
}

/// The page of `items` (by certname, up to `limit + 1` of them: one more says there are).
fn page<T>(mut items: Vec<(Certname, T)>, limit: usize) -> ListResponse<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = more
        .then(|| items.last().map(|(n, _)| n.to_string()))
        .flatten();
    ListResponse {
        items: items.into_iter().map(|(_, item)| item).collect(),
        next_cursor,
    }
}

/// The nodes a group holds now: by name, pin or rule (on each node's last facts); not those
/// of the groups below it.
#[utoipa::path(get, path = "/nodegroup/{node_group_name}/nodes", tag = "node groups",
    operation_id = "node_group_members", security(("bearer" = ["read"])),
    params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded"), LookupQuery),
    responses((status = 200, body = ListResponse<Member>), ReadProblems))]
pub async fn members(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<LookupQuery>,
) -> Result<axum::Json<ListResponse<Member>>, AppError> {
    let name = parse_name("node_group_name", &name, GroupName::parse)?;
    let (limit, after) = requested(query)?;
    let found = super::classifier(&state).members(&name, after.as_ref(), limit);
    let found = found
        .await?
        .into_iter()
        .map(|(unique_name, why)| (unique_name.clone(), Member { unique_name, why }))
        .collect();
    Ok(axum::Json(page(found, limit)))
}

/// The nodes that get a class, each with the group (or the node) it comes from; nodes whose
/// groups conflict are left out.
#[utoipa::path(get, path = "/classes/{class_name}/nodes", tag = "classification",
    operation_id = "class_holders", security(("bearer" = ["read"])),
    params(("class_name" = ClassName, Path, description = "A Puppet class, such as `profile::nginx`"), LookupQuery),
    responses((status = 200, body = ListResponse<Holder>), ReadProblems))]
pub async fn holders(
    State(state): State<AppState>,
    Path(class): Path<String>,
    Query(query): Query<LookupQuery>,
) -> Result<axum::Json<ListResponse<Holder>>, AppError> {
    let class = parse_name("class_name", &class, ClassName::parse)?;
    let (limit, after) = requested(query)?;
    let found = super::classifier(&state).holders(&class, after.as_ref(), limit);
    let found = found
        .await?
        .into_iter()
        .map(|(unique_name, from)| (unique_name.clone(), Holder { unique_name, from }))
        .collect();
    Ok(axum::Json(page(found, limit)))
}
