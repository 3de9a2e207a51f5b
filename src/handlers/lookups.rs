//! What operators ask of rules: which nodes a group holds now, and which nodes get a class
//! and from where. Both judge nodes on their last facts, read from the cursor on until the
//! page is full or `ENC_LOOKUP_JUDGED` nodes were judged (`Classifier::members`, `holders`): for operators,
//! not for agent runs.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ListResponse, PageQuery, parse_name};
use crate::AppState;
use crate::classifier::{Found, Page};
use crate::domain::Why;
use crate::domain::{Certname, ClassName, GroupName, Source};
use crate::error::{AppError, ReadProblems};
use crate::extract::{Path, Query};

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

/// Which page a lookup asks for: its size, the certname it goes on after, and how many
/// nodes it may judge (`ENC_LOOKUP_JUDGED`).
fn requested(state: &AppState, query: PageQuery) -> Result<Page, AppError> {
    let request = query.page()?;
    let after = match &request.cursor {
        Some(text) => Some(Certname::parse(text).map_err(|_| {
            AppError::BadRequest("the pagination cursor is not valid for this listing".into())
        })?),
        None => None,
    };
    Ok(Page {
        after,
        limit: request.limit,
        judged: state.limits.lookup_judged,
    })
}

/// Says that some nodes of a lookup were judged on rule views taken before the rules read
/// the paths they read now (`GET /rule-views` shows them being taken again).
pub const PROVISIONAL: &str = "enc-provisional";

/// The page of what was found (by certname, up to `limit + 1` of them: one more says there
/// are), each item made by `item`; provisional answers say so in `Enc-Provisional`.
fn page<T, I>(found: Found<T>, limit: usize, item: impl Fn(Certname, T) -> I) -> Response
where
    ListResponse<I>: serde::Serialize,
{
    let mut items = found.items;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|(n, _)| n.to_string())
    } else {
        found.resume.map(|n| n.to_string())
    };
    let body = ListResponse {
        items: items.into_iter().map(|(n, t)| item(n, t)).collect(),
        next_cursor,
    };
    let mut response = axum::Json(body).into_response();
    if found.provisional {
        let says = HeaderValue::from_static("rule views are being taken again");
        response.headers_mut().insert(PROVISIONAL, says);
    }
    response
}

/// The nodes a group holds now: by name, pin or rule (on each node's last facts); not those
/// of the groups below it. Each page judges at most 5,000 nodes (`ENC_LOOKUP_JUDGED`; by
/// certname, from the cursor on): a page of a group that holds few may hold fewer than `limit`, or none, and
/// still have a `next_cursor`; the listing ends where `next_cursor` is null.
#[utoipa::path(get, path = "/nodegroup/{node_group_name}/nodes", tag = "node groups",
    operation_id = "node_group_members", security(("bearer" = ["read"])),
    params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded"), PageQuery),
    responses((status = 200, description = "A page of the group's nodes, each with why", body = ListResponse<Member>, headers(("Enc-Provisional" = String,
        description = "Present when some nodes were judged on rule views being taken again"))),
        ReadProblems))]
pub async fn members(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Response, AppError> {
    let name = parse_name("node_group_name", &name, GroupName::parse)?;
    let asked = requested(&state, query)?;
    let limit = asked.limit;
    let found = super::classifier(&state).members(&name, asked);
    Ok(page(found.await?, limit, |unique_name, why| Member {
        unique_name,
        why,
    }))
}

/// The nodes that get a class, each with the group (or the node) it comes from; nodes whose
/// groups conflict are left out. Each page judges at most 5,000 nodes (`ENC_LOOKUP_JUDGED`; by
/// certname, from the cursor on): it may hold fewer than `limit`, or none, and still have a `next_cursor`; the
/// listing ends where `next_cursor` is null.
#[utoipa::path(get, path = "/classes/{class_name}/nodes", tag = "classification",
    operation_id = "class_holders", security(("bearer" = ["read"])),
    params(("class_name" = ClassName, Path, description = "A Puppet class, such as `profile::nginx`"), PageQuery),
    responses((status = 200, description = "A page of the nodes that get the class, each with where it comes from", body = ListResponse<Holder>, headers(("Enc-Provisional" = String,
        description = "Present when some nodes were judged on rule views being taken again"))),
        ReadProblems))]
pub async fn holders(
    State(state): State<AppState>,
    Path(class): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Response, AppError> {
    let class = parse_name("class_name", &class, ClassName::parse)?;
    let asked = requested(&state, query)?;
    let limit = asked.limit;
    let found = super::classifier(&state).holders(&class, asked);
    Ok(page(found.await?, limit, |unique_name, from| Holder {
        unique_name,
        from,
    }))
}
