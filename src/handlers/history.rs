//! Change history: each object's revisions, the feed of every change, how a node's classification
//! changed between two instants (judged as it was by `Classifier::classification_at`), and
//! restoring an earlier version.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ForceQuery, IfMatchHeader, ListResponse, PageQuery, answer, parse_name, stored};
use crate::AppState;
use crate::auth::Caller;
use crate::classifier::Change;
use crate::domain::{
    Certname, ClassificationDiff, ClusterName, EnvironmentKey, EnvironmentName, GroupName, Node,
    NodeGroup, Revision, Scope, Stored,
};
use crate::error::{AppError, ReadProblems, WriteProblems};
use crate::extract::{IfMatch, Paged, Path, Query};
use crate::store::ChangeFilter;
use crate::store::Key;
use crate::store::RecordKind;
use crate::store::enc::{ENVIRONMENT, NODE, NODE_GROUP};
use crate::store::history::kind_named;
use crate::store::tokens::TOKEN;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// Changes made at this instant (RFC 3339) or later.
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Changes made at this instant (RFC 3339) or earlier.
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// Changes made by this actor (a token's name, a signed-in user, `bootstrap`).
    #[param(min_length = 1, max_length = 255)]
    actor: Option<String>,
    /// Changes of this kind of object.
    #[param(inline)]
    kind: Option<ChangeKind>,
}

/// The kinds of object whose changes are kept.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Node,
    NodeGroup,
    Environment,
    Token,
}

impl ChangeKind {
    fn record_kind(self) -> &'static RecordKind {
        let name = match self {
            ChangeKind::Node => "node",
            ChangeKind::NodeGroup => "node_group",
            ChangeKind::Environment => "environment",
            ChangeKind::Token => "token",
        };
        kind_named(name).expect("every change kind keeps history")
    }
}

/// Parses an RFC 3339 instant from a query.
pub fn instant(field: &str, raw: &str) -> Result<DateTime<Utc>, AppError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            AppError::invalid(
                field,
                "must be an RFC 3339 time such as 2026-12-01T09:30:00Z",
            )
        })
}

fn list(page: crate::store::Page<Revision>) -> axum::Json<ListResponse<Revision>> {
    axum::Json(page.into())
}

async fn history_of(
    state: &AppState,
    kind: &'static RecordKind,
    key: Key,
    query: PageQuery,
) -> Result<axum::Json<ListResponse<Revision>>, AppError> {
    Ok(list(state.store.history(kind, &key, &query.page()?).await?))
}

fn certname(raw: &str) -> Result<Certname, AppError> {
    parse_name("unique_name", raw, Certname::parse)
}

fn group_name(raw: &str) -> Result<GroupName, AppError> {
    parse_name("node_group_name", raw, GroupName::parse)
}

fn environment_key(environment: &str, cluster: &str) -> Result<EnvironmentKey, AppError> {
    Ok(EnvironmentKey {
        environment_name: parse_name("environment_name", environment, EnvironmentName::parse)?,
        puppet_cluster_name: parse_name("puppet_cluster_name", cluster, ClusterName::parse)?,
    })
}

fn env_key(key: &EnvironmentKey) -> Key {
    Key::two(
        key.environment_name.as_str(),
        key.puppet_cluster_name.as_str(),
    )
}

/// A node's revisions, newest first.
#[utoipa::path(get, path = "/nodes/{unique_name}/history", tag = "history", operation_id = "node_history",
    security(("bearer" = ["read"]), ("bearer" = ["classify"])),
    params(("unique_name" = Certname, Path, description = "The node's certname"), PageQuery),
    responses((status = 200, description = "A page of the node's revisions, newest first", body = ListResponse<Revision>), ReadProblems))]
pub async fn node(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<ListResponse<Revision>>, AppError> {
    let name = certname(&name)?;
    super::nodes::within_reach(&state, &caller.0, &name).await?;
    let key = Key::one(name.as_str());
    history_of(&state, &NODE, key, query).await
}

/// A node group's revisions, newest first.
#[utoipa::path(get, path = "/nodegroup/{node_group_name}/history", tag = "history", operation_id = "node_group_history",
    security(("bearer" = ["read"])),
    params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded"), PageQuery),
    responses((status = 200, description = "A page of the group's revisions, newest first", body = ListResponse<Revision>), ReadProblems))]
pub async fn node_group(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<ListResponse<Revision>>, AppError> {
    let key = Key::one(group_name(&name)?.as_str());
    history_of(&state, &NODE_GROUP, key, query).await
}

/// An environment's revisions, newest first.
#[utoipa::path(get, path = "/environment/{environment_name}/{puppet_cluster_name}/history", tag = "history",
    operation_id = "environment_history", security(("bearer" = ["read"])),
    params(("environment_name" = EnvironmentName, Path), ("puppet_cluster_name" = ClusterName, Path), PageQuery),
    responses((status = 200, description = "A page of the environment's revisions, newest first", body = ListResponse<Revision>), ReadProblems))]
pub async fn environment(
    State(state): State<AppState>,
    Path((environment, cluster)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<ListResponse<Revision>>, AppError> {
    let key = env_key(&environment_key(&environment, &cluster)?);
    history_of(&state, &ENVIRONMENT, key, query).await
}

/// Every change of nodes, node groups and environments, newest first; of tokens too for an
/// `admin` caller (token revisions name every token's scopes and creator: `read` may not see
/// them, as it may not list tokens). A page left without its token revisions may hold fewer
/// items than `limit`: follow `next_cursor` to the end.
#[utoipa::path(get, path = "/changes", tag = "history", operation_id = "list_changes",
    security(("bearer" = ["read"])), params(ChangesQuery, PageQuery),
    responses((status = 200, description = "A page of changes, newest first", body = ListResponse<Revision>), ReadProblems))]
pub async fn changes(
    State(state): State<AppState>,
    caller: Caller,
    Paged(page, query): Paged<PageQuery, ChangesQuery>,
) -> Result<axum::Json<ListResponse<Revision>>, AppError> {
    let admin = caller.0.grants(Scope::Admin);
    if matches!(query.kind, Some(ChangeKind::Token)) && !admin {
        return Err(AppError::Forbidden(
            "token revisions need the admin scope".into(),
        ));
    }
    let since = query
        .since
        .as_deref()
        .map(|t| instant("since", t))
        .transpose()?;
    let until = query
        .until
        .as_deref()
        .map(|t| instant("until", t))
        .transpose()?;
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        return Err(AppError::invalid("until", "must not be before since"));
    }
    if let Some(actor) = &query.actor
        && (actor.is_empty() || actor.len() > 255)
    {
        return Err(AppError::invalid("actor", "must be 1 to 255 characters"));
    }
    let filter = ChangeFilter {
        since,
        until,
        actor: query.actor,
        kind: query.kind.map(ChangeKind::record_kind),
    };
    let mut found = state.store.changes(&filter, &page.page()?).await?;
    if !admin {
        found.items.retain(|r| r.kind != TOKEN.name);
    }
    Ok(list(found))
}

/// The version's content written again as the node's next version (made again if the node
/// was deleted: its group and environment must exist).
#[utoipa::path(post, path = "/nodes/{unique_name}/history/{version}/restore", tag = "history",
    operation_id = "restore_node", security(("bearer" = ["write"])),
    params(("unique_name" = Certname, Path, description = "The node's certname"),
        ("version" = u64, Path, description = "The version to restore", minimum = 1), IfMatchHeader, ForceQuery),
    responses((status = 200, description = "The node, as the version restored", body = Stored<Node>, headers(("ETag" = String))), WriteProblems))]
pub async fn restore_node(
    State(state): State<AppState>,
    asked: Restoring<(String, u64)>,
) -> Result<Response, AppError> {
    let (name, version) = &asked.path;
    // Judged as any node write: its groups must not give it conflicting values it did not
    // have, unless forced.
    let change = Change::RestoreNode {
        name: certname(name)?,
        version: *version,
        expected: asked.expected,
    };
    asked.write(&state, &change).await
}

/// The version's content written again as the group's next version (made again if the group
/// was deleted: its parent must exist).
#[utoipa::path(post, path = "/nodegroup/{node_group_name}/history/{version}/restore", tag = "history",
    operation_id = "restore_node_group", security(("bearer" = ["write"])),
    params(("node_group_name" = GroupName, Path, description = "The group's name, percent-encoded"),
        ("version" = u64, Path, description = "The version to restore", minimum = 1), IfMatchHeader, ForceQuery),
    responses((status = 200, description = "The group, as the version restored", body = Stored<NodeGroup>, headers(("ETag" = String))), WriteProblems))]
pub async fn restore_node_group(
    State(state): State<AppState>,
    asked: Restoring<(String, u64)>,
) -> Result<Response, AppError> {
    let (name, version) = &asked.path;
    // Judged as any group write: the version restored must not give nodes conflicting
    // values, unless forced.
    let change = Change::RestoreGroup {
        name: group_name(name)?,
        version: *version,
        expected: asked.expected,
    };
    asked.write(&state, &change).await
}

/// The version's content written again as the environment's next version (made again if it
/// was deleted).
#[utoipa::path(post, path = "/environment/{environment_name}/{puppet_cluster_name}/history/{version}/restore",
    tag = "history", operation_id = "restore_environment", security(("bearer" = ["write"])),
    params(("environment_name" = EnvironmentName, Path), ("puppet_cluster_name" = ClusterName, Path),
        ("version" = u64, Path, description = "The version to restore", minimum = 1), IfMatchHeader, ForceQuery),
    responses((status = 200, description = "The environment, as the version restored", body = Stored<crate::domain::Environment>, headers(("ETag" = String))), WriteProblems))]
pub async fn restore_environment(
    State(state): State<AppState>,
    asked: Restoring<(String, String, u64)>,
) -> Result<Response, AppError> {
    let (environment, cluster, version) = &asked.path;
    let key = environment_key(environment, cluster)?;
    let by = asked.options.by(&asked.caller);
    let restored = state
        .store
        .restore_environment(&key, *version, asked.expected, by)
        .await?;
    Ok(stored(StatusCode::OK, &restored, &[]))
}

/// A request to restore a version: who asks, the version the object must be at
/// (`If-Match`), whether forced, and the path naming the object and the version, extracted
/// in that order.
pub struct Restoring<P> {
    caller: Caller,
    expected: Option<u64>,
    options: ForceQuery,
    path: P,
}

impl<S: Send + Sync, P: DeserializeOwned + Send> FromRequestParts<S> for Restoring<P> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let IfMatch(expected) = IfMatch::from_request_parts(parts, state).await?;
        let Query(options) = Query::<ForceQuery>::from_request_parts(parts, state).await?;
        let Path(path) = Path::<P>::from_request_parts(parts, state).await?;
        Ok(Restoring {
            caller,
            expected,
            options,
            path,
        })
    }
}

impl<P> Restoring<P> {
    /// Makes the restore `change`, judged as any write of its kind.
    async fn write(&self, state: &AppState, change: &Change) -> Result<Response, AppError> {
        let write = self.options.write(&self.caller);
        Ok(answer(
            super::classifier(state).write(change, write).await?,
            None,
        ))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The earlier instant (RFC 3339).
    #[param(value_type = String, format = DateTime)]
    from: Option<String>,
    /// The later instant (RFC 3339); default now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
}

/// How a node's classification changed between two instants.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiffResponse {
    #[schema(value_type = String, example = "web01.example.com")]
    pub name: Certname,
    pub from: String,
    pub to: String,
    /// The node had no classification at `from` (it did not exist yet).
    pub absent_at_from: bool,
    /// The node had no classification at `to` (it was deleted).
    pub absent_at_to: bool,
    pub diff: ClassificationDiff,
}

/// The difference between a node's classifications at two instants: classes added and
/// removed, parameters changed with old and new values, and the environment.
#[utoipa::path(get, path = "/nodes/{unique_name}/classification/diff", tag = "history",
    operation_id = "classification_diff", security(("bearer" = ["read"]), ("bearer" = ["classify"])),
    params(("unique_name" = Certname, Path, description = "The node's certname"), DiffQuery),
    responses((status = 200, description = "How the classification changed", body = DiffResponse), ReadProblems))]
pub async fn diff(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Result<axum::Json<DiffResponse>, AppError> {
    let name = certname(&name)?;
    super::nodes::within_reach(&state, &caller.0, &name).await?;
    let Some(from) = query.from.as_deref() else {
        return Err(AppError::invalid("from", "is required"));
    };
    let from = instant("from", from)?;
    let to = match query.to.as_deref() {
        Some(to) => instant("to", to)?,
        None => Utc::now(),
    };
    if from > to {
        return Err(AppError::invalid("to", "must not be before from"));
    }
    let classifier = super::classifier(&state);
    let before = classifier
        .classification_at(&name, &from)
        .await?
        .map(|c| c.0);
    let after = classifier.classification_at(&name, &to).await?.map(|c| c.0);
    if before.is_none() && after.is_none() {
        return Err(AppError::NotFound(format!(
            "node {name} has no classification at either instant"
        )));
    }
    let show = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    Ok(axum::Json(DiffResponse {
        diff: crate::domain::classification_diff(before.as_ref(), after.as_ref()),
        absent_at_from: before.is_none(),
        absent_at_to: after.is_none(),
        from: show(&from),
        to: show(&to),
        name,
    }))
}
